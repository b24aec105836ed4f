//! The wire side of one exporter: sends one batch of queued requests to
//! the upstream as one export request over OTLP/gRPC (tonic, the body as
//! the message bytes) or OTLP/HTTP (reqwest, the body as the POST body),
//! and sorts failures into retryable and permanent by the OTLP rules:
//!
//! - gRPC: UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE
//!   and DATA_LOSS are retried, RESOURCE_EXHAUSTED only with a
//!   `google.rpc.RetryInfo` detail, whose delay is honoured; every other
//!   code is permanent.
//! - HTTP: 429, 502, 503 and 504 are retried, honouring `Retry-After`
//!   (seconds); every other non-2xx status is permanent.
//! - A connection that cannot be made, or a request that times out, is
//!   retried.
//!
//! A 2xx / OK answer may carry a partial success; its rejected count is
//! returned, since the upstream refused those items for good.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::{
    logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse},
    metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse},
    trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
};
use prost::Message;
use reqwest::Url;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::batch::merge;
use super::config::{ExporterConfig, Protocol};
use super::tls::{client_config, TlsConnect};
use crate::receiver::admission::{RetryInfo, RETRY_INFO_TYPE};
use crate::receiver::http::RpcStatus;
use crate::receiver::{BodyFormat, Signal};
use crate::security::LoadError;

/// Longest wait an upstream may ask for (`Retry-After`, `RetryInfo`); a
/// longer one is cut to this, so a wrong header cannot park a sender.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Most bytes of an HTTP answer read (partial successes and error bodies
/// are small).
const MAX_RESPONSE: usize = 64 * 1024;
/// Most bytes merged on an async worker: copying more would hold it for
/// longer than a task should run between awaits.
const CHEAP_MERGE: u64 = 256 * 1024;

/// What the upstream did with a request it answered with success.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Items it rejected in a partial success.
    pub rejected: u64,
    /// Its `error_message`, if it rejected some.
    pub message: String,
}

/// Why a request was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Whether sending it again may succeed.
    pub retryable: bool,
    /// How long the upstream asked us to wait, if it did.
    pub retry_after: Option<Duration>,
    /// What went wrong, for the logs.
    pub message: String,
}

/// A request ready for the wire: the body in the encoding the transport
/// sends.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub signal: Signal,
    pub format: BodyFormat,
    /// gzip-compressed for HTTP when `compression: gzip` (gRPC compresses
    /// in tonic).
    pub body: Bytes,
}

/// One exporter's connection to its upstream.
#[derive(Clone)]
pub enum Client {
    Grpc {
        channel: Channel,
        metadata: MetadataMap,
        gzip: bool,
        timeout: Duration,
    },
    Http {
        client: reqwest::Client,
        /// `/v1/traces`, `/v1/metrics`, `/v1/logs` under the endpoint.
        urls: [Url; 3],
        gzip: bool,
    },
}

impl Client {
    /// Sets the client up; reads the TLS files. Connections are made when
    /// the first request goes out, so a down upstream does not stop
    /// start-up. `section` is the exporter's config path, for errors.
    pub fn new(config: &ExporterConfig, section: &str) -> Result<Client, LoadError> {
        let https = config.endpoint.scheme() == "https";
        match config.protocol {
            Protocol::Grpc => {
                // tonic refuses an https URI unless its own TLS is set up;
                // with TLS, `TlsConnect` dials it whatever the scheme, so
                // the channel is given the plain one.
                let address = format!("http://{}", config.endpoint.authority());
                let endpoint = Endpoint::from_shared(address)
                    .map_err(|error| LoadError {
                        field: format!("{section}.endpoint"),
                        message: error.to_string(),
                    })?
                    .connect_timeout(config.timeout)
                    .timeout(config.timeout)
                    .tcp_nodelay(true)
                    .user_agent(concat!("triage/", env!("CARGO_PKG_VERSION")))
                    .map_err(|error| LoadError {
                        field: format!("{section}.endpoint"),
                        message: error.to_string(),
                    })?;
                let channel = if https {
                    let tls = client_config(section, &config.tls, &[b"h2"])?;
                    endpoint.connect_with_connector_lazy(TlsConnect { config: tls })
                } else {
                    endpoint.connect_lazy()
                };
                let mut metadata = MetadataMap::new();
                for header in &config.headers {
                    let key = AsciiMetadataKey::from_bytes(header.name.as_bytes());
                    let value = AsciiMetadataValue::try_from(header.value.as_str());
                    match (key, value) {
                        (Ok(key), Ok(value)) => {
                            metadata.insert(key, value);
                        }
                        _ => {
                            return Err(LoadError {
                                field: format!("{section}.headers.{}", header.name),
                                message: "not usable as gRPC metadata".to_owned(),
                            })
                        }
                    }
                }
                Ok(Client::Grpc {
                    channel,
                    metadata,
                    gzip: config.gzip,
                    timeout: config.timeout,
                })
            }
            Protocol::Http => {
                let mut headers = http::HeaderMap::new();
                for header in &config.headers {
                    let name = http::HeaderName::from_bytes(header.name.as_bytes());
                    let value = http::HeaderValue::from_str(&header.value);
                    match (name, value) {
                        (Ok(name), Ok(mut value)) => {
                            value.set_sensitive(true);
                            headers.insert(name, value);
                        }
                        _ => {
                            return Err(LoadError {
                                field: format!("{section}.headers.{}", header.name),
                                message: "not usable as an HTTP header".to_owned(),
                            })
                        }
                    }
                }
                let mut builder = reqwest::Client::builder()
                    .timeout(config.timeout)
                    .connect_timeout(config.timeout)
                    .user_agent(concat!("triage/", env!("CARGO_PKG_VERSION")))
                    .default_headers(headers)
                    // The endpoint is configured; a redirect elsewhere could
                    // leak the headers (API keys).
                    .redirect(reqwest::redirect::Policy::none());
                if https {
                    let tls = client_config(section, &config.tls, &[b"http/1.1"])?;
                    builder = builder.use_preconfigured_tls((*tls).clone());
                }
                let client = builder.build().map_err(|error| LoadError {
                    field: section.to_owned(),
                    message: format!("cannot set up the HTTP client: {error}"),
                })?;
                let url = |path: &str| {
                    let mut url = config.endpoint.clone();
                    let base = url.path().trim_end_matches('/').to_owned();
                    url.set_path(&format!("{base}{path}"));
                    url
                };
                Ok(Client::Http {
                    client,
                    urls: [url("/v1/traces"), url("/v1/metrics"), url("/v1/logs")],
                    gzip: config.gzip,
                })
            }
        }
    }

    /// Whether [`Client::prepare`] does little work for `bodies` bodies of
    /// `bytes` in all in `format` (protobuf over gRPC, or uncompressed
    /// HTTP, merging at most [`CHEAP_MERGE`] bytes), so that it need not
    /// move to a blocking thread.
    pub fn prepare_is_cheap(&self, format: BodyFormat, bodies: usize, bytes: u64) -> bool {
        let merge_is_cheap = bodies <= 1 || bytes <= CHEAP_MERGE;
        match self {
            Client::Grpc { .. } => format == BodyFormat::Protobuf && merge_is_cheap,
            Client::Http { gzip, .. } => !gzip && merge_is_cheap,
        }
    }

    /// The body a batch of `bodies` is sent as: protobuf bodies merged
    /// ([`merge`]); OTLP/JSON re-encoded once as protobuf for gRPC (which
    /// has no JSON); gzip for HTTP when configured. CPU work: run it on a
    /// blocking thread unless [`Client::prepare_is_cheap`]. An error is
    /// permanent (the JSON the receiver accepted does not decode as a whole
    /// request, or several JSON bodies, which the batcher never forms).
    pub fn prepare(
        &self,
        signal: Signal,
        format: BodyFormat,
        bodies: &[Bytes],
    ) -> Result<Prepared, String> {
        if format == BodyFormat::Json && bodies.len() > 1 {
            return Err("OTLP/JSON requests are not merged".to_owned());
        }
        match self {
            Client::Grpc { .. } => {
                let body = match format {
                    BodyFormat::Protobuf => merge(bodies),
                    BodyFormat::Json => Bytes::from(json_as_protobuf(signal, &merge(bodies))?),
                };
                Ok(Prepared {
                    signal,
                    format: BodyFormat::Protobuf,
                    body,
                })
            }
            Client::Http { gzip, .. } => {
                let body = if *gzip {
                    // Each body is compressed in turn: the merged request is
                    // never copied whole before compression.
                    let bytes: usize = bodies.iter().map(Bytes::len).sum();
                    let mut encoder = flate2::write::GzEncoder::new(
                        Vec::with_capacity(bytes / 4 + 64),
                        flate2::Compression::fast(),
                    );
                    bodies
                        .iter()
                        .try_for_each(|body| std::io::Write::write_all(&mut encoder, body))
                        .and_then(|()| encoder.finish())
                        .map(Bytes::from)
                        .map_err(|error| format!("cannot compress: {error}"))?
                } else {
                    merge(bodies)
                };
                Ok(Prepared {
                    signal,
                    format,
                    body,
                })
            }
        }
    }

    /// Sends one prepared request.
    pub async fn send(&self, request: &Prepared) -> Result<Delivered, Failure> {
        match self {
            Client::Grpc {
                channel,
                metadata,
                gzip,
                timeout,
            } => send_grpc(channel, metadata, *gzip, *timeout, request).await,
            Client::Http { client, urls, gzip } => send_http(client, urls, *gzip, request).await,
        }
    }
}

fn json_as_protobuf(signal: Signal, body: &[u8]) -> Result<Vec<u8>, String> {
    use crate::receiver::decode::decode_json;
    let encoded = match signal {
        Signal::Traces => decode_json::<ExportTraceServiceRequest>(body)?.encode_to_vec(),
        Signal::Metrics => decode_json::<ExportMetricsServiceRequest>(body)?.encode_to_vec(),
        Signal::Logs => decode_json::<ExportLogsServiceRequest>(body)?.encode_to_vec(),
    };
    Ok(encoded)
}

// === gRPC ===

async fn send_grpc(
    channel: &Channel,
    metadata: &MetadataMap,
    gzip: bool,
    timeout: Duration,
    request: &Prepared,
) -> Result<Delivered, Failure> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    if gzip {
        grpc = grpc
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip);
    }
    grpc.ready().await.map_err(|error| Failure {
        retryable: true,
        retry_after: None,
        message: format!("upstream not reachable: {error}"),
    })?;
    let mut call = tonic::Request::new(request.body.clone());
    *call.metadata_mut() = metadata.clone();
    call.set_timeout(timeout);
    let partial = match request.signal {
        Signal::Traces => grpc
            .unary(
                call,
                PathAndQuery::from_static(
                    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                ),
                BytesCodec::<ExportTraceServiceResponse>::default(),
            )
            .await
            .map(|response| {
                response
                    .into_inner()
                    .partial_success
                    .map(|partial| (partial.rejected_spans, partial.error_message))
            }),
        Signal::Metrics => grpc
            .unary(
                call,
                PathAndQuery::from_static(
                    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                ),
                BytesCodec::<ExportMetricsServiceResponse>::default(),
            )
            .await
            .map(|response| {
                response
                    .into_inner()
                    .partial_success
                    .map(|partial| (partial.rejected_data_points, partial.error_message))
            }),
        Signal::Logs => grpc
            .unary(
                call,
                PathAndQuery::from_static(
                    "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                ),
                BytesCodec::<ExportLogsServiceResponse>::default(),
            )
            .await
            .map(|response| {
                response
                    .into_inner()
                    .partial_success
                    .map(|partial| (partial.rejected_log_records, partial.error_message))
            }),
    };
    match partial {
        Ok(partial) => Ok(delivered(partial)),
        Err(status) => Err(grpc_failure(&status)),
    }
}

fn delivered(partial: Option<(i64, String)>) -> Delivered {
    match partial {
        Some((rejected, message)) => Delivered {
            rejected: u64::try_from(rejected).unwrap_or(0),
            message,
        },
        None => Delivered::default(),
    }
}

/// Sorts a gRPC status by the OTLP rules (module documentation).
pub fn grpc_failure(status: &Status) -> Failure {
    let retry_after = retry_info(status.details());
    let retryable = match status.code() {
        Code::Unavailable
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::DataLoss => true,
        Code::ResourceExhausted => retry_after.is_some(),
        _ => false,
    };
    Failure {
        retryable,
        retry_after,
        message: format!("{:?}: {}", status.code(), status.message()),
    }
}

/// The delay of a `google.rpc.RetryInfo` in an encoded `google.rpc.Status`.
fn retry_info(details: &[u8]) -> Option<Duration> {
    let status = RpcStatus::decode(details).ok()?;
    let detail = status
        .details
        .iter()
        .find(|detail| detail.type_url == RETRY_INFO_TYPE)?;
    let delay = RetryInfo::decode(detail.value.as_slice())
        .ok()?
        .retry_delay?;
    let seconds = u64::try_from(delay.seconds).ok()?;
    let nanos = u32::try_from(delay.nanos).ok()?.min(999_999_999);
    Some(Duration::new(seconds.min(MAX_RETRY_AFTER.as_secs()), nanos).min(MAX_RETRY_AFTER))
}

/// Writes the body as the message bytes; reads the answer with prost.
struct BytesCodec<T>(std::marker::PhantomData<fn() -> T>);

impl<T> Default for BytesCodec<T> {
    fn default() -> Self {
        BytesCodec(std::marker::PhantomData)
    }
}

impl<T: Message + Default + Send + 'static> Codec for BytesCodec<T> {
    type Encode = Bytes;
    type Decode = T;
    type Encoder = BytesEncoder;
    type Decoder = ProstDecoder<T>;

    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> ProstDecoder<T> {
        ProstDecoder(std::marker::PhantomData)
    }
}

struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

struct ProstDecoder<T>(std::marker::PhantomData<fn() -> T>);

impl<T: Message + Default> Decoder for ProstDecoder<T> {
    type Item = T;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<T>, Status> {
        T::decode(src.copy_to_bytes(src.remaining()))
            .map(Some)
            .map_err(|error| Status::internal(format!("undecodable response: {error}")))
    }
}

// === HTTP ===

async fn send_http(
    client: &reqwest::Client,
    urls: &[Url; 3],
    gzip: bool,
    request: &Prepared,
) -> Result<Delivered, Failure> {
    let url = match request.signal {
        Signal::Traces => &urls[0],
        Signal::Metrics => &urls[1],
        Signal::Logs => &urls[2],
    };
    let content_type = match request.format {
        BodyFormat::Protobuf => "application/x-protobuf",
        BodyFormat::Json => "application/json",
    };
    let mut post = client
        .post(url.clone())
        .header(http::header::CONTENT_TYPE, content_type)
        .body(request.body.clone());
    if gzip {
        post = post.header(http::header::CONTENT_ENCODING, "gzip");
    }
    let mut response = post.send().await.map_err(|error| Failure {
        retryable: true,
        retry_after: None,
        message: format!("upstream not reachable: {}", error_chain(&error)),
    })?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(|seconds| Duration::from_secs(seconds).min(MAX_RETRY_AFTER));
    // Read at most MAX_RESPONSE bytes of the answer.
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_RESPONSE.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_RESPONSE {
            break;
        }
    }
    if status.is_success() {
        return Ok(http_partial(request.signal, request.format, &body));
    }
    let retryable = matches!(status.as_u16(), 429 | 502 | 503 | 504);
    let detail = match request.format {
        BodyFormat::Protobuf => RpcStatus::decode(body.as_slice())
            .map(|status| status.message)
            .unwrap_or_default(),
        BodyFormat::Json => String::from_utf8_lossy(&body).chars().take(512).collect(),
    };
    Err(Failure {
        retryable,
        retry_after,
        message: format!("HTTP {status}: {detail}"),
    })
}

/// The partial success in a 200 answer, if any.
fn http_partial(signal: Signal, format: BodyFormat, body: &[u8]) -> Delivered {
    if body.is_empty() {
        return Delivered::default();
    }
    match format {
        BodyFormat::Protobuf => delivered(match signal {
            Signal::Traces => ExportTraceServiceResponse::decode(body)
                .ok()
                .and_then(|response| response.partial_success)
                .map(|partial| (partial.rejected_spans, partial.error_message)),
            Signal::Metrics => ExportMetricsServiceResponse::decode(body)
                .ok()
                .and_then(|response| response.partial_success)
                .map(|partial| (partial.rejected_data_points, partial.error_message)),
            Signal::Logs => ExportLogsServiceResponse::decode(body)
                .ok()
                .and_then(|response| response.partial_success)
                .map(|partial| (partial.rejected_log_records, partial.error_message)),
        }),
        BodyFormat::Json => {
            let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
                return Delivered::default();
            };
            let Some(partial) = json.get("partialSuccess") else {
                return Delivered::default();
            };
            let field = match signal {
                Signal::Traces => "rejectedSpans",
                Signal::Metrics => "rejectedDataPoints",
                Signal::Logs => "rejectedLogRecords",
            };
            let rejected = match partial.get(field) {
                Some(serde_json::Value::String(text)) => text.parse().unwrap_or(0),
                Some(serde_json::Value::Number(number)) => number.as_u64().unwrap_or(0),
                _ => 0,
            };
            Delivered {
                rejected,
                message: partial
                    .get("errorMessage")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            }
        }
    }
}

/// An error with its causes (reqwest's own message is only the outermost).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::admission::ProtoDuration;
    use crate::receiver::http::AnyMsg;

    fn with_retry_info(code: Code, seconds: i64) -> Status {
        let info = RetryInfo {
            retry_delay: Some(ProtoDuration { seconds, nanos: 0 }),
        };
        let details = RpcStatus {
            code: code as i32,
            message: "busy".into(),
            details: vec![AnyMsg {
                type_url: RETRY_INFO_TYPE.into(),
                value: info.encode_to_vec(),
            }],
        };
        Status::with_details(code, "busy", details.encode_to_vec().into())
    }

    #[test]
    fn grpc_codes_are_sorted_by_the_otlp_rules() {
        for code in [
            Code::Unavailable,
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::DataLoss,
        ] {
            assert!(grpc_failure(&Status::new(code, "x")).retryable, "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Internal,
            Code::Unimplemented,
            Code::ResourceExhausted,
        ] {
            assert!(!grpc_failure(&Status::new(code, "x")).retryable, "{code:?}");
        }
        let throttled = grpc_failure(&with_retry_info(Code::ResourceExhausted, 3));
        assert!(throttled.retryable);
        assert_eq!(throttled.retry_after, Some(Duration::from_secs(3)));
        // A hostile delay is cut short.
        let hostile = grpc_failure(&with_retry_info(Code::Unavailable, i64::MAX));
        assert_eq!(hostile.retry_after, Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn http_partial_successes_are_read_in_both_encodings() {
        let json = br#"{"partialSuccess":{"rejectedSpans":"2","errorMessage":"bad ids"}}"#;
        assert_eq!(
            http_partial(Signal::Traces, BodyFormat::Json, json),
            Delivered {
                rejected: 2,
                message: "bad ids".into()
            }
        );
        let protobuf = ExportLogsServiceResponse {
            partial_success: Some(
                opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess {
                    rejected_log_records: 4,
                    error_message: String::new(),
                },
            ),
        }
        .encode_to_vec();
        assert_eq!(
            http_partial(Signal::Logs, BodyFormat::Protobuf, &protobuf).rejected,
            4
        );
        assert_eq!(
            http_partial(Signal::Metrics, BodyFormat::Json, b"{}"),
            Delivered::default()
        );
    }
}
