//! One closed window of this collector, as OTLP metrics a gateway records
//! exactly like the spans they summarise.
//!
//! Per service (one `ResourceMetrics` with its `service.name` and
//! `triage.agent`, the name of the agent that summarised it):
//!
//! - `traces.span.metrics.calls` (delta sum) and
//!   `traces.span.metrics.duration` (delta exponential histogram, ms), in
//!   the OTel Collector `spanmetrics` connector's shape: operations as
//!   `SPAN_KIND_SERVER` with `span.name`; edges as `SPAN_KIND_CLIENT` with
//!   `peer.service` naming the callee; own time as operations with
//!   `triage.series: own`. Requests and errors are split by `status.code`
//!   (`STATUS_CODE_UNSET`, `STATUS_CODE_ERROR`). Failing spans' trace ids
//!   ride as exemplars on the error count, the slowest span's on the
//!   histogram.
//! - `triage.summary.entry_spans` and `triage.summary.edge_calls` (see
//!   `crate::ingest::summary`): the drill-down and repeated-call counts.
//!
//! Latency: the store's buckets are re-bucketed at scale
//! [`SCALE`] (base 2^(1/32): a bucket is 2.2% wide, so a value read back
//! at its geometric middle is within 1.1%); a histogram spanning more than
//! [`MAX_EXPONENTIAL_BUCKETS`] buckets is scaled down until it fits, as the
//! OTel SDKs do. With the store's own 0.8% buckets, a gateway's quantiles
//! are within about 2% of the agent's.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric::Data, number_data_point, Exemplar,
    ExponentialHistogram, ExponentialHistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::ingest::red::SERIES_ATTRIBUTE;
use crate::ingest::spans::SpanAnalyzer;
use crate::ingest::summary::{COUNT, EDGE_CALLS, ENTRY_SPANS, KEY, OUTCOME, VALUE};
use crate::model::SeriesKind;
use crate::store::histogram::LatencyHistogram;
use crate::store::Store;

/// Scale of the exported exponential histograms.
pub const SCALE: i32 = 5;
/// Most positive buckets of one exported histogram.
pub const MAX_EXPONENTIAL_BUCKETS: usize = 320;
/// The span-metrics names the summaries use (the connector's default
/// namespace).
pub const CALLS: &str = "traces.span.metrics.calls";
pub const DURATION: &str = "traces.span.metrics.duration";
/// Resource attribute naming the agent that made a summary.
pub const AGENT_ATTRIBUTE: &str = "triage.agent";
/// Data points per export request, at most: a request stays well under
/// the 4 MiB a gRPC receiver accepts by default.
pub const MAX_POINTS_PER_REQUEST: usize = 8_000;

const DELTA: i32 = 1;

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// A window's summary: the requests to send and how many data points they
/// hold.
#[derive(Debug, Default)]
pub struct Summary {
    pub requests: Vec<ExportMetricsServiceRequest>,
    pub points: usize,
}

/// The exponential-histogram form of `histogram` (microseconds), in ms.
pub fn exponential(histogram: &LatencyHistogram) -> (i32, u64, i32, Vec<u64>) {
    let mut zero = 0;
    let mut indexed: Vec<(i64, u64)> = Vec::new();
    for (lower, width, count) in histogram.iter() {
        // The store's bucket stands at its midpoint, as it reads back.
        let micros = lower as f64 + (width.saturating_sub(1)) as f64 / 2.0;
        if micros <= 0.0 {
            zero += u64::from(count);
            continue;
        }
        let millis = micros / 1000.0;
        // Bucket i holds (base^i, base^(i+1)].
        let index = (millis.log2() * f64::from(1 << SCALE)).ceil() as i64 - 1;
        indexed.push((index, u64::from(count)));
    }
    let mut scale = SCALE;
    let (Some(low), Some(high)) = (
        indexed.iter().map(|(i, _)| *i).min(),
        indexed.iter().map(|(i, _)| *i).max(),
    ) else {
        return (scale, zero, 0, Vec::new());
    };
    let (mut low, mut high) = (low, high);
    let mut shift = 0;
    while high - low >= MAX_EXPONENTIAL_BUCKETS as i64 && scale > -10 {
        shift += 1;
        scale -= 1;
        low >>= 1;
        high >>= 1;
    }
    let mut counts = vec![0u64; (high - low + 1) as usize];
    for (index, count) in indexed {
        let slot = ((index >> shift) - low) as usize;
        counts[slot] += count;
    }
    (scale, zero, low as i32, counts)
}

/// The attributes of a series' span-metric points.
fn series_attributes(service: &str, kind: SeriesKind, name: &str) -> Vec<KeyValue> {
    let mut attributes = vec![attribute("service.name", service)];
    match kind {
        SeriesKind::Edge => {
            attributes.push(attribute("span.name", name));
            attributes.push(attribute("span.kind", "SPAN_KIND_CLIENT"));
            attributes.push(attribute("peer.service", name));
        }
        _ => {
            attributes.push(attribute("span.name", name));
            attributes.push(attribute("span.kind", "SPAN_KIND_SERVER"));
            if kind == SeriesKind::Own {
                attributes.push(attribute(SERIES_ATTRIBUTE, "own"));
            }
        }
    }
    attributes
}

fn with(mut attributes: Vec<KeyValue>, key: &str, value: &str) -> Vec<KeyValue> {
    attributes.push(attribute(key, value));
    attributes
}

fn exemplar(trace_id: u128, value_ms: f64, time: u64) -> Exemplar {
    Exemplar {
        trace_id: trace_id.to_be_bytes().to_vec(),
        time_unix_nano: time,
        value: Some(exemplar::Value::AsDouble(value_ms)),
        ..Default::default()
    }
}

/// Everything one service contributes to a window's summary.
#[derive(Default)]
struct ServiceMetrics {
    calls: Vec<NumberDataPoint>,
    durations: Vec<ExponentialHistogramDataPoint>,
    entry_spans: Vec<NumberDataPoint>,
    edge_calls: Vec<NumberDataPoint>,
}

impl ServiceMetrics {
    fn points(&self) -> usize {
        self.calls.len() + self.durations.len() + self.entry_spans.len() + self.edge_calls.len()
    }

    fn into_resource(self, service: &str, agent: &str) -> ResourceMetrics {
        let sum = |name: &str, points: Vec<NumberDataPoint>| Metric {
            name: name.to_owned(),
            data: Some(Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: DELTA,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let mut metrics = Vec::with_capacity(4);
        if !self.calls.is_empty() {
            metrics.push(sum(CALLS, self.calls));
        }
        if !self.durations.is_empty() {
            metrics.push(Metric {
                name: DURATION.to_owned(),
                unit: "ms".to_owned(),
                data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: self.durations,
                    aggregation_temporality: DELTA,
                })),
                ..Default::default()
            });
        }
        if !self.entry_spans.is_empty() {
            metrics.push(sum(ENTRY_SPANS, self.entry_spans));
        }
        if !self.edge_calls.is_empty() {
            metrics.push(sum(EDGE_CALLS, self.edge_calls));
        }
        ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    attribute("service.name", service),
                    attribute(AGENT_ATTRIBUTE, agent),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "triage".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}

fn count_point(attributes: Vec<KeyValue>, (start, end): (u64, u64), value: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: end,
        value: Some(number_data_point::Value::AsInt(
            i64::try_from(value).unwrap_or(i64::MAX),
        )),
        ..Default::default()
    }
}

/// The services of a summary, in order of first appearance.
#[derive(Default)]
struct Services {
    list: Vec<(Arc<str>, ServiceMetrics)>,
    positions: HashMap<Arc<str>, usize>,
}

impl Services {
    /// The metrics of `service`, added when missing.
    fn get(&mut self, service: &Arc<str>) -> &mut ServiceMetrics {
        let position = match self.positions.get(service) {
            Some(position) => *position,
            None => {
                self.list
                    .push((Arc::clone(service), ServiceMetrics::default()));
                self.positions
                    .insert(Arc::clone(service), self.list.len() - 1);
                self.list.len() - 1
            }
        };
        &mut self.list[position].1
    }
}

/// Summarises window `index` of `store` (and of the span analysis, when
/// given) for the gateway. `agent` names this agent.
pub fn summarize(store: &Store, spans: Option<&SpanAnalyzer>, index: i64, agent: &str) -> Summary {
    let interval = (store.window_start(index), store.window_start(index + 1));
    let mut services = Services::default();
    // The snapshot is sorted by kind, then service: operations come before
    // own series, which the gateway creates only beside an operation.
    let snapshot = store.snapshot(index);
    for series in &snapshot {
        let kind = series.key.kind;
        if !matches!(
            kind,
            SeriesKind::Operation | SeriesKind::Edge | SeriesKind::Own
        ) {
            continue;
        }
        let stats = &series.stats;
        if stats.requests == 0 {
            continue;
        }
        let metrics = services.get(&series.key.service);
        let attributes = series_attributes(&series.key.service, kind, &series.key.name);
        let errors = stats.errors.min(stats.requests);
        let ok = stats.requests - errors;
        let max_ms = stats.max.unwrap_or(0.0);
        // Failing traces first (at most two), then the slowest when it is
        // not one of them (see `Exemplars::trace_ids`).
        let ids = &series.exemplars;
        let n_failing = (errors.min(2) as usize).min(ids.len());
        let (error_ids, slowest) = (&ids[..n_failing], ids.get(n_failing).copied());
        if ok > 0 {
            metrics.calls.push(count_point(
                with(attributes.clone(), "status.code", "STATUS_CODE_UNSET"),
                interval,
                ok,
            ));
        }
        if errors > 0 {
            let mut point = count_point(
                with(attributes.clone(), "status.code", "STATUS_CODE_ERROR"),
                interval,
                errors,
            );
            point.exemplars = error_ids
                .iter()
                .map(|id| exemplar(*id, max_ms, interval.1 - 1))
                .collect();
            metrics.calls.push(point);
        }
        if let Some(histogram) = store.histogram(&series.key, index, index) {
            if !histogram.is_empty() {
                let (scale, zero_count, offset, bucket_counts) = exponential(&histogram);
                metrics.durations.push(ExponentialHistogramDataPoint {
                    attributes: with(attributes, "status.code", "STATUS_CODE_UNSET"),
                    start_time_unix_nano: interval.0,
                    time_unix_nano: interval.1,
                    count: histogram.len(),
                    scale,
                    zero_count,
                    positive: Some(Buckets {
                        offset,
                        bucket_counts,
                    }),
                    min: Some(histogram.min() as f64 / 1000.0),
                    max: Some(histogram.max() as f64 / 1000.0),
                    exemplars: slowest
                        .map(|id| exemplar(id, max_ms, interval.1 - 1))
                        .into_iter()
                        .collect(),
                    ..Default::default()
                });
            }
        }
    }
    if let Some(spans) = spans {
        for service in spans.service_names() {
            let Some(window) = spans.window_summary(&service, index) else {
                continue;
            };
            let metrics = services.get(&service);
            let totals = [("all", window.spans), ("bad", window.bad)];
            for (outcome, value) in totals {
                metrics.entry_spans.push(count_point(
                    vec![attribute(OUTCOME, outcome)],
                    interval,
                    value,
                ));
            }
            for (key, value, all, bad, slower) in &window.values {
                let base = vec![attribute(KEY, key), attribute(VALUE, value)];
                metrics.entry_spans.push(count_point(
                    with(base.clone(), OUTCOME, "all"),
                    interval,
                    *all,
                ));
                for (outcome, count) in [("bad", *bad), ("slower", *slower)] {
                    if count > 0 {
                        metrics.entry_spans.push(count_point(
                            with(base.clone(), OUTCOME, outcome),
                            interval,
                            count,
                        ));
                    }
                }
            }
            for (callee, stats) in &window.calls {
                for (what, value) in [
                    ("calls", stats.calls),
                    ("parents", stats.parents),
                    ("repeated", stats.repeated),
                ] {
                    metrics.edge_calls.push(count_point(
                        vec![attribute("peer.service", callee), attribute(COUNT, what)],
                        interval,
                        value,
                    ));
                }
            }
        }
    }
    // Requests of whole services, each at most MAX_POINTS_PER_REQUEST
    // points unless one service alone has more.
    let mut summary = Summary::default();
    let mut current: Vec<ResourceMetrics> = Vec::new();
    let mut in_current = 0;
    for (service, metrics) in services.list {
        let points = metrics.points();
        if points == 0 {
            continue;
        }
        if in_current > 0 && in_current + points > MAX_POINTS_PER_REQUEST {
            summary.requests.push(ExportMetricsServiceRequest {
                resource_metrics: std::mem::take(&mut current),
            });
            in_current = 0;
        }
        current.push(metrics.into_resource(&service, agent));
        in_current += points;
        summary.points += points;
    }
    if !current.is_empty() {
        summary.requests.push(ExportMetricsServiceRequest {
            resource_metrics: current,
        });
    }
    summary
}
