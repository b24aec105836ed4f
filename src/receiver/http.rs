//! The OTLP/HTTP receiver: `POST /v1/traces`, `/v1/metrics` and `/v1/logs`.
//!
//! Each request goes through the same steps, and the first that fails answers
//! it: content type (`application/x-protobuf` or `application/json`, else
//! 415), content encoding (`gzip` or `identity`, else 415), body read with a
//! cap, decompression with the same cap on its output (413), the decoding
//! [`Limits`] (items, and the memory decoding would take, measured before
//! decoding: 400), decoding (400), then the [`Sink`] (and, when forwarding,
//! the [`Handoff`](super::Handoff)). Everything after the body is read runs
//! on the [`DecodePool`], off the async workers. A decoded
//! request is answered 200 with the matching `Export*ServiceResponse`,
//! carrying a partial success when the sink rejected items.
//!
//! Invariants:
//!
//! - No input makes this module panic or allocate more than about the
//!   configured body size plus `Limits::max_decoded_bytes`: the raw body is
//!   read through a length limit, gzip is inflated in chunks into a buffer
//!   that never grows past the limit (a small gzip bomb is refused after
//!   inflating at most `max_request_body_size` bytes), and a body whose
//!   decoding would take more than the limit is refused before decoding.
//! - Error bodies are a `google.rpc.Status`, encoded like the request (JSON for
//!   JSON requests, protobuf otherwise; 415 answers are always protobuf since
//!   the client's encoding is not one we speak).
//! - Self-metrics are updated once per request, never per item.
//!
//! OTLP/JSON bodies are decoded by `receiver::decode`, which replay uses too.

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
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use prost::Message;
use serde_json::Value;

use super::admission::{Busy, CODE_UNAVAILABLE};
use super::decode::{
    export_json, export_protobuf, DecodePool, Decoding, Export, Limits, OverLimit, PoolError,
    Refused,
};
use super::{hand_off, BodyFormat, Handoff, Outcome, Sink};

/// Counter of OTLP/HTTP requests answered by the export handlers, labelled
/// `signal` and `status` (the HTTP status code). Unknown paths and wrong
/// methods are answered by the router before the handlers and are not counted.
pub const HTTP_REQUESTS_TOTAL: &str = "triage_http_requests_total";

/// Counter of refused requests, labelled `transport` (`http` here), `signal`
/// and `reason` (`decode`, `too_large`, `too_many_items`,
/// `decoded_too_large`, `unsupported_media_type`, `unsupported_encoding`,
/// `internal`; retryable: `memory_limit`, `queue_full`, `queue_bytes`,
/// `queue_timeout`).
pub const RECEIVER_REFUSED_REQUESTS_TOTAL: &str = "triage_receiver_refused_requests_total";

/// The usual OTLP/HTTP body limit: 20 MiB after decompression.
pub const DEFAULT_MAX_REQUEST_BODY_SIZE: usize = 20 * 1024 * 1024;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// `google.rpc.Code` values used in error bodies.
const CODE_INVALID_ARGUMENT: i32 = 3;
const CODE_RESOURCE_EXHAUSTED: i32 = 8;
const CODE_INTERNAL: i32 = 13;

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
    /// A `google.rpc.RetryInfo` on retryable refusals, else empty.
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

/// The axum router serving `POST /v1/traces`, `/v1/metrics` and `/v1/logs`,
/// with the default [`Limits`] and the process's shared [`DecodePool`].
///
/// Other methods on those paths are answered 405 with `Allow: POST`, other
/// paths 404, both by axum.
pub fn router(sink: Arc<dyn Sink>, config: HttpConfig) -> Router {
    router_with(sink, config, Decoding::default())
}

/// [`router`] with the given limits and decode pool (the gRPC receiver
/// should share the pool, so that decoding is bounded across both).
pub fn router_with(sink: Arc<dyn Sink>, config: HttpConfig, decoding: Decoding) -> Router {
    router_with_handoff(sink, config, decoding, None)
}

/// [`router_with`], handing every request answered 200 (partial successes
/// included) to `handoff` after the sink has recorded it.
pub fn router_with_handoff(
    sink: Arc<dyn Sink>,
    config: HttpConfig,
    decoding: Decoding,
    handoff: Option<Arc<dyn Handoff>>,
) -> Router {
    let receiver = Arc::new(Receiver {
        sink,
        config,
        limits: decoding.limits,
        pool: decoding.pool,
        handoff,
    });
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
    /// What decoding one request may cost.
    limits: Limits,
    /// Where bodies are decompressed, decoded and recorded: blocking
    /// threads, a bounded number of requests at a time.
    pool: DecodePool,
    /// Where answered requests go after the sink (forwarding), if anywhere.
    handoff: Option<Arc<dyn Handoff>>,
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
    #[error("{0}")]
    OverLimit(OverLimit),
    #[error("{0}")]
    Internal(PoolError),
    /// Refused for now (memory limit, decode queue): 503, retryable.
    #[error("{0}")]
    Busy(Busy),
}

// === impl Receiver ===

impl Receiver {
    /// Reads the body of a request whose content type has been checked, then
    /// decompresses, measures, decodes and records it on the decode pool.
    async fn read_request<R: Export>(
        &self,
        format: Format,
        request: Request,
    ) -> Result<Outcome, Refusal> {
        let limit = self.config.max_request_body_size;
        let gzip = content_gzip(request.headers())?;
        // Before the body is read: a refused request costs its headers only.
        let ticket = self.pool.admit().map_err(Refusal::Busy)?;
        let body = read_body(request.into_body(), limit).await?;
        let sink = Arc::clone(&self.sink);
        let limits = self.limits;
        let handoff = self.handoff.clone();
        self.pool
            .run(ticket, body.len(), move || {
                let body = if gzip && !body.is_empty() {
                    Bytes::from(inflate(&body[..], limit)?)
                } else {
                    body
                };
                let outcome = decode::<R>(format, &body, sink.as_ref(), limits)?;
                let body_format = match format {
                    Format::Protobuf => BodyFormat::Protobuf,
                    Format::Json => BodyFormat::Json,
                };
                hand_off(handoff.as_ref(), R::SIGNAL, body_format, body, &outcome);
                Ok(outcome)
            })
            .await
            .map_err(|error| match error {
                PoolError::Busy(busy) => Refusal::Busy(busy),
                PoolError::Failed(_) => Refusal::Internal(error),
            })?
    }
}

/// Measures, decodes and records one body (on a blocking thread).
fn decode<R: Export>(
    format: Format,
    body: &[u8],
    sink: &dyn Sink,
    limits: Limits,
) -> Result<Outcome, Refusal> {
    let result = match format {
        Format::Protobuf => export_protobuf::<R>(body, sink, limits),
        Format::Json => export_json::<R>(body, sink, limits),
    };
    result.map_err(|refused| match (refused, format) {
        (Refused::OverLimit(over), _) => Refusal::OverLimit(over),
        (Refused::Decode(detail), Format::Protobuf) => Refusal::Protobuf {
            name: R::NAME,
            detail,
        },
        (Refused::Decode(detail), Format::Json) => Refusal::Json {
            name: R::NAME,
            detail,
        },
    })
}

/// The handler behind every route. The body is read on the request's task;
/// decoding and the sink run on the decode pool (see [`Receiver::pool`]).
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
            crate::telemetry::record_outcome(
                "http",
                signal.as_str(),
                outcome.accepted,
                outcome.rejected,
            );
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
        Format::Protobuf => R::response(partial).encode_to_vec(),
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
            | Refusal::Json { .. }
            | Refusal::OverLimit(_) => StatusCode::BAD_REQUEST,
            Refusal::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Refusal::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
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
            Refusal::OverLimit(over) => over.reason(),
            Refusal::Internal(_) => "internal",
            Refusal::Busy(busy) => busy.reason(),
        }
    }

    /// The `google.rpc.Code` of the error body. A body over the size limit
    /// is RESOURCE_EXHAUSTED as on gRPC (and, without RetryInfo, not
    /// retryable). A request over the decoding limits is INVALID_ARGUMENT,
    /// as on gRPC: OTLP recommends it for requests that must not be retried
    /// as they are, and some exporters retry RESOURCE_EXHAUSTED regardless.
    /// Everything else but our own failure is the client's argument being
    /// invalid too.
    fn rpc_code(&self) -> i32 {
        match self {
            Refusal::TooLarge { .. } => CODE_RESOURCE_EXHAUSTED,
            Refusal::Internal(_) => CODE_INTERNAL,
            Refusal::Busy(_) => CODE_UNAVAILABLE,
            _ => CODE_INVALID_ARGUMENT,
        }
    }

    /// The error answer. 415 is always protobuf: the client's content type
    /// (or encoding) is not one it can expect us to answer in.
    fn into_response(self, format: Format) -> Response {
        if let Refusal::Busy(busy) = &self {
            return busy_response(busy, format);
        }
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

/// The answer to a request refused for now: 503 with `Retry-After` and a
/// `google.rpc.Status` (UNAVAILABLE, with a `RetryInfo` detail) in the
/// request's encoding. OTLP/HTTP exporters retry 503 and honour the header.
fn busy_response(busy: &Busy, format: Format) -> Response {
    let body = match format {
        Format::Protobuf => busy.rpc_status().encode_to_vec(),
        Format::Json => busy.json_status().to_string().into_bytes(),
    };
    let mut response = with_body(StatusCode::SERVICE_UNAVAILABLE, format, body);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(busy.retry_after_secs()),
    );
    response
}

#[cfg(test)]
mod tests;
