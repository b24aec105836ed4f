//! RED metrics that other components already computed from spans, recorded
//! into the series the spans themselves would have made, so detection and
//! root-cause analysis see them exactly like spans.
//!
//! Recognised (by metric name, then by the attributes that identify the
//! series; a point without them is left to the generic metric path):
//!
//! | family | counts | latency | series |
//! | --- | --- | --- | --- |
//! | OTel Collector `spanmetrics` connector | `calls`, `<namespace>.calls` (`traces.span.metrics.calls` by default) | `duration`, `<namespace>.duration` | `span.kind` SERVER, CONSUMER, INTERNAL: operation `span.name` of `service.name`; CLIENT, PRODUCER: edge to the peer the point names (`peer.service`, `messaging.destination.name`, `server.address`, `db.system.name`, `db.system`) |
//! | OTel Collector `servicegraph` connector | `traces_service_graph_request_total`, `..._failed_total` | `..._request_client(_seconds)` | edge `client` -> `server` |
//! | Istio | `istio_requests_total` (errors: `response_code` >= 500) | `istio_request_duration_milliseconds` | edge `source_canonical_service` -> `destination_canonical_service` (source-reported points only) |
//! | Linkerd | `request_total`, `response_total` (errors: `classification="failure"`) | `response_latency_ms` | edge `deployment` -> `dst_deployment` (outbound points only) |
//!
//! A `triage.series="own"` attribute on span-metric points (agent
//! summaries, see `crate::agent`) puts them on the own-time series of the
//! operation instead.
//!
//! # Conversions
//!
//! - Counts: cumulative sums become deltas through the store's cumulative
//!   tracker (the first point of a stream is its baseline, as for every
//!   other sum); delta sums are taken as they are. A count point adds to
//!   the requests, and to the errors when its attributes say it failed
//!   (`status.code` ERROR, a 5xx `response_code`, `classification`
//!   failure); a "failed" counter adds errors only.
//! - Latency histograms add latencies only (the requests came with the
//!   counts): each bucket's count at one representative value, the
//!   geometric middle of its bounds (the open first bucket: half its upper
//!   bound, or the point's `min`; the open last bucket: its lower bound, or
//!   the point's `max`). Exponential histograms likewise (the geometric
//!   middle of `(base^i, base^(i+1)]`, within 1.4% at scale 4). Units: the
//!   metric's `unit` (`ms`, `s`, `us`, `ns`), else the name's suffix, else
//!   the family's default.
//! - Event time: a point covers `(start, time]`, so it is placed at
//!   `time - 1 ns`; a summary of a window ending at its boundary lands in
//!   that window.
//! - Exemplars with a 16-byte trace id become the window's exemplars.
//!
//! Points of a series that are duplicated by the other side of a call
//! (Istio's destination-reported points, Linkerd's inbound ones) are
//! skipped, so an edge is counted once.

use super::{
    find, is_cumulative, number, Ingest, MetricContext, FLAG_NO_RECORDED_VALUE,
    TEMPORALITY_CUMULATIVE,
};
use crate::model::SeriesKind;
use crate::receiver::metric_batch::{
    Attribute, AttributeValue, DataKind, ExemplarView, MetricBatch, MetricView, PointData,
    PointView,
};
use crate::store::metric::HistogramPoint;
use crate::store::{RedPoint, ServiceEntry};

/// The attribute that marks agent summaries of own time (see `crate::agent`).
pub const SERIES_ATTRIBUTE: &str = "triage.series";

/// Most latency buckets (and exemplars) one point may bring; the rest of a
/// hostile point is folded into the last one kept.
const MAX_BUCKETS: usize = 512;
const MAX_EXEMPLARS: usize = 8;

/// Whose RED metrics a metric name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    SpanMetrics,
    ServiceGraph,
    Istio,
    Linkerd,
}

/// What a recognised metric measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Requests; the failed ones among them are told by their attributes.
    Requests,
    /// Failed requests only (whatever their attributes say, for a
    /// `failed` counter; the `failure` class for Linkerd's responses).
    Failures,
    /// A latency histogram.
    Latency,
}

/// The family and role of a metric name, if it is one of the recognised
/// RED metrics.
pub fn recognise(name: &str) -> Option<(Family, Role)> {
    use Family::*;
    use Role::*;
    let spanmetrics = |suffix: &str| {
        name == suffix
            || name
                .strip_suffix(suffix)
                .is_some_and(|prefix| prefix.ends_with('.') || prefix.ends_with('_'))
    };
    Some(match name {
        "traces_service_graph_request_total" | "traces_service_graph_request" => {
            (ServiceGraph, Requests)
        }
        "traces_service_graph_request_failed_total" | "traces_service_graph_request_failed" => {
            (ServiceGraph, Failures)
        }
        "traces_service_graph_request_client_seconds" | "traces_service_graph_request_client" => {
            (ServiceGraph, Latency)
        }
        "istio_requests_total" | "istio_requests" => (Istio, Requests),
        "istio_request_duration_milliseconds" | "istio_request_duration" => (Istio, Latency),
        "request_total" => (Linkerd, Requests),
        "response_total" => (Linkerd, Failures),
        "response_latency_ms" | "response_latency" => (Linkerd, Latency),
        _ if spanmetrics("calls") || spanmetrics("calls_total") => (SpanMetrics, Requests),
        _ if spanmetrics("duration")
            || spanmetrics("duration_milliseconds")
            || spanmetrics("duration_seconds") =>
        {
            (SpanMetrics, Latency)
        }
        _ => return None,
    })
}

/// The series a point belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target<'a> {
    service: &'a str,
    kind: SeriesKind,
    name: &'a str,
    /// Whether a count of this point is of failed requests.
    failed: bool,
}

/// Why a recognised point is not recorded as RED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// The point lacks what names its series: not RED after all (a
    /// `duration` metric of something else); left to the generic path.
    NotRed,
    /// Counted by the other side (Istio destination reports, Linkerd
    /// inbound): accepted and dropped.
    Duplicate,
}

fn text<'a>(attributes: &[Attribute<'a>], key: &str) -> Option<&'a str> {
    match find(attributes, key)?.value {
        AttributeValue::Str(text) => Some(text).filter(|text| !text.is_empty()),
        _ => None,
    }
}

fn first<'a>(attributes: &[Attribute<'a>], keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|key| text(attributes, key))
}

/// An integer attribute, as a number or as its decimal text.
fn integer(attributes: &[Attribute<'_>], key: &str) -> Option<i64> {
    match find(attributes, key)?.value {
        AttributeValue::Int(number) => Some(number),
        AttributeValue::Str(text) => text.trim().parse().ok(),
        AttributeValue::Double(number) => Some(number as i64),
        _ => None,
    }
}

/// `SPAN_KIND_CLIENT`, `Client`, `CLIENT` -> `client`-style comparison.
fn is(value: &str, prefix: &str, name: &str) -> bool {
    let value = value.strip_prefix(prefix).unwrap_or(value);
    value.eq_ignore_ascii_case(name)
}

/// The peer a client span-metric point names, as `model::peer` reads it
/// from a span.
const PEER_KEYS: [&str; 5] = [
    "peer.service",
    "messaging.destination.name",
    "server.address",
    "db.system.name",
    "db.system",
];

fn target<'a>(
    family: Family,
    resource_service: &'a str,
    attributes: &[Attribute<'a>],
) -> Result<Target<'a>, Skip> {
    match family {
        Family::SpanMetrics => {
            let operation = text(attributes, "span.name").ok_or(Skip::NotRed)?;
            let service = text(attributes, "service.name").unwrap_or(resource_service);
            let failed = text(attributes, "status.code")
                .is_some_and(|code| is(code, "STATUS_CODE_", "error"));
            let kind = text(attributes, "span.kind").unwrap_or("SPAN_KIND_INTERNAL");
            if is(kind, "SPAN_KIND_", "client") || is(kind, "SPAN_KIND_", "producer") {
                let callee = first(attributes, &PEER_KEYS).ok_or(Skip::NotRed)?;
                return Ok(Target {
                    service,
                    kind: SeriesKind::Edge,
                    name: callee,
                    failed,
                });
            }
            let server = is(kind, "SPAN_KIND_", "server");
            // Named as `model::operation_name` names a server span.
            let name = match text(attributes, "http.route") {
                Some(route) if server && !operation.ends_with(route) => route,
                _ => operation,
            };
            let own = text(attributes, SERIES_ATTRIBUTE) == Some("own");
            Ok(Target {
                service,
                kind: if own {
                    SeriesKind::Own
                } else {
                    SeriesKind::Operation
                },
                name,
                failed,
            })
        }
        Family::ServiceGraph => Ok(Target {
            service: text(attributes, "client").ok_or(Skip::NotRed)?,
            kind: SeriesKind::Edge,
            name: text(attributes, "server").ok_or(Skip::NotRed)?,
            failed: false,
        }),
        Family::Istio => {
            if text(attributes, "reporter") == Some("destination") {
                return Err(Skip::Duplicate);
            }
            let source = first(
                attributes,
                &["source_canonical_service", "source_workload", "source_app"],
            )
            .ok_or(Skip::NotRed)?;
            let destination = first(
                attributes,
                &[
                    "destination_canonical_service",
                    "destination_service_name",
                    "destination_workload",
                    "destination_app",
                ],
            )
            .ok_or(Skip::NotRed)?;
            let failed = integer(attributes, "response_code").is_some_and(|code| code >= 500);
            Ok(Target {
                service: source,
                kind: SeriesKind::Edge,
                name: destination,
                failed,
            })
        }
        Family::Linkerd => {
            if text(attributes, "direction").is_some_and(|direction| direction != "outbound") {
                return Err(Skip::Duplicate);
            }
            let source = first(
                attributes,
                &["deployment", "statefulset", "daemonset", "workload_name"],
            )
            .ok_or(Skip::NotRed)?;
            let destination = first(
                attributes,
                &[
                    "dst_deployment",
                    "dst_statefulset",
                    "dst_daemonset",
                    "dst_service",
                ],
            )
            .ok_or(Skip::NotRed)?;
            Ok(Target {
                service: source,
                kind: SeriesKind::Edge,
                name: destination,
                failed: text(attributes, "classification") == Some("failure"),
            })
        }
    }
}

/// Microseconds per unit of a latency metric: its `unit`, else its name's
/// suffix, else the family's default.
pub fn micros_per_unit(family: Family, name: &str, unit: &str) -> f64 {
    match unit.trim() {
        "ms" => return 1e3,
        "s" => return 1e6,
        "us" | "µs" => return 1.0,
        "ns" => return 1e-3,
        _ => {}
    }
    if name.ends_with("_seconds") {
        1e6
    } else if name.ends_with("_milliseconds") || name.ends_with("_ms") {
        1e3
    } else {
        match family {
            Family::ServiceGraph => 1e6,
            Family::SpanMetrics | Family::Istio | Family::Linkerd => 1e3,
        }
    }
}

/// The event time of a point covering `(start, time]`.
fn event_time(start: u64, time: u64) -> u64 {
    if time > start {
        time - 1
    } else {
        time
    }
}

/// The representative value of explicit bucket `i`: the geometric middle
/// of its bounds (see the module documentation).
pub fn explicit_value(bounds: &[f64], i: usize, min: Option<f64>, max: Option<f64>) -> f64 {
    let low = i.checked_sub(1).and_then(|j| bounds.get(j)).copied();
    let high = bounds.get(i).copied();
    match (low, high) {
        (Some(low), Some(high)) if low > 0.0 && high > low => (low * high).sqrt(),
        (Some(low), Some(high)) => (low + high) / 2.0,
        (None, Some(high)) => match min {
            Some(min) if min > 0.0 && min < high => (min * high).sqrt(),
            _ => high / 2.0,
        },
        (Some(low), None) => match max {
            Some(max) if max > low && low > 0.0 => (low * max).sqrt(),
            _ => low,
        },
        (None, None) => min.or(max).unwrap_or(0.0),
    }
}

/// The representative value of exponential bucket `index` at `scale`: the
/// geometric middle of `(base^index, base^(index+1)]`.
pub fn exponential_value(scale: i32, index: i64) -> f64 {
    let base = 2f64.powf(2f64.powi(-scale.clamp(-10, 20)));
    base.powf(index as f64 + 0.5)
}

/// Converts a value in the metric's unit to whole microseconds.
fn to_micros(value: f64, micros_per_unit: f64) -> u64 {
    let micros = value * micros_per_unit;
    if micros.is_finite() && micros > 0.0 {
        micros.round().min(u64::MAX as f64) as u64
    } else {
        0
    }
}

/// A span-metrics-style exemplar: its trace id, when it has one.
fn exemplar_trace(exemplar: &ExemplarView<'_>) -> Option<u128> {
    let bytes: [u8; 16] = exemplar.trace_id.try_into().ok()?;
    Some(u128::from_be_bytes(bytes)).filter(|id| *id != 0)
}

fn exemplar_value(exemplar: &ExemplarView<'_>) -> f64 {
    exemplar.value.map_or(0.0, |value| value.as_f64())
}

/// Per-request scratch space for RED points.
#[derive(Debug, Default)]
pub(super) struct RedScratch {
    latencies: Vec<(u64, u64)>,
    exemplars: Vec<(u64, bool, u128)>,
}

impl Ingest {
    /// Records the points of a recognised RED metric. Returns false, having
    /// recorded nothing, when the metric is not RED after all (its first
    /// point lacks the attributes naming a series): the generic metric
    /// path records it then.
    pub(super) fn record_red_metric(
        &self,
        resource_service: &str,
        batch: &MetricBatch<'_>,
        metric: &MetricView<'_>,
        (family, role): (Family, Role),
        context: &mut MetricContext<'_>,
    ) -> bool {
        let name = metric.name;
        let Some(data) = metric.data.as_ref() else {
            return false;
        };
        // Recognised only when the first point names a series: a metric
        // called `duration` of something else stays a metric.
        let kind_fits = match data.kind {
            DataKind::Sum => role != Role::Latency,
            DataKind::Histogram | DataKind::ExponentialHistogram => role == Role::Latency,
            DataKind::Gauge | DataKind::Summary => false,
        };
        let points = batch.points(data);
        let Some(first_point) = points.first().filter(|_| kind_fits) else {
            return false;
        };
        if target(family, resource_service, batch.attributes(first_point)) == Err(Skip::NotRed) {
            return false;
        }
        let micros = micros_per_unit(family, name, metric.unit);
        let mut scratch = std::mem::take(&mut context.red);
        for point in points {
            match &point.data {
                PointData::Number(_) => {
                    let cumulative = is_cumulative(data.aggregation_temporality);
                    self.red_count_point(
                        family,
                        role,
                        resource_service,
                        name,
                        batch,
                        point,
                        cumulative,
                        context,
                    );
                }
                PointData::Histogram { .. } => {
                    let cumulative = data.aggregation_temporality == TEMPORALITY_CUMULATIVE;
                    self.red_histogram_point(
                        family,
                        resource_service,
                        name,
                        (batch, point),
                        cumulative,
                        micros,
                        context,
                        &mut scratch,
                    );
                }
                PointData::Exponential { .. } => {
                    let cumulative = data.aggregation_temporality == TEMPORALITY_CUMULATIVE;
                    self.red_exponential_point(
                        family,
                        resource_service,
                        name,
                        (batch, point),
                        cumulative,
                        micros,
                        context,
                        &mut scratch,
                    );
                }
                PointData::Summary { .. } => {}
            }
        }
        context.red = scratch;
        true
    }

    fn red_service(&self, name: &str) -> std::sync::Arc<ServiceEntry> {
        self.store.service(name)
    }

    #[allow(clippy::too_many_arguments)] // each is one plain fact of the point
    fn red_count_point(
        &self,
        family: Family,
        role: Role,
        resource_service: &str,
        name: &str,
        batch: &MetricBatch<'_>,
        point: &PointView,
        cumulative: Option<bool>,
        context: &mut MetricContext<'_>,
    ) {
        if point.flags & FLAG_NO_RECORDED_VALUE != 0 {
            context.tally.accepted += 1;
            return;
        }
        let attributes = batch.attributes(point);
        let target = match target(family, resource_service, attributes) {
            Ok(target) => target,
            Err(Skip::Duplicate) => {
                context.tally.accepted += 1;
                return;
            }
            Err(Skip::NotRed) => {
                context
                    .tally
                    .reject(|| format!("metric {name:?}: a point without the attributes naming its caller and callee, or service and span"));
                return;
            }
        };
        let Some(cumulative) = cumulative else {
            context
                .tally
                .reject(|| format!("metric {name:?}: aggregation temporality is unspecified"));
            return;
        };
        let Some(value) = number(point).filter(|value| value.is_finite() && *value >= 0.0) else {
            context.tally.reject(|| {
                format!("metric {name:?}: a count that is not a finite, non-negative number")
            });
            return;
        };
        let value = if cumulative {
            let stream = context.stream(resource_service, name, attributes);
            match self.store.cumulative.sum_delta(
                stream,
                point.start_time_unix_nano,
                point.time_unix_nano,
                value,
                true,
                context.now,
            ) {
                Some(delta) => delta,
                None => {
                    context.tally.accepted += 1;
                    return;
                }
            }
        } else {
            value
        };
        let count = value.round().clamp(0.0, u64::MAX as f64) as u64;
        let (requests, errors) = match role {
            Role::Requests => (count, if target.failed { count } else { 0 }),
            Role::Failures if family == Family::Linkerd => {
                (0, if target.failed { count } else { 0 })
            }
            Role::Failures => (0, count),
            Role::Latency => (0, 0),
        };
        if requests > 0 || errors > 0 {
            let service = self.red_service(target.service);
            self.store.record_red(
                &service,
                target.kind,
                target.name,
                &RedPoint {
                    time: event_time(point.start_time_unix_nano, point.time_unix_nano),
                    requests,
                    errors,
                    latencies: &[],
                    exemplars: &[],
                },
            );
        }
        context.tally.accepted += 1;
    }

    #[allow(clippy::too_many_arguments)] // each is one plain fact of the point
    fn red_histogram_point(
        &self,
        family: Family,
        resource_service: &str,
        name: &str,
        (batch, point): (&MetricBatch<'_>, &PointView),
        cumulative: bool,
        micros: f64,
        context: &mut MetricContext<'_>,
        scratch: &mut RedScratch,
    ) {
        let PointData::Histogram {
            count,
            bucket_counts,
            explicit_bounds,
            min,
            max,
            exemplars,
            ..
        } = &point.data
        else {
            return;
        };
        if point.flags & FLAG_NO_RECORDED_VALUE != 0 {
            context.tally.accepted += 1;
            return;
        }
        let bucket_counts = batch.counts(bucket_counts);
        let bounds = batch.bounds(explicit_bounds);
        if bucket_counts.len() != bounds.len() + 1 {
            context.tally.reject(|| {
                format!(
                    "metric {name:?}: bucket_counts must have one more entry than explicit_bounds"
                )
            });
            return;
        }
        let attributes = batch.attributes(point);
        let Some(target) = self.red_target(family, resource_service, name, attributes, context)
        else {
            return;
        };
        context.counts.clear();
        context.counts.extend_from_slice(bucket_counts);
        let stream = cumulative.then(|| context.stream(resource_service, name, attributes));
        if !self.red_delta(
            stream,
            point.start_time_unix_nano,
            point.time_unix_nano,
            *count,
            context,
        ) {
            return;
        }
        scratch.latencies.clear();
        for (i, n) in context.counts.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let value = explicit_value(bounds, i, *min, *max);
            push_bucket(&mut scratch.latencies, to_micros(value, micros), *n);
        }
        collect_exemplars(
            batch.exemplars(exemplars),
            target.failed,
            micros,
            &mut scratch.exemplars,
        );
        self.record_red_latencies(
            &target,
            point.start_time_unix_nano,
            point.time_unix_nano,
            scratch,
        );
        context.tally.accepted += 1;
    }

    #[allow(clippy::too_many_arguments)] // each is one plain fact of the point
    fn red_exponential_point(
        &self,
        family: Family,
        resource_service: &str,
        name: &str,
        (batch, point): (&MetricBatch<'_>, &PointView),
        cumulative: bool,
        micros: f64,
        context: &mut MetricContext<'_>,
        scratch: &mut RedScratch,
    ) {
        let PointData::Exponential {
            count,
            scale,
            zero_count,
            positive,
            negative_count,
            exemplars,
            ..
        } = &point.data
        else {
            return;
        };
        if point.flags & FLAG_NO_RECORDED_VALUE != 0 {
            context.tally.accepted += 1;
            return;
        }
        let attributes = batch.attributes(point);
        let Some(target) = self.red_target(family, resource_service, name, attributes, context)
        else {
            return;
        };
        let offset = positive.as_ref().map_or(0, |buckets| buckets.offset);
        // Durations are not negative: negative buckets count as zero.
        context.counts.clear();
        context
            .counts
            .push(zero_count.saturating_add(*negative_count));
        if let Some(positive) = positive {
            context
                .counts
                .extend_from_slice(batch.counts(&positive.counts));
        }
        // A new scale or offset is a new bucket layout, so a new stream.
        let stream = cumulative.then(|| {
            context.stream(resource_service, name, attributes)
                ^ (*scale as u64).rotate_left(32)
                ^ offset as u64
        });
        if !self.red_delta(
            stream,
            point.start_time_unix_nano,
            point.time_unix_nano,
            *count,
            context,
        ) {
            return;
        }
        scratch.latencies.clear();
        for (i, n) in context.counts.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let value = if i == 0 {
                0.0
            } else {
                exponential_value(*scale, i64::from(offset) + i as i64 - 1)
            };
            push_bucket(&mut scratch.latencies, to_micros(value, micros), *n);
        }
        collect_exemplars(
            batch.exemplars(exemplars),
            target.failed,
            micros,
            &mut scratch.exemplars,
        );
        self.record_red_latencies(
            &target,
            point.start_time_unix_nano,
            point.time_unix_nano,
            scratch,
        );
        context.tally.accepted += 1;
    }

    /// The series of a latency point, counting it when there is none.
    fn red_target<'a>(
        &self,
        family: Family,
        resource_service: &'a str,
        name: &str,
        attributes: &[Attribute<'a>],
        context: &mut MetricContext<'_>,
    ) -> Option<Target<'a>> {
        match target(family, resource_service, attributes) {
            Ok(target) => Some(target),
            Err(Skip::Duplicate) => {
                context.tally.accepted += 1;
                None
            }
            Err(Skip::NotRed) => {
                context.tally.reject(|| {
                    format!("metric {name:?}: a point without the attributes naming its series")
                });
                None
            }
        }
    }

    /// Turns the cumulative bucket counts in `context.counts` into deltas
    /// (`stream` set) in place. Returns false when the point is only a
    /// stream's baseline (counted as accepted).
    fn red_delta(
        &self,
        stream: Option<u64>,
        start: u64,
        time: u64,
        count: u64,
        context: &mut MetricContext<'_>,
    ) -> bool {
        let Some(stream) = stream else {
            return true;
        };
        let point = HistogramPoint {
            start,
            time,
            count,
            sum: 0.0,
            buckets: &context.counts,
        };
        match self
            .store
            .cumulative
            .histogram_delta(stream, point, context.now)
        {
            Some(delta) => {
                context.counts.clear();
                context.counts.extend_from_slice(&delta.buckets);
                true
            }
            None => {
                context.tally.accepted += 1;
                false
            }
        }
    }

    fn record_red_latencies(
        &self,
        target: &Target<'_>,
        start: u64,
        time: u64,
        scratch: &RedScratch,
    ) {
        if scratch.latencies.is_empty() && scratch.exemplars.is_empty() {
            return;
        }
        let service = self.red_service(target.service);
        self.store.record_red(
            &service,
            target.kind,
            target.name,
            &RedPoint {
                time: event_time(start, time),
                requests: 0,
                errors: 0,
                latencies: &scratch.latencies,
                exemplars: &scratch.exemplars,
            },
        );
    }
}

/// Adds a bucket, folding into the last one past [`MAX_BUCKETS`].
fn push_bucket(latencies: &mut Vec<(u64, u64)>, micros: u64, n: u64) {
    if latencies.len() < MAX_BUCKETS {
        latencies.push((micros, n));
    } else if let Some(last) = latencies.last_mut() {
        last.1 = last.1.saturating_add(n);
    }
}

fn collect_exemplars(
    exemplars: &[ExemplarView<'_>],
    failed: bool,
    micros: f64,
    out: &mut Vec<(u64, bool, u128)>,
) {
    out.clear();
    out.extend(exemplars.iter().take(MAX_EXEMPLARS).filter_map(|exemplar| {
        let trace = exemplar_trace(exemplar)?;
        Some((to_micros(exemplar_value(exemplar), micros), failed, trace))
    }));
}

#[cfg(test)]
mod tests;
