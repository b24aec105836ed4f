//! Self-observability: metric names, the Prometheus recorder, and logging.
//!
//! Every self-metric name is a constant here, so dashboards and docs have one
//! place to look. Counters are updated once per request (batch), never per
//! item. This module is a leaf: components report their own figures under
//! these names (the store mirrors its gauges when `/metrics` is scraped,
//! `Store::report_gauges`; the change detector its counters on each tick,
//! `ChangeDetector::report_metrics`); nothing here reaches into them.
//!
//! Counters that the docs tell people to alert on exist at zero from the
//! start (`increase()` and `rate()` see nothing of a series' first
//! increment): those named here are registered with the recorder; those
//! labelled by a component's own names (listeners, tasks, alert targets,
//! history writes) by the component when it starts. `process` adds the
//! `process_*` figures and `triage_build_info` to each scrape.

pub mod process;

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, histogram, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Items (spans, data points, log records) accepted, by transport and signal.
pub const RECEIVER_ACCEPTED: &str = "triage_receiver_accepted_items_total";
/// Items refused, by transport, signal and reason (`invalid` for items
/// rejected in a partial success; whole-request reasons are counted in
/// `triage_receiver_refused_requests_total`).
pub const RECEIVER_REFUSED: &str = "triage_receiver_refused_items_total";
/// Whole requests refused, by transport, signal and reason (`decode`,
/// `too_large`, `unsupported_media_type`, `unsupported_encoding`).
pub const RECEIVER_REFUSED_REQUESTS: &str = "triage_receiver_refused_requests_total";
/// Time spent recording one decoded request into the store.
pub const INGEST_BATCH_DURATION: &str = "triage_ingest_batch_duration_seconds";
/// Series currently held.
pub const STORE_SERIES: &str = "triage_store_series";
/// Panics of a long-running task (`task` label), each followed by a restart.
pub const TASK_RESTARTS: &str = "triage_task_restarts_total";
/// Services currently held.
pub const STORE_SERVICES: &str = "triage_store_services";
/// Samples folded into an overflow series because a cardinality cap was hit.
pub const STORE_OVERFLOW: &str = "triage_store_overflow_samples_total";
/// Samples older than their series' window ring (kept in totals only).
pub const STORE_LATE: &str = "triage_store_late_samples_total";
/// Samples with event times ahead of the clock, recorded in the current window.
pub const STORE_FUTURE: &str = "triage_store_future_samples_total";
/// Series dropped after the idle TTL.
pub const STORE_EXPIRED: &str = "triage_store_expired_series_total";
/// Bytes held by window histograms.
pub const STORE_HISTOGRAM_BYTES: &str = "triage_store_histogram_bytes";
/// Bytes of detection state (per-series baselines and history).
pub const DETECT_STATE_BYTES: &str = "triage_detect_state_bytes";
/// Series with detection state.
pub const DETECT_SERIES: &str = "triage_detect_series";
/// Bytes held by the span analysis (trace buffer, drill-down sketches, call
/// counts).
pub const SPAN_ANALYSIS_BYTES: &str = "triage_span_analysis_bytes";
/// Spans waiting in the span analysis's trace buffer for their parent.
pub const SPAN_ANALYSIS_BUFFERED: &str = "triage_span_analysis_buffered_spans";
/// Spans waiting in the pairing buffer.
pub const PAIRING_SIZE: &str = "triage_pairing_buffer_spans";
/// Pairing results: `paired`, `expired_client`, `expired_child`, `full`.
pub const PAIRING_RESULTS: &str = "triage_pairing_spans_total";
/// Alerts (or webhook events) waiting in a target's queue, by `sink`
/// (`alertmanager`, `webhook`) and `target` (URL without credentials).
pub const ALERTS_QUEUED: &str = "triage_alerts_queued";
/// Capacity of each target's queue, by `sink` and `target`.
pub const ALERTS_QUEUE_CAPACITY: &str = "triage_alerts_queue_capacity";
/// Alerts accepted by a target, by `sink` and `target`.
pub const ALERTS_SENT: &str = "triage_alerts_sent_total";
/// Alerts in requests that failed and will be retried, by `sink` and `target`.
pub const ALERTS_SEND_FAILED: &str = "triage_alerts_send_failed_total";
/// Alerts given up on, by `sink`, `target` and `reason` (`queue_full`: the
/// oldest made room; `rejected`: the target refused them with a 4xx;
/// `shutdown`: still queued when the shutdown flush ended).
pub const ALERTS_DROPPED: &str = "triage_alerts_dropped_total";
/// Incident events alerting missed because it fell behind detection.
pub const ALERTS_EVENTS_MISSED: &str = "triage_alerts_missed_events_total";
/// Change events recorded, by `source` (`api`: posted by tools;
/// `telemetry`: inferred from versions, instances, flags, Kubernetes events).
pub const CHANGES_RECORDED: &str = "triage_changes_recorded_total";
/// Change events dropped because the change log was full.
pub const CHANGES_DROPPED: &str = "triage_changes_dropped_total";
/// Posted change events refused, by `reason` (`invalid`, `unauthorized`,
/// `too_large`).
pub const CHANGES_REFUSED: &str = "triage_changes_refused_total";
/// What change detection left out, by `reason` (`overflow`: a cap on
/// services, versions, instances, flags or variants was reached;
/// `deduplicated`: a repeated Kubernetes event; `merged_rollout`: a rollout
/// already told by its version change).
pub const CHANGES_DETECTOR_SKIPPED: &str = "triage_changes_detector_skipped_total";
/// Windows in which some series' traffic spiked. A spike is context kept
/// on the incident it accompanies, never a page of its own, so this counter
/// is where a surge without effects shows.
pub const DETECT_TRAFFIC_SPIKES: &str = "triage_detect_traffic_spikes_total";
/// Connections open, by `listener` (`otlp_grpc`, `otlp_http`, `admin`).
pub const LISTENER_CONNECTIONS: &str = "triage_listener_connections";
/// Each listener's `max_connections`, by `listener`.
pub const LISTENER_MAX_CONNECTIONS: &str = "triage_listener_max_connections";
/// Connections closed as soon as they were accepted, by `listener` and
/// `reason` (`connection_limit`: the listener's cap was reached).
pub const LISTENER_REFUSED: &str = "triage_listener_refused_connections_total";
/// Failed accepts, by `listener` and `kind` (`fd_limit`: out of file
/// descriptors; `no_memory`; `aborted`: the peer left first; `other`). The
/// listener keeps accepting.
pub const LISTENER_ACCEPT_ERRORS: &str = "triage_listener_accept_errors_total";
/// Connections or requests the server ended for being slow, by `listener`
/// and `kind` (`handshake`: no first request or HTTP/2 preface in time;
/// `header`: request headers too slow; `body`: request body too slow,
/// answered 408; `idle`: no request in flight for the idle timeout).
pub const LISTENER_TIMEOUTS: &str = "triage_listener_timeouts_total";
/// Request-body bytes held against each OTLP listener's budget
/// (`max_buffered_mib`), by `listener`.
pub const LISTENER_BUFFERED: &str = "triage_listener_buffered_bytes";
/// Each OTLP listener's budget for request-body bytes, by `listener`.
pub const LISTENER_BUFFER_LIMIT: &str = "triage_listener_buffer_limit_bytes";
/// Request-body frames that waited for room in the budget, by `listener`.
pub const LISTENER_BUFFER_WAITS: &str = "triage_listener_buffer_waits_total";
/// TLS handshakes that did not complete, by `listener` and `reason`
/// (`timeout`: not done within the handshake timeout; `error`: refused,
/// such as a client without a certificate under mTLS).
pub const TLS_HANDSHAKE_FAILURES: &str = "triage_tls_handshake_failures_total";
/// Reloads of a listener's changed TLS files, by `listener` and `result`
/// (`ok`; `error`: the files did not load and the old certificate stays).
pub const TLS_RELOADS: &str = "triage_tls_reloads_total";
/// Requests refused for their bearer token, by `listener` and `reason`
/// (`missing`, `invalid`).
pub const AUTH_REFUSED: &str = "triage_auth_refused_total";
/// Reloads of changed bearer token files, by `listener` and `result`
/// (`ok`; `error`: unusable, the previous token stays).
pub const AUTH_TOKEN_RELOADS: &str = "triage_auth_token_reloads_total";
/// Agent mode (`crate::agent`): items (data points, log records) sent to
/// the gateway, by `signal`.
pub const AGENT_SENT: &str = "triage_agent_sent_items_total";
/// Items given up after a permanent error or the retry time ran out.
pub const AGENT_SEND_FAILED: &str = "triage_agent_send_failed_items_total";
/// Items dropped because the send queue was full.
pub const AGENT_ENQUEUE_FAILED: &str = "triage_agent_enqueue_failed_items_total";
/// Requests waiting in the send queue, and its capacity.
pub const AGENT_QUEUE_SIZE: &str = "triage_agent_queue_size";
pub const AGENT_QUEUE_CAPACITY: &str = "triage_agent_queue_capacity";
/// Windows summarised for the gateway.
pub const AGENT_WINDOWS: &str = "triage_agent_windows_summarized_total";

/// Items per forwarded export request (one batch), by `exporter` and
/// `signal` (the Collector's `otelcol_exporter_queue_batch_send_size`);
/// recorded once per batch, before its first attempt. Its `_count` is the
/// number of export requests made of the requests received.
pub const BATCH_SEND_SIZE: &str = "triage_exporter_batch_send_size";
/// Bytes per forwarded export request (decompressed), by `exporter` and
/// `signal` (`otelcol_exporter_queue_batch_send_size_bytes`).
pub const BATCH_SEND_SIZE_BYTES: &str = "triage_exporter_batch_send_size_bytes";

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use, with every
/// metric described. Several servers in one process (tests) share it.
pub fn recorder() -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(INGEST_BATCH_DURATION.to_string()),
                    &[
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 1.0,
                    ],
                )
                .and_then(|builder| {
                    // Items and bytes per forwarded batch, as the Collector's
                    // `otelcol_exporter_queue_batch_send_size(_bytes)`.
                    builder.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(BATCH_SEND_SIZE.to_string()),
                        &[
                            10.0, 100.0, 500.0, 1_000.0, 2_000.0, 5_000.0, 8_192.0, 10_000.0,
                            20_000.0, 50_000.0,
                        ],
                    )
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(
                            BATCH_SEND_SIZE_BYTES.to_string(),
                        ),
                        &[
                            1_024.0,
                            16_384.0,
                            65_536.0,
                            262_144.0,
                            1_048_576.0,
                            2_097_152.0,
                            4_194_304.0,
                            8_388_608.0,
                        ],
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "another metrics recorder is installed; /metrics will be incomplete"
                );
            }
            describe();
            register_zero_counters();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(
        RECEIVER_ACCEPTED,
        "Items (spans, data points, log records) accepted."
    );
    describe_counter!(RECEIVER_REFUSED, "Items rejected in partial successes.");
    describe_counter!(RECEIVER_REFUSED_REQUESTS, "Whole export requests refused.");
    describe_histogram!(
        INGEST_BATCH_DURATION,
        Unit::Seconds,
        "Time to record one export request."
    );
    describe_gauge!(STORE_SERIES, "Series held in the store.");
    describe_counter!(
        TASK_RESTARTS,
        "Panics of a long-running task, each followed by a restart from its state."
    );
    describe_gauge!(STORE_SERVICES, "Services held in the store.");
    describe_counter!(
        STORE_OVERFLOW,
        "Samples folded into overflow series (cardinality caps)."
    );
    describe_counter!(STORE_LATE, "Samples older than their window ring.");
    describe_counter!(STORE_FUTURE, "Samples dated ahead of the clock.");
    describe_counter!(STORE_EXPIRED, "Series dropped after the idle TTL.");
    describe_gauge!(
        STORE_HISTOGRAM_BYTES,
        Unit::Bytes,
        "Bytes held by window histograms."
    );
    describe_gauge!(PAIRING_SIZE, "Spans waiting in the pairing buffer.");
    describe_gauge!(
        DETECT_STATE_BYTES,
        Unit::Bytes,
        "Bytes of detection state: per-series history, baselines, time-of-day profiles."
    );
    describe_gauge!(DETECT_SERIES, "Series with detection state.");
    describe_gauge!(
        SPAN_ANALYSIS_BYTES,
        Unit::Bytes,
        "Bytes held by the span analysis: trace buffer, drill-down sketches, call counts."
    );
    describe_gauge!(
        SPAN_ANALYSIS_BUFFERED,
        "Spans waiting in the span analysis's trace buffer for their parent."
    );
    describe_counter!(PAIRING_RESULTS, "Client/server span pairing results.");
    describe_gauge!(ALERTS_QUEUED, "Alerts waiting per alert target.");
    describe_gauge!(ALERTS_QUEUE_CAPACITY, "Queue capacity per alert target.");
    describe_counter!(ALERTS_SENT, "Alerts accepted by alert targets.");
    describe_counter!(
        ALERTS_SEND_FAILED,
        "Alerts in failed requests to alert targets (retried)."
    );
    describe_counter!(ALERTS_DROPPED, "Alerts given up on, by reason.");
    describe_counter!(
        ALERTS_EVENTS_MISSED,
        "Incident events alerting missed by falling behind."
    );
    describe_counter!(CHANGES_RECORDED, "Change events recorded, by source.");
    describe_counter!(CHANGES_DROPPED, "Change events dropped from a full log.");
    describe_counter!(CHANGES_REFUSED, "Posted change events refused, by reason.");
    describe_counter!(
        DETECT_TRAFFIC_SPIKES,
        "Windows in which a series' traffic spiked (context on incidents, never a page alone)."
    );
    describe_counter!(
        CHANGES_DETECTOR_SKIPPED,
        "Telemetry observations change detection left out, by reason."
    );
    describe_gauge!(LISTENER_CONNECTIONS, "Connections open, by listener.");
    describe_gauge!(
        LISTENER_MAX_CONNECTIONS,
        "Most connections each listener keeps open (max_connections)."
    );
    describe_counter!(
        LISTENER_REFUSED,
        "Connections closed as soon as accepted, by listener and reason."
    );
    describe_counter!(
        LISTENER_ACCEPT_ERRORS,
        "Failed accepts (fd_limit: out of file descriptors), by listener and kind."
    );
    describe_counter!(
        LISTENER_TIMEOUTS,
        "Connections or requests ended for being slow or idle, by listener and kind."
    );
    describe_gauge!(
        LISTENER_BUFFERED,
        Unit::Bytes,
        "Request-body bytes held against the listener's budget."
    );
    describe_gauge!(
        LISTENER_BUFFER_LIMIT,
        Unit::Bytes,
        "The listener's budget for request-body bytes (max_buffered_mib)."
    );
    describe_counter!(
        LISTENER_BUFFER_WAITS,
        "Request-body frames that waited for room in the listener's budget."
    );
    describe_counter!(
        TLS_HANDSHAKE_FAILURES,
        "TLS handshakes that did not complete, by listener and reason (timeout, error)."
    );
    describe_counter!(
        TLS_RELOADS,
        "Reloads of changed TLS files, by listener and result (error: old certificate kept)."
    );
    describe_counter!(
        AUTH_REFUSED,
        "Requests refused for their bearer token, by listener and reason (missing, invalid)."
    );
    describe_counter!(
        AUTH_TOKEN_RELOADS,
        "Reloads of changed bearer token files, by listener and result (error: old token kept)."
    );
    describe_counter!(
        AGENT_SENT,
        "Agent mode: items sent to the gateway, by signal."
    );
    describe_counter!(
        AGENT_SEND_FAILED,
        "Agent mode: items given up after a permanent error or retries, by signal."
    );
    describe_counter!(
        AGENT_ENQUEUE_FAILED,
        "Agent mode: items dropped because the send queue was full, by signal."
    );
    describe_gauge!(AGENT_QUEUE_SIZE, "Agent mode: requests waiting to be sent.");
    describe_gauge!(
        AGENT_QUEUE_CAPACITY,
        "Agent mode: the send queue's capacity."
    );
    describe_counter!(
        AGENT_WINDOWS,
        "Agent mode: windows summarised for the gateway."
    );
}

/// The OTLP transports and signals, as the receivers label them.
const TRANSPORTS: [&str; 2] = ["grpc", "http"];
const SIGNALS: [&str; 3] = ["traces", "metrics", "logs"];

/// Creates the counters named here at zero, so that a scrape right after
/// start shows them and an alert on their increase fires on the first one.
fn register_zero_counters() {
    for transport in TRANSPORTS {
        for signal in SIGNALS {
            counter!(RECEIVER_ACCEPTED, "transport" => transport, "signal" => signal).increment(0);
            counter!(RECEIVER_REFUSED, "transport" => transport, "signal" => signal, "reason" => "invalid")
                .increment(0);
        }
    }
    counter!(ALERTS_EVENTS_MISSED).increment(0);
    counter!(DETECT_TRAFFIC_SPIKES).increment(0);
}

/// `/metrics`: what the recorder holds, then the process's own figures and
/// the build info.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut text = handle.render();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    process::Sample::read().write(&mut text);
    process::write_build_info(&mut text);
    text
}

/// Counts one request's outcome for a transport.
pub fn record_outcome(transport: &'static str, signal: &'static str, accepted: u64, rejected: u64) {
    counter!(RECEIVER_ACCEPTED, "transport" => transport, "signal" => signal).increment(accepted);
    if rejected > 0 {
        counter!(RECEIVER_REFUSED, "transport" => transport, "signal" => signal, "reason" => "invalid")
            .increment(rejected);
    }
}

/// Counts a refused request.
pub fn record_refused_request(transport: &'static str, signal: &'static str, reason: &'static str) {
    counter!(RECEIVER_REFUSED_REQUESTS, "transport" => transport, "signal" => signal, "reason" => reason)
        .increment(1);
}

pub fn record_ingest_batch(signal: &'static str, elapsed: Duration) {
    histogram!(INGEST_BATCH_DURATION, "signal" => signal).record(elapsed.as_secs_f64());
}

/// Counts a refused `POST /api/v1/changes`.
pub fn record_change_refused(reason: &'static str) {
    counter!(CHANGES_REFUSED, "reason" => reason).increment(1);
}

/// Sets up `tracing` logs to stderr, as text or JSON, filtered by `level`
/// (an `EnvFilter` directive such as `info` or `triage=debug,info`).
///
/// Text is coloured only when stderr is a terminal and `NO_COLOR` is unset
/// or empty (<https://no-color.org>): a file, a pipe or a container's log
/// driver gets plain text, without escape codes.
pub fn init_logging(level: &str, format: LogFormat) -> Result<(), String> {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).map_err(|error| error.to_string())?;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && !no_color)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|error| error.to_string())
}
