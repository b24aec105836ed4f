//! Replay: recorded OTLP through the same recording and detection as live
//! mode, with time driven only by the data.
//!
//! Input is OTLP JSON lines, one `Export*ServiceRequest` per line (what the
//! OTel Collector's file exporter writes), optionally gzip-compressed. The
//! store's clock is the newest event time seen so far; after each line,
//! client spans whose pairing timed out (in event time) are resolved and the
//! engine closes every window the watermark (newest event time minus the
//! allowed lateness) has passed. At the end, every remaining window closes.
//! Nothing reads the wall clock, so the same input gives the same events.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use thiserror::Error;

use crate::analyze::spans::{SpanAnalyzer, SpanConfig};
use crate::detect::engine::Engine;
use crate::detect::incident::IncidentEvent;
use crate::detect::DetectConfig;
use crate::receiver::http::{decode_json_any, JsonRequest};
use crate::receiver::ingest::Ingest;
use crate::receiver::json::JsonTraces;
use crate::receiver::Sink;
use crate::store::{ManualClock, Store, StoreConfig};

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Decode {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Counts of what a replay read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub lines: u64,
    pub spans: u64,
    pub points: u64,
    pub logs: u64,
    /// Items rejected as unusable (the same rules as live partial success).
    pub rejected: u64,
    pub events: u64,
}

/// Recording + detection over a data-driven clock.
pub struct Replay {
    store: Arc<Store>,
    clock: Arc<ManualClock>,
    ingest: Ingest,
    /// Span analysis, fed by `ingest`; read by root-cause analysis.
    spans: Arc<SpanAnalyzer>,
    engine: Engine,
    newest: u64,
    pub stats: ReplayStats,
}

fn newest_trace_time(request: &ExportTraceServiceRequest) -> u64 {
    request
        .resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .flat_map(|scope| &scope.spans)
        .map(|span| span.end_time_unix_nano)
        .max()
        .unwrap_or(0)
}

fn newest_metric_time(request: &ExportMetricsServiceRequest) -> u64 {
    let mut newest = 0;
    for metric in request
        .resource_metrics
        .iter()
        .flat_map(|resource| &resource.scope_metrics)
        .flat_map(|scope| &scope.metrics)
    {
        let time = match &metric.data {
            Some(Data::Gauge(gauge)) => gauge.data_points.iter().map(|p| p.time_unix_nano).max(),
            Some(Data::Sum(sum)) => sum.data_points.iter().map(|p| p.time_unix_nano).max(),
            Some(Data::Histogram(histogram)) => {
                histogram.data_points.iter().map(|p| p.time_unix_nano).max()
            }
            Some(Data::ExponentialHistogram(histogram)) => {
                histogram.data_points.iter().map(|p| p.time_unix_nano).max()
            }
            Some(Data::Summary(summary)) => {
                summary.data_points.iter().map(|p| p.time_unix_nano).max()
            }
            None => None,
        };
        newest = newest.max(time.unwrap_or(0));
    }
    newest
}

fn newest_log_time(request: &ExportLogsServiceRequest) -> u64 {
    request
        .resource_logs
        .iter()
        .flat_map(|resource| &resource.scope_logs)
        .flat_map(|scope| &scope.log_records)
        .map(|record| record.time_unix_nano.max(record.observed_time_unix_nano))
        .max()
        .unwrap_or(0)
}

impl Replay {
    pub fn new(store: StoreConfig, detect: DetectConfig, lateness: Duration) -> Self {
        let clock = Arc::new(ManualClock::new(0));
        let spans = Arc::new(SpanAnalyzer::new(SpanConfig::default(), &store));
        let store = Arc::new(Store::with_clock(store, clock.clone()));
        Replay {
            ingest: Ingest::new(Arc::clone(&store)).with_spans(Arc::clone(&spans)),
            spans,
            engine: Engine::new(detect, lateness),
            store,
            clock,
            newest: 0,
            stats: ReplayStats::default(),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Uses `config` for the span analysis instead of the defaults (call
    /// before feeding anything).
    pub fn with_span_config(mut self, config: SpanConfig) -> Self {
        self.spans = Arc::new(SpanAnalyzer::new(config, self.store.config()));
        self.ingest = Ingest::new(Arc::clone(&self.store)).with_spans(Arc::clone(&self.spans));
        self
    }

    /// The span analyzer (own time, local errors, retries, drill-down).
    pub fn spans(&self) -> &Arc<SpanAnalyzer> {
        &self.spans
    }

    /// Moves the data clock forward to `time` (never back).
    fn advance_clock(&mut self, time: u64) {
        if time > self.newest {
            self.newest = time;
            self.clock.set(time);
        }
    }

    /// Records one decoded request and returns the events of the windows it
    /// closed.
    pub fn feed(&mut self, request: JsonRequest) -> Vec<IncidentEvent> {
        self.stats.lines += 1;
        let outcome = match &request {
            JsonRequest::Traces(request) => {
                self.advance_clock(newest_trace_time(request));
                let outcome = self.ingest.traces(request);
                self.stats.spans += outcome.accepted + outcome.rejected;
                outcome
            }
            JsonRequest::Metrics(request) => {
                self.advance_clock(newest_metric_time(request));
                let outcome = self.ingest.metrics(request);
                self.stats.points += outcome.accepted + outcome.rejected;
                outcome
            }
            JsonRequest::Logs(request) => {
                self.advance_clock(newest_log_time(request));
                let outcome = self.ingest.logs(request);
                self.stats.logs += outcome.accepted + outcome.rejected;
                outcome
            }
        };
        self.stats.rejected += outcome.rejected;
        self.after_feed()
    }

    /// Records one line of OTLP JSON. Trace lines take the fast borrowing
    /// reader; anything else (and anything it cannot read) the general one.
    pub fn feed_line(&mut self, line: &[u8]) -> Result<Vec<IncidentEvent>, String> {
        if let Some(traces) = JsonTraces::read(line) {
            let batch = traces.batch_with(self.spans.extra_keys());
            let newest = batch
                .spans
                .iter()
                .map(|span| span.end_time_unix_nano)
                .max()
                .unwrap_or(0);
            self.stats.lines += 1;
            self.advance_clock(newest);
            let outcome = self.ingest.record_batch(&batch);
            self.stats.spans += outcome.accepted + outcome.rejected;
            self.stats.rejected += outcome.rejected;
            return Ok(self.after_feed());
        }
        let request = decode_json_any(line)?;
        Ok(self.feed(request))
    }

    fn after_feed(&mut self) -> Vec<IncidentEvent> {
        self.store.expire_pairs();
        self.spans.expire(&self.store);
        let events = self.engine.advance(&self.store, self.newest);
        self.stats.events += events.len() as u64;
        events
    }

    /// Resolves waiting client spans and closes every window up to the newest
    /// event time, as if the allowed lateness had passed.
    pub fn finish(&mut self) -> Vec<IncidentEvent> {
        self.store.flush_pairs();
        self.spans.flush(&self.store);
        let last = self.store.window_index(self.newest);
        let events = self.engine.close_through(&self.store, last);
        self.stats.events += events.len() as u64;
        events
    }
}

/// Opens a file, inflating it when its name ends in `.gz`.
pub fn open(path: &Path) -> Result<Box<dyn BufRead>, ReplayError> {
    let file = std::fs::File::open(path).map_err(|source| ReplayError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|extension| extension == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, reader)))
}

/// Replays the lines of `input` (named `path` in errors), handing each
/// batch of events to `emit`. A line that is not an OTLP export request
/// stops the replay with its line number: a silently skipped line would make
/// the output wrong without anyone noticing.
pub fn replay_lines(
    replay: &mut Replay,
    path: &Path,
    input: impl BufRead,
    mut emit: impl FnMut(&[IncidentEvent]),
) -> Result<(), ReplayError> {
    for (number, line) in input.split(b'\n').enumerate() {
        let line = line.map_err(|source| ReplayError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let events = replay
            .feed_line(&line)
            .map_err(|message| ReplayError::Decode {
                path: path.to_path_buf(),
                line: number + 1,
                message,
            })?;
        if !events.is_empty() {
            emit(&events);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
