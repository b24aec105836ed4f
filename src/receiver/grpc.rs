//! The OTLP/gRPC receiver: `TraceService`, `MetricsService` and `LogsService`
//! `Export`.
//!
//! Each method is served by a [`RawExportService`], which takes the request
//! message as bytes (tonic still handles framing, gzip and the size limit),
//! measures it against the decoding [`Limits`] and refuses it with
//! INVALID_ARGUMENT if it crosses them, then decodes it and hands it to the
//! sink on the [`DecodePool`], off the async workers. Traces are decoded by
//! the sink's zero-copy reader (`Sink::traces_protobuf`), metrics and logs
//! by prost.
//!
//! tonic answers two kinds of bad requests with codes OTLP clients would
//! misread: a message over the size limit gets OUT_OF_RANGE (which OTLP
//! clients retry) and an undecodable message gets INTERNAL. [`OtlpStatusLayer`]
//! rewrites them to RESOURCE_EXHAUSTED (not retryable without RetryInfo) and
//! INVALID_ARGUMENT, as the OTLP specification asks, and counts them.
//!
//! Admission (`receiver::admission`): while memory is over the soft limit,
//! or the decode queue is full, a call is answered UNAVAILABLE with a
//! `google.rpc.RetryInfo` detail before tonic reads its message; a call
//! whose message then finds the queue full or waits too long for a decoder
//! gets the same answer. Exporters retry it.
//!
//! A request over the decoding limits is refused with INVALID_ARGUMENT, not
//! RESOURCE_EXHAUSTED: sent again as it is it would fail again, OTLP
//! recommends INVALID_ARGUMENT for what must not be retried, and some
//! exporters retry RESOURCE_EXHAUSTED whether or not RetryInfo is given.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{NamedService, UnaryService};
use tonic::{Code, Request, Response, Status};

use super::admission::Busy;
use super::decode::{
    export_protobuf, DecodePool, Decoding, Export, Limits, PoolError, Refused, Ticket,
};
use super::{hand_off, BodyFormat, Handoff, Outcome, Signal, Sink};
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

/// An export request served over gRPC: its service's full name.
pub trait GrpcExport: Export {
    const SERVICE: &'static str;
}

impl GrpcExport for ExportTraceServiceRequest {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl GrpcExport for ExportMetricsServiceRequest {
    const SERVICE: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}

impl GrpcExport for ExportLogsServiceRequest {
    const SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}

/// The three services, configured (gzip, size limit), with the default
/// [`Limits`] and the process's shared [`DecodePool`], ready to be added to
/// a `tonic::transport::Server`.
pub fn services(
    sink: Arc<dyn Sink>,
    config: &GrpcConfig,
) -> (
    RawExportService<ExportTraceServiceRequest>,
    RawExportService<ExportMetricsServiceRequest>,
    RawExportService<ExportLogsServiceRequest>,
) {
    services_with(sink, config, Decoding::default())
}

/// [`services`] with the given limits and decode pool (the HTTP receiver
/// should share the pool, so that decoding is bounded across both).
pub fn services_with(
    sink: Arc<dyn Sink>,
    config: &GrpcConfig,
    decoding: Decoding,
) -> (
    RawExportService<ExportTraceServiceRequest>,
    RawExportService<ExportMetricsServiceRequest>,
    RawExportService<ExportLogsServiceRequest>,
) {
    (
        RawExportService::new(Arc::clone(&sink), config, decoding.clone()),
        RawExportService::new(Arc::clone(&sink), config, decoding.clone()),
        RawExportService::new(sink, config, decoding),
    )
}

// === RawExportService ===

/// The `Export` method of the service of `R`: the request's protobuf bytes
/// are measured against the limits before anything decodes them. Compression
/// and the size limit are tonic's.
pub struct RawExportService<R> {
    sink: Arc<dyn Sink>,
    max_recv_msg_size: usize,
    limits: Limits,
    /// Where requests are decoded and recorded: blocking threads, a
    /// bounded number of requests at a time.
    pool: DecodePool,
    /// Where answered requests go after the sink (forwarding), if anywhere.
    handoff: Option<Arc<dyn Handoff>>,
    request: PhantomData<fn() -> R>,
}

impl<R: GrpcExport> RawExportService<R> {
    pub fn new(sink: Arc<dyn Sink>, config: &GrpcConfig, decoding: Decoding) -> Self {
        RawExportService {
            sink,
            max_recv_msg_size: config.max_recv_msg_size,
            limits: decoding.limits,
            pool: decoding.pool,
            handoff: None,
            request: PhantomData,
        }
    }

    /// Hands every request answered OK (partial successes included) to
    /// `handoff` after the sink has recorded it.
    pub fn with_handoff(mut self, handoff: Option<Arc<dyn Handoff>>) -> Self {
        self.handoff = handoff;
        self
    }
}

impl<R> Clone for RawExportService<R> {
    fn clone(&self) -> Self {
        RawExportService {
            sink: Arc::clone(&self.sink),
            max_recv_msg_size: self.max_recv_msg_size,
            limits: self.limits,
            pool: self.pool.clone(),
            handoff: self.handoff.clone(),
            request: PhantomData,
        }
    }
}

impl<R: GrpcExport> NamedService for RawExportService<R> {
    const NAME: &'static str = R::SERVICE;
}

/// Reads a request message as raw bytes; writes the response with prost.
struct RawCodec<T>(PhantomData<fn() -> T>);

#[derive(Debug, Clone, Copy, Default)]
struct RawDecoder;

struct ResponseEncoder<T>(PhantomData<fn() -> T>);

impl<T: prost::Message + Send + 'static> Codec for RawCodec<T> {
    type Encode = T;
    type Decode = Bytes;
    type Encoder = ResponseEncoder<T>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder(PhantomData)
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

impl<T: prost::Message> Encoder for ResponseEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|error| Status::internal(format!("cannot encode response: {error}")))
    }
}

/// The unary handler: bytes in, response out.
struct ExportRaw<R> {
    sink: Arc<dyn Sink>,
    limits: Limits,
    pool: DecodePool,
    handoff: Option<Arc<dyn Handoff>>,
    /// The call's place in the decode queue, taken when it was admitted.
    ticket: Option<Ticket>,
    request: PhantomData<fn() -> R>,
}

impl<R: GrpcExport> UnaryService<Bytes> for ExportRaw<R> {
    type Response = R::Response;
    type Future = BoxFuture<Result<Response<R::Response>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let sink = Arc::clone(&self.sink);
        let limits = self.limits;
        let pool = self.pool.clone();
        let ticket = self.ticket.take();
        let handoff = self.handoff.clone();
        Box::pin(async move {
            let body = request.into_inner();
            let signal = R::SIGNAL.as_str();
            let bytes = body.len();
            let work = move || {
                let result = export_protobuf::<R>(&body, sink.as_ref(), limits);
                if let Ok(outcome) = &result {
                    hand_off(
                        handoff.as_ref(),
                        R::SIGNAL,
                        BodyFormat::Protobuf,
                        body,
                        outcome,
                    );
                }
                result
            };
            // The ticket taken at admission; a handler called again (tonic
            // does not) is admitted anew.
            let ran = match ticket {
                Some(ticket) => pool.run(ticket, bytes, work).await,
                None => pool.admit_and_run(bytes, work).await,
            };
            let outcome = match ran {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(refused)) => {
                    let (reason, message) = match refused {
                        Refused::OverLimit(over) => (over.reason(), over.to_string()),
                        Refused::Decode(detail) => (
                            "decode",
                            format!("cannot decode {} as protobuf: {detail}", R::NAME),
                        ),
                    };
                    telemetry::record_refused_request(TRANSPORT, signal, reason);
                    tracing::debug!(signal, reason, error = %message, "refused OTLP/gRPC request");
                    return Err(Status::invalid_argument(message));
                }
                Err(PoolError::Busy(busy)) => return Err(refuse_busy(signal, &busy)),
                Err(error) => {
                    telemetry::record_refused_request(TRANSPORT, signal, "internal");
                    tracing::warn!(signal, %error, "OTLP/gRPC request failed");
                    return Err(Status::internal(error.to_string()));
                }
            };
            telemetry::record_outcome(TRANSPORT, signal, outcome.accepted, outcome.rejected);
            Ok(Response::new(R::response(partial(&outcome))))
        })
    }
}

/// Counts a request refused for now (admission control) and answers it
/// UNAVAILABLE with RetryInfo.
fn refuse_busy(signal: &'static str, busy: &Busy) -> Status {
    telemetry::record_refused_request(TRANSPORT, signal, busy.reason());
    tracing::debug!(signal, reason = busy.reason(), error = %busy, "refused OTLP/gRPC request for now");
    busy.grpc_status()
}

/// `(rejected, error_message)` of a partial success, if items were rejected.
fn partial(outcome: &Outcome) -> Option<(i64, String)> {
    (outcome.rejected > 0).then(|| {
        (
            i64::try_from(outcome.rejected).unwrap_or(i64::MAX),
            outcome.error_message.clone(),
        )
    })
}

impl<R, B> tower::Service<http::Request<B>> for RawExportService<R>
where
    R: GrpcExport,
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
        let method = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|path| path.strip_prefix(R::SERVICE))
            .and_then(|path| path.strip_prefix('/'));
        if method != Some("Export") {
            return Box::pin(async { Ok(Status::unimplemented("unknown method").into_http()) });
        }
        // Before tonic reads the message: a refused request costs its
        // headers only.
        let ticket = match self.pool.admit() {
            Ok(ticket) => ticket,
            Err(busy) => {
                let status = refuse_busy(R::SIGNAL.as_str(), &busy);
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        let handler = ExportRaw::<R> {
            sink: Arc::clone(&self.sink),
            limits: self.limits,
            pool: self.pool.clone(),
            handoff: self.handoff.clone(),
            ticket: Some(ticket),
            request: PhantomData,
        };
        let limit = self.max_recv_msg_size;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawCodec::<R::Response>(PhantomData))
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

#[cfg(test)]
mod tests;
