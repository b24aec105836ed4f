//! `triage loadgen`: a load generator for OTLP/gRPC trace receivers, and the
//! decode-and-drop reference server to measure triage against
//! (`benches/e2e.sh` runs them side by side; docs/PERFORMANCE.md has the
//! figures).
//!
//! The requests are built once ([`mix`]) and encoded once ([`stamp`]);
//! each send only copies them into the gRPC frame with fresh timestamps and
//! ids, so the generator spends its CPU on the wire, not on encoding. It
//! sends over N connections, one request in flight on each, either as fast
//! as the server answers or at a fixed rate of spans per second, for a
//! duration, then prints what was accepted, the errors by gRPC status code
//! and the latency of the export calls.

mod mix;
mod stamp;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::time::{Instant, MissedTickBehavior};
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};

pub use mix::Mix;
pub use stamp::{StampCodec, Stamped, Template};

const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Send OTLP/gRPC trace load, or serve the decode-and-drop reference.
///
/// Examples:
///   triage loadgen --endpoint http://127.0.0.1:4317 --duration 15s
///   triage loadgen --rate 50000 --duration 60s --connections 2
///   triage loadgen --reference-server 127.0.0.1:0
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// Run the reference server on this address instead of sending: an
    /// OTLP/gRPC trace service that decodes each request with prost and
    /// drops it. Prints "listening on ADDR" (port 0 picks a free port).
    #[arg(long, value_name = "HOST:PORT")]
    pub reference_server: Option<SocketAddr>,
    /// Where to send.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:4317")]
    pub endpoint: String,
    /// gRPC connections, each with one request in flight.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub connections: usize,
    /// Spans per second across all connections (default: as fast as the
    /// server answers).
    #[arg(long, value_name = "SPANS_PER_S")]
    pub rate: Option<f64>,
    /// How long to send, e.g. 15s, 10m.
    #[arg(long, value_name = "DURATION", default_value = "15s")]
    pub duration: String,
    /// Services in the mix.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub services: usize,
    /// SERVER operations per service (services x operations series).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub operations: usize,
    /// Spans per request.
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub batch_spans: usize,
    /// Share of operations that fail (0 to 1).
    #[arg(long, value_name = "SHARE", default_value_t = 0.01)]
    pub error_share: f64,
    /// Share of traces whose root calls another service through a CLIENT
    /// span (0 to 1).
    #[arg(long, value_name = "SHARE", default_value_t = 0.5)]
    pub call_share: f64,
    /// Distinct requests encoded up front and sent in turn.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub requests: usize,
    /// Seed of the mix: the same seed sends the same spans.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Compress requests with gzip.
    #[arg(long)]
    pub gzip: bool,
}

/// Why `triage loadgen` could not run (errors of single exports are
/// counted, not returned).
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("{0}")]
    Args(String),
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error(transparent)]
    Wire(#[from] stamp::WireError),
    #[error("reference server: {0}")]
    Serve(String),
}

/// Validated arguments of a load run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub endpoint: Endpoint,
    pub connections: NonZeroUsize,
    /// Spans per second, or `None` for as fast as possible.
    pub rate: Option<f64>,
    pub duration: Duration,
    pub mix: Mix,
    pub requests: NonZeroUsize,
    pub gzip: bool,
}

/// What one connection saw.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    sent_spans: u64,
    accepted_spans: u64,
    /// Spans the server answered as rejected (partial success).
    rejected_spans: u64,
    /// Failed exports by gRPC status code.
    errors: BTreeMap<String, u64>,
    /// Latency of every export call, in microseconds.
    latencies: Vec<u32>,
}

// === impl LoadgenArgs ===

impl LoadgenArgs {
    pub fn plan(&self) -> Result<Plan, LoadgenError> {
        let bad = |text: String| Err(LoadgenError::Args(text));
        let endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|error| LoadgenError::Args(format!("--endpoint: {error}")))?;
        let Some(connections) = NonZeroUsize::new(self.connections) else {
            return bad("--connections must be at least 1".into());
        };
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return bad(format!("--rate {rate}: give a positive number of spans/s"));
            }
        }
        let duration = crate::validate::parse_duration(&self.duration)
            .map_err(|error| LoadgenError::Args(format!("--duration: {error}")))?;
        for (name, value) in [
            ("--services", self.services),
            ("--operations", self.operations),
            ("--batch-spans", self.batch_spans),
        ] {
            if value == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        for (name, value) in [
            ("--error-share", self.error_share),
            ("--call-share", self.call_share),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return bad(format!("{name} {value}: give a share from 0 to 1"));
            }
        }
        let Some(requests) = NonZeroUsize::new(self.requests) else {
            return bad("--requests must be at least 1".into());
        };
        Ok(Plan {
            endpoint,
            connections,
            rate: self.rate,
            duration,
            mix: Mix {
                services: self.services,
                operations: self.operations,
                batch_spans: self.batch_spans,
                error_share: self.error_share,
                call_share: self.call_share,
                seed: self.seed,
            },
            requests,
            gzip: self.gzip,
        })
    }
}

/// Runs what the arguments ask for: the reference server, or a load run
/// whose report is printed.
pub async fn run(args: LoadgenArgs) -> Result<(), LoadgenError> {
    if let Some(listen) = args.reference_server {
        return serve_reference(listen).await;
    }
    let plan = args.plan()?;
    let report = send(&plan).await?;
    print!("{report}");
    Ok(())
}

/// A finished run.
#[derive(Debug)]
pub struct Report {
    pub elapsed: Duration,
    pub connections: usize,
    pub target_rate: Option<f64>,
    pub requests: u64,
    pub sent_spans: u64,
    pub accepted_spans: u64,
    pub rejected_spans: u64,
    pub errors: BTreeMap<String, u64>,
    pub bytes_per_span: f64,
    /// Export call latency percentiles (p50, p90, p99, max), microseconds.
    pub latency_micros: [u32; 4],
}

/// Sends the plan's load and reports what happened.
pub async fn send(plan: &Plan) -> Result<Report, LoadgenError> {
    let started_unix = unix_nanos();
    let templates = plan
        .mix
        .requests(plan.requests.get(), started_unix)
        .iter()
        .map(|request| Template::new(request).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let templates = Arc::new(templates);
    let spans_per_request = templates.iter().map(|template| template.spans).sum::<u64>() as f64
        / templates.len() as f64;
    let bytes_per_span = templates
        .iter()
        .map(|template| template.encoded_len())
        .sum::<usize>() as f64
        / templates
            .iter()
            .map(|template| template.spans)
            .sum::<u64>()
            .max(1) as f64;

    let mut channels = Vec::with_capacity(plan.connections.get());
    for _ in 0..plan.connections.get() {
        // One endpoint connected once per connection: clones of a channel
        // share their HTTP/2 connection, separately connected ones do not.
        let channel = plan
            .endpoint
            .clone()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|error| LoadgenError::Connect {
                endpoint: plan.endpoint.uri().to_string(),
                reason: format!("{error:?}"),
            })?;
        channels.push(channel);
    }

    // Every send gets its own nonce, so no two sends carry the same ids.
    let nonce = Arc::new(AtomicU64::new(1));
    let start = Instant::now();
    let deadline = start + plan.duration;
    let period = plan.rate.map(|rate| {
        Duration::from_secs_f64(spans_per_request * plan.connections.get() as f64 / rate)
    });
    let tasks = channels
        .into_iter()
        .enumerate()
        .map(|(index, channel)| {
            let worker = Worker {
                channel,
                templates: Arc::clone(&templates),
                first: index,
                step: plan.connections.get(),
                nonce: Arc::clone(&nonce),
                started_unix,
                gzip: plan.gzip,
            };
            // Stagger the connections over one period so a fixed rate is
            // smooth rather than N requests at once.
            let offset = period.map_or(Duration::ZERO, |period| {
                period.mul_f64(index as f64 / plan.connections.get() as f64)
            });
            tokio::spawn(worker.run(start + offset, period, deadline))
        })
        .collect::<Vec<_>>();
    let mut total = Tally::default();
    for task in tasks {
        let tally = task
            .await
            .map_err(|error| LoadgenError::Serve(format!("a sender task failed: {error}")))?;
        total.requests += tally.requests;
        total.sent_spans += tally.sent_spans;
        total.accepted_spans += tally.accepted_spans;
        total.rejected_spans += tally.rejected_spans;
        for (code, count) in tally.errors {
            *total.errors.entry(code).or_default() += count;
        }
        total.latencies.extend(tally.latencies);
    }
    let elapsed = start.elapsed();
    total.latencies.sort_unstable();
    let quantile = |q: f64| -> u32 {
        let Some(last) = total.latencies.len().checked_sub(1) else {
            return 0;
        };
        total.latencies[((last as f64) * q).round() as usize]
    };
    Ok(Report {
        elapsed,
        connections: plan.connections.get(),
        target_rate: plan.rate,
        requests: total.requests,
        sent_spans: total.sent_spans,
        accepted_spans: total.accepted_spans,
        rejected_spans: total.rejected_spans,
        errors: total.errors,
        bytes_per_span,
        latency_micros: [quantile(0.5), quantile(0.9), quantile(0.99), quantile(1.0)],
    })
}

/// One connection's sending loop.
struct Worker {
    channel: Channel,
    templates: Arc<Vec<Arc<Template>>>,
    /// The connections take the templates in turn: this one sends
    /// `first`, `first + step`, ...
    first: usize,
    step: usize,
    nonce: Arc<AtomicU64>,
    /// When the templates' timestamps were taken.
    started_unix: u64,
    gzip: bool,
}

impl Worker {
    async fn run(self, first_send: Instant, period: Option<Duration>, deadline: Instant) -> Tally {
        let mut grpc = tonic::client::Grpc::new(self.channel);
        if self.gzip {
            grpc = grpc.send_compressed(CompressionEncoding::Gzip);
        }
        let mut ticks = period.map(|period| {
            let mut interval = tokio::time::interval_at(first_send, period);
            // A slow answer delays the next sends; they then go out back
            // to back until the schedule is met again, as an exporter's
            // queue would drain.
            interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
            interval
        });
        let mut tally = Tally::default();
        let mut index = self.first;
        loop {
            if let Some(ticks) = &mut ticks {
                ticks.tick().await;
            }
            if Instant::now() >= deadline {
                break;
            }
            let template = Arc::clone(&self.templates[index % self.templates.len()]);
            index += self.step;
            let spans = template.spans;
            // The top bit stays clear (see `mix::id64`).
            let nonce = self.nonce.fetch_add(1, Ordering::Relaxed) & (u64::MAX >> 1);
            let shift = unix_nanos().saturating_sub(self.started_unix);
            let sent = Instant::now();
            let result = match grpc.ready().await {
                Ok(()) => {
                    grpc.unary(
                        tonic::Request::new(Stamped {
                            template,
                            shift,
                            nonce,
                        }),
                        PathAndQuery::from_static(TRACE_EXPORT),
                        StampCodec,
                    )
                    .await
                }
                Err(error) => Err(tonic::Status::unavailable(error.to_string())),
            };
            tally
                .latencies
                .push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
            tally.requests += 1;
            tally.sent_spans += spans;
            match result {
                Ok(response) => {
                    let rejected = response
                        .into_inner()
                        .partial_success
                        .map_or(0, |partial| partial.rejected_spans.max(0) as u64);
                    tally.rejected_spans += rejected;
                    tally.accepted_spans += spans.saturating_sub(rejected);
                }
                Err(status) => {
                    *tally
                        .errors
                        .entry(format!("{:?}", status.code()))
                        .or_default() += 1;
                    // A refused connection fails at once; do not spin.
                    if ticks.is_none() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
        tally
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

// === impl Report ===

impl std::fmt::Display for Report {
    /// Human lines, then one `result` line of `key=value` pairs for
    /// scripts.
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        let accepted_rate = self.accepted_spans as f64 / seconds;
        let target = self
            .target_rate
            .map_or("as fast as possible".to_owned(), |rate| {
                format!("{rate:.0} spans/s")
            });
        writeln!(
            out,
            "loadgen: {seconds:.1} s over {} connections, {target}, {:.0} bytes per span",
            self.connections, self.bytes_per_span
        )?;
        writeln!(
            out,
            "sent {} requests, {} spans; accepted {} spans ({accepted_rate:.0} spans/s), rejected {}",
            self.requests, self.sent_spans, self.accepted_spans, self.rejected_spans
        )?;
        let [p50, p90, p99, max] = self.latency_micros.map(|micros| micros as f64 / 1000.0);
        writeln!(
            out,
            "export latency: p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"
        )?;
        let errors = if self.errors.is_empty() {
            "none".to_owned()
        } else {
            self.errors
                .iter()
                .map(|(code, count)| format!("{code} {count}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(out, "errors by status code: {errors}")?;
        let error_count: u64 = self.errors.values().sum();
        writeln!(
            out,
            "result seconds={seconds:.3} requests={} sent_spans={} accepted_spans={} \
             accepted_per_s={accepted_rate:.0} rejected_spans={} errors={error_count} \
             p50_ms={p50:.3} p99_ms={p99:.3}",
            self.requests, self.sent_spans, self.accepted_spans, self.rejected_spans
        )
    }
}

// === the reference server ===

/// Decodes each request (tonic's prost codec) and drops it.
#[derive(Debug, Default)]
struct DropTraces {
    /// Spans decoded so far; counted so the decode is not dead code to
    /// anyone reading it.
    spans: AtomicU64,
}

#[tonic::async_trait]
impl TraceService for DropTraces {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum();
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Binds `listen`, prints the bound address and serves the reference
/// until the process is stopped.
pub async fn serve_reference(listen: SocketAddr) -> Result<(), LoadgenError> {
    let error = |error: std::io::Error| LoadgenError::Serve(format!("{listen}: {error}"));
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(error)?;
    let local = listener.local_addr().map_err(error)?;
    println!("reference server listening on {local}");
    serve_reference_on(listener).await
}

/// Serves the reference on `listener`: the same message limit as triage's
/// default (4 MiB), gzip accepted.
pub async fn serve_reference_on(listener: tokio::net::TcpListener) -> Result<(), LoadgenError> {
    let service = TraceServiceServer::new(DropTraces::default())
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(4 << 20);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await
        .map_err(|error| LoadgenError::Serve(error.to_string()))
}
