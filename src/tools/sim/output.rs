//! The simulator's two outputs: OTLP JSON lines (the OTel Collector file
//! exporter's format, which `triage replay` reads) and live OTLP/gRPC.

use std::io::{BufWriter, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::{
    logs::v1::{logs_service_client::LogsServiceClient, ExportLogsServiceRequest},
    metrics::v1::{metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest},
    trace::v1::{trace_service_client::TraceServiceClient, ExportTraceServiceRequest},
};
use opentelemetry_proto::tonic::metrics::v1::metric;
use prost::Message;
use tonic::transport::Channel;

use crate::tools::sim::{Batch, SimError, Simulator};

/// Requests larger than this (encoded) are split by resource before being
/// sent: collectors commonly refuse gRPC messages over 4 MiB.
const MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024;
/// Attempts per export when the collector answers with a retryable code.
const EXPORT_ATTEMPTS: u32 = 6;

/// What a run produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimSummary {
    /// Simulated seconds.
    pub batches: u64,
    pub spans: u64,
    pub data_points: u64,
    pub log_records: u64,
    /// JSON lines written, or export requests sent.
    pub requests: u64,
    /// Items the collector rejected (OTLP partial success), when sending.
    pub rejected: u64,
}

impl SimSummary {
    fn count(&mut self, batch: &Batch) {
        self.batches += 1;
        if let Some(traces) = &batch.traces {
            self.spans += span_count(traces);
        }
        if let Some(metrics) = &batch.metrics {
            self.data_points += point_count(metrics);
        }
        if let Some(logs) = &batch.logs {
            self.log_records += log_count(logs);
        }
    }
}

impl std::fmt::Display for SimSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} simulated seconds: {} spans, {} metric data points, {} log records in {} requests",
            self.batches, self.spans, self.data_points, self.log_records, self.requests
        )?;
        if self.rejected > 0 {
            write!(f, " ({} items rejected by the collector)", self.rejected)?;
        }
        Ok(())
    }
}

pub(super) fn span_count(request: &ExportTraceServiceRequest) -> u64 {
    request
        .resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .map(|scope| scope.spans.len() as u64)
        .sum()
}

pub(super) fn point_count(request: &ExportMetricsServiceRequest) -> u64 {
    request
        .resource_metrics
        .iter()
        .flat_map(|resource| &resource.scope_metrics)
        .flat_map(|scope| &scope.metrics)
        .map(|metric| match &metric.data {
            Some(metric::Data::Gauge(gauge)) => gauge.data_points.len() as u64,
            Some(metric::Data::Sum(sum)) => sum.data_points.len() as u64,
            Some(metric::Data::Histogram(histogram)) => histogram.data_points.len() as u64,
            Some(metric::Data::ExponentialHistogram(histogram)) => {
                histogram.data_points.len() as u64
            }
            Some(metric::Data::Summary(summary)) => summary.data_points.len() as u64,
            None => 0,
        })
        .sum()
}

pub(super) fn log_count(request: &ExportLogsServiceRequest) -> u64 {
    request
        .resource_logs
        .iter()
        .flat_map(|resource| &resource.scope_logs)
        .map(|scope| scope.log_records.len() as u64)
        .sum()
}

/// Writes every batch as OTLP JSON lines: one `Export*ServiceRequest` object
/// per line. Within a second, metrics (stamped at its start) come first,
/// then traces and logs (which end within it). Ids are lower-case hex,
/// 64-bit integers decimal strings, enums integers.
pub fn write_json_lines(sim: Simulator, out: &mut impl Write) -> std::io::Result<SimSummary> {
    let mut out = BufWriter::with_capacity(1 << 16, out);
    let mut summary = SimSummary::default();
    for batch in sim {
        summary.count(&batch);
        if let Some(metrics) = &batch.metrics {
            serde_json::to_writer(&mut out, metrics)?;
            out.write_all(b"\n")?;
            summary.requests += 1;
        }
        if let Some(traces) = &batch.traces {
            serde_json::to_writer(&mut out, traces)?;
            out.write_all(b"\n")?;
            summary.requests += 1;
        }
        if let Some(logs) = &batch.logs {
            serde_json::to_writer(&mut out, logs)?;
            out.write_all(b"\n")?;
            summary.requests += 1;
        }
    }
    out.flush()?;
    Ok(summary)
}

/// Writes every batch as length-delimited OTLP protobuf (a big-endian `u32`
/// byte count, then an `Export*ServiceRequest`), in the same order as
/// [`write_json_lines`]: the Collector file exporter's `format: proto`.
pub fn write_protobuf(sim: Simulator, out: &mut impl Write) -> std::io::Result<SimSummary> {
    use prost::Message;
    let mut out = BufWriter::with_capacity(1 << 16, out);
    let mut summary = SimSummary::default();
    let mut buffer = Vec::new();
    let mut write = |out: &mut BufWriter<_>, message: &dyn Fn(&mut Vec<u8>)| {
        buffer.clear();
        message(&mut buffer);
        out.write_all(&(buffer.len() as u32).to_be_bytes())?;
        out.write_all(&buffer)
    };
    for batch in sim {
        summary.count(&batch);
        if let Some(metrics) = &batch.metrics {
            write(&mut out, &|buffer| metrics.encode_raw(buffer))?;
            summary.requests += 1;
        }
        if let Some(traces) = &batch.traces {
            write(&mut out, &|buffer| traces.encode_raw(buffer))?;
            summary.requests += 1;
        }
        if let Some(logs) = &batch.logs {
            write(&mut out, &|buffer| logs.encode_raw(buffer))?;
            summary.requests += 1;
        }
    }
    out.flush()?;
    Ok(summary)
}

/// Sends every batch to an OTLP/gRPC endpoint such as
/// `http://127.0.0.1:4317`. With `realtime`, batch `i` is sent when second
/// `i` of the run has passed on the wall clock, with every timestamp moved
/// so that the run starts now; otherwise batches go as fast as the
/// collector takes them, with their simulated times.
pub async fn send_otlp(
    sim: Simulator,
    endpoint: &str,
    realtime: bool,
) -> Result<SimSummary, SimError> {
    let connect_error = |reason: String| SimError::Connect {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let channel = Channel::from_shared(endpoint.to_owned())
        .map_err(|error| connect_error(error.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|error| connect_error(error.to_string()))?;
    let mut exporter = Exporter {
        endpoint,
        traces: TraceServiceClient::new(channel.clone()),
        metrics: MetricsServiceClient::new(channel.clone()),
        logs: LogsServiceClient::new(channel),
        summary: SimSummary::default(),
    };

    let wall_start = tokio::time::Instant::now();
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as i128);
    let shift = now_unix - sim.scenario().start_unix_nanos as i128;
    for (index, mut batch) in sim.enumerate() {
        exporter.summary.count(&batch);
        if realtime {
            // Send a second once it is over, as an SDK would export it.
            tokio::time::sleep_until(wall_start + Duration::from_secs(index as u64 + 1)).await;
            shift_batch(&mut batch, shift);
        }
        exporter.export(batch).await?;
    }
    Ok(exporter.summary)
}

/// The three OTLP clients, and what went through them.
struct Exporter<'a> {
    endpoint: &'a str,
    traces: TraceServiceClient<Channel>,
    metrics: MetricsServiceClient<Channel>,
    logs: LogsServiceClient<Channel>,
    summary: SimSummary,
}

fn retryable(code: tonic::Code) -> bool {
    use tonic::Code;
    // RESOURCE_EXHAUSTED is retryable only with RetryInfo; a collector under
    // memory pressure sends UNAVAILABLE instead, so treat it as final.
    matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
    )
}

impl Exporter<'_> {
    async fn export(&mut self, batch: Batch) -> Result<(), SimError> {
        if let Some(traces) = batch.traces {
            for request in split(traces.resource_spans, MAX_REQUEST_BYTES, |resource_spans| {
                ExportTraceServiceRequest { resource_spans }
            }) {
                let mut attempt = 0;
                let response = loop {
                    attempt += 1;
                    match self.traces.export(request.clone()).await {
                        Ok(response) => break response.into_inner(),
                        Err(status) => self.backoff("traces", status, attempt).await?,
                    }
                };
                self.summary.requests += 1;
                self.summary.rejected += response
                    .partial_success
                    .map_or(0, |partial| partial.rejected_spans.max(0) as u64);
            }
        }
        if let Some(metrics) = batch.metrics {
            for request in split(
                metrics.resource_metrics,
                MAX_REQUEST_BYTES,
                |resource_metrics| ExportMetricsServiceRequest { resource_metrics },
            ) {
                let mut attempt = 0;
                let response = loop {
                    attempt += 1;
                    match self.metrics.export(request.clone()).await {
                        Ok(response) => break response.into_inner(),
                        Err(status) => self.backoff("metrics", status, attempt).await?,
                    }
                };
                self.summary.requests += 1;
                self.summary.rejected += response
                    .partial_success
                    .map_or(0, |partial| partial.rejected_data_points.max(0) as u64);
            }
        }
        if let Some(logs) = batch.logs {
            for request in split(logs.resource_logs, MAX_REQUEST_BYTES, |resource_logs| {
                ExportLogsServiceRequest { resource_logs }
            }) {
                let mut attempt = 0;
                let response = loop {
                    attempt += 1;
                    match self.logs.export(request.clone()).await {
                        Ok(response) => break response.into_inner(),
                        Err(status) => self.backoff("logs", status, attempt).await?,
                    }
                };
                self.summary.requests += 1;
                self.summary.rejected += response
                    .partial_success
                    .map_or(0, |partial| partial.rejected_log_records.max(0) as u64);
            }
        }
        Ok(())
    }

    /// Waits before retrying a failed export, or gives up with the error.
    async fn backoff(
        &self,
        signal: &'static str,
        status: tonic::Status,
        attempt: u32,
    ) -> Result<(), SimError> {
        if !retryable(status.code()) || attempt >= EXPORT_ATTEMPTS {
            return Err(SimError::Export {
                signal,
                endpoint: self.endpoint.to_owned(),
                status: Box::new(status),
            });
        }
        let delay = Duration::from_millis(100 << attempt.min(6));
        tracing::debug!(signal, attempt, ?delay, %status, "export failed, retrying");
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// Splits a request's resources into requests of at most `limit` bytes (a
/// single larger resource goes alone).
pub(super) fn split<T: Message, R>(
    resources: Vec<T>,
    limit: usize,
    wrap: impl Fn(Vec<T>) -> R,
) -> Vec<R> {
    let mut requests = Vec::new();
    let mut chunk = Vec::new();
    let mut size = 0;
    for resource in resources {
        let length = resource.encoded_len() + 8;
        if !chunk.is_empty() && size + length > limit {
            requests.push(wrap(std::mem::take(&mut chunk)));
            size = 0;
        }
        size += length;
        chunk.push(resource);
    }
    if !chunk.is_empty() {
        requests.push(wrap(chunk));
    }
    requests
}

fn shift_time(time: &mut u64, shift: i128) {
    if *time != 0 {
        *time = (*time as i128 + shift).clamp(1, u64::MAX as i128) as u64;
    }
}

/// Moves every timestamp of `batch` by `shift` nanoseconds.
pub(crate) fn shift_batch(batch: &mut Batch, shift: i128) {
    shift_time(&mut batch.time_unix_nanos, shift);
    if let Some(traces) = &mut batch.traces {
        for span in traces
            .resource_spans
            .iter_mut()
            .flat_map(|resource| &mut resource.scope_spans)
            .flat_map(|scope| &mut scope.spans)
        {
            shift_time(&mut span.start_time_unix_nano, shift);
            shift_time(&mut span.end_time_unix_nano, shift);
            for event in &mut span.events {
                shift_time(&mut event.time_unix_nano, shift);
            }
        }
    }
    if let Some(logs) = &mut batch.logs {
        for record in logs
            .resource_logs
            .iter_mut()
            .flat_map(|resource| &mut resource.scope_logs)
            .flat_map(|scope| &mut scope.log_records)
        {
            shift_time(&mut record.time_unix_nano, shift);
            shift_time(&mut record.observed_time_unix_nano, shift);
        }
    }
    if let Some(metrics) = &mut batch.metrics {
        for metric in metrics
            .resource_metrics
            .iter_mut()
            .flat_map(|resource| &mut resource.scope_metrics)
            .flat_map(|scope| &mut scope.metrics)
        {
            match &mut metric.data {
                Some(metric::Data::Gauge(gauge)) => {
                    for point in &mut gauge.data_points {
                        shift_time(&mut point.start_time_unix_nano, shift);
                        shift_time(&mut point.time_unix_nano, shift);
                    }
                }
                Some(metric::Data::Sum(sum)) => {
                    for point in &mut sum.data_points {
                        shift_time(&mut point.start_time_unix_nano, shift);
                        shift_time(&mut point.time_unix_nano, shift);
                    }
                }
                Some(metric::Data::Histogram(histogram)) => {
                    for point in &mut histogram.data_points {
                        shift_time(&mut point.start_time_unix_nano, shift);
                        shift_time(&mut point.time_unix_nano, shift);
                    }
                }
                // The simulator emits no other kinds.
                _ => {}
            }
        }
    }
}
