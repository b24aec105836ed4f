//! What the fuzz targets in `fuzz/` check on every input: one function per
//! target, each taking the raw bytes libFuzzer made. A check panics (and so
//! fails the fuzz run) when an input crashes a parser or breaks one of the
//! properties below; anything else about the input is fine.
//!
//! - [`protobuf`]: the zero-copy trace reader (`receiver::wire`) accepts
//!   whatever prost decodes and reads the same spans from it; the walks
//!   that measure a request before decoding count at least the items and
//!   the memory the decoders then produce; and a request that passes the
//!   limits never hands the sink more items than they allow.
//! - [`metrics_protobuf`]: the zero-copy metrics reader
//!   (`receiver::wire::metrics`) accepts whatever prost decodes and reads
//!   the same batch from it; its walk counts at least the points and the
//!   memory the reader then holds; a request that passes the limits never
//!   hands the sink more points than they allow; and recording the batch
//!   never panics and gives the outcome recording prost's request gives.
//! - [`otlp_json`]: the scanning and serde trace readers
//!   (`receiver::json`) read the same spans; the fast metric and log
//!   readers read as many items as the general decoder where both read a
//!   body; the JSON walk covers what the general decoder builds; the
//!   limits hold through the receivers' export path.
//! - [`config`]: YAML text is accepted or refused with at least one
//!   problem; what is accepted keeps the rules between values and builds a
//!   pipeline.
//! - [`changes`]: a `POST /api/v1/changes` body is refused naming a field,
//!   or read into a change that keeps the documented rules; RFC 3339 times
//!   read back what `model::rfc3339` writes.
//!
//! Compiled for the crate's tests (which run every check on the committed
//! seed corpus, so a check cannot rot while nobody fuzzes) and for
//! `cargo fuzz`, which builds with `--cfg fuzzing`; never into the
//! collector.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message as _;

use crate::admin::changes::{parse_change, parse_filter, parse_rfc3339, FIELDS};
use crate::config::{ConfigError, Overrides, Settings};
use crate::ingest::Ingest;
use crate::model::{rfc3339, ExtraKeys, TraceBatch, UNKNOWN_SERVICE};
use crate::pipeline::Pipeline;
use crate::receiver::decode::schema::Message as Schema;
use crate::receiver::decode::test_support::{
    batch_heap, logs_heap, metric_batch_heap, metrics_heap, traces_heap,
};
use crate::receiver::decode::{
    decode_json, decode_json_any, export_json, export_protobuf, Export, JsonRequest, Limits,
    Refused,
};
use crate::receiver::json::{self, read_logs, read_metrics, JsonTraces, ScannedTraces};
use crate::receiver::metric_batch::MetricBatch;
use crate::receiver::wire::{measure_metric_views, measure_prost, measure_views};
use crate::receiver::{DecodeError, Outcome, Sink};
use crate::store::{ManualClock, Store, StoreConfig};

/// Extra attribute keys the trace readers collect during the checks: one
/// exact, one suffix, as `analyze.attributes` allows.
const EXTRA_KEYS: &[&str] = &["app.tenant", "*.region"];

/// Limits small enough for short inputs to cross them.
const TIGHT: Limits = Limits {
    max_items: 3,
    max_decoded_bytes: 2048,
};

/// "Now" for posted changes: 2024-05-01T12:30:00Z.
const NOW_UNIX_NANOS: u64 = 1_714_566_600_000_000_000;

// === protobuf ===

/// The protobuf readers: the zero-copy trace reader against prost, the
/// pre-decode walks against both, and the limits through the export path.
pub fn protobuf(bytes: &[u8]) {
    let extra = ExtraKeys::new(EXTRA_KEYS);
    let ours = TraceBatch::read_with(bytes, &extra);
    let traces = ExportTraceServiceRequest::decode(bytes);
    if let Ok(request) = &traces {
        let ours = ours
            .as_ref()
            .expect("the zero-copy reader accepts what prost decodes");
        same_batch(
            ours,
            &crate::receiver::decode::decoded_batch(request, &extra),
        );
    }

    let views = measure_views(bytes, Limits::default());
    if let Ok(batch) = &ours {
        let measured = views.expect("a request the zero-copy reader reads is within the limits");
        assert!(measured.items >= batch.spans.len(), "spans undercounted");
        assert!(
            measured.decoded_bytes >= batch_heap(batch),
            "views' memory underestimated"
        );
    }
    covered(bytes, Schema::ExportTraces, traces.ok(), |request| {
        (spans(request), traces_heap(request))
    });
    let metrics = ExportMetricsServiceRequest::decode(bytes).ok();
    covered(bytes, Schema::ExportMetrics, metrics, |request| {
        (data_points(request), metrics_heap(request))
    });
    let logs = ExportLogsServiceRequest::decode(bytes).ok();
    covered(bytes, Schema::ExportLogs, logs, |request| {
        (log_records(request), logs_heap(request))
    });

    for limits in [TIGHT, Limits::default()] {
        within::<ExportTraceServiceRequest>(limits, |sink| {
            export_protobuf::<ExportTraceServiceRequest>(bytes, sink, limits)
        });
        within::<ExportMetricsServiceRequest>(limits, |sink| {
            export_protobuf::<ExportMetricsServiceRequest>(bytes, sink, limits)
        });
        within::<ExportLogsServiceRequest>(limits, |sink| {
            export_protobuf::<ExportLogsServiceRequest>(bytes, sink, limits)
        });
    }
}

/// The zero-copy reader's batch is the one prost's request gives, but for
/// the service name: the reader leaves a missing one `None`, the prost
/// path writes `unknown_service`.
fn same_batch(ours: &TraceBatch<'_>, decoded: &TraceBatch<'_>) {
    assert_eq!(ours.spans, decoded.spans, "spans differ from prost's");
    assert_eq!(ours.extras, decoded.extras, "extra values differ");
    assert_eq!(ours.resources.len(), decoded.resources.len());
    for (ours, decoded) in ours.resources.iter().zip(&decoded.resources) {
        assert_eq!(ours.spans, decoded.spans, "resource spans differ");
        assert_eq!(ours.attributes, decoded.attributes, "resource differs");
        let name = ours
            .service_name
            .filter(|name| !name.is_empty())
            .unwrap_or(UNKNOWN_SERVICE);
        assert_eq!(Some(name), decoded.service_name, "service name differs");
    }
}

/// Whatever prost decodes as `schema`, the walk lets through and counts
/// in full: `count` gives the request's items and heap bytes.
fn covered<R>(
    bytes: &[u8],
    schema: Schema,
    decoded: Option<R>,
    count: impl Fn(&R) -> (usize, usize),
) {
    let measured = measure_prost(bytes, schema, Limits::default());
    if let Some(request) = decoded {
        let measured = measured.expect("a request prost decodes is within the default limits");
        let (items, heap) = count(&request);
        assert!(measured.items >= items, "{items} items, {measured:?}");
        // The bounded CI run leaves this one out (TRIAGE_FUZZ_SKIP_HEAP=1)
        // until a long run has checked the fix for messages merged inside
        // merged messages (docs/RELIABILITY.md, "Fuzzing"); long runs and
        // `cargo test` check it.
        if std::env::var_os("TRIAGE_FUZZ_SKIP_HEAP").is_none() {
            assert!(measured.decoded_bytes >= heap, "{heap} bytes, {measured:?}");
        }
    }
}

fn spans(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .map(|scope| scope.spans.len())
        .sum()
}

fn data_points(request: &ExportMetricsServiceRequest) -> usize {
    request
        .resource_metrics
        .iter()
        .flat_map(|resource| &resource.scope_metrics)
        .flat_map(|scope| &scope.metrics)
        .map(|metric| match &metric.data {
            Some(Data::Gauge(gauge)) => gauge.data_points.len(),
            Some(Data::Sum(sum)) => sum.data_points.len(),
            Some(Data::Histogram(histogram)) => histogram.data_points.len(),
            Some(Data::ExponentialHistogram(histogram)) => histogram.data_points.len(),
            Some(Data::Summary(summary)) => summary.data_points.len(),
            None => 0,
        })
        .sum()
}

fn log_records(request: &ExportLogsServiceRequest) -> usize {
    request
        .resource_logs
        .iter()
        .flat_map(|resource| &resource.scope_logs)
        .map(|scope| scope.log_records.len())
        .sum()
}

// === protobuf metrics ===

/// The zero-copy metrics reader against prost, its walk against what it
/// holds, the limits through the export path, and recording its batch.
pub fn metrics_protobuf(bytes: &[u8]) {
    let ours = MetricBatch::read(bytes);
    let decoded = ExportMetricsServiceRequest::decode(bytes).ok();
    if let Some(request) = &decoded {
        let ours = ours
            .as_ref()
            .expect("the zero-copy metrics reader accepts what prost decodes");
        // Compared in debug form, where a NaN equals a NaN.
        assert_eq!(
            format!("{ours:?}"),
            format!("{:?}", MetricBatch::from_request(request)),
            "the batch differs from prost's"
        );
    }
    let measured = measure_metric_views(bytes, Limits::default());
    if let Ok(batch) = &ours {
        let measured = measured.expect("a request the reader reads is within the limits");
        assert!(measured.items >= batch.points.len(), "points undercounted");
        assert!(
            measured.decoded_bytes >= metric_batch_heap(batch),
            "the batch's memory underestimated"
        );
    }
    for limits in [TIGHT, Limits::default()] {
        within::<ExportMetricsServiceRequest>(limits, |sink| {
            export_protobuf::<ExportMetricsServiceRequest>(bytes, sink, limits)
        });
    }
    if let Ok(batch) = &ours {
        let read = metric_ingest().record_metrics(batch);
        if let Some(request) = &decoded {
            let by_prost = metric_ingest().metrics(request);
            assert_eq!(read, by_prost, "recorded differently from prost's request");
        }
    }
}

/// An ingest into a store of its own, a store's default limits, at
/// [`NOW_UNIX_NANOS`].
fn metric_ingest() -> Ingest {
    let clock = Arc::new(ManualClock::new(NOW_UNIX_NANOS));
    Ingest::new(Arc::new(Store::with_clock(StoreConfig::default(), clock)))
}

// === the export path ===

/// A sink that counts the items it is handed, reading traces as the
/// production sink does (zero-copy protobuf, scanned JSON).
#[derive(Default)]
struct Counting {
    items: AtomicUsize,
}

impl Counting {
    fn add(&self, items: usize) -> Outcome {
        self.items.fetch_add(items, Ordering::Relaxed);
        Outcome {
            accepted: items as u64,
            ..Outcome::default()
        }
    }
}

impl Sink for Counting {
    fn traces(&self, request: &ExportTraceServiceRequest) -> Outcome {
        self.add(spans(request))
    }

    fn traces_protobuf(&self, bytes: &[u8]) -> Result<Outcome, DecodeError> {
        let batch = TraceBatch::read_with(bytes, &ExtraKeys::new(EXTRA_KEYS))
            .map_err(|error| DecodeError(error.to_string()))?;
        Ok(self.add(batch.spans.len()))
    }

    fn traces_json(&self, body: &str) -> Option<Outcome> {
        let traces = ScannedTraces::read(body, &ExtraKeys::new(EXTRA_KEYS))?;
        Some(self.add(traces.len()))
    }

    fn metrics(&self, request: &ExportMetricsServiceRequest) -> Outcome {
        self.add(data_points(request))
    }

    fn metrics_protobuf(&self, bytes: &[u8]) -> Result<Outcome, DecodeError> {
        let batch = MetricBatch::read(bytes).map_err(|error| DecodeError(error.to_string()))?;
        Ok(self.add(batch.points.len()))
    }

    fn logs(&self, request: &ExportLogsServiceRequest) -> Outcome {
        self.add(log_records(request))
    }
}

/// Runs one export of `R` into a counting sink: a request refused over the
/// limits reaches no sink, and one let through hands it at most
/// `limits.max_items` items.
fn within<R: Export>(limits: Limits, export: impl FnOnce(&Counting) -> Result<Outcome, Refused>) {
    let sink = Counting::default();
    let result = export(&sink);
    let items = sink.items.load(Ordering::Relaxed);
    match result {
        Err(Refused::OverLimit(_)) => assert_eq!(items, 0, "{}: refused yet recorded", R::NAME),
        Ok(_) | Err(Refused::Decode(_)) => assert!(
            items <= limits.max_items,
            "{}: {items} items through a limit of {}",
            R::NAME,
            limits.max_items
        ),
    }
}

// === OTLP/JSON ===

/// The OTLP/JSON readers: the scanning trace reader against the serde one,
/// the fast metric and log readers against the general decoder, the walk
/// against what the general decoder builds, and the limits through the
/// export path.
pub fn otlp_json(bytes: &[u8]) {
    let extra = ExtraKeys::new(EXTRA_KEYS);
    if let Ok(text) = std::str::from_utf8(bytes) {
        let scanned = ScannedTraces::read(text, &extra);
        let serde = JsonTraces::read(bytes);
        if let (Some(scanned), Some(serde)) = (&scanned, &serde) {
            assert_eq!(
                scanned.batch(),
                serde.batch_with(&extra),
                "the scanning and the serde trace readers differ"
            );
        }
        // The fast readers follow the protobuf JSON mapping where the
        // general decoder's serde derive is stricter (a `KeyValue` without
        // `key` is an empty key to them, an error to it), so only what
        // both read is compared.
        let general = decode_json_any(bytes);
        if let (Some(scanned), Ok(JsonRequest::Traces(general))) = (&scanned, &general) {
            assert_eq!(scanned.len(), spans(general), "span count differs");
        }
        if let (Some(fast), Ok(JsonRequest::Metrics(general))) = (read_metrics(text), &general) {
            assert_eq!(
                data_points(&fast),
                data_points(general),
                "data points differ"
            );
        }
        if let (Some(fast), Ok(JsonRequest::Logs(general))) = (read_logs(text), &general) {
            assert_eq!(
                log_records(&fast),
                log_records(general),
                "log records differ"
            );
        }
    }

    json_covered::<ExportTraceServiceRequest>(bytes, Schema::ExportTraces, |request| {
        (spans(request), traces_heap(request))
    });
    json_covered::<ExportMetricsServiceRequest>(bytes, Schema::ExportMetrics, |request| {
        (data_points(request), metrics_heap(request))
    });
    json_covered::<ExportLogsServiceRequest>(bytes, Schema::ExportLogs, |request| {
        (log_records(request), logs_heap(request))
    });

    for limits in [TIGHT, Limits::default()] {
        within::<ExportTraceServiceRequest>(limits, |sink| {
            export_json::<ExportTraceServiceRequest>(bytes, sink, limits)
        });
        within::<ExportMetricsServiceRequest>(limits, |sink| {
            export_json::<ExportMetricsServiceRequest>(bytes, sink, limits)
        });
        within::<ExportLogsServiceRequest>(limits, |sink| {
            export_json::<ExportLogsServiceRequest>(bytes, sink, limits)
        });
    }
}

/// Whatever the general decoder reads as `R`, the JSON walk lets through
/// and counts in full.
fn json_covered<R: Export>(bytes: &[u8], schema: Schema, count: impl Fn(&R) -> (usize, usize)) {
    let measured = json::measure(bytes, schema, Limits::default());
    if let Ok(request) = decode_json::<R>(bytes) {
        let measured = measured.expect("a request the decoder reads is within the default limits");
        let (items, heap) = count(&request);
        assert!(measured.items >= items, "{items} items, {measured:?}");
        assert!(measured.decoded_bytes >= heap, "{heap} bytes, {measured:?}");
    }
}

// === config ===

/// A config file: refused with every problem named, or read into settings
/// that keep the rules between values and build a pipeline.
pub fn config(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    match Settings::from_yaml(text, &Overrides::default()) {
        Err(ConfigError::Invalid(problems)) => {
            assert!(!problems.is_empty(), "refused without a problem");
            let message = ConfigError::Invalid(problems).to_string();
            assert!(!message.is_empty());
        }
        Err(error) => assert!(!error.to_string().is_empty()),
        Ok(settings) => {
            assert!(settings.grpc.max_buffered >= settings.grpc.max_recv_msg_size);
            assert!(settings.http.max_buffered >= settings.http.max_request_body_size);
            assert!(settings.decode.max_items > 0);
            let clock = Arc::new(ManualClock::new(NOW_UNIX_NANOS));
            let store = Arc::new(Store::with_clock(settings.store.clone(), clock));
            let pipeline = Pipeline::new(&settings.pipeline(), store);
            drop(pipeline);
        }
    }
}

// === changes ===

/// A `POST /api/v1/changes` body, and the same bytes as an RFC 3339 time
/// and as a `GET /api/v1/changes` query.
pub fn changes(bytes: &[u8]) {
    match parse_change(bytes, NOW_UNIX_NANOS) {
        Err(error) => {
            assert!(!error.problems.is_empty(), "refused without a problem");
            // The field may be "": an unknown member named "" is reported
            // under its own name.
            assert!(error
                .problems
                .iter()
                .all(|problem| !problem.message.is_empty()));
        }
        Ok(change) => {
            assert_eq!(change.id, 0);
            assert!(!change.service.is_empty());
            assert_eq!(change.service, change.service.trim());
            assert!(change.service.len() <= 256);
            for text in [&change.version, &change.key, &change.value]
                .into_iter()
                .flatten()
            {
                assert!(text.len() <= 256);
            }
            if let Some(link) = &change.link {
                assert!(link.starts_with("http://") || link.starts_with("https://"));
            }
            assert!(change.time_unix_nanos <= NOW_UNIX_NANOS + 24 * 3_600 * 1_000_000_000);
            assert!(!change.description.is_empty());
            // The body named only fields the API documents.
            let body: serde_json::Value = serde_json::from_slice(bytes).expect("was read");
            let fields = body.as_object().expect("was an object");
            assert!(fields.keys().all(|key| FIELDS.contains(&key.as_str())));
        }
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(time) = parse_rfc3339(text) {
        let second = time - time % 1_000_000_000;
        assert_eq!(parse_rfc3339(&rfc3339(time)), Ok(second), "{text}");
    }
    let pairs = text
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")));
    if let Err(error) = parse_filter(pairs) {
        assert!(!error.problems.is_empty());
    }
}

#[cfg(test)]
mod tests;
