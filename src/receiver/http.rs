//! The OTLP/HTTP receiver: `POST /v1/traces`, `/v1/metrics` and `/v1/logs`.
//!
//! Each request goes through the same steps, and the first that fails answers
//! it: content type (`application/x-protobuf` or `application/json`, else
//! 415), content encoding (`gzip` or `identity`, else 415), body read with a
//! cap, decompression with the same cap on its output (413), decoding (400),
//! then the [`Sink`]. A decoded request is answered 200 with the matching
//! `Export*ServiceResponse`, carrying a partial success when the sink rejected
//! items.
//!
//! Invariants:
//!
//! - No input makes this module panic or allocate more than about the
//!   configured body size (plus what decoding the accepted bytes needs): the
//!   raw body is read through a length limit, and gzip is inflated in chunks
//!   into a buffer that never grows past the limit, so a small gzip bomb is
//!   refused after inflating at most `max_request_body_size` bytes.
//! - Error bodies are a `google.rpc.Status`, encoded like the request (JSON for
//!   JSON requests, protobuf otherwise; 415 answers are always protobuf since
//!   the client's encoding is not one we speak).
//! - Self-metrics are updated once per request, never per item.
//!
//! OTLP/JSON goes through `serde_json::Value` first so that [`normalize_json`]
//! can smooth over what the `opentelemetry-proto` serde derive refuses, and so
//! that [`check_metric_data`] can report errors that the derive swallows; see
//! those functions for the details.

use std::io::{self, Read};
use std::sync::Arc;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use opentelemetry_proto::tonic::collector::{
    logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse},
    metrics::v1::{
        ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    },
    trace::v1::{ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse},
};
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, Gauge, Histogram, Sum, Summary,
};
use prost::Message;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Outcome, Signal, Sink};

/// Counter of OTLP/HTTP requests answered by the export handlers, labelled
/// `signal` and `status` (the HTTP status code). Unknown paths and wrong
/// methods are answered by the router before the handlers and are not counted.
pub const HTTP_REQUESTS_TOTAL: &str = "triage_http_requests_total";

/// Counter of refused requests, labelled `transport` (`http` here), `signal`
/// and `reason` (`decode`, `too_large`, `unsupported_media_type`,
/// `unsupported_encoding`).
pub const RECEIVER_REFUSED_REQUESTS_TOTAL: &str = "triage_receiver_refused_requests_total";

/// The usual OTLP/HTTP body limit: 20 MiB after decompression.
pub const DEFAULT_MAX_REQUEST_BODY_SIZE: usize = 20 * 1024 * 1024;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// `google.rpc.Code` values used in error bodies.
const CODE_INVALID_ARGUMENT: i32 = 3;
const CODE_RESOURCE_EXHAUSTED: i32 = 8;

/// Size of the steps in which gzip output is produced; the limit is checked
/// before each step is copied into the output buffer.
const INFLATE_CHUNK: usize = 32 * 1024;

/// Settings of the OTLP/HTTP receiver.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest accepted request body in bytes, after decompression. The
    /// compressed body is held to the same limit.
    pub max_request_body_size: usize,
}

/// The body of every OTLP/HTTP error answer: a `google.rpc.Status`.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    /// A `google.rpc.Code` value.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// What was wrong, for the developer reading the client's logs.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Always empty here; declared so that the message matches the real one.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<AnyMsg>,
}

/// `google.protobuf.Any`, declared here so that `prost-types` is not needed.
#[derive(Clone, PartialEq, Message)]
pub struct AnyMsg {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// The axum router serving `POST /v1/traces`, `/v1/metrics` and `/v1/logs`.
///
/// Other methods on those paths are answered 405 with `Allow: POST`, other
/// paths 404, both by axum.
pub fn router(sink: Arc<dyn Sink>, config: HttpConfig) -> Router {
    let receiver = Arc::new(Receiver { sink, config });
    Router::new()
        .route("/v1/traces", post(handle::<ExportTraceServiceRequest>))
        .route("/v1/metrics", post(handle::<ExportMetricsServiceRequest>))
        .route("/v1/logs", post(handle::<ExportLogsServiceRequest>))
        .with_state(receiver)
}

/// State shared by the handlers.
struct Receiver {
    /// Where decoded requests go.
    sink: Arc<dyn Sink>,
    config: HttpConfig,
}

/// The two OTLP/HTTP encodings; a response uses the request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

/// Why a request was refused. Each variant maps to one HTTP status and one
/// `reason` label.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("unsupported content type {0:?}; use {PROTOBUF} or {JSON}")]
    UnsupportedMediaType(String),
    #[error("unsupported content encoding {0:?}; use gzip or identity (no Content-Encoding)")]
    UnsupportedEncoding(String),
    #[error("request body is larger than {limit} bytes (after decompression)")]
    TooLarge { limit: usize },
    // A body that cannot be read is usually a client that went away; it is
    // counted with the undecodable requests since the data never arrived.
    #[error("cannot read request body: {0}")]
    Read(axum::BoxError),
    #[error("cannot decompress gzip body: {0}")]
    Gzip(io::Error),
    #[error("cannot decode {name} as protobuf: {detail}")]
    Protobuf { name: &'static str, detail: String },
    #[error("cannot decode {name} as JSON: {detail}")]
    Json { name: &'static str, detail: String },
}

/// What differs between the three export requests.
trait Export: Message + Default + DeserializeOwned + 'static {
    const SIGNAL: Signal;
    /// Message name used in error messages.
    const NAME: &'static str;
    /// lowerCamelCase name of the response's `rejected_<items>` field.
    const REJECTED_FIELD: &'static str;

    fn export(&self, sink: &dyn Sink) -> Outcome;

    /// Decodes a protobuf body and hands it to the sink. Traces override this
    /// to use the sink's zero-copy path.
    fn export_protobuf(body: &[u8], sink: &dyn Sink) -> Result<Outcome, String> {
        let request = Self::decode(body).map_err(|error| error.to_string())?;
        Ok(request.export(sink))
    }

    /// The protobuf response; `partial` is `(rejected, error_message)`.
    fn encode_response(partial: Option<(i64, String)>) -> Vec<u8>;

    /// Reports decoding errors that the serde derive hides; `json` is the
    /// normalized document the request was decoded from.
    fn check_json(&self, _json: &Value) -> Result<(), String> {
        Ok(())
    }
}

// === impl Receiver ===

impl Receiver {
    /// Reads, decompresses and decodes the body of a request whose content
    /// type has been checked.
    async fn read_request<R: Export>(
        &self,
        format: Format,
        request: Request,
    ) -> Result<Outcome, Refusal> {
        let limit = self.config.max_request_body_size;
        let gzip = content_gzip(request.headers())?;
        let body = read_body(request.into_body(), limit).await?;
        let body = if gzip && !body.is_empty() {
            Bytes::from(inflate(&body[..], limit)?)
        } else {
            body
        };
        let sink = self.sink.as_ref();
        match format {
            Format::Protobuf => {
                R::export_protobuf(&body, sink).map_err(|detail| Refusal::Protobuf {
                    name: R::NAME,
                    detail,
                })
            }
            Format::Json => decode_json::<R>(&body)
                .map(|request| request.export(sink))
                .map_err(|detail| Refusal::Json {
                    name: R::NAME,
                    detail,
                }),
        }
    }
}

/// The handler behind every route. Decoding and the sink run on the request's
/// task: the sink is cheap by contract, and a decode is bounded by the body
/// limit.
async fn handle<R: Export>(State(receiver): State<Arc<Receiver>>, request: Request) -> Response {
    let signal = R::SIGNAL;
    let result = match content_format(request.headers()) {
        Ok(format) => receiver
            .read_request::<R>(format, request)
            .await
            .map(|outcome| (format, outcome))
            .map_err(|refusal| (format, refusal)),
        Err(refusal) => Err((Format::Protobuf, refusal)),
    };
    let response = match result {
        Ok((format, outcome)) => {
            crate::telemetry::record_outcome("http", signal, outcome.accepted, outcome.rejected);
            success::<R>(format, outcome)
        }
        Err((format, refusal)) => {
            let status = refusal.status();
            tracing::debug!(
                signal = signal.as_str(),
                reason = refusal.reason(),
                status = status.as_u16(),
                error = %refusal,
                "refused OTLP/HTTP request"
            );
            metrics::counter!(
                RECEIVER_REFUSED_REQUESTS_TOTAL,
                "transport" => "http",
                "signal" => signal.as_str(),
                "reason" => refusal.reason()
            )
            .increment(1);
            refusal.into_response(format)
        }
    };
    metrics::counter!(
        HTTP_REQUESTS_TOTAL,
        "signal" => signal.as_str(),
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}

/// The 200 answer: an `Export*ServiceResponse` in the request's encoding, with
/// a partial success only when items were rejected.
fn success<R: Export>(format: Format, outcome: Outcome) -> Response {
    let partial = (outcome.rejected > 0).then(|| {
        let rejected = i64::try_from(outcome.rejected).unwrap_or(i64::MAX);
        (rejected, outcome.error_message)
    });
    let body = match format {
        Format::Protobuf => R::encode_response(partial),
        Format::Json => {
            // Built by hand: the derive writes `"partialSuccess":null` on full
            // success and the count as a number, where OTLP/JSON wants the
            // field left out and int64 as a decimal string.
            let mut response = serde_json::Map::new();
            if let Some((rejected, error_message)) = partial {
                let mut partial = serde_json::Map::new();
                partial.insert(R::REJECTED_FIELD.into(), rejected.to_string().into());
                if !error_message.is_empty() {
                    partial.insert("errorMessage".into(), error_message.into());
                }
                response.insert("partialSuccess".into(), partial.into());
            }
            Value::Object(response).to_string().into_bytes()
        }
    };
    with_body(StatusCode::OK, format, body)
}

fn with_body(status: StatusCode, format: Format, body: Vec<u8>) -> Response {
    let content_type = match format {
        Format::Protobuf => PROTOBUF,
        Format::Json => JSON,
    };
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        Body::from(body),
    )
        .into_response()
}

/// The request's encoding, from `Content-Type` without its parameters.
fn content_format(headers: &HeaderMap) -> Result<Format, Refusal> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .unwrap_or_default();
    let essence = value.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case(PROTOBUF) {
        Ok(Format::Protobuf)
    } else if essence.eq_ignore_ascii_case(JSON) {
        Ok(Format::Json)
    } else {
        Err(Refusal::UnsupportedMediaType(value))
    }
}

/// Whether the body is gzip-compressed; `identity` and no header mean plain.
fn content_gzip(headers: &HeaderMap) -> Result<bool, Refusal> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(false);
    };
    let value = String::from_utf8_lossy(value.as_bytes());
    let encoding = value.trim();
    if encoding.eq_ignore_ascii_case("gzip") {
        Ok(true)
    } else if encoding.is_empty() || encoding.eq_ignore_ascii_case("identity") {
        Ok(false)
    } else {
        Err(Refusal::UnsupportedEncoding(value.into_owned()))
    }
}

/// Reads the whole body, refusing it as soon as it grows past `limit`.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Refusal> {
    // A declared Content-Length over the limit is refused without reading.
    if usize::try_from(body.size_hint().lower()).map_or(true, |declared| declared > limit) {
        return Err(Refusal::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(Refusal::TooLarge { limit }),
        Err(error) => Err(Refusal::Read(error)),
    }
}

/// Inflates gzip (one or more members) from `compressed`, refusing it as soon
/// as the output would exceed `limit`; the output buffer never grows past
/// `limit` bytes, so a gzip bomb costs at most `limit` bytes of memory and
/// the time to inflate them.
fn inflate(compressed: impl Read, limit: usize) -> Result<Vec<u8>, Refusal> {
    let mut decoder = MultiGzDecoder::new(compressed);
    let mut output = Vec::new();
    let mut chunk = vec![0; INFLATE_CHUNK];
    loop {
        let n_read = match decoder.read(&mut chunk) {
            Ok(0) => return Ok(output),
            Ok(n_read) => n_read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(Refusal::Gzip(error)),
        };
        if n_read > limit - output.len() {
            return Err(Refusal::TooLarge { limit });
        }
        if output.capacity() - output.len() < n_read {
            // Grow geometrically like `Vec` would, but never past the limit.
            let wanted = (output.capacity() * 2)
                .max(output.len() + n_read)
                .min(limit);
            output.reserve_exact(wanted - output.len());
        }
        output.extend_from_slice(&chunk[..n_read]);
    }
}

/// Decodes OTLP/JSON; the error is a message naming where decoding failed.
fn decode_json<R: Export>(body: &[u8]) -> Result<R, String> {
    if body.is_empty() {
        return Ok(R::default());
    }
    let mut json: Value = serde_json::from_slice(body).map_err(|error| error.to_string())?;
    normalize_json(&mut json);
    let request: R = serde_path_to_error::deserialize(&json).map_err(|error| error.to_string())?;
    request.check_json(&json)?;
    Ok(request)
}

/// OTLP fields of 32-bit integer types (enums included). The derive reads
/// them with plain `i32`/`u32`, which refuse the string form that the
/// protobuf JSON mapping allows for every integer.
const INT32_FIELDS: &[&str] = &[
    "aggregationTemporality",
    "code",
    "droppedAttributesCount",
    "droppedEventsCount",
    "droppedLinksCount",
    "flags",
    "keyStrindex",
    "kind",
    "offset",
    "scale",
    "severityNumber",
];

/// OTLP fields of double type that the derive reads with a plain `f64`, which
/// refuses the string forms ("1.5", "NaN", "Infinity", "-Infinity") that the
/// protobuf JSON mapping allows. (`quantile` and `value` of `ValueAtQuantile`
/// already accept them.)
const DOUBLE_FIELDS: &[&str] = &[
    "asDouble",
    "doubleValue",
    "max",
    "min",
    "sum",
    "zeroThreshold",
];

/// Rewrites an OTLP/JSON document into what the `opentelemetry-proto` serde
/// derive accepts. Found by testing the derive (see the `derive_*` tests):
///
/// - `null` members are removed: the protobuf JSON mapping reads `null` as the
///   default value, the derive refuses it for strings, ids and lists.
/// - 32-bit integers and enums written as decimal strings become numbers.
/// - Doubles written as decimal strings become numbers; non-finite ones
///   ("NaN", "Infinity", "-Infinity") cannot be held in a `Value` and are
///   removed, so they read as absent (a point without a value, an unknown
///   histogram sum). Dropping them beats refusing the whole request.
///
/// Everything else already works in the derive: hex ids in either case,
/// 64-bit integers as strings or numbers, unknown fields. Object keys are
/// always OTLP field names (attribute keys are values), so matching on key
/// names cannot touch user data.
fn normalize_json(json: &mut Value) {
    match json {
        Value::Object(members) => members.retain(|key, member| {
            if let Value::String(text) = member {
                if INT32_FIELDS.contains(&key.as_str()) {
                    if let Ok(number) = text.parse::<i64>() {
                        *member = number.into();
                    }
                } else if DOUBLE_FIELDS.contains(&key.as_str()) {
                    match text.parse::<f64>() {
                        Ok(number) if number.is_finite() => *member = number.into(),
                        Ok(_) => return false,
                        Err(_) => {}
                    }
                }
            }
            normalize_json(member);
            !member.is_null()
        }),
        Value::Array(items) => items.iter_mut().for_each(normalize_json),
        _ => {}
    }
}

/// Data fields of `Metric`, the members of its `data` oneof.
const METRIC_DATA_FIELDS: &[&str] = &[
    "gauge",
    "sum",
    "histogram",
    "exponentialHistogram",
    "summary",
];

/// Reports metrics whose data failed to decode. The derive reads `Metric.data`
/// through `#[serde(flatten)]` on an `Option`, and serde turns any error
/// inside a flattened `Option` into `None`: a metric with one bad data point
/// would silently arrive without data and its points would be lost uncounted.
/// So a metric that decoded without data but has a data member in the JSON is
/// decoded again on its own to find the error. This costs nothing for
/// requests that decode well.
///
/// The same swallowing hides bad `asInt`/`asDouble` values inside a point; a
/// point without a value is left to the sink, which must already handle it
/// (protobuf can express it too).
fn check_metric_data(request: &ExportMetricsServiceRequest, json: &Value) -> Result<(), String> {
    fn error_of<T: DeserializeOwned>(data: &Value) -> Option<String> {
        serde_path_to_error::deserialize::<_, T>(data)
            .err()
            .map(|error| error.to_string())
    }
    for (i, resource) in request.resource_metrics.iter().enumerate() {
        for (j, scope) in resource.scope_metrics.iter().enumerate() {
            for (k, metric) in scope.metrics.iter().enumerate() {
                if metric.data.is_some() {
                    continue;
                }
                // Indexing a `&Value` never panics; a missing member is `Null`.
                let metric_json = &json["resourceMetrics"][i]["scopeMetrics"][j]["metrics"][k];
                for &field in METRIC_DATA_FIELDS {
                    let Some(data) = metric_json.get(field) else {
                        continue;
                    };
                    let error = match field {
                        "gauge" => error_of::<Gauge>(data),
                        "sum" => error_of::<Sum>(data),
                        "histogram" => error_of::<Histogram>(data),
                        "exponentialHistogram" => error_of::<ExponentialHistogram>(data),
                        _ => error_of::<Summary>(data),
                    };
                    let error = error.unwrap_or_else(|| "cannot be decoded".to_owned());
                    return Err(format!(
                        "resourceMetrics[{i}].scopeMetrics[{j}].metrics[{k}].{field}: {error}"
                    ));
                }
            }
        }
    }
    Ok(())
}

// === impl HttpConfig ===

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_request_body_size: DEFAULT_MAX_REQUEST_BODY_SIZE,
        }
    }
}

// === impl Refusal ===

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::UnsupportedMediaType(_) | Refusal::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Refusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Read(_)
            | Refusal::Gzip(_)
            | Refusal::Protobuf { .. }
            | Refusal::Json { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// The `reason` label of the refused-requests counter.
    fn reason(&self) -> &'static str {
        match self {
            Refusal::UnsupportedMediaType(_) => "unsupported_media_type",
            Refusal::UnsupportedEncoding(_) => "unsupported_encoding",
            Refusal::TooLarge { .. } => "too_large",
            Refusal::Read(_)
            | Refusal::Gzip(_)
            | Refusal::Protobuf { .. }
            | Refusal::Json { .. } => "decode",
        }
    }

    /// The `google.rpc.Code` of the error body. Over the limit is
    /// RESOURCE_EXHAUSTED as on gRPC (and, without RetryInfo, not retryable);
    /// everything else is the client's argument being invalid.
    fn rpc_code(&self) -> i32 {
        match self {
            Refusal::TooLarge { .. } => CODE_RESOURCE_EXHAUSTED,
            _ => CODE_INVALID_ARGUMENT,
        }
    }

    /// The error answer. 415 is always protobuf: the client's content type
    /// (or encoding) is not one it can expect us to answer in.
    fn into_response(self, format: Format) -> Response {
        let status = self.status();
        let format = if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            Format::Protobuf
        } else {
            format
        };
        let rpc_status = RpcStatus {
            code: self.rpc_code(),
            message: self.to_string(),
            details: Vec::new(),
        };
        let body = match format {
            Format::Protobuf => rpc_status.encode_to_vec(),
            Format::Json => serde_json::json!({
                "code": rpc_status.code,
                "message": rpc_status.message,
            })
            .to_string()
            .into_bytes(),
        };
        with_body(status, format, body)
    }
}

// === impl Export ===

impl Export for ExportTraceServiceRequest {
    const SIGNAL: Signal = Signal::Traces;
    const NAME: &'static str = "ExportTraceServiceRequest";
    const REJECTED_FIELD: &'static str = "rejectedSpans";

    fn export(&self, sink: &dyn Sink) -> Outcome {
        sink.traces(self)
    }

    fn export_protobuf(body: &[u8], sink: &dyn Sink) -> Result<Outcome, String> {
        sink.traces_protobuf(body)
            .map_err(|error| error.to_string())
    }

    fn encode_response(partial: Option<(i64, String)>) -> Vec<u8> {
        ExportTraceServiceResponse {
            partial_success: partial.map(|(rejected_spans, error_message)| {
                ExportTracePartialSuccess {
                    rejected_spans,
                    error_message,
                }
            }),
        }
        .encode_to_vec()
    }
}

impl Export for ExportMetricsServiceRequest {
    const SIGNAL: Signal = Signal::Metrics;
    const NAME: &'static str = "ExportMetricsServiceRequest";
    const REJECTED_FIELD: &'static str = "rejectedDataPoints";

    fn export(&self, sink: &dyn Sink) -> Outcome {
        sink.metrics(self)
    }

    fn encode_response(partial: Option<(i64, String)>) -> Vec<u8> {
        ExportMetricsServiceResponse {
            partial_success: partial.map(|(rejected_data_points, error_message)| {
                ExportMetricsPartialSuccess {
                    rejected_data_points,
                    error_message,
                }
            }),
        }
        .encode_to_vec()
    }

    fn check_json(&self, json: &Value) -> Result<(), String> {
        check_metric_data(self, json)
    }
}

impl Export for ExportLogsServiceRequest {
    const SIGNAL: Signal = Signal::Logs;
    const NAME: &'static str = "ExportLogsServiceRequest";
    const REJECTED_FIELD: &'static str = "rejectedLogRecords";

    fn export(&self, sink: &dyn Sink) -> Outcome {
        sink.logs(self)
    }

    fn encode_response(partial: Option<(i64, String)>) -> Vec<u8> {
        ExportLogsServiceResponse {
            partial_success: partial.map(|(rejected_log_records, error_message)| {
                ExportLogsPartialSuccess {
                    rejected_log_records,
                    error_message,
                }
            }),
        }
        .encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use axum::http::Method;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        metric, number_data_point, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span};
    use tower::ServiceExt;

    use super::*;

    /// A sink that records every request and rejects `reject` items of each.
    #[derive(Default)]
    struct RecordingSink {
        traces: Mutex<Vec<ExportTraceServiceRequest>>,
        metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
        logs: Mutex<Vec<ExportLogsServiceRequest>>,
        reject: u64,
    }

    impl RecordingSink {
        fn rejecting(reject: u64) -> Arc<Self> {
            Arc::new(RecordingSink {
                reject,
                ..RecordingSink::default()
            })
        }

        fn outcome(&self) -> Outcome {
            Outcome {
                accepted: 1,
                rejected: self.reject,
                error_message: if self.reject > 0 {
                    "invalid trace id".to_owned()
                } else {
                    String::new()
                },
            }
        }

        fn n_requests(&self) -> usize {
            self.traces.lock().unwrap().len()
                + self.metrics.lock().unwrap().len()
                + self.logs.lock().unwrap().len()
        }

        fn only_traces(&self) -> ExportTraceServiceRequest {
            let traces = self.traces.lock().unwrap();
            assert_eq!(traces.len(), 1, "expected exactly one traces request");
            traces[0].clone()
        }

        fn only_metrics(&self) -> ExportMetricsServiceRequest {
            let metrics = self.metrics.lock().unwrap();
            assert_eq!(metrics.len(), 1, "expected exactly one metrics request");
            metrics[0].clone()
        }

        fn only_logs(&self) -> ExportLogsServiceRequest {
            let logs = self.logs.lock().unwrap();
            assert_eq!(logs.len(), 1, "expected exactly one logs request");
            logs[0].clone()
        }
    }

    impl Sink for RecordingSink {
        fn traces(&self, request: &ExportTraceServiceRequest) -> Outcome {
            self.traces.lock().unwrap().push(request.clone());
            self.outcome()
        }

        fn metrics(&self, request: &ExportMetricsServiceRequest) -> Outcome {
            self.metrics.lock().unwrap().push(request.clone());
            self.outcome()
        }

        fn logs(&self, request: &ExportLogsServiceRequest) -> Outcome {
            self.logs.lock().unwrap().push(request.clone());
            self.outcome()
        }
    }

    struct Reply {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    }

    impl Reply {
        fn content_type(&self) -> &str {
            self.headers
                .get(header::CONTENT_TYPE)
                .map_or("", |value| value.to_str().unwrap())
        }

        fn rpc_status(&self) -> RpcStatus {
            assert_eq!(self.content_type(), PROTOBUF);
            RpcStatus::decode(self.body.clone()).expect("error body is a google.rpc.Status")
        }

        fn json(&self) -> Value {
            assert_eq!(self.content_type(), JSON);
            serde_json::from_slice(&self.body).expect("body is JSON")
        }
    }

    fn post(path: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Request {
        let mut builder = Request::builder().method(Method::POST).uri(path);
        for &(name, value) in headers {
            builder = builder.header(name, value);
        }
        builder.body(body.into()).unwrap()
    }

    fn post_protobuf(path: &str, body: impl Into<Body>) -> Request {
        post(path, &[("content-type", PROTOBUF)], body)
    }

    fn post_json(path: &str, body: &str) -> Request {
        post(path, &[("content-type", JSON)], body.to_owned())
    }

    async fn call_with(sink: &Arc<RecordingSink>, config: HttpConfig, request: Request) -> Reply {
        let sink: Arc<dyn Sink> = sink.clone();
        let response = router(sink, config).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn call(sink: &Arc<RecordingSink>, request: Request) -> Reply {
        call_with(sink, HttpConfig::default(), request).await
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn string_attribute(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_owned())),
            }),
            ..KeyValue::default()
        }
    }

    fn resource() -> Option<Resource> {
        Some(Resource {
            attributes: vec![string_attribute("service.name", "checkout")],
            ..Resource::default()
        })
    }

    fn traces_request() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource(),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![0x5b; 16],
                        span_id: vec![0xee; 8],
                        name: "GET /cart".to_owned(),
                        kind: span::SpanKind::Server as i32,
                        start_time_unix_nano: 1_544_712_660_000_000_000,
                        end_time_unix_nano: 1_544_712_661_000_000_000,
                        ..Span::default()
                    }],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    fn metrics_request() -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource(),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "db.client.connection.count".to_owned(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                time_unix_nano: 1_544_712_660_000_000_000,
                                value: Some(number_data_point::Value::AsInt(42)),
                                ..NumberDataPoint::default()
                            }],
                        })),
                        ..Metric::default()
                    }],
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        }
    }

    fn logs_request() -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource(),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        time_unix_nano: 1_544_712_660_300_000_000,
                        severity_number: 17,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("boom".to_owned())),
                        }),
                        ..LogRecord::default()
                    }],
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        }
    }

    /// A one-span traces request; `span` is the body of the span object.
    fn json_span(span: &str) -> String {
        format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{{span}}}]}}]}}]}}"#)
    }

    /// A one-metric metrics request; `metric` is the body of the metric object.
    fn json_metric(metric: &str) -> String {
        format!(r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{{metric}}}]}}]}}]}}"#)
    }

    /// A one-record logs request; `record` is the body of the record object.
    fn json_log(record: &str) -> String {
        format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{{record}}}]}}]}}]}}"#)
    }

    fn only_span(request: &ExportTraceServiceRequest) -> &Span {
        &request.resource_spans[0].scope_spans[0].spans[0]
    }

    fn only_metric(request: &ExportMetricsServiceRequest) -> &Metric {
        &request.resource_metrics[0].scope_metrics[0].metrics[0]
    }

    fn only_record(request: &ExportLogsServiceRequest) -> &LogRecord {
        &request.resource_logs[0].scope_logs[0].log_records[0]
    }

    const TRACE_ID_HEX: &str = "5B8EFFF798038103D269B633813FC60C";
    const TRACE_ID: [u8; 16] = [
        0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6,
        0x0c,
    ];
    const SPAN_ID: [u8; 8] = [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74];

    // --- protobuf ---

    #[tokio::test]
    async fn protobuf_traces_round_trip() {
        let sink = RecordingSink::rejecting(0);
        let request = traces_request();
        let reply = call(&sink, post_protobuf("/v1/traces", request.encode_to_vec())).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.content_type(), PROTOBUF);
        let response = ExportTraceServiceResponse::decode(reply.body).unwrap();
        assert_eq!(response.partial_success, None);
        assert_eq!(sink.only_traces(), request);
    }

    #[tokio::test]
    async fn protobuf_metrics_round_trip() {
        let sink = RecordingSink::rejecting(0);
        let request = metrics_request();
        let reply = call(&sink, post_protobuf("/v1/metrics", request.encode_to_vec())).await;
        assert_eq!(reply.status, StatusCode::OK);
        let response = ExportMetricsServiceResponse::decode(reply.body).unwrap();
        assert_eq!(response.partial_success, None);
        assert_eq!(sink.only_metrics(), request);
    }

    #[tokio::test]
    async fn protobuf_logs_round_trip() {
        let sink = RecordingSink::rejecting(0);
        let request = logs_request();
        let reply = call(&sink, post_protobuf("/v1/logs", request.encode_to_vec())).await;
        assert_eq!(reply.status, StatusCode::OK);
        let response = ExportLogsServiceResponse::decode(reply.body).unwrap();
        assert_eq!(response.partial_success, None);
        assert_eq!(sink.only_logs(), request);
    }

    #[tokio::test]
    async fn malformed_protobuf_is_refused_with_a_status() {
        let sink = RecordingSink::rejecting(0);
        let reply = call(&sink, post_protobuf("/v1/traces", vec![0x0a, 0xff, 0x01])).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        let status = reply.rpc_status();
        assert_eq!(status.code, CODE_INVALID_ARGUMENT);
        assert!(
            status
                .message
                .starts_with("cannot decode ExportTraceServiceRequest as protobuf: "),
            "{}",
            status.message
        );
        assert_eq!(sink.n_requests(), 0);
    }

    #[tokio::test]
    async fn empty_body_is_an_empty_request() {
        let sink = RecordingSink::rejecting(0);
        let reply = call(&sink, post_protobuf("/v1/metrics", Vec::new())).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(sink.only_metrics(), ExportMetricsServiceRequest::default());

        let sink = RecordingSink::rejecting(0);
        let reply = call(&sink, post_json("/v1/logs", "")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json(), serde_json::json!({}));
        assert_eq!(sink.only_logs(), ExportLogsServiceRequest::default());

        let sink = RecordingSink::rejecting(0);
        let request = post(
            "/v1/traces",
            &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
            Vec::new(),
        );
        assert_eq!(call(&sink, request).await.status, StatusCode::OK);
        assert_eq!(sink.only_traces(), ExportTraceServiceRequest::default());
    }

    // --- partial success ---

    #[tokio::test]
    async fn partial_success_in_protobuf() {
        let sink = RecordingSink::rejecting(2);
        let reply = call(
            &sink,
            post_protobuf("/v1/traces", traces_request().encode_to_vec()),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let response = ExportTraceServiceResponse::decode(reply.body).unwrap();
        assert_eq!(
            response.partial_success,
            Some(ExportTracePartialSuccess {
                rejected_spans: 2,
                error_message: "invalid trace id".to_owned(),
            })
        );

        let reply = call(
            &sink,
            post_protobuf("/v1/metrics", metrics_request().encode_to_vec()),
        )
        .await;
        let response = ExportMetricsServiceResponse::decode(reply.body).unwrap();
        assert_eq!(response.partial_success.unwrap().rejected_data_points, 2);

        let reply = call(
            &sink,
            post_protobuf("/v1/logs", logs_request().encode_to_vec()),
        )
        .await;
        let response = ExportLogsServiceResponse::decode(reply.body).unwrap();
        assert_eq!(response.partial_success.unwrap().rejected_log_records, 2);
    }

    #[tokio::test]
    async fn partial_success_in_json() {
        let sink = RecordingSink::rejecting(2);
        let reply = call(&sink, post_json("/v1/traces", "{}")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.json(),
            serde_json::json!({
                "partialSuccess": {"rejectedSpans": "2", "errorMessage": "invalid trace id"}
            })
        );
        let reply = call(&sink, post_json("/v1/metrics", "{}")).await;
        assert_eq!(reply.json()["partialSuccess"]["rejectedDataPoints"], "2");
        let reply = call(&sink, post_json("/v1/logs", "{}")).await;
        assert_eq!(reply.json()["partialSuccess"]["rejectedLogRecords"], "2");
    }

    #[tokio::test]
    async fn full_success_in_json_is_an_empty_object() {
        let sink = RecordingSink::rejecting(0);
        let reply = call(&sink, post_json("/v1/traces", &json_span(r#""name":"a""#))).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.content_type(), JSON);
        assert_eq!(&reply.body[..], b"{}");
    }

    // --- OTLP/JSON ---

    #[tokio::test]
    async fn json_traces_with_upper_case_hex_and_int64_numbers() {
        let sink = RecordingSink::rejecting(0);
        let body = json_span(&format!(
            r#""traceId":"{TRACE_ID_HEX}","spanId":"EEE19B7EC3C1B174","parentSpanId":"EEE19b7ec3c1b173",
               "name":"GET /cart","kind":2,
               "startTimeUnixNano":1544712660000000000,"endTimeUnixNano":1544712661000000000,
               "attributes":[{{"key":"http.response.status_code","value":{{"intValue":503}}}}],
               "status":{{"code":2,"message":"upstream failed"}}"#
        ));
        let reply = call(&sink, post_json("/v1/traces", &body)).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let request = sink.only_traces();
        let span = only_span(&request);
        assert_eq!(span.trace_id, TRACE_ID);
        assert_eq!(span.span_id, SPAN_ID);
        assert_eq!(
            span.parent_span_id,
            [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x73]
        );
        assert_eq!(span.kind, span::SpanKind::Server as i32);
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(
            span.attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(503))
        );
        let status = span.status.as_ref().unwrap();
        assert_eq!(status.code, 2);
        assert_eq!(status.message, "upstream failed");
    }

    #[tokio::test]
    async fn json_traces_with_lower_case_hex_and_int64_strings() {
        let sink = RecordingSink::rejecting(0);
        let body = json_span(&format!(
            r#""traceId":"{}","spanId":"eee19b7ec3c1b174",
               "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
               "attributes":[{{"key":"n","value":{{"intValue":"-7"}}}}],
               "events":[{{"timeUnixNano":"1544712660500000000","name":"exception"}}]"#,
            TRACE_ID_HEX.to_lowercase()
        ));
        let reply = call(&sink, post_json("/v1/traces", &body)).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let request = sink.only_traces();
        let span = only_span(&request);
        assert_eq!(span.trace_id, TRACE_ID);
        assert_eq!(span.span_id, SPAN_ID);
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(span.events[0].time_unix_nano, 1_544_712_660_500_000_000);
        assert_eq!(
            span.attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(-7))
        );
    }

    #[tokio::test]
    async fn json_unknown_fields_are_ignored_at_every_level() {
        let sink = RecordingSink::rejecting(0);
        let body = r#"{
            "future": 1,
            "resourceSpans": [{
                "future": {"nested": [1, 2]},
                "resource": {"future": "x", "attributes": [
                    {"key": "service.name", "future": true,
                     "value": {"future": {"a": [null]}, "stringValue": "checkout"}}
                ]},
                "scopeSpans": [{
                    "future": [],
                    "scope": {"name": "lib", "future": 2.5},
                    "spans": [{
                        "traceId": "5b8efff798038103d269b633813fc60c",
                        "spanId": "eee19b7ec3c1b174",
                        "future": {"deep": {"deeper": []}},
                        "name": "n",
                        "status": {"code": 1, "future": 0},
                        "events": [{"name": "e", "future": 1}],
                        "links": [{"traceId": "5b8efff798038103d269b633813fc60c", "future": 1}]
                    }]
                }]
            }]
        }"#;
        let reply = call(&sink, post_json("/v1/traces", body)).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let request = sink.only_traces();
        let resource = request.resource_spans[0].resource.as_ref().unwrap();
        assert_eq!(
            resource.attributes,
            [string_attribute("service.name", "checkout")]
        );
        let span = only_span(&request);
        assert_eq!(span.name, "n");
        assert_eq!(span.events[0].name, "e");
        assert_eq!(span.links[0].trace_id, TRACE_ID);
    }

    #[tokio::test]
    async fn json_missing_optional_fields_and_nulls_read_as_defaults() {
        let sink = RecordingSink::rejecting(0);
        let body = r#"{"resourceSpans":[
            {"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c"}]}]},
            {"resource":null,"scopeSpans":[{"scope":null,"spans":[
                {"traceId":null,"spanId":null,"name":null,"attributes":null,"status":null,
                 "startTimeUnixNano":null,"kind":null}
            ]}]},
            {"scopeSpans":null}
        ]}"#;
        let reply = call(&sink, post_json("/v1/traces", body)).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let request = sink.only_traces();
        assert_eq!(request.resource_spans.len(), 3);
        assert_eq!(only_span(&request).trace_id, TRACE_ID);
        assert_eq!(only_span(&request).span_id, Vec::<u8>::new());
        let second = &request.resource_spans[1];
        assert_eq!(second.resource, None);
        assert_eq!(second.scope_spans[0].spans[0], Span::default());
        assert!(request.resource_spans[2].scope_spans.is_empty());
    }

    #[tokio::test]
    async fn json_enums_as_integers() {
        let sink = RecordingSink::rejecting(0);
        let body = json_span(r#""kind":3,"status":{"code":2}"#);
        assert_eq!(
            call(&sink, post_json("/v1/traces", &body)).await.status,
            StatusCode::OK
        );
        let request = sink.only_traces();
        assert_eq!(only_span(&request).kind, span::SpanKind::Client as i32);
        assert_eq!(only_span(&request).status.as_ref().unwrap().code, 2);

        let body = json_log(r#""severityNumber":17,"body":{"stringValue":"x"}"#);
        assert_eq!(
            call(&sink, post_json("/v1/logs", &body)).await.status,
            StatusCode::OK
        );
        assert_eq!(only_record(&sink.only_logs()).severity_number, 17);

        let body = json_metric(
            r#""name":"calls","sum":{"aggregationTemporality":2,"isMonotonic":true,
                "dataPoints":[{"asInt":"5","timeUnixNano":"10"}]}"#,
        );
        assert_eq!(
            call(&sink, post_json("/v1/metrics", &body)).await.status,
            StatusCode::OK
        );
        let request = sink.only_metrics();
        let Some(metric::Data::Sum(sum)) = &only_metric(&request).data else {
            panic!("expected a sum");
        };
        assert_eq!(sum.aggregation_temporality, 2);
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.data_points[0].value,
            Some(number_data_point::Value::AsInt(5))
        );
    }

    #[tokio::test]
    async fn json_32_bit_integers_as_strings() {
        // The protobuf JSON mapping allows every integer as a string; the
        // derive only does so for 64-bit ones.
        let sink = RecordingSink::rejecting(0);
        let body = json_span(
            r#""kind":"2","flags":"257","droppedAttributesCount":"3","status":{"code":"2"}"#,
        );
        let reply = call(&sink, post_json("/v1/traces", &body)).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let request = sink.only_traces();
        let span = only_span(&request);
        assert_eq!(
            (span.kind, span.flags, span.dropped_attributes_count),
            (2, 257, 3)
        );
        assert_eq!(span.status.as_ref().unwrap().code, 2);
    }

    #[tokio::test]
    async fn json_metrics_with_numbers_and_strings() {
        let sink = RecordingSink::rejecting(0);
        let body = json_metric(
            r#""name":"http.server.request.duration","unit":"s",
               "histogram":{"aggregationTemporality":"2","dataPoints":[{
                   "startTimeUnixNano":1,"timeUnixNano":"2","count":3,"sum":"1.5",
                   "bucketCounts":["1",2],"explicitBounds":[0.5],"min":0.1,"max":"NaN",
                   "exemplars":[{"traceId":"5B8EFFF798038103D269B633813FC60C","asDouble":"0.7"}]
               }]}"#,
        );
        let reply = call(&sink, post_json("/v1/metrics", &body)).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let request = sink.only_metrics();
        let Some(metric::Data::Histogram(histogram)) = &only_metric(&request).data else {
            panic!("expected a histogram");
        };
        assert_eq!(histogram.aggregation_temporality, 2);
        let point = &histogram.data_points[0];
        assert_eq!((point.start_time_unix_nano, point.time_unix_nano), (1, 2));
        assert_eq!(point.count, 3);
        assert_eq!(point.sum, Some(1.5));
        assert_eq!(point.bucket_counts, [1, 2]);
        assert_eq!(point.min, Some(0.1));
        // Non-finite doubles cannot be held in a `serde_json::Value`; they
        // read as absent.
        assert_eq!(point.max, None);
        assert_eq!(point.exemplars[0].trace_id, TRACE_ID);
        assert_eq!(
            point.exemplars[0].value,
            Some(opentelemetry_proto::tonic::metrics::v1::exemplar::Value::AsDouble(0.7))
        );
    }

    #[tokio::test]
    async fn json_logs() {
        let sink = RecordingSink::rejecting(0);
        let body = json_log(&format!(
            r#""timeUnixNano":1544712660300000000,"observedTimeUnixNano":"1544712660300000001",
               "severityNumber":10,"severityText":"Information",
               "traceId":"{TRACE_ID_HEX}","spanId":"eee19b7ec3c1b174",
               "body":{{"kvlistValue":{{"values":[{{"key":"a","value":{{"doubleValue":"2.5"}}}}]}}}}"#
        ));
        let reply = call(&sink, post_json("/v1/logs", &body)).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let request = sink.only_logs();
        let record = only_record(&request);
        assert_eq!(record.time_unix_nano, 1_544_712_660_300_000_000);
        assert_eq!(record.observed_time_unix_nano, 1_544_712_660_300_000_001);
        assert_eq!(record.severity_number, 10);
        assert_eq!(
            (&record.trace_id[..], &record.span_id[..]),
            (&TRACE_ID[..], &SPAN_ID[..])
        );
        let Some(any_value::Value::KvlistValue(map)) = &record.body.as_ref().unwrap().value else {
            panic!("expected a kvlist body");
        };
        assert_eq!(
            map.values[0].value.as_ref().unwrap().value,
            Some(any_value::Value::DoubleValue(2.5))
        );
    }

    #[tokio::test]
    async fn json_ids_of_wrong_length_or_zero_pass_through() {
        // Invalid ids are the sink's to count; they are not an HTTP error.
        let sink = RecordingSink::rejecting(0);
        let body = json_span(r#""traceId":"00000000000000000000000000000000","spanId":"abcd""#);
        let reply = call(&sink, post_json("/v1/traces", &body)).await;
        assert_eq!(reply.status, StatusCode::OK);
        let request = sink.only_traces();
        assert_eq!(only_span(&request).trace_id, [0; 16]);
        assert_eq!(only_span(&request).span_id, [0xab, 0xcd]);
    }

    #[tokio::test]
    async fn json_ids_that_are_not_hex_are_refused() {
        for span in [
            r#""traceId":"zz8efff798038103d269b633813fc60c""#,
            r#""spanId":"eee19b7ec3c1b17""#,
            r#""traceId":5"#,
        ] {
            let sink = RecordingSink::rejecting(0);
            let reply = call(&sink, post_json("/v1/traces", &json_span(span))).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{span}");
            let status = reply.json();
            assert_eq!(status["code"], CODE_INVALID_ARGUMENT, "{span}");
            let message = status["message"].as_str().unwrap();
            assert!(
                message.starts_with(
                    "cannot decode ExportTraceServiceRequest as JSON: \
                     resourceSpans[0].scopeSpans[0].spans[0]."
                ),
                "{message}"
            );
            assert_eq!(sink.n_requests(), 0);
        }
    }

    #[tokio::test]
    async fn malformed_json_is_refused_with_a_json_status() {
        let sink = RecordingSink::rejecting(0);
        let reply = call(&sink, post_json("/v1/traces", r#"{"resourceSpans":[{"#)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        let status = reply.json();
        assert_eq!(status["code"], CODE_INVALID_ARGUMENT);
        let message = status["message"].as_str().unwrap();
        assert!(
            message.starts_with("cannot decode ExportTraceServiceRequest as JSON: ")
                && message.contains("line 1 column"),
            "{message}"
        );
        assert_eq!(status.as_object().unwrap().len(), 2, "no details: {status}");

        let reply = call(&sink, post_json("/v1/logs", "[1, 2]")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(sink.n_requests(), 0);
    }

    #[tokio::test]
    async fn json_metric_with_bad_data_is_refused_not_emptied() {
        // The derive would decode this metric without its data, silently.
        let sink = RecordingSink::rejecting(0);
        let body =
            json_metric(r#""name":"m","gauge":{"dataPoints":[{"asInt":1,"timeUnixNano":1.5}]}"#);
        let reply = call(&sink, post_json("/v1/metrics", &body)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        let message = reply.json()["message"].as_str().unwrap().to_owned();
        assert!(
            message.starts_with(
                "cannot decode ExportMetricsServiceRequest as JSON: \
                 resourceMetrics[0].scopeMetrics[0].metrics[0].gauge: \
                 dataPoints[0].timeUnixNano: "
            ),
            "{message}"
        );
        assert_eq!(sink.n_requests(), 0);
    }

    #[tokio::test]
    async fn json_metric_without_data_is_accepted() {
        let sink = RecordingSink::rejecting(0);
        let reply = call(
            &sink,
            post_json("/v1/metrics", &json_metric(r#""name":"m""#)),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(only_metric(&sink.only_metrics()).data, None);
    }

    /// What the `opentelemetry-proto` derive does on its own, so that an
    /// upgrade that changes it shows up here and the workarounds can go.
    #[test]
    fn derive_refuses_nulls_and_32_bit_strings_and_swallows_metric_data_errors() {
        let refused = [
            json_span(r#""name":null"#),
            json_span(r#""traceId":null"#),
            json_span(r#""kind":"2""#),
            json_span(r#""droppedAttributesCount":"3""#),
        ];
        for body in refused {
            assert!(
                serde_json::from_str::<ExportTraceServiceRequest>(&body).is_err(),
                "{body}"
            );
        }
        let emptied = json_metric(r#""name":"m","sum":{"aggregationTemporality":"2"}"#);
        let request: ExportMetricsServiceRequest = serde_json::from_str(&emptied).unwrap();
        assert_eq!(only_metric(&request).data, None);
        let upper_case = json_span(&format!(r#""traceId":"{TRACE_ID_HEX}""#));
        let request: ExportTraceServiceRequest = serde_json::from_str(&upper_case).unwrap();
        assert_eq!(only_span(&request).trace_id, TRACE_ID);
    }

    // --- compression and size limits ---

    #[tokio::test]
    async fn gzip_protobuf() {
        let sink = RecordingSink::rejecting(0);
        let request = traces_request();
        let body = gzip(&request.encode_to_vec());
        let http_request = post(
            "/v1/traces",
            &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
            body,
        );
        assert_eq!(call(&sink, http_request).await.status, StatusCode::OK);
        assert_eq!(sink.only_traces(), request);
    }

    #[tokio::test]
    async fn gzip_json() {
        let sink = RecordingSink::rejecting(0);
        let body = gzip(json_log(r#""severityNumber":9"#).as_bytes());
        let http_request = post(
            "/v1/logs",
            &[
                ("content-type", "Application/JSON; charset=utf-8"),
                ("content-encoding", "GZIP"),
            ],
            body,
        );
        let reply = call(&sink, http_request).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.content_type(), JSON);
        assert_eq!(only_record(&sink.only_logs()).severity_number, 9);
    }

    #[tokio::test]
    async fn identity_encoding_is_plain() {
        let sink = RecordingSink::rejecting(0);
        let http_request = post(
            "/v1/traces",
            &[("content-type", PROTOBUF), ("content-encoding", "identity")],
            traces_request().encode_to_vec(),
        );
        assert_eq!(call(&sink, http_request).await.status, StatusCode::OK);
        assert_eq!(sink.only_traces(), traces_request());
    }

    #[tokio::test]
    async fn corrupt_gzip_is_refused() {
        let sink = RecordingSink::rejecting(0);
        let mut body = gzip(&traces_request().encode_to_vec());
        let middle = body.len() / 2;
        body[middle..].iter_mut().for_each(|byte| *byte ^= 0x55);
        let http_request = post(
            "/v1/traces",
            &[("content-type", JSON), ("content-encoding", "gzip")],
            body,
        );
        let reply = call(&sink, http_request).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        let message = reply.json()["message"].as_str().unwrap().to_owned();
        assert!(
            message.starts_with("cannot decompress gzip body: "),
            "{message}"
        );

        let http_request = post(
            "/v1/traces",
            &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
            b"not gzip at all".to_vec(),
        );
        let reply = call(&sink, http_request).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.rpc_status().code, CODE_INVALID_ARGUMENT);
        assert_eq!(sink.n_requests(), 0);
    }

    #[tokio::test]
    async fn gzip_bomb_is_refused() {
        // 64 MiB of zeros compress to about 64 KB.
        let bomb = gzip(&vec![0; 64 << 20]);
        assert!(bomb.len() < 100_000, "{}", bomb.len());
        let sink = RecordingSink::rejecting(0);
        let http_request = post(
            "/v1/traces",
            &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
            bomb,
        );
        let reply = call(&sink, http_request).await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
        let status = reply.rpc_status();
        assert_eq!(status.code, CODE_RESOURCE_EXHAUSTED);
        assert_eq!(
            status.message,
            "request body is larger than 20971520 bytes (after decompression)"
        );
        assert_eq!(sink.n_requests(), 0);
    }

    #[test]
    fn inflate_stops_at_the_limit() {
        // A 1 GiB bomb as 1024 gzip members of 1 MiB of zeros each (about
        // 1 MB). Refusing it must consume only the input needed to produce
        // the limit, not inflate the whole gigabyte.
        let member = gzip(&vec![0; 1 << 20]);
        let bomb = member.repeat(1024);
        let limit = 20 << 20;
        let mut unread = &bomb[..];
        assert!(matches!(
            inflate(&mut unread, limit),
            Err(Refusal::TooLarge { limit: 20_971_520 })
        ));
        let consumed = bomb.len() - unread.len();
        assert!(
            consumed < bomb.len() / 10,
            "consumed {consumed} of {}",
            bomb.len()
        );

        // At the limit exactly, the body is accepted.
        let exact = gzip(&vec![7; 1000]);
        assert_eq!(inflate(&exact[..], 1000).unwrap(), vec![7; 1000]);
        assert!(matches!(
            inflate(&exact[..], 999),
            Err(Refusal::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn raw_body_over_the_limit_is_refused() {
        let config = HttpConfig {
            max_request_body_size: 1024,
        };
        let sink = RecordingSink::rejecting(0);
        let body = vec![0x0a; 2048];
        let reply = call_with(
            &sink,
            config.clone(),
            post_protobuf("/v1/traces", body.clone()),
        )
        .await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(reply.rpc_status().code, CODE_RESOURCE_EXHAUSTED);

        // Without a Content-Length the limit is found while reading.
        let chunks = body
            .chunks(100)
            .map(|chunk| Ok::<_, io::Error>(Bytes::copy_from_slice(chunk)))
            .collect::<Vec<_>>();
        let streamed = Body::from_stream(tokio_stream::iter(chunks));
        let reply = call_with(
            &sink,
            config.clone(),
            post_json("/v1/logs", "").map(|_| streamed),
        )
        .await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(reply.json()["code"], CODE_RESOURCE_EXHAUSTED);

        // The compressed body is held to the limit too.
        let compressed = gzip(&body);
        let http_request = post(
            "/v1/traces",
            &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
            compressed,
        );
        let reply = call_with(&sink, config, http_request).await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(sink.n_requests(), 0);
    }

    // --- content negotiation and routing ---

    #[tokio::test]
    async fn unsupported_content_type_is_refused() {
        for content_type in [Some("text/plain"), Some("application/protobuf"), None] {
            let sink = RecordingSink::rejecting(0);
            let headers: Vec<_> = content_type
                .map(|value| ("content-type", value))
                .into_iter()
                .collect();
            let reply = call(
                &sink,
                post("/v1/traces", &headers, traces_request().encode_to_vec()),
            )
            .await;
            assert_eq!(
                reply.status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{content_type:?}"
            );
            let status = reply.rpc_status();
            assert_eq!(status.code, CODE_INVALID_ARGUMENT);
            assert!(
                status.message.contains("application/x-protobuf")
                    && status.message.contains("application/json"),
                "{}",
                status.message
            );
            assert_eq!(sink.n_requests(), 0);
        }
    }

    #[tokio::test]
    async fn unsupported_content_encoding_is_refused() {
        let sink = RecordingSink::rejecting(0);
        let http_request = post(
            "/v1/traces",
            &[("content-type", JSON), ("content-encoding", "br")],
            "{}",
        );
        let reply = call(&sink, http_request).await;
        assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let status = reply.rpc_status();
        assert!(
            status.message.contains("\"br\"") && status.message.contains("gzip"),
            "{}",
            status.message
        );
        assert_eq!(sink.n_requests(), 0);
    }

    #[tokio::test]
    async fn content_type_parameters_and_case_are_ignored() {
        let sink = RecordingSink::rejecting(0);
        let http_request = post(
            "/v1/traces",
            &[("content-type", "Application/X-Protobuf ; charset=binary")],
            traces_request().encode_to_vec(),
        );
        let reply = call(&sink, http_request).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.content_type(), PROTOBUF);
    }

    #[tokio::test]
    async fn other_methods_are_not_allowed() {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let sink = RecordingSink::rejecting(0);
            let request = Request::builder()
                .method(method.clone())
                .uri("/v1/metrics")
                .body(Body::empty())
                .unwrap();
            let reply = call(&sink, request).await;
            assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(reply.headers.get(header::ALLOW).unwrap(), "POST");
        }
    }

    #[tokio::test]
    async fn unknown_paths_are_not_found() {
        for path in ["/", "/v1/trace", "/v1/traces/extra", "/v2/logs"] {
            let sink = RecordingSink::rejecting(0);
            let reply = call(&sink, post_protobuf(path, Vec::new())).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        }
    }

    // --- self-metrics ---

    #[test]
    fn requests_and_refusals_are_counted() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async {
                let sink = RecordingSink::rejecting(0);
                call(
                    &sink,
                    post_protobuf("/v1/traces", traces_request().encode_to_vec()),
                )
                .await;
                call(&sink, post_json("/v1/traces", "{")).await;
                call(
                    &sink,
                    post("/v1/logs", &[("content-type", "text/plain")], "x"),
                )
                .await;
                let config = HttpConfig {
                    max_request_body_size: 1,
                };
                call_with(&sink, config, post_json("/v1/metrics", "{}")).await;
                let http_request = post(
                    "/v1/metrics",
                    &[("content-type", JSON), ("content-encoding", "zstd")],
                    "{}",
                );
                call(&sink, http_request).await;
            });
        });
        let rendered = handle.render();
        for line in [
            r#"triage_http_requests_total{signal="traces",status="200"} 1"#,
            r#"triage_http_requests_total{signal="traces",status="400"} 1"#,
            r#"triage_http_requests_total{signal="logs",status="415"} 1"#,
            r#"triage_http_requests_total{signal="metrics",status="413"} 1"#,
            r#"triage_http_requests_total{signal="metrics",status="415"} 1"#,
            r#"triage_receiver_refused_requests_total{transport="http",signal="traces",reason="decode"} 1"#,
            r#"triage_receiver_refused_requests_total{transport="http",signal="logs",reason="unsupported_media_type"} 1"#,
            r#"triage_receiver_refused_requests_total{transport="http",signal="metrics",reason="too_large"} 1"#,
            r#"triage_receiver_refused_requests_total{transport="http",signal="metrics",reason="unsupported_encoding"} 1"#,
        ] {
            assert!(rendered.contains(line), "missing {line} in:\n{rendered}");
        }
    }
}
