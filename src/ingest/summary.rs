//! The parts of a triage agent's window summary that are not RED series
//! (those are span metrics, recorded by [`super::red`]): the attribute
//! drill-down of the entry spans and the calls per edge, recorded into the
//! span analysis as if the gateway had seen the spans, and the versions,
//! instances and flag variants among them, told to the change detector.
//!
//! Metrics (delta sums, on a resource with the summarised `service.name`):
//!
//! - [`ENTRY_SPANS`]: entry spans of the service in the window, one point
//!   per `triage.outcome` (`all`, `bad`), without `triage.key` for the
//!   totals and with `triage.key` / `triage.value` for each attribute
//!   value the drill-down counted (flags as `feature_flag.<key>` and the
//!   variant);
//! - [`EDGE_CALLS`]: per callee (`peer.service`) and `triage.count`
//!   (`calls`, `parents`, `repeated`): the repeated-call counts.
//!
//! A point's window is the one its `(start, time]` ends in.

use std::sync::Arc;

use super::{find, number, Ingest, MetricContext};
use crate::ingest::spans::CallStats;
use crate::receiver::metric_batch::{
    Attribute, AttributeValue, DataKind, MetricBatch, MetricView, PointView,
};

/// Entry spans and their attribute values, per window.
pub const ENTRY_SPANS: &str = "triage.summary.entry_spans";
/// Calls, distinct parents and repeated calls per edge, per window.
pub const EDGE_CALLS: &str = "triage.summary.edge_calls";
/// Which count a point is: `all` or `bad` (entry spans), `calls`,
/// `parents` or `repeated` (edge calls).
pub const OUTCOME: &str = "triage.outcome";
pub const COUNT: &str = "triage.count";
/// The attribute key and value an entry-span count is of.
pub const KEY: &str = "triage.key";
pub const VALUE: &str = "triage.value";

/// Whether `name` is one of the summary metrics of this module.
pub fn is_summary(name: &str) -> bool {
    name == ENTRY_SPANS || name == EDGE_CALLS
}

fn text<'a>(attributes: &[Attribute<'a>], key: &str) -> Option<&'a str> {
    match find(attributes, key)?.value {
        AttributeValue::Str(text) => Some(text),
        _ => None,
    }
}

/// The event time of a point covering `(start, time]`.
fn event_time(point: &PointView) -> u64 {
    if point.time_unix_nano > point.start_time_unix_nano {
        point.time_unix_nano - 1
    } else {
        point.time_unix_nano
    }
}

fn count(point: &PointView) -> Option<u64> {
    number(point)
        .filter(|value| value.is_finite() && *value >= 0.0)
        .map(|value| value.round().min(u64::MAX as f64) as u64)
}

impl Ingest {
    /// Records a summary metric of `service`. Points of a window the
    /// analysis no longer keeps, or of a key it does not count, are
    /// accepted and dropped; malformed ones are rejected.
    pub(super) fn record_summary_metric(
        &self,
        service: &str,
        batch: &MetricBatch<'_>,
        metric: &MetricView<'_>,
        context: &mut MetricContext<'_>,
    ) {
        let name = metric.name;
        let Some(data) = metric
            .data
            .as_ref()
            .filter(|data| data.kind == DataKind::Sum)
        else {
            context
                .tally
                .reject(|| format!("metric {name:?}: a summary must be a delta sum"));
            return;
        };
        let points = batch.points(data);
        let service: Arc<str> = Arc::clone(&self.store.service(service).name);
        // The pod is the instance when there is one, as for spans.
        let has_pods = name == ENTRY_SPANS
            && points
                .iter()
                .any(|point| text(batch.attributes(point), KEY) == Some("k8s.pod.name"));
        for point in points {
            let Some(value) = count(point) else {
                context.tally.reject(|| {
                    format!("metric {name:?}: a count that is not a finite, non-negative number")
                });
                continue;
            };
            let time = event_time(point);
            let window = self.store.window_index(time);
            let window_start = self.store.window_start(window);
            let attributes = batch.attributes(point);
            if name == ENTRY_SPANS {
                let window = (window, window_start);
                self.record_entry_spans(&service, attributes, value, window, has_pods);
            } else {
                self.record_edge_calls(&service, attributes, value, window);
            }
            context.tally.accepted += 1;
        }
    }

    fn record_entry_spans(
        &self,
        service: &Arc<str>,
        attributes: &[Attribute<'_>],
        value: u64,
        (window, window_start): (i64, u64),
        has_pods: bool,
    ) {
        // `all`, `bad`, or `slower` (than the operation's median).
        let outcome = text(attributes, OUTCOME);
        let counts = match outcome {
            Some("bad") => (0, value, 0),
            Some("slower") => (0, 0, value),
            _ => (value, 0, 0),
        };
        let (spans, bad_spans, _) = counts;
        let all = !matches!(outcome, Some("bad" | "slower"));
        let now = self.store.now_unix_nanos();
        let key = text(attributes, KEY);
        let attribute = text(attributes, VALUE);
        if let Some(analysis) = &self.spans {
            match (key, attribute) {
                (Some(key), Some(attribute)) => {
                    analysis.add_value(service, window, key, attribute, counts, now);
                }
                _ => {
                    analysis.add_entry_spans(service, window, spans, bad_spans, now);
                }
            }
        }
        // Changes are read from the `all` counts, once per value and window,
        // at the window's start (the spans came within it).
        let (Some(changes), Some(key), Some(attribute), true) =
            (&self.changes, key, attribute, all)
        else {
            return;
        };
        match key {
            "service.version" => {
                changes.observe_resource(service, Some(attribute), None, window_start)
            }
            "k8s.pod.name" => {
                changes.observe_resource(service, None, Some(attribute), window_start)
            }
            "service.instance.id" if !has_pods => {
                changes.observe_resource(service, None, Some(attribute), window_start)
            }
            _ => {
                if let Some(flag) = key.strip_prefix("feature_flag.") {
                    changes.observe_flags(service, flag, attribute, window_start, spans);
                }
            }
        }
    }

    fn record_edge_calls(
        &self,
        service: &Arc<str>,
        attributes: &[Attribute<'_>],
        value: u64,
        window: i64,
    ) {
        let (Some(analysis), Some(callee)) = (&self.spans, text(attributes, "peer.service")) else {
            return;
        };
        let stats = match text(attributes, COUNT) {
            Some("calls") => CallStats {
                calls: value,
                ..CallStats::default()
            },
            Some("parents") => CallStats {
                parents: value,
                ..CallStats::default()
            },
            Some("repeated") => CallStats {
                repeated: value,
                ..CallStats::default()
            },
            _ => return,
        };
        analysis.add_calls(service, callee, window, stats, self.store.now_unix_nanos());
    }
}
