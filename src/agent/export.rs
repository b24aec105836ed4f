//! Sending to the gateway: a bounded queue that never blocks the caller,
//! and one task that sends each request over OTLP/gRPC or OTLP/HTTP,
//! retrying retryable failures with exponential backoff.
//!
//! Retryable, as OTLP says: gRPC UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED,
//! ABORTED, OUT_OF_RANGE, DATA_LOSS, RESOURCE_EXHAUSTED (the gateway's
//! memory limiter); HTTP 429, 502, 503, 504 and connection failures.
//! Everything else is permanent: the request is dropped and counted. A
//! request is given up once `retry_on_failure.max_elapsed_time` has passed.
//! Items are counted in the self-metrics named in `crate::telemetry`
//! (`triage_agent_*`), once per request.

use std::io::Write;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use super::config::{AgentConfig, Protocol};
use crate::telemetry;

/// One export request for the gateway.
#[derive(Debug, Clone)]
pub enum Payload {
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
}

impl Payload {
    fn signal(&self) -> &'static str {
        match self {
            Payload::Metrics(_) => "metrics",
            Payload::Logs(_) => "logs",
        }
    }

    /// Data points or log records.
    pub fn items(&self) -> u64 {
        match self {
            Payload::Metrics(request) => request
                .resource_metrics
                .iter()
                .flat_map(|resource| &resource.scope_metrics)
                .flat_map(|scope| &scope.metrics)
                .map(|metric| metric_points(metric) as u64)
                .sum(),
            Payload::Logs(request) => request
                .resource_logs
                .iter()
                .flat_map(|resource| &resource.scope_logs)
                .map(|scope| scope.log_records.len() as u64)
                .sum(),
        }
    }
}

fn metric_points(metric: &opentelemetry_proto::tonic::metrics::v1::Metric) -> usize {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    match &metric.data {
        Some(Data::Gauge(gauge)) => gauge.data_points.len(),
        Some(Data::Sum(sum)) => sum.data_points.len(),
        Some(Data::Histogram(histogram)) => histogram.data_points.len(),
        Some(Data::ExponentialHistogram(histogram)) => histogram.data_points.len(),
        Some(Data::Summary(summary)) => summary.data_points.len(),
        None => 0,
    }
}

/// Why the exporter cannot start (a TLS file).
#[derive(Debug, Error)]
pub enum ExportError {
    #[error("agent.gateway: {field}: cannot read {path}: {error}")]
    ReadFile {
        field: &'static str,
        path: String,
        error: std::io::Error,
    },
    #[error("agent.gateway: {0}")]
    Setup(String),
}

/// Why one send failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
enum SendError {
    #[error("{0}")]
    Retryable(String),
    #[error("{0}")]
    Permanent(String),
}

/// The queue's producer side: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Queue {
    sender: mpsc::Sender<Payload>,
    capacity: usize,
}

impl Queue {
    /// Queues `payload`; when the queue is full (or the sender has
    /// stopped), drops it and counts its items. Returns whether it was
    /// queued.
    pub fn push(&self, payload: Payload) -> bool {
        let signal = payload.signal();
        let items = payload.items();
        match self.sender.try_send(payload) {
            Ok(()) => {
                metrics::gauge!(telemetry::AGENT_QUEUE_SIZE).increment(1.0);
                true
            }
            Err(_) => {
                metrics::counter!(telemetry::AGENT_ENQUEUE_FAILED, "signal" => signal)
                    .increment(items);
                false
            }
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Where requests go.
// One per exporter, made once: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Transport {
    Grpc {
        metrics: MetricsServiceClient<Channel>,
        logs: LogsServiceClient<Channel>,
        headers: Vec<(
            tonic::metadata::AsciiMetadataKey,
            tonic::metadata::AsciiMetadataValue,
        )>,
    },
    Http {
        client: reqwest::Client,
        base: String,
        headers: reqwest::header::HeaderMap,
        gzip: bool,
    },
}

fn read(field: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ExportError> {
    std::fs::read(path).map_err(|error| ExportError::ReadFile {
        field,
        path: path.display().to_string(),
        error,
    })
}

impl Transport {
    fn new(config: &AgentConfig) -> Result<Transport, ExportError> {
        let gateway = &config.gateway;
        let tls = &gateway.tls;
        let ca = tls
            .ca_file
            .as_deref()
            .map(|path| read("tls.ca_file", path))
            .transpose()?;
        let mut all_headers = gateway.headers.clone();
        if let Some(path) = &gateway.bearer_token_file {
            let token = read("bearer_token_file", path)?;
            let token = String::from_utf8_lossy(&token).trim().to_owned();
            if token.is_empty() {
                return Err(ExportError::Setup(format!(
                    "bearer_token_file {} is empty",
                    path.display()
                )));
            }
            all_headers.insert("authorization".to_owned(), format!("Bearer {token}"));
        }
        let identity = match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => {
                Some((read("tls.cert_file", cert)?, read("tls.key_file", key)?))
            }
            _ => None,
        };
        match gateway.protocol {
            Protocol::Grpc => {
                let mut endpoint = Channel::from_shared(gateway.endpoint.clone())
                    .map_err(|error| ExportError::Setup(format!("endpoint: {error}")))?
                    .timeout(gateway.timeout)
                    .connect_timeout(gateway.timeout);
                if gateway.endpoint.starts_with("https://") {
                    let mut tls_config = ClientTlsConfig::new().with_enabled_roots();
                    if let Some(ca) = &ca {
                        tls_config = tls_config.ca_certificate(Certificate::from_pem(ca));
                    }
                    if let Some((cert, key)) = &identity {
                        tls_config = tls_config.identity(Identity::from_pem(cert, key));
                    }
                    endpoint = endpoint
                        .tls_config(tls_config)
                        .map_err(|error| ExportError::Setup(format!("tls: {error}")))?;
                }
                let channel = endpoint.connect_lazy();
                let mut metrics =
                    MetricsServiceClient::new(channel.clone()).max_decoding_message_size(4 << 20);
                let mut logs = LogsServiceClient::new(channel);
                if gateway.gzip {
                    metrics = metrics.send_compressed(CompressionEncoding::Gzip);
                    logs = logs.send_compressed(CompressionEncoding::Gzip);
                }
                let headers = all_headers
                    .iter()
                    .filter_map(|(name, value)| Some((name.parse().ok()?, value.parse().ok()?)))
                    .collect();
                Ok(Transport::Grpc {
                    metrics,
                    logs,
                    headers,
                })
            }
            Protocol::Http => {
                let mut builder = reqwest::Client::builder().timeout(gateway.timeout);
                if let Some(ca) = &ca {
                    let certificate = reqwest::Certificate::from_pem(ca)
                        .map_err(|error| ExportError::Setup(format!("tls.ca_file: {error}")))?;
                    builder = builder.add_root_certificate(certificate);
                }
                if let Some((cert, key)) = &identity {
                    let mut pem = cert.clone();
                    pem.extend_from_slice(key);
                    let identity = reqwest::Identity::from_pem(&pem)
                        .map_err(|error| ExportError::Setup(format!("tls.cert_file: {error}")))?;
                    builder = builder.identity(identity);
                }
                let client = builder
                    .build()
                    .map_err(|error| ExportError::Setup(error.to_string()))?;
                let mut headers = reqwest::header::HeaderMap::new();
                for (name, value) in &all_headers {
                    if let (Ok(name), Ok(value)) = (
                        reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                        reqwest::header::HeaderValue::from_str(value),
                    ) {
                        headers.insert(name, value);
                    }
                }
                Ok(Transport::Http {
                    client,
                    base: gateway.endpoint.clone(),
                    headers,
                    gzip: gateway.gzip,
                })
            }
        }
    }

    async fn send(&mut self, payload: &Payload) -> Result<(), SendError> {
        match self {
            Transport::Grpc {
                metrics,
                logs,
                headers,
            } => {
                let result = match payload {
                    Payload::Metrics(request) => {
                        let mut request = tonic::Request::new(request.clone());
                        for (name, value) in headers.iter() {
                            request.metadata_mut().insert(name.clone(), value.clone());
                        }
                        metrics.export(request).await.map(|_| ())
                    }
                    Payload::Logs(request) => {
                        let mut request = tonic::Request::new(request.clone());
                        for (name, value) in headers.iter() {
                            request.metadata_mut().insert(name.clone(), value.clone());
                        }
                        logs.export(request).await.map(|_| ())
                    }
                };
                result.map_err(|status| {
                    use tonic::Code::*;
                    let message = format!("{}: {}", status.code(), status.message());
                    match status.code() {
                        Unavailable | Cancelled | DeadlineExceeded | Aborted | OutOfRange
                        | DataLoss | ResourceExhausted | Unknown => SendError::Retryable(message),
                        _ => SendError::Permanent(message),
                    }
                })
            }
            Transport::Http {
                client,
                base,
                headers,
                gzip,
            } => {
                let (path, body) = match payload {
                    Payload::Metrics(request) => ("/v1/metrics", request.encode_to_vec()),
                    Payload::Logs(request) => ("/v1/logs", request.encode_to_vec()),
                };
                let body = if *gzip {
                    let mut encoder =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    encoder
                        .write_all(&body)
                        .and_then(|()| encoder.finish())
                        .map_err(|error| SendError::Permanent(format!("gzip: {error}")))?
                } else {
                    body
                };
                let mut builder = client
                    .post(format!("{base}{path}"))
                    .headers(headers.clone())
                    .header("content-type", "application/x-protobuf");
                if *gzip {
                    builder = builder.header("content-encoding", "gzip");
                }
                let response = builder
                    .body(body)
                    .send()
                    .await
                    .map_err(|error| SendError::Retryable(error.to_string()))?;
                let status = response.status();
                if status.is_success() {
                    return Ok(());
                }
                let message = format!("HTTP {status}");
                match status.as_u16() {
                    429 | 502 | 503 | 504 => Err(SendError::Retryable(message)),
                    _ => Err(SendError::Permanent(message)),
                }
            }
        }
    }
}

/// Starts the sender task; returns the queue's producer side. The task
/// ends when `shutdown` is cancelled, after sending what is queued then
/// (each request tried once more at most).
pub fn start(
    config: &AgentConfig,
    shutdown: CancellationToken,
) -> Result<(Queue, tokio::task::JoinHandle<()>), ExportError> {
    let mut transport = Transport::new(config)?;
    let capacity = config.queue_size.get();
    let (sender, mut receiver) = mpsc::channel::<Payload>(capacity);
    metrics::gauge!(telemetry::AGENT_QUEUE_CAPACITY).set(capacity as f64);
    metrics::gauge!(telemetry::AGENT_QUEUE_SIZE).set(0.0);
    for signal in ["metrics", "logs"] {
        for name in [
            telemetry::AGENT_SENT,
            telemetry::AGENT_SEND_FAILED,
            telemetry::AGENT_ENQUEUE_FAILED,
        ] {
            metrics::counter!(name, "signal" => signal).increment(0);
        }
    }
    let max_elapsed = config.max_elapsed_time;
    let endpoint = config.gateway.endpoint.clone();
    let task = tokio::spawn(async move {
        loop {
            let payload = tokio::select! {
                payload = receiver.recv() => payload,
                _ = shutdown.cancelled() => {
                    receiver.close();
                    receiver.recv().await
                }
            };
            let Some(payload) = payload else {
                return;
            };
            metrics::gauge!(telemetry::AGENT_QUEUE_SIZE).decrement(1.0);
            let items = payload.items();
            let signal = payload.signal();
            let started = Instant::now();
            let mut backoff = Duration::from_secs(1);
            loop {
                match transport.send(&payload).await {
                    Ok(()) => {
                        metrics::counter!(telemetry::AGENT_SENT, "signal" => signal)
                            .increment(items);
                        break;
                    }
                    Err(SendError::Retryable(reason))
                        if started.elapsed() + backoff <= max_elapsed
                            && !shutdown.is_cancelled() =>
                    {
                        tracing::debug!(%endpoint, %reason, "gateway refused for now; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.cancelled() => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                    Err(error) => {
                        metrics::counter!(telemetry::AGENT_SEND_FAILED, "signal" => signal)
                            .increment(items);
                        tracing::warn!(%endpoint, %error, items, signal, "dropped a request for the gateway");
                        break;
                    }
                }
            }
        }
    });
    Ok((Queue { sender, capacity }, task))
}
