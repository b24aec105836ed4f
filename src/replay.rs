//! Replay: recorded OTLP through the same recording and detection as live
//! mode, with time driven only by the data.
//!
//! Input is OTLP JSON lines, one `Export*ServiceRequest` per line, or
//! length-delimited OTLP protobuf (the two formats of the OTel Collector's
//! file exporter), optionally gzip-compressed; see [`input`]. A reader
//! thread cuts the input into items and decoding threads decode them ahead
//! (JSON with the scanning readers of `receiver::json`, protobuf traces with
//! the zero-copy `receiver::wire`); recording and detection run on the
//! calling thread in input order. The
//! store's clock is the newest event time seen so far; after each line,
//! client spans whose pairing timed out (in event time) are resolved and the
//! engine closes every window the watermark (newest event time minus the
//! allowed lateness) has passed. At the end, every remaining window closes.
//! Nothing reads the wall clock, so the same input gives the same events.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use bytes::Bytes;

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use thiserror::Error;

use crate::ingest::spans::SpanAnalyzer;
use crate::model::{Change, ExtraKeys, Incident, IncidentEvent, TraceBatch};
use crate::pipeline::{self, Pipeline};
use crate::receiver::decode::{decode_json_any, JsonRequest};
use crate::receiver::json::{read_logs, read_metrics, JsonTraces, ScannedTraces};
use crate::receiver::Sink;
use crate::store::changes::ChangeLog;
use crate::store::{ManualClock, Store};

mod chunks;
pub mod input;

pub use input::{Format, Signal};

#[derive(Debug, Error)]
pub enum ReplayError {
    // The cause is part of the message and deliberately not a `source()`:
    // printed as a chain (`{:#}`) it would appear twice.
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Decode {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A length-delimited protobuf message (numbered from 1) is unreadable.
    #[error("{path}: message {number}: {message}")]
    Message {
        path: PathBuf,
        number: usize,
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

/// Recording + detection over a data-driven clock: the pipeline, ticked
/// after every request with the newest event time read.
pub struct Replay {
    pipeline: Pipeline,
    /// The store's clock: the newest event time seen so far.
    clock: Arc<ManualClock>,
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
    /// A replay of the stages as `settings` configure them.
    pub fn new(settings: &pipeline::Settings) -> Self {
        let clock = Arc::new(ManualClock::new(0));
        let store = Arc::new(Store::with_clock(settings.store.clone(), clock.clone()));
        Replay {
            pipeline: Pipeline::new(settings, store),
            clock,
            newest: 0,
            stats: ReplayStats::default(),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        self.pipeline.store()
    }

    /// Records a change a tool posted (deploy, flag flip) at its time.
    pub fn record_change(&mut self, change: Change) -> u64 {
        self.pipeline.changes().record(change)
    }

    /// The changes known so far.
    pub fn changes(&self) -> &Arc<ChangeLog> {
        self.pipeline.changes()
    }

    /// Open grouped incidents.
    pub fn open_incidents(&self) -> Vec<&Incident> {
        self.pipeline.open_incidents()
    }

    /// The span analyzer (own time, local errors, retries, drill-down).
    pub fn spans(&self) -> &Arc<SpanAnalyzer> {
        self.pipeline.spans()
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
        self.feed_request(&request)
    }

    fn feed_request(&mut self, request: &JsonRequest) -> Vec<IncidentEvent> {
        self.stats.lines += 1;
        let outcome = match request {
            JsonRequest::Traces(request) => {
                self.advance_clock(newest_trace_time(request));
                let outcome = self.pipeline.ingest().traces(request);
                self.stats.spans += outcome.accepted + outcome.rejected;
                outcome
            }
            JsonRequest::Metrics(request) => {
                self.advance_clock(newest_metric_time(request));
                let outcome = self.pipeline.ingest().metrics(request);
                self.stats.points += outcome.accepted + outcome.rejected;
                outcome
            }
            JsonRequest::Logs(request) => {
                self.advance_clock(newest_log_time(request));
                let outcome = self.pipeline.ingest().logs(request);
                self.stats.logs += outcome.accepted + outcome.rejected;
                outcome
            }
        };
        self.stats.rejected += outcome.rejected;
        self.after_feed()
    }

    /// Records one line of OTLP JSON. Every signal is first read by the
    /// scanning readers (`receiver::json`); a trace line they cannot read
    /// goes to the borrowing serde reader, and anything left to the general
    /// decoder, which reads it or explains precisely what is wrong.
    pub fn feed_line(&mut self, line: &[u8]) -> Result<Vec<IncidentEvent>, String> {
        if let Some(text) = utf8(line) {
            match json_signal(line) {
                Some(Signal::Traces) => {
                    if let Some(traces) =
                        ScannedTraces::read(text, self.pipeline.spans().extra_keys())
                    {
                        return Ok(self.feed_batch(&traces.batch()));
                    }
                }
                Some(Signal::Metrics) => {
                    if let Some(request) = read_metrics(text) {
                        return Ok(self.feed_request(&JsonRequest::Metrics(request)));
                    }
                }
                Some(Signal::Logs) => {
                    if let Some(request) = read_logs(text) {
                        return Ok(self.feed_request(&JsonRequest::Logs(request)));
                    }
                }
                None => {}
            }
        }
        self.feed_line_slowly(line)
    }

    /// [`Replay::feed_line`] without the scanning readers.
    fn feed_line_slowly(&mut self, line: &[u8]) -> Result<Vec<IncidentEvent>, String> {
        if let Some(traces) = JsonTraces::read(line) {
            let batch = traces.batch_with(self.pipeline.spans().extra_keys());
            return Ok(self.feed_batch(&batch));
        }
        let request = decode_json_any(line)?;
        Ok(self.feed_request(&request))
    }

    /// Records spans read by one of the zero-copy readers.
    fn feed_batch(&mut self, batch: &TraceBatch<'_>) -> Vec<IncidentEvent> {
        let newest = batch
            .spans
            .iter()
            .map(|span| span.end_time_unix_nano)
            .max()
            .unwrap_or(0);
        self.stats.lines += 1;
        self.advance_clock(newest);
        let outcome = self.pipeline.ingest().record_batch(batch);
        self.stats.spans += outcome.accepted + outcome.rejected;
        self.stats.rejected += outcome.rejected;
        self.after_feed()
    }

    /// Records one length-delimited protobuf message (an
    /// `Export*ServiceRequest`; its signal is read from its fields). Trace
    /// messages take the zero-copy wire reader.
    pub fn feed_protobuf(&mut self, message: &[u8]) -> Result<Vec<IncidentEvent>, String> {
        use prost::Message;
        let decode = |error: prost::DecodeError| format!("not an OTLP export request: {error}");
        match input::sniff_signal(message) {
            Some(Signal::Traces) => {
                let batch = TraceBatch::read_with(message, self.pipeline.spans().extra_keys())
                    .map_err(|error| format!("not an OTLP trace export request: {error}"))?;
                Ok(self.feed_batch(&batch))
            }
            Some(Signal::Metrics) => Ok(self.feed(JsonRequest::Metrics(
                ExportMetricsServiceRequest::decode(message).map_err(decode)?,
            ))),
            Some(Signal::Logs) => Ok(self.feed(JsonRequest::Logs(
                ExportLogsServiceRequest::decode(message).map_err(decode)?,
            ))),
            None => {
                // No span, metric or log record: nothing to record, but the
                // message must still be well-formed.
                ExportTraceServiceRequest::decode(message).map_err(decode)?;
                self.stats.lines += 1;
                Ok(Vec::new())
            }
        }
    }

    /// Records an item prepared by the reader thread of [`replay_input`].
    pub fn feed_prepared(
        &mut self,
        prepared: &Prepared,
    ) -> Result<Vec<IncidentEvent>, ReplayError> {
        let result = match &prepared.item {
            PreparedItem::WireTraces(traces) => Ok(self.feed_batch(traces.borrow_dependent())),
            PreparedItem::ScannedTraces(traces) => {
                Ok(self.feed_batch(&traces.borrow_dependent().batch()))
            }
            PreparedItem::TraceJson(line) => self.feed_line_slowly(line),
            PreparedItem::Request(request) => Ok(self.feed_request(request)),
            PreparedItem::Empty => {
                self.stats.lines += 1;
                Ok(Vec::new())
            }
            PreparedItem::Invalid(message) => Err(message.clone()),
        };
        result.map_err(|message| prepared.at.error(message))
    }

    fn after_feed(&mut self) -> Vec<IncidentEvent> {
        let events = self.pipeline.tick(self.newest);
        self.stats.events += events.len() as u64;
        events
    }

    /// Resolves waiting client spans and closes every window up to the newest
    /// event time, as if the allowed lateness had passed.
    pub fn finish(&mut self) -> Vec<IncidentEvent> {
        let events = self.pipeline.finish(self.newest);
        self.stats.events += events.len() as u64;
        events
    }
}

/// Opens a file, inflating it when its name ends in `.gz`.
pub fn open(path: &Path) -> Result<Box<dyn BufRead + Send>, ReplayError> {
    open_counted(path, Arc::default())
}

/// As [`open`], counting the file's bytes (compressed, for `.gz`) as they
/// are read, for a progress report.
pub fn open_counted(
    path: &Path,
    count: Arc<std::sync::atomic::AtomicU64>,
) -> Result<Box<dyn BufRead + Send>, ReplayError> {
    let file = std::fs::File::open(path).map_err(|error| ReplayError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let file = input::Counting::new(file, count);
    let reader: Box<dyn Read + Send> =
        if path.extension().is_some_and(|extension| extension == "gz") {
            Box::new(flate2::read::MultiGzDecoder::new(file))
        } else {
            Box::new(file)
        };
    Ok(Box::new(BufReader::with_capacity(1 << 20, reader)))
}

/// Replays `input` (named `path` in errors) in whichever format it is
/// (JSON lines or length-delimited protobuf, told from its first byte),
/// handing each batch of events to `emit`.
///
/// A reader thread cuts the input into items (lines or messages, slices of
/// large chunks, not copied one by one) and deals them in turn to
/// [`decode_workers`] decoding threads: trace messages and lines become
/// views that borrow their bytes (handed over together), metric and log
/// requests prost types. Recording and detection stay on this thread, which
/// takes the decoded items back from the workers in the same turn, so they
/// are recorded in input order and the output is the same as a sequential
/// replay's. Items go back to the worker that decoded them once recorded,
/// to be freed where they were allocated (cheaper for the allocator than
/// freeing them here).
pub fn replay_input(
    replay: &mut Replay,
    path: &Path,
    mut input: Box<dyn BufRead + Send>,
    mut emit: impl FnMut(&[IncidentEvent]),
) -> Result<Format, ReplayError> {
    let format = input::sniff_format(&mut input).map_err(|error| ReplayError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let workers = decode_workers();
    let mut jobs = Vec::with_capacity(workers);
    let mut decoded = Vec::with_capacity(workers);
    let mut recycle = Vec::with_capacity(workers);
    let mut ends = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (job, job_end) = std::sync::mpsc::sync_channel::<Job>(PREPARED_AHEAD);
        let (done, done_end) =
            std::sync::mpsc::sync_channel::<Result<Prepared, ReplayError>>(PREPARED_AHEAD);
        let (free, free_end) = std::sync::mpsc::channel::<Prepared>();
        jobs.push(job);
        decoded.push(done_end);
        recycle.push(free);
        ends.push((job_end, done, free_end));
    }
    let extra = replay.spans().extra_keys().clone();
    std::thread::scope(|scope| {
        for (jobs, done, recycled) in ends {
            let decoder = Decoder {
                path,
                format,
                extra: extra.clone(),
            };
            spawn_named(scope, "replay-decode", move || {
                decoder.run(&jobs, &done, &recycled);
            });
        }
        spawn_named(scope, "replay-read", move || cut(format, input, &jobs));
        for turn in (0..workers).cycle() {
            // A worker hangs up once the reader has ended and its last item
            // went out; items are dealt in turn, so this is the end.
            let Ok(prepared) = decoded[turn].recv() else {
                break;
            };
            let prepared = prepared?;
            let events = replay.feed_prepared(&prepared)?;
            // The worker may have finished; then this thread frees it.
            let _ = recycle[turn].send(prepared);
            if !events.is_empty() {
                emit(&events);
            }
        }
        Ok(format)
    })
}

/// Starts a named thread in `scope` (the name shows in `top -H` and
/// profiles).
fn spawn_named<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    name: &str,
    work: impl FnOnce() + Send + 'scope,
) {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn_scoped(scope, work)
        .expect("the operating system refused to start a replay thread");
}

/// Items each decoding worker may be ahead of recording.
const PREPARED_AHEAD: usize = 32;

/// How many threads decode replay input: one per core the process may
/// use (at most four), since recording on its own thread is usually
/// quicker than decoding and the threads share the cores.
fn decode_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get().clamp(1, 4))
}

/// An input item, cut but not decoded, for a decoding worker.
enum Job {
    /// A line or message and its number (from 1).
    Item(usize, Bytes),
    /// The input could not be read any further at item `number`.
    Failed(usize, std::io::Error),
}

/// The reader thread: cuts `input` into items and deals them to the
/// workers in turn. Stops at the end, at the first read error, or when
/// recording has stopped.
fn cut(format: Format, mut input: Box<dyn BufRead + Send>, jobs: &[SyncSender<Job>]) {
    let mut chunks = chunks::Chunks::new(&mut input);
    let mut number = 0;
    for turn in (0..jobs.len()).cycle() {
        let job = loop {
            number += 1;
            let item = match format {
                Format::JsonLines => chunks.line(),
                Format::Protobuf => chunks.message(),
            };
            match item {
                Ok(None) => return,
                // Blank lines keep their number but are not items.
                Ok(Some(line))
                    if format == Format::JsonLines && line.iter().all(u8::is_ascii_whitespace) => {}
                Ok(Some(item)) => break Job::Item(number, item),
                Err(error) => break Job::Failed(number, error),
            }
        };
        let failed = matches!(job, Job::Failed(..));
        if jobs[turn].send(job).is_err() || failed {
            return;
        }
    }
}

self_cell::self_cell!(
    /// A trace message read by the zero-copy wire reader, with its bytes.
    pub struct WireTraces {
        owner: Bytes,
        #[covariant]
        dependent: TraceBatch,
    }
);

self_cell::self_cell!(
    /// A trace line read by the scanning JSON reader, with its bytes.
    pub struct JsonTraceLine {
        owner: Bytes,
        #[covariant]
        dependent: ScannedTraces,
    }
);

/// One input item, read and decoded, with its position for error messages.
pub struct Prepared {
    at: Position,
    item: PreparedItem,
}

/// Where an item is in its input.
struct Position {
    path: PathBuf,
    /// Line (JSON) or message (protobuf) number, from 1.
    number: usize,
    format: Format,
}

enum PreparedItem {
    WireTraces(WireTraces),
    ScannedTraces(JsonTraceLine),
    /// A trace line the scanning reader could not read: the borrowing serde
    /// reader, then the general decoder, on the recording thread.
    TraceJson(Bytes),
    Request(JsonRequest),
    /// A protobuf message with no span, metric or log record in it.
    Empty,
    Invalid(String),
}

impl Position {
    fn error(&self, message: String) -> ReplayError {
        match self.format {
            Format::JsonLines => ReplayError::Decode {
                path: self.path.clone(),
                line: self.number,
                message,
            },
            Format::Protobuf => ReplayError::Message {
                path: self.path.clone(),
                number: self.number,
                message,
            },
        }
    }
}

/// The signal of a JSON line, from its first member's name (what the
/// Collector's file exporter and `triage simulate` write first); `None` if
/// it starts otherwise, for the general decoder to tell.
fn json_signal(line: &[u8]) -> Option<Signal> {
    let start = line
        .iter()
        .position(|byte| !byte.is_ascii_whitespace() && *byte != b'{')
        .unwrap_or(line.len());
    let rest = &line[start..];
    if rest.starts_with(b"\"resourceSpans\"") {
        Some(Signal::Traces)
    } else if rest.starts_with(b"\"resourceMetrics\"") {
        Some(Signal::Metrics)
    } else if rest.starts_with(b"\"resourceLogs\"") {
        Some(Signal::Logs)
    } else {
        None
    }
}

/// A decoding worker of [`replay_input`].
struct Decoder<'a> {
    path: &'a Path,
    format: Format,
    /// The extra span attribute keys the span analysis collects.
    extra: ExtraKeys,
}

/// A line of JSON as text, if it is valid UTF-8: the whole line is checked
/// once (with SIMD where the CPU has it; lines are long and mostly ASCII),
/// so the readers can slice it freely.
fn utf8(line: &[u8]) -> Option<&str> {
    simdutf8::basic::from_utf8(line).ok()
}

impl Decoder<'_> {
    /// Decodes the items dealt to this worker and sends them back in the
    /// order they came; frees the items recording is done with. Stops when
    /// the reader has ended (after its last item) or recording has stopped.
    fn run(
        &self,
        jobs: &Receiver<Job>,
        done: &SyncSender<Result<Prepared, ReplayError>>,
        recycled: &Receiver<Prepared>,
    ) {
        for job in jobs {
            let (number, item) = match job {
                Job::Item(number, bytes) => match self.format {
                    Format::JsonLines => (number, self.prepare_line(bytes)),
                    Format::Protobuf => (number, self.prepare_message(bytes)),
                },
                Job::Failed(number, error) => match self.format {
                    Format::JsonLines => {
                        let _ = done.send(Err(ReplayError::Read {
                            path: self.path.to_path_buf(),
                            error,
                        }));
                        return;
                    }
                    Format::Protobuf => (number, PreparedItem::Invalid(error.to_string())),
                },
            };
            let stop = matches!(item, PreparedItem::Invalid(_));
            let prepared = Prepared {
                at: Position {
                    path: self.path.to_path_buf(),
                    number,
                    format: self.format,
                },
                item,
            };
            if done.send(Ok(prepared)).is_err() || stop {
                return;
            }
            while recycled.try_recv().is_ok() {}
        }
    }

    fn prepare_line(&self, line: Bytes) -> PreparedItem {
        let signal = json_signal(&line);
        if signal == Some(Signal::Traces) {
            return match JsonTraceLine::try_new_or_recover(line, |line| {
                utf8(line)
                    .and_then(|text| ScannedTraces::read(text, &self.extra))
                    .ok_or(())
            }) {
                Ok(traces) => PreparedItem::ScannedTraces(traces),
                Err((line, ())) => PreparedItem::TraceJson(line),
            };
        }
        let fast = utf8(&line).and_then(|text| match signal {
            Some(Signal::Metrics) => read_metrics(text).map(JsonRequest::Metrics),
            Some(Signal::Logs) => read_logs(text).map(JsonRequest::Logs),
            _ => None,
        });
        match fast.map_or_else(|| decode_json_any(&line), Ok) {
            Ok(request) => PreparedItem::Request(request),
            Err(message) => PreparedItem::Invalid(message),
        }
    }

    fn prepare_message(&self, message: Bytes) -> PreparedItem {
        use prost::Message;
        let decode = |error: prost::DecodeError| {
            PreparedItem::Invalid(format!("not an OTLP export request: {error}"))
        };
        match input::sniff_signal(&message) {
            Some(Signal::Traces) => {
                match WireTraces::try_new(message, |message| {
                    TraceBatch::read_with(message, &self.extra)
                }) {
                    Ok(traces) => PreparedItem::WireTraces(traces),
                    Err(error) => {
                        PreparedItem::Invalid(format!("not an OTLP trace export request: {error}"))
                    }
                }
            }
            Some(Signal::Metrics) => match ExportMetricsServiceRequest::decode(message) {
                Ok(request) => PreparedItem::Request(JsonRequest::Metrics(request)),
                Err(error) => decode(error),
            },
            Some(Signal::Logs) => match ExportLogsServiceRequest::decode(message) {
                Ok(request) => PreparedItem::Request(JsonRequest::Logs(request)),
                Err(error) => decode(error),
            },
            None => match ExportTraceServiceRequest::decode(message) {
                Ok(_) => PreparedItem::Empty,
                Err(error) => decode(error),
            },
        }
    }
}

/// Replays length-delimited OTLP protobuf messages. Errors name the
/// message's number (from 1), like line numbers for JSON.
pub fn replay_protobuf(
    replay: &mut Replay,
    path: &Path,
    mut input: impl BufRead,
    mut emit: impl FnMut(&[IncidentEvent]),
) -> Result<(), ReplayError> {
    let mut message = Vec::new();
    let mut number = 0;
    loop {
        number += 1;
        let more = input::read_message(&mut input, &mut message).map_err(|source| {
            ReplayError::Message {
                path: path.to_path_buf(),
                number,
                message: source.to_string(),
            }
        })?;
        if !more {
            return Ok(());
        }
        let events = replay
            .feed_protobuf(&message)
            .map_err(|message| ReplayError::Message {
                path: path.to_path_buf(),
                number,
                message,
            })?;
        if !events.is_empty() {
            emit(&events);
        }
    }
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
        let line = line.map_err(|error| ReplayError::Read {
            path: path.to_path_buf(),
            error,
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
pub(crate) mod tests;
