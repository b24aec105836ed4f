//! The OTLP/gRPC receiver: `TraceService`, `MetricsService` and `LogsService`
//! `Export`, from `opentelemetry-proto`'s generated tonic services.
//!
//! tonic answers two kinds of bad requests with codes OTLP clients would
//! misread: a message over the size limit gets OUT_OF_RANGE (which OTLP
//! clients retry) and an undecodable message gets INTERNAL. [`OtlpStatusLayer`]
//! rewrites them to RESOURCE_EXHAUSTED (not retryable without RetryInfo) and
//! INVALID_ARGUMENT, as the OTLP specification asks, and counts them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::{
    logs_service_server::{LogsService, LogsServiceServer},
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    metrics_service_server::{MetricsService, MetricsServiceServer},
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{NamedService, UnaryService};
use tonic::{Code, Request, Response, Status};

use super::{Outcome, Signal, Sink};
use crate::telemetry;

const TRANSPORT: &str = "grpc";

/// Settings of the gRPC receiver.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    /// Largest accepted message, after decompression, in bytes.
    pub max_recv_msg_size: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            max_recv_msg_size: 4 * 1024 * 1024,
        }
    }
}

/// Implements the OTLP metrics and logs export services over one sink.
#[derive(Clone)]
pub struct GrpcReceiver {
    sink: Arc<dyn Sink>,
}

impl GrpcReceiver {
    pub fn new(sink: Arc<dyn Sink>) -> Self {
        GrpcReceiver { sink }
    }
}

fn rejected(outcome: &Outcome) -> Option<(i64, String)> {
    (outcome.rejected > 0).then(|| (outcome.rejected as i64, outcome.error_message.clone()))
}

#[tonic::async_trait]
impl MetricsService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let outcome = self.sink.metrics(request.get_ref());
        telemetry::record_outcome(
            TRANSPORT,
            Signal::Metrics.as_str(),
            outcome.accepted,
            outcome.rejected,
        );
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: rejected(&outcome).map(|(rejected_data_points, error_message)| {
                ExportMetricsPartialSuccess {
                    rejected_data_points,
                    error_message,
                }
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let outcome = self.sink.logs(request.get_ref());
        telemetry::record_outcome(
            TRANSPORT,
            Signal::Logs.as_str(),
            outcome.accepted,
            outcome.rejected,
        );
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: rejected(&outcome).map(|(rejected_log_records, error_message)| {
                ExportLogsPartialSuccess {
                    rejected_log_records,
                    error_message,
                }
            }),
        }))
    }
}

/// The three services, configured (gzip, size limit), ready to be added to a
/// `tonic::transport::Server`. Traces are served by [`RawTraceService`], which
/// hands the request bytes to the sink's zero-copy reader.
pub fn services(
    sink: Arc<dyn Sink>,
    config: &GrpcConfig,
) -> (
    RawTraceService,
    MetricsServiceServer<GrpcReceiver>,
    LogsServiceServer<GrpcReceiver>,
) {
    let receiver = GrpcReceiver::new(Arc::clone(&sink));
    let limit = config.max_recv_msg_size;
    (
        RawTraceService {
            sink,
            max_recv_msg_size: limit,
        },
        MetricsServiceServer::new(receiver.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(limit),
        LogsServiceServer::new(receiver)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(limit),
    )
}

// === RawTraceService ===

/// gRPC path of the OTLP trace export method.
const TRACE_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// `TraceService/Export` that passes the request's protobuf bytes to
/// [`Sink::traces_protobuf`] instead of decoding them into prost types first.
/// Compression and the size limit are tonic's, as for the other services.
#[derive(Clone)]
pub struct RawTraceService {
    sink: Arc<dyn Sink>,
    max_recv_msg_size: usize,
}

impl NamedService for RawTraceService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

/// Reads a request message as raw bytes; writes the response with prost.
#[derive(Debug, Clone, Copy, Default)]
struct RawTraceCodec;

#[derive(Debug, Clone, Copy, Default)]
struct RawDecoder;

#[derive(Debug, Clone, Copy, Default)]
struct ResponseEncoder;

impl Codec for RawTraceCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(
        &mut self,
        item: ExportTraceServiceResponse,
        dst: &mut EncodeBuf<'_>,
    ) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|error| Status::internal(format!("cannot encode response: {error}")))
    }
}

/// The unary handler: bytes in, response out.
struct ExportRaw(Arc<dyn Sink>);

impl UnaryService<Bytes> for ExportRaw {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Result<Response<ExportTraceServiceResponse>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let sink = Arc::clone(&self.0);
        Box::pin(async move {
            let outcome = sink.traces_protobuf(request.get_ref()).map_err(|error| {
                telemetry::record_refused_request(TRANSPORT, Signal::Traces.as_str(), "decode");
                tracing::debug!(%error, "refused OTLP/gRPC trace request");
                Status::invalid_argument(error.0)
            })?;
            telemetry::record_outcome(
                TRANSPORT,
                Signal::Traces.as_str(),
                outcome.accepted,
                outcome.rejected,
            );
            Ok(Response::new(ExportTraceServiceResponse {
                partial_success: rejected(&outcome).map(|(rejected_spans, error_message)| {
                    ExportTracePartialSuccess {
                        rejected_spans,
                        error_message,
                    }
                }),
            }))
        })
    }
}

impl<B> tower::Service<http::Request<B>> for RawTraceService
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != TRACE_EXPORT_PATH {
            return Box::pin(async { Ok(Status::unimplemented("unknown method").into_http()) });
        }
        let handler = ExportRaw(Arc::clone(&self.sink));
        let limit = self.max_recv_msg_size;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawTraceCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit);
            Ok(grpc.unary(handler, request).await)
        })
    }
}

/// The signal of an OTLP gRPC path, for metric labels.
fn signal_of(path: &str) -> Option<Signal> {
    if path.starts_with("/opentelemetry.proto.collector.trace.") {
        Some(Signal::Traces)
    } else if path.starts_with("/opentelemetry.proto.collector.metrics.") {
        Some(Signal::Metrics)
    } else if path.starts_with("/opentelemetry.proto.collector.logs.") {
        Some(Signal::Logs)
    } else {
        None
    }
}

/// The OTLP code for a status tonic produced while reading the request, and
/// the refusal reason to count, if it needs rewriting.
fn otlp_code(status: &Status) -> Option<(Code, &'static str)> {
    match status.code() {
        Code::OutOfRange if status.message().contains("message length too large") => {
            Some((Code::ResourceExhausted, "too_large"))
        }
        Code::ResourceExhausted if status.message().contains("size limit") => {
            Some((Code::ResourceExhausted, "too_large"))
        }
        Code::Internal
            if status
                .message()
                .starts_with("failed to decode Protobuf message") =>
        {
            Some((Code::InvalidArgument, "decode"))
        }
        Code::Internal if status.message().starts_with("Error decompressing") => {
            Some((Code::InvalidArgument, "decode"))
        }
        Code::Unimplemented if status.message().contains("compression") => {
            Some((Code::Unimplemented, "unsupported_encoding"))
        }
        _ => None,
    }
}

/// Rewrites tonic's request-reading errors to the OTLP status codes.
#[derive(Debug, Clone, Default)]
pub struct OtlpStatusLayer;

impl<S> tower::Layer<S> for OtlpStatusLayer {
    type Service = OtlpStatus<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OtlpStatus { inner }
    }
}

#[derive(Debug, Clone)]
pub struct OtlpStatus<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for OtlpStatus<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let signal = signal_of(request.uri().path());
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            let headers = response.headers_mut();
            if let Some(status) = Status::from_header_map(headers) {
                if let Some((code, reason)) = otlp_code(&status) {
                    if let Some(signal) = signal {
                        telemetry::record_refused_request(TRANSPORT, signal.as_str(), reason);
                    }
                    tracing::debug!(
                        reason,
                        message = status.message(),
                        "refused OTLP/gRPC request"
                    );
                    let _ = Status::new(code, status.message().to_string()).add_header(headers);
                }
            }
            Ok(response)
        })
    }
}
