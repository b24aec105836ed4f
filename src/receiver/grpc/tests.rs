//! The gRPC services on a loopback port, with a client that puts bytes on
//! the wire verbatim (building the bombs as prost messages would take the
//! memory they are meant to exercise).

use std::net::SocketAddr;
use std::sync::Mutex;

use bytes::BufMut;
use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceResponse, metrics::v1::ExportMetricsServiceResponse,
    trace::v1::ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};

use super::*;
use crate::receiver::decode::schema::Message as Schema;
use crate::receiver::decode::test_support::{self, BOMB_BYTES};

/// Counts the items of every request it is given; rejects none.
#[derive(Default)]
struct CountingSink {
    items: Mutex<Vec<(Signal, usize)>>,
}

impl CountingSink {
    fn seen(&self) -> Vec<(Signal, usize)> {
        self.items.lock().unwrap().clone()
    }

    fn note(&self, signal: Signal, items: usize) -> Outcome {
        self.items.lock().unwrap().push((signal, items));
        Outcome {
            accepted: items as u64,
            ..Outcome::default()
        }
    }
}

impl Sink for CountingSink {
    fn traces(&self, request: &ExportTraceServiceRequest) -> Outcome {
        let spans = request
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum();
        self.note(Signal::Traces, spans)
    }

    fn metrics(&self, request: &ExportMetricsServiceRequest) -> Outcome {
        self.note(Signal::Metrics, request.resource_metrics.len())
    }

    fn logs(&self, request: &ExportLogsServiceRequest) -> Outcome {
        let records = request
            .resource_logs
            .iter()
            .flat_map(|resource| &resource.scope_logs)
            .map(|scope| scope.log_records.len())
            .sum();
        self.note(Signal::Logs, records)
    }
}

/// The three services behind the status layer, on 127.0.0.1:0.
async fn serve(sink: Arc<CountingSink>, config: GrpcConfig, decoding: Decoding) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (traces, metrics, logs) = services_with(sink, &config, decoding);
    tokio::spawn(
        Server::builder()
            .layer(OtlpStatusLayer)
            .add_service(traces)
            .add_service(metrics)
            .add_service(logs)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    address
}

/// Sends `body` verbatim (gzipped on the wire) to `path` and decodes the
/// answer as `T`.
async fn export<T: Message + Default + Send + 'static>(
    address: SocketAddr,
    path: &'static str,
    body: Vec<u8>,
) -> Result<T, Status> {
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel)
        .send_compressed(CompressionEncoding::Gzip)
        .max_encoding_message_size(usize::MAX);
    grpc.ready().await.unwrap();
    grpc.unary(
        Request::new(body),
        PathAndQuery::from_static(path),
        BytesCodec::<T>(PhantomData),
    )
    .await
    .map(Response::into_inner)
}

const TRACES: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const METRICS: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
const LOGS: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// The bombs of issue #14: 20 MiB of empty items (gzipped by the client to
/// about 20 KB), with the message limit raised so that they get through.
#[tokio::test]
async fn bombs_of_empty_items_are_invalid_argument() {
    let sink = Arc::new(CountingSink::default());
    let config = GrpcConfig {
        max_recv_msg_size: 32 << 20,
    };
    let address = serve(sink.clone(), config, Decoding::default()).await;
    let n = test_support::protobuf_items(BOMB_BYTES);
    let expected = |items: &str| {
        format!(
            "request carries more than 100000 {items}, the limit per request (max_items); \
             send smaller batches"
        )
    };
    let body = test_support::protobuf(Schema::ExportTraces, n);
    let status = export::<ExportTraceServiceResponse>(address, TRACES, body)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), expected("spans"));
    let body = test_support::protobuf(Schema::ExportMetrics, n);
    let status = export::<ExportMetricsServiceResponse>(address, METRICS, body)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), expected("metric data points"));
    let body = test_support::protobuf(Schema::ExportLogs, n);
    let status = export::<ExportLogsServiceResponse>(address, LOGS, body)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), expected("log records"));
    assert!(
        sink.seen().is_empty(),
        "nothing of a refused request is recorded"
    );
}

#[tokio::test]
async fn requests_within_the_limits_are_answered() {
    let sink = Arc::new(CountingSink::default());
    let address = serve(sink.clone(), GrpcConfig::default(), Decoding::default()).await;
    // Just under the default 4 MiB message limit, at the item limit.
    let body = test_support::protobuf(Schema::ExportTraces, 100_000);
    let response = export::<ExportTraceServiceResponse>(address, TRACES, body)
        .await
        .expect("at the limit is within it");
    assert_eq!(response.partial_success, None);

    let traces = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span::default(); 3],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    export::<ExportTraceServiceResponse>(address, TRACES, traces.encode_to_vec())
        .await
        .unwrap();
    let metrics = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "m".into(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint::default()],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    export::<ExportMetricsServiceResponse>(address, METRICS, metrics.encode_to_vec())
        .await
        .unwrap();
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord::default(); 2],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    export::<ExportLogsServiceResponse>(address, LOGS, logs.encode_to_vec())
        .await
        .unwrap();
    assert_eq!(
        sink.seen(),
        vec![
            (Signal::Traces, 100_000),
            (Signal::Traces, 3),
            (Signal::Metrics, 1),
            (Signal::Logs, 2)
        ]
    );
}

#[tokio::test]
async fn over_the_memory_limit_is_invalid_argument() {
    let sink = Arc::new(CountingSink::default());
    let decoding = Decoding {
        limits: Limits {
            max_items: 10,
            max_decoded_bytes: 1 << 20,
        },
        pool: DecodePool::default(),
    };
    let address = serve(sink.clone(), GrpcConfig::default(), decoding).await;
    // No item at all: a hundred thousand empty resources.
    let body = [0x0a, 0x00].repeat(100_000);
    let status = export::<ExportLogsServiceResponse>(address, LOGS, body)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.message(),
        "decoding the request would take more than 1 MiB, the limit per request \
         (max_decoded_bytes), from 200000 bytes of protobuf; send smaller batches"
    );
    assert!(sink.seen().is_empty());
}

#[tokio::test]
async fn undecodable_requests_are_invalid_argument() {
    let sink = Arc::new(CountingSink::default());
    let address = serve(sink.clone(), GrpcConfig::default(), Decoding::default()).await;
    let garbage = vec![0x0a, 0xff, 0xff];
    let status = export::<ExportMetricsServiceResponse>(address, METRICS, garbage.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("cannot decode ExportMetricsServiceRequest as protobuf: "),
        "{}",
        status.message()
    );
    let status = export::<ExportTraceServiceResponse>(address, TRACES, garbage)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = export::<ExportLogsServiceResponse>(
        address,
        "/opentelemetry.proto.collector.logs.v1.LogsService/Other",
        Vec::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(sink.seen().is_empty());
}

// === a client codec that sends bytes verbatim ===

struct BytesCodec<T>(PhantomData<fn() -> T>);

struct BytesEncoder;

struct ProstDecoder<T>(PhantomData<fn() -> T>);

impl<T: Message + Default + Send + 'static> Codec for BytesCodec<T> {
    type Encode = Vec<u8>;
    type Decode = T;
    type Encoder = BytesEncoder;
    type Decoder = ProstDecoder<T>;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder(PhantomData)
    }
}

impl Encoder for BytesEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl<T: Message + Default> Decoder for ProstDecoder<T> {
    type Item = T;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<T>, Status> {
        T::decode(src)
            .map(Some)
            .map_err(|error| Status::internal(format!("undecodable response: {error}")))
    }
}

/// Over the memory limit a call is answered UNAVAILABLE with RetryInfo,
/// before its message is read; nothing reaches the sink. Accepted again
/// once memory falls.
#[tokio::test]
async fn over_the_memory_limit_is_unavailable_with_retry_info() {
    use crate::receiver::admission::{MemoryLimiter, QueueLimits, RetryInfo, RETRY_INFO_TYPE};
    use crate::receiver::http::RpcStatus;
    let sink = Arc::new(CountingSink::default());
    let memory = MemoryLimiter::off();
    let decoding = Decoding {
        limits: Limits::default(),
        pool: DecodePool::with_admission(
            std::num::NonZeroUsize::MIN,
            QueueLimits::default(),
            Arc::clone(&memory),
        ),
    };
    let address = serve(sink.clone(), GrpcConfig::default(), decoding).await;
    memory.force(Some(true));
    let status = export::<ExportLogsServiceResponse>(address, LOGS, Vec::new())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("memory limit"), "{status:?}");
    let details = RpcStatus::decode(status.details()).unwrap();
    assert_eq!(details.code, 14);
    assert_eq!(details.details[0].type_url, RETRY_INFO_TYPE);
    let retry = RetryInfo::decode(&details.details[0].value[..]).unwrap();
    assert_eq!(retry.retry_delay.unwrap().seconds, 1);
    assert!(sink.seen().is_empty());
    memory.force(Some(false));
    export::<ExportLogsServiceResponse>(address, LOGS, Vec::new())
        .await
        .unwrap();
    assert_eq!(sink.seen(), vec![(Signal::Logs, 0)]);
}
