//! Turns decoded OTLP export requests into store records.
//!
//! This is the ingest hot path. It borrows every string it needs from the
//! request (service, operation, callee), looks series up by `&str`, and reuses
//! one key buffer per request for metric series, so recording a span or point
//! of a known series allocates nothing.
//!
//! What becomes what:
//! - SERVER, CONSUMER and INTERNAL spans: the operation series of their
//!   service (HTTP server spans are named by `http.route`).
//! - CLIENT and PRODUCER spans: the edge series caller -> callee. The callee
//!   is the service of the server-side child span when it arrives (see
//!   `store::pairing`); else `peer.service`, `server.address`, the database
//!   (`db.namespace`, `db.system.name`/`db.system`) or
//!   `messaging.destination.name`; else `unknown`.
//! - Gauges and sums: value series (cumulative sums become deltas);
//!   histograms and exponential histograms: distribution series. RED
//!   metrics computed elsewhere (the OTel Collector's `spanmetrics` and
//!   `servicegraph` connectors, Istio, Linkerd, triage agents) become the
//!   operation and edge series spans would have made ([`red`]).
//! - Log records: counts per severity class, and an `all` series whose errors
//!   are the records at ERROR (severity number 17) and above.
//!
//! Beside the store, ingest feeds two analyses that must see every span as
//! it arrives: [`spans`] (own time, locally-originating errors, repeated
//! calls, attribute drill-down sketches) and [`changes`] (versions,
//! instance turnover, flag flips and Kubernetes events inferred from the
//! telemetry, recorded into the store's change log).

pub mod announced;
pub mod changes;
pub mod red;
pub mod spans;
pub mod summary;

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
// The unit tests (`tests.rs`, through `use super::*`) build metric
// requests from these; recording reads `MetricBatch` views instead.
#[cfg(test)]
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point, HistogramDataPoint,
    NumberDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};

use crate::ingest::changes::{ChangeDetector, K8sEvent};
use crate::ingest::spans::SpanAnalyzer;
use crate::model::SeriesKind;
use crate::model::{invalid_span, operation_name, peer, UNKNOWN_SERVICE};
use crate::model::{ExtraKeys, ResourceAttributes, SpanView, TraceBatch};
use crate::receiver::decode::{
    decoded_batch, resource_attributes, service_name, span_view, string_value,
};
use crate::receiver::json::ScannedTraces;
use crate::receiver::metric_batch::{
    Attribute, AttributeValue, DataKind, MetricBatch, MetricView, Number, PointData, PointView,
};
use crate::receiver::{DecodeError, Outcome, Signal, Sink};
use crate::store::metric::HistogramPoint;
use crate::store::pairing::{ClientOutcome, PairKey};
use crate::store::{Sample, ServiceEntry, Store};
use crate::telemetry;

/// Aggregation temporality values from the OTLP metrics proto.
const TEMPORALITY_DELTA: i32 = 1;
const TEMPORALITY_CUMULATIVE: i32 = 2;

/// `DataPointFlags.NO_RECORDED_VALUE`: a staleness marker, not a value.
const FLAG_NO_RECORDED_VALUE: u32 = 1;

/// Records decoded requests into a [`Store`].
#[derive(Debug, Clone)]
pub struct Ingest {
    store: Arc<Store>,
    /// Span analysis (own time, local errors, retries, drill-down), when
    /// enabled with [`Ingest::with_spans`]; without it nothing extra runs.
    spans: Option<Arc<SpanAnalyzer>>,
    /// Infers change events from resources (version, instance), flag
    /// evaluations and Kubernetes events in logs; `None` observes nothing.
    changes: Option<Arc<ChangeDetector>>,
}

impl Ingest {
    pub fn new(store: Arc<Store>) -> Self {
        Ingest {
            store,
            changes: None,
            spans: None,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Also runs the span analysis on every trace request.
    pub fn with_spans(mut self, spans: Arc<SpanAnalyzer>) -> Self {
        self.spans = Some(spans);
        self
    }

    /// The span analyzer, when enabled.
    pub fn spans(&self) -> Option<&Arc<SpanAnalyzer>> {
        self.spans.as_ref()
    }

    /// Also tells `detector` what each request shows about changes.
    pub fn with_changes(mut self, detector: Arc<ChangeDetector>) -> Self {
        self.changes = Some(detector);
        self
    }

    /// Stops inferring changes from the telemetry.
    pub fn without_changes(mut self) -> Self {
        self.changes = None;
        self
    }
}

/// Counts rejected items and keeps the first reason, for partial success.
#[derive(Default)]
struct Tally {
    accepted: u64,
    rejected: u64,
    first_error: Option<String>,
}

impl Tally {
    fn reject(&mut self, reason: impl FnOnce() -> String) {
        self.rejected += 1;
        if self.first_error.is_none() {
            self.first_error = Some(reason());
        }
    }

    fn into_outcome(self) -> Outcome {
        let error_message = match (self.rejected, self.first_error) {
            (0, _) | (_, None) => String::new(),
            (1, Some(reason)) => reason,
            (n, Some(reason)) => format!("{n} items rejected; first: {reason}"),
        };
        Outcome {
            accepted: self.accepted,
            rejected: self.rejected,
            error_message,
        }
    }
}

fn trace_id(span: &SpanView<'_>) -> u128 {
    let bytes: [u8; 16] = span.trace_id.try_into().unwrap_or_default();
    u128::from_be_bytes(bytes)
}

fn span_id(bytes: &[u8]) -> u64 {
    let bytes: [u8; 8] = bytes.try_into().unwrap_or_default();
    u64::from_be_bytes(bytes)
}

impl Ingest {
    fn record_span(&self, service: &ServiceEntry, span: &SpanView<'_>, now: u64) {
        let attributes = &span.attributes;
        let kind = SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified);
        let status_error = span.status_code == StatusCode::Error as i32;
        let server_error =
            kind == SpanKind::Server && attributes.http_status.is_some_and(|code| code >= 500);
        let sample = Sample {
            end_unix_nanos: span.end_time_unix_nano,
            duration_nanos: span.end_time_unix_nano - span.start_time_unix_nano,
            error: status_error || server_error,
            trace_id: trace_id(span),
        };
        let store = &self.store;
        match kind {
            SpanKind::Client | SpanKind::Producer => {
                let fallback = peer(attributes);
                // Databases and brokers are rarely traced themselves: name the
                // edge from the span at once instead of waiting for a child.
                if attributes.db_system.is_some() || attributes.messaging_destination.is_some() {
                    store.record_span(service, SeriesKind::Edge, fallback, sample, now);
                    return;
                }
                let key = PairKey {
                    trace_id: trace_id(span),
                    span_id: span_id(span.span_id),
                };
                let fallback = store.intern(fallback);
                match store
                    .pairing
                    .client(key, &service.name, sample, Arc::clone(&fallback), now)
                {
                    ClientOutcome::Paired(callee) => {
                        store.record_span(service, SeriesKind::Edge, &callee, sample, now)
                    }
                    ClientOutcome::Full => {
                        store.record_span(service, SeriesKind::Edge, &fallback, sample, now)
                    }
                    ClientOutcome::Waiting => {}
                }
            }
            _ => {
                let operation = operation_name(span);
                store.record_span(service, SeriesKind::Operation, operation, sample, now);
                if matches!(kind, SpanKind::Server | SpanKind::Consumer)
                    && span.parent_span_id.len() == 8
                {
                    let key = PairKey {
                        trace_id: trace_id(span),
                        span_id: span_id(span.parent_span_id),
                    };
                    if let Some(resolved) = store.pairing.child(key, &service.name, now) {
                        let caller = store.service(&resolved.caller);
                        store.record_span(
                            &caller,
                            SeriesKind::Edge,
                            &resolved.callee,
                            resolved.sample,
                            now,
                        );
                    }
                }
            }
        }
    }
}

/// Identifies a metric stream (metric name + every attribute) for
/// cumulative-to-delta. Attribute order does not matter.
fn stream_id(service: &str, metric: &str, attributes: &[Attribute<'_>]) -> u64 {
    let mut combined: u64 = 0;
    for attribute in attributes {
        let mut hasher = stream_hasher();
        attribute.key.hash(&mut hasher);
        format_value(&attribute.value, &mut HashWriter(&mut hasher));
        combined = combined.wrapping_add(hasher.finish());
    }
    let mut hasher = stream_hasher();
    service.hash(&mut hasher);
    metric.hash(&mut hasher);
    combined.hash(&mut hasher);
    hasher.finish()
}

/// The hasher of stream ids: fixed seed, so ids are the same in every
/// process (they stay in memory only; foldhash for speed, as every data
/// point of every metric is hashed).
fn stream_hasher() -> impl Hasher {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x7374_7265_616d).build_hasher()
}

/// Lets attribute values be hashed through `fmt::Write` without a String.
struct HashWriter<'a, H: Hasher>(&'a mut H);

impl<H: Hasher> std::fmt::Write for HashWriter<'_, H> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0.write(text.as_bytes());
        Ok(())
    }
}

/// Writes an attribute value as metric series keys show it; an empty one
/// writes nothing.
fn format_value(value: &AttributeValue<'_>, out: &mut impl std::fmt::Write) {
    let _ = match value {
        AttributeValue::Empty => Ok(()),
        AttributeValue::Str(text) => out.write_str(text),
        AttributeValue::Strindex(index) => write!(out, "<string {index}>"),
        AttributeValue::Bool(flag) => write!(out, "{flag}"),
        AttributeValue::Int(number) => write!(out, "{number}"),
        AttributeValue::Double(number) => write!(out, "{number}"),
        AttributeValue::Bytes(len) => write!(out, "<{len} bytes>"),
        AttributeValue::Complex => out.write_str("<complex>"),
    };
}

/// The first attribute with `key`.
fn find<'b, 'a>(attributes: &'b [Attribute<'a>], key: &str) -> Option<&'b Attribute<'a>> {
    attributes.iter().find(|attribute| attribute.key == key)
}

/// Longest attribute value kept in a metric series key.
const MAX_KEY_VALUE_LEN: usize = 128;

/// Writes `name{key=value,...}` with the kept attribute keys, in config order.
fn metric_key(buffer: &mut String, name: &str, attributes: &[Attribute<'_>], kept: &[String]) {
    buffer.clear();
    buffer.push_str(name);
    let mut first = true;
    for key in kept {
        let Some(value) = find(attributes, key)
            .map(|attribute| attribute.value)
            .filter(|value| *value != AttributeValue::Empty)
        else {
            continue;
        };
        buffer.push(if first { '{' } else { ',' });
        first = false;
        buffer.push_str(key);
        buffer.push('=');
        let start = buffer.len();
        format_value(&value, buffer);
        if buffer.len() - start > MAX_KEY_VALUE_LEN {
            let mut cut = start + MAX_KEY_VALUE_LEN;
            while !buffer.is_char_boundary(cut) {
                cut -= 1;
            }
            buffer.truncate(cut);
        }
    }
    if !first {
        buffer.push('}');
    }
}

/// The value of a gauge or sum point, if it has one.
fn number(point: &PointView) -> Option<f64> {
    match point.data {
        PointData::Number(value) => value.map(Number::as_f64),
        _ => None,
    }
}

/// Representative values of explicit-bounds buckets: the middle of each
/// bounded bucket; the open ends use the point's min/max when present.
fn explicit_bucket_value(
    bounds: &[f64],
    (min, max): (Option<f64>, Option<f64>),
    (count, sum): (u64, Option<f64>),
    i: usize,
) -> f64 {
    match (i.checked_sub(1).and_then(|j| bounds.get(j)), bounds.get(i)) {
        (Some(low), Some(high)) => (low + high) / 2.0,
        (None, Some(high)) => min.map_or(*high / 2.0, |min| (min + high) / 2.0),
        (Some(low), None) => max.map_or(*low, |max| (low + max) / 2.0),
        (None, None) => sum.map_or(0.0, |sum| sum / count.max(1) as f64),
    }
}

/// Per-request state for recording metric points: the clock, the kept
/// attribute keys, the tally, and buffers reused from point to point so a
/// point of a known series allocates nothing.
struct MetricContext<'a> {
    now: u64,
    /// Identifies the current resource (all its attributes): two pods'
    /// counters of the same name are separate cumulative streams.
    resource: u64,
    kept: &'a [String],
    tally: Tally,
    key: String,
    buckets: Vec<(f64, u64)>,
    counts: Vec<u64>,
    /// Scratch space of RED metrics (`red`).
    red: red::RedScratch,
}

impl MetricContext<'_> {
    /// The cumulative stream of a point: its metric and attributes within the
    /// current resource.
    fn stream(&self, service_name: &str, name: &str, attributes: &[Attribute<'_>]) -> u64 {
        stream_id(service_name, name, attributes) ^ self.resource
    }
}

/// Whether points of this temporality are cumulative; `None` when it is
/// unspecified, which OTLP does not allow for sums and histograms.
fn is_cumulative(temporality: i32) -> Option<bool> {
    match temporality {
        TEMPORALITY_DELTA => Some(false),
        TEMPORALITY_CUMULATIVE => Some(true),
        _ => None,
    }
}

/// `service.name` of a resource, `unknown_service` when missing or empty.
/// Of several, the last string one counts, as for spans.
fn resource_service_name<'a>(attributes: &[Attribute<'a>]) -> &'a str {
    attributes
        .iter()
        .filter(|attribute| attribute.key == "service.name")
        .filter_map(|attribute| match attribute.value {
            AttributeValue::Str(name) => Some(name),
            _ => None,
        })
        .next_back()
        .filter(|name| !name.is_empty())
        .unwrap_or(UNKNOWN_SERVICE)
}

impl Ingest {
    /// Records a metrics request read by either reader (see
    /// `receiver::metric_batch`).
    pub fn record_metrics(&self, batch: &MetricBatch<'_>) -> Outcome {
        let started = Instant::now();
        let mut context = MetricContext {
            now: self.store.now_unix_nanos(),
            resource: 0,
            kept: &self.store.config().metric_attributes,
            tally: Tally::default(),
            key: String::new(),
            buckets: Vec::new(),
            counts: Vec::new(),
            red: red::RedScratch::default(),
        };
        for resource in &batch.resources {
            let attributes = batch.resource_attributes(resource);
            let service_name = resource_service_name(attributes);
            let service = self.store.service(service_name);
            context.resource = if resource.has_resource {
                stream_id("", "", attributes).rotate_left(17)
            } else {
                0
            };
            for metric in batch.metrics_of(resource) {
                self.record_metric(&service, service_name, batch, metric, &mut context);
            }
        }
        telemetry::record_ingest_batch(Signal::Metrics.as_str(), started.elapsed());
        context.tally.into_outcome()
    }

    fn record_metric(
        &self,
        service: &ServiceEntry,
        service_name: &str,
        batch: &MetricBatch<'_>,
        metric: &MetricView<'_>,
        context: &mut MetricContext<'_>,
    ) {
        let name = metric.name;
        let Some(data) = metric.data.as_ref() else {
            context
                .tally
                .reject(|| format!("metric {name:?} has no data"));
            return;
        };
        if name.is_empty() {
            for _ in batch.points(data) {
                context.tally.reject(|| "metric without a name".to_string());
            }
            return;
        }
        // An agent's drill-down and call counts go to the span analysis.
        if summary::is_summary(name) {
            self.record_summary_metric(service_name, batch, metric, context);
            return;
        }
        // Span metrics, service-graph and service-mesh metrics become the
        // operation and edge series spans would have made.
        if let Some(recognised) = red::recognise(name) {
            if self.record_red_metric(service_name, batch, metric, recognised, context) {
                return;
            }
        }
        let temporality_error =
            || format!("metric {name:?}: aggregation temporality is unspecified");
        for point in batch.points(data) {
            let attributes = batch.attributes(point);
            match &point.data {
                PointData::Number(_) if data.kind == DataKind::Sum => {
                    let Some(cumulative) = is_cumulative(data.aggregation_temporality) else {
                        context.tally.reject(temporality_error);
                        continue;
                    };
                    // A cumulative up-down counter (pool connections in use,
                    // memory in bytes) *is* a level: keep its value, as for a
                    // gauge. Only monotonic totals become deltas.
                    let cumulative = (cumulative && data.is_monotonic).then(|| Cumulative {
                        stream: context.stream(service_name, name, attributes),
                        monotonic: true,
                    });
                    self.record_number_point(service, name, batch, point, cumulative, context);
                }
                PointData::Number(_) => {
                    self.record_number_point(service, name, batch, point, None, context);
                }
                PointData::Histogram {
                    count,
                    sum,
                    bucket_counts,
                    explicit_bounds,
                    min,
                    max,
                    ..
                } => {
                    if point.flags & FLAG_NO_RECORDED_VALUE != 0 {
                        context.tally.accepted += 1;
                        continue;
                    }
                    let bucket_counts = batch.counts(bucket_counts);
                    let bounds = batch.bounds(explicit_bounds);
                    if !bucket_counts.is_empty() && bucket_counts.len() != bounds.len() + 1 {
                        context.tally.reject(|| {
                            format!("metric {name:?}: bucket_counts must have one more entry than explicit_bounds")
                        });
                        continue;
                    }
                    let Some(cumulative) = is_cumulative(data.aggregation_temporality) else {
                        context.tally.reject(temporality_error);
                        continue;
                    };
                    let stream = cumulative.then(|| context.stream(service_name, name, attributes));
                    context.counts.clear();
                    context.counts.extend_from_slice(bucket_counts);
                    let time = (point.start_time_unix_nano, point.time_unix_nano);
                    let totals = (*count, sum.unwrap_or(0.0));
                    self.record_distribution_point(
                        service,
                        name,
                        attributes,
                        stream,
                        time,
                        totals,
                        context,
                        |i| explicit_bucket_value(bounds, (*min, *max), (*count, *sum), i),
                    );
                }
                PointData::Exponential {
                    count,
                    sum,
                    scale,
                    zero_count,
                    positive,
                    negative_count,
                    ..
                } => {
                    if point.flags & FLAG_NO_RECORDED_VALUE != 0 {
                        context.tally.accepted += 1;
                        continue;
                    }
                    let Some(cumulative) = is_cumulative(data.aggregation_temporality) else {
                        context.tally.reject(temporality_error);
                        continue;
                    };
                    let offset = positive.as_ref().map_or(0, |buckets| buckets.offset);
                    // A new scale or offset is a new bucket layout: deltas
                    // across it would be wrong, so it is a new stream.
                    let stream = cumulative.then(|| {
                        context.stream(service_name, name, attributes)
                            ^ (*scale as u64).rotate_left(32)
                            ^ offset as u64
                    });
                    // Buckets: the zero bucket (negative values are clamped to
                    // zero), then each positive bucket.
                    context.counts.clear();
                    context
                        .counts
                        .push(zero_count.saturating_add(*negative_count));
                    if let Some(positive) = positive {
                        context
                            .counts
                            .extend_from_slice(batch.counts(&positive.counts));
                    }
                    // Wrapping, as a hostile scale or offset is not an
                    // error: the values are nonsense and so is the point.
                    let base = 2f64.powf(2f64.powi(scale.wrapping_neg()));
                    let time = (point.start_time_unix_nano, point.time_unix_nano);
                    let totals = (*count, sum.unwrap_or(0.0));
                    self.record_distribution_point(
                        service,
                        name,
                        attributes,
                        stream,
                        time,
                        totals,
                        context,
                        |i| {
                            if i == 0 {
                                0.0
                            } else {
                                // The middle of bucket (base^k, base^(k+1)].
                                let lower =
                                    base.powi(offset.wrapping_add(i as i32).wrapping_sub(1));
                                (lower + lower * base) / 2.0
                            }
                        },
                    );
                }
                PointData::Summary { sum } => {
                    // Quantiles of a summary cannot be merged; keep its sum as
                    // a value series.
                    metric_key(&mut context.key, name, attributes, context.kept);
                    self.store
                        .record_value(service, &context.key, point.time_unix_nano, *sum);
                    context.tally.accepted += 1;
                }
            }
        }
    }

    /// Records one histogram point whose bucket counts are in
    /// `context.counts`; `stream` is set for cumulative points, which become
    /// deltas first. `bucket_value(i)` is the representative value of bucket i.
    #[allow(clippy::too_many_arguments)] // each is one plain fact of the point
    fn record_distribution_point(
        &self,
        service: &ServiceEntry,
        name: &str,
        attributes: &[Attribute<'_>],
        stream: Option<u64>,
        (start, time): (u64, u64),
        (count, sum): (u64, f64),
        context: &mut MetricContext<'_>,
        bucket_value: impl Fn(usize) -> f64,
    ) {
        let (count, sum) = match stream {
            None => (count, sum),
            Some(stream) => {
                let point = HistogramPoint {
                    start,
                    time,
                    count,
                    sum,
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
                        (delta.count, delta.sum)
                    }
                    None => {
                        // The first point of a stream is the baseline.
                        context.tally.accepted += 1;
                        return;
                    }
                }
            }
        };
        context.buckets.clear();
        context.buckets.extend(
            context
                .counts
                .iter()
                .enumerate()
                .map(|(i, n)| (bucket_value(i), *n)),
        );
        metric_key(&mut context.key, name, attributes, context.kept);
        self.store
            .record_distribution(service, &context.key, time, count, sum, &context.buckets);
        context.tally.accepted += 1;
    }
}

/// A cumulative sum stream: its id and whether its total only goes up.
#[derive(Debug, Clone, Copy)]
struct Cumulative {
    stream: u64,
    monotonic: bool,
}

impl Ingest {
    /// Records a gauge value or a sum point (as a delta when cumulative).
    fn record_number_point(
        &self,
        service: &ServiceEntry,
        name: &str,
        batch: &MetricBatch<'_>,
        point: &PointView,
        cumulative: Option<Cumulative>,
        context: &mut MetricContext<'_>,
    ) {
        if point.flags & FLAG_NO_RECORDED_VALUE != 0 {
            context.tally.accepted += 1;
            return;
        }
        let Some(value) = number(point).filter(|value| value.is_finite()) else {
            context
                .tally
                .reject(|| format!("metric {name:?}: data point without a finite value"));
            return;
        };
        let time = point.time_unix_nano;
        let value = match cumulative {
            Some(Cumulative { stream, monotonic }) => {
                let start = point.start_time_unix_nano;
                match self.store.cumulative.sum_delta(
                    stream,
                    start,
                    time,
                    value,
                    monotonic,
                    context.now,
                ) {
                    Some(delta) => delta,
                    None => {
                        // First point of a stream (or out of order): it is the
                        // baseline for the next delta, not a value itself.
                        context.tally.accepted += 1;
                        return;
                    }
                }
            }
            None => value,
        };
        metric_key(
            &mut context.key,
            name,
            batch.attributes(point),
            context.kept,
        );
        self.store.record_value(service, &context.key, time, value);
        context.tally.accepted += 1;
    }
}

impl Ingest {
    /// Records spans already read by one of the zero-copy readers
    /// (`receiver::wire` for protobuf, `receiver::json` for JSON).
    pub fn record_batch(&self, batch: &TraceBatch<'_>) -> Outcome {
        let started = Instant::now();
        let now = self.store.now_unix_nanos();
        let mut tally = Tally::default();
        for resource in &batch.resources {
            let name = resource
                .service_name
                .filter(|name| !name.is_empty())
                .unwrap_or(UNKNOWN_SERVICE);
            let service = self.store.service(name);
            self.observe_changes(
                name,
                &resource.attributes,
                &batch.spans[resource.spans.clone()],
            );
            for span in &batch.spans[resource.spans.clone()] {
                self.record_checked(&service, span, now, &mut tally);
            }
        }
        if let Some(spans) = &self.spans {
            spans.observe(&self.store, batch, now);
        }
        telemetry::record_ingest_batch(Signal::Traces.as_str(), started.elapsed());
        tally.into_outcome()
    }

    fn record_checked(
        &self,
        service: &ServiceEntry,
        span: &SpanView<'_>,
        now: u64,
        tally: &mut Tally,
    ) {
        if let Some(reason) = invalid_span(span) {
            tally.reject(|| reason);
            return;
        }
        self.record_span(service, span, now);
        tally.accepted += 1;
    }
}

impl Sink for Ingest {
    fn traces_protobuf(&self, bytes: &[u8]) -> Result<Outcome, DecodeError> {
        let none = ExtraKeys::none();
        let extra = self
            .spans
            .as_ref()
            .map_or(&none, |spans| spans.extra_keys());
        let batch =
            TraceBatch::read_with(bytes, extra).map_err(|error| DecodeError(error.to_string()))?;
        Ok(self.record_batch(&batch))
    }

    fn traces_json(&self, body: &str) -> Option<Outcome> {
        let none = ExtraKeys::none();
        let extra = self
            .spans
            .as_ref()
            .map_or(&none, |spans| spans.extra_keys());
        let traces = ScannedTraces::read(body, extra)?;
        Some(self.record_batch(&traces.batch()))
    }

    fn traces(&self, request: &ExportTraceServiceRequest) -> Outcome {
        let started = Instant::now();
        let now = self.store.now_unix_nanos();
        let mut tally = Tally::default();
        for resource_spans in &request.resource_spans {
            let service = self
                .store
                .service(service_name(resource_spans.resource.as_ref()));
            for scope_spans in &resource_spans.scope_spans {
                for span in &scope_spans.spans {
                    self.record_checked(&service, &span_view(span), now, &mut tally);
                }
            }
            self.observe_decoded_changes(resource_spans);
        }
        if let Some(spans) = &self.spans {
            spans.observe(
                &self.store,
                &decoded_batch(request, spans.extra_keys()),
                now,
            );
        }
        telemetry::record_ingest_batch(Signal::Traces.as_str(), started.elapsed());
        tally.into_outcome()
    }

    fn metrics(&self, request: &ExportMetricsServiceRequest) -> Outcome {
        self.record_metrics(&MetricBatch::from_request(request))
    }

    fn metrics_protobuf(&self, bytes: &[u8]) -> Result<Outcome, DecodeError> {
        let batch = MetricBatch::read(bytes).map_err(|error| DecodeError(error.to_string()))?;
        Ok(self.record_metrics(&batch))
    }

    fn logs(&self, request: &ExportLogsServiceRequest) -> Outcome {
        let started = Instant::now();
        let now = self.store.now_unix_nanos();
        let mut tally = Tally::default();
        for resource_logs in &request.resource_logs {
            let service = self
                .store
                .service(service_name(resource_logs.resource.as_ref()));
            for scope_logs in &resource_logs.scope_logs {
                for record in &scope_logs.log_records {
                    let time = [record.time_unix_nano, record.observed_time_unix_nano]
                        .into_iter()
                        .find(|time| *time > 0)
                        .unwrap_or(now);
                    if let Some(changes) = &self.changes {
                        if let Some(event) =
                            k8s_event(resource_logs.resource.as_ref(), record, time)
                        {
                            changes.observe_k8s_event(&event);
                        }
                        let resource_attributes = resource_logs
                            .resource
                            .as_ref()
                            .map_or(&[][..], |resource| &resource.attributes[..]);
                        match announced::announced_change(
                            resource_attributes,
                            &record.attributes,
                            record.body.as_ref(),
                            time,
                        ) {
                            None => {}
                            Some(Ok(change)) => {
                                // The same change told by every pod, or
                                // an export retried, is recorded once.
                                let _ = changes.log().record_once(change);
                            }
                            Some(Err(error)) => {
                                telemetry::record_change_refused("invalid_announcement");
                                tracing::debug!(%error, "a log record announces a change but its attributes are not valid");
                            }
                        }
                    }
                    let class = severity_class(record.severity_number, &record.severity_text);
                    let error = u64::from(
                        record.severity_number >= 17 || matches!(class, "ERROR" | "FATAL"),
                    );
                    self.store.record_logs(&service, class, time, 1, error);
                    self.store.record_logs(&service, "all", time, 1, error);
                    tally.accepted += 1;
                }
            }
        }
        telemetry::record_ingest_batch(Signal::Logs.as_str(), started.elapsed());
        tally.into_outcome()
    }
}

// === change detection ===

impl Ingest {
    /// Tells the change detector about one resource's spans: its version
    /// and instance once (at the latest span end, event time) and each flag
    /// evaluation. One extra pass over the spans, only with a detector.
    fn observe_changes(
        &self,
        service: &str,
        resource: &ResourceAttributes<'_>,
        spans: &[SpanView<'_>],
    ) {
        let Some(changes) = &self.changes else {
            return;
        };
        let mut latest = 0;
        for span in spans {
            latest = latest.max(span.end_time_unix_nano);
            let flag = &span.attributes;
            if let (Some(key), Some(variant)) = (flag.feature_flag_key, flag.feature_flag_variant) {
                changes.observe_flag(service, key, variant, span.end_time_unix_nano);
            }
        }
        // The pod name is what people recognise; the instance id is the
        // fallback outside Kubernetes.
        let instance = resource.k8s_pod_name.or(resource.service_instance_id);
        changes.observe_resource(service, resource.service_version, instance, latest);
    }

    /// [`Ingest::observe_changes`] for a decoded (JSON fallback) resource.
    fn observe_decoded_changes(
        &self,
        resource_spans: &opentelemetry_proto::tonic::trace::v1::ResourceSpans,
    ) {
        if self.changes.is_none() {
            return;
        }
        let resource = resource_spans.resource.as_ref();
        let spans: Vec<SpanView<'_>> = resource_spans
            .scope_spans
            .iter()
            .flat_map(|scope| scope.spans.iter().map(span_view))
            .collect();
        self.observe_changes(
            service_name(resource),
            &resource_attributes(resource),
            &spans,
        );
    }
}

/// The string attribute `key` among `attributes`.
fn text_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(string_value)
        .filter(|text| !text.is_empty())
}

/// The entries of a map (`kvlist`) value.
fn map_entries(
    value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>,
) -> Option<&[KeyValue]> {
    match value?.value.as_ref()? {
        Value::KvlistValue(list) => Some(&list.values),
        _ => None,
    }
}

/// A Kubernetes event in a log record, as the OpenTelemetry Collector's
/// receivers write it:
/// - `k8s_events`: reason in the `k8s.event.reason` record attribute, the
///   involved object in the `k8s.object.kind` / `k8s.object.name` resource
///   attributes, the message as the body;
/// - `k8sobjects` watching or pulling `events`: the Event object itself as a
///   map body (under `object` when watching), with `event.domain: k8s` or
///   `k8s.resource.name: events` record attributes.
///
/// The service is `service.name` or `k8s.deployment.name` when the record or
/// its resource says so (e.g. added by the k8sattributes processor);
/// otherwise the change detector works it out from the object's name.
fn k8s_event<'a>(
    resource: Option<&'a Resource>,
    record: &'a opentelemetry_proto::tonic::logs::v1::LogRecord,
    time: u64,
) -> Option<K8sEvent<'a>> {
    let resource_attributes: &[KeyValue] = resource.map_or(&[], |resource| &resource.attributes);
    let attribute = |key: &str| {
        text_attribute(&record.attributes, key).or_else(|| text_attribute(resource_attributes, key))
    };
    let service = attribute("k8s.deployment.name").or_else(|| {
        text_attribute(resource_attributes, "service.name")
            .or_else(|| text_attribute(&record.attributes, "service.name"))
            .filter(|name| *name != UNKNOWN_SERVICE)
    });
    if let Some(reason) = text_attribute(&record.attributes, "k8s.event.reason") {
        let message = match record.body.as_ref().and_then(|body| body.value.as_ref()) {
            Some(Value::StringValue(message)) => message.as_str(),
            _ => "",
        };
        return Some(K8sEvent {
            reason,
            message,
            object_kind: attribute("k8s.object.kind").unwrap_or(""),
            object_name: attribute("k8s.object.name").unwrap_or(""),
            service,
            time_unix_nanos: time,
        });
    }
    let from_objects_receiver = text_attribute(&record.attributes, "event.domain") == Some("k8s")
        || text_attribute(&record.attributes, "k8s.resource.name") == Some("events");
    if !from_objects_receiver {
        return None;
    }
    let body = map_entries(record.body.as_ref())?;
    let object = body
        .iter()
        .find(|entry| entry.key == "object")
        .and_then(|entry| map_entries(entry.value.as_ref()))
        .unwrap_or(body);
    if text_attribute(object, "kind").is_some_and(|kind| kind != "Event") {
        return None;
    }
    let involved = object
        .iter()
        .find(|entry| entry.key == "involvedObject" || entry.key == "regarding")
        .and_then(|entry| map_entries(entry.value.as_ref()))
        .unwrap_or(&[]);
    Some(K8sEvent {
        reason: text_attribute(object, "reason")?,
        message: text_attribute(object, "message")
            .or_else(|| text_attribute(object, "note"))
            .unwrap_or(""),
        object_kind: text_attribute(involved, "kind").unwrap_or(""),
        object_name: text_attribute(involved, "name").unwrap_or(""),
        service,
        time_unix_nanos: time,
    })
}

/// The severity class of a log record: from its number, else its text.
pub fn severity_class(number: i32, text: &str) -> &'static str {
    match number {
        1..=4 => "TRACE",
        5..=8 => "DEBUG",
        9..=12 => "INFO",
        13..=16 => "WARN",
        17..=20 => "ERROR",
        21..=24 => "FATAL",
        _ => {
            let text = text.trim();
            let prefix = |p: &str| text.len() >= p.len() && text[..p.len()].eq_ignore_ascii_case(p);
            if prefix("fatal") || prefix("crit") || prefix("emerg") || prefix("alert") {
                "FATAL"
            } else if prefix("err") {
                "ERROR"
            } else if prefix("warn") {
                "WARN"
            } else if prefix("info") || prefix("notice") {
                "INFO"
            } else if prefix("debug") {
                "DEBUG"
            } else if prefix("trace") {
                "TRACE"
            } else {
                "UNSPECIFIED"
            }
        }
    }
}

#[cfg(test)]
mod tests;
