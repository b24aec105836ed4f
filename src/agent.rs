//! Agent mode: this collector records spans as usual and, each time
//! detection closes a window, sends the gateway a summary of it as OTLP
//! metrics ([`summary`]) through a bounded queue ([`export`]). Received
//! metrics and logs are forwarded as they are. The gateway is a triage in
//! the default mode: it recognises the summaries as span metrics
//! (`crate::ingest::red`, `crate::ingest::summary`) and records them into
//! the series, drill-down and change detection the spans would have fed,
//! so it detects and explains across every agent's services.
//!
//! Invariants:
//! - Nothing here blocks ingestion or detection: summaries are built on the
//!   detection thread after a tick (a read of the store) and handed to the
//!   queue with `try_send`; a full queue drops and counts.
//! - Each closed window is summarised once, in order; windows closed before
//!   the agent started are not sent (their spans are the previous run's).
//!
//! What a summary leaves out, and so what a gateway does not have: the
//! sub-window detail inside a window (a gateway places onsets to the
//! window, not to 2 s), flag evaluations on spans other than entry spans,
//! and anything about spans that arrived after their window closed on the
//! agent (counted there as `after_close` samples).

pub mod config;
pub mod export;
pub mod summary;

pub use config::AgentConfig;

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use parking_lot::Mutex;

use crate::ingest::Ingest;
use crate::pipeline::Pipeline;
use crate::receiver::{DecodeError, Outcome, Sink};
use crate::telemetry;

use self::export::{Payload, Queue};

/// Summarises closed windows into the gateway queue.
#[derive(Debug)]
pub struct Agent {
    /// This agent's name in its summaries (`triage.agent`).
    name: String,
    queue: Queue,
    /// The newest window summarised; `None` until detection first closes
    /// a window.
    last: Mutex<Option<i64>>,
}

impl Agent {
    pub fn new(name: String, queue: Queue) -> Self {
        Agent {
            name,
            queue,
            last: Mutex::new(None),
        }
    }

    /// The name used when none is configured: the host name, as the
    /// `HOSTNAME` variable or the kernel has it.
    pub fn default_name() -> String {
        std::env::var("HOSTNAME")
            .ok()
            .filter(|name| !name.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|name| name.trim().to_owned())
            })
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "triage-agent".to_owned())
    }

    /// After a tick of `pipeline`: summarises every window detection closed
    /// since the last call and queues the summaries. Returns how many
    /// windows were summarised.
    pub fn after_tick(&self, pipeline: &Pipeline) -> usize {
        let Some(closed) = pipeline.store().closed_through() else {
            return 0;
        };
        let first = {
            let mut last = self.last.lock();
            let first = match *last {
                // Detection's first close: that window only, as detection.
                None => closed,
                Some(previous) if previous >= closed => return 0,
                Some(previous) => previous + 1,
            };
            *last = Some(closed);
            first
        };
        // A long pause (a stalled tick) is not made up beyond the ring.
        let n_windows = pipeline.store().config().windows.get() as i64;
        let first = first.max(closed - n_windows + 1);
        for index in first..=closed {
            self.send_window(pipeline, index);
        }
        (closed - first + 1) as usize
    }

    /// Summarises and queues window `index`.
    pub fn send_window(&self, pipeline: &Pipeline, index: i64) {
        let summary = summary::summarize(
            pipeline.store(),
            Some(pipeline.spans().as_ref()),
            index,
            &self.name,
        );
        for request in summary.requests {
            self.queue.push(Payload::Metrics(request));
        }
        metrics::counter!(telemetry::AGENT_WINDOWS).increment(1);
    }
}

/// The receivers' sink in agent mode: records everything locally, and
/// forwards received metrics and logs to the gateway.
pub struct AgentSink {
    inner: Arc<Ingest>,
    queue: Queue,
    forward_metrics: bool,
    forward_logs: bool,
}

impl AgentSink {
    pub fn new(inner: Arc<Ingest>, queue: Queue, config: &AgentConfig) -> Self {
        AgentSink {
            inner,
            queue,
            forward_metrics: config.forward_metrics,
            forward_logs: config.forward_logs,
        }
    }
}

impl Sink for AgentSink {
    fn traces(&self, request: &ExportTraceServiceRequest) -> Outcome {
        self.inner.traces(request)
    }

    fn traces_protobuf(&self, bytes: &[u8]) -> Result<Outcome, DecodeError> {
        self.inner.traces_protobuf(bytes)
    }

    fn traces_json(&self, body: &str) -> Option<Outcome> {
        self.inner.traces_json(body)
    }

    fn metrics(&self, request: &ExportMetricsServiceRequest) -> Outcome {
        let outcome = self.inner.metrics(request);
        if self.forward_metrics && !request.resource_metrics.is_empty() {
            self.queue.push(Payload::Metrics(request.clone()));
        }
        outcome
    }

    fn logs(&self, request: &ExportLogsServiceRequest) -> Outcome {
        let outcome = self.inner.logs(request);
        if self.forward_logs && !request.resource_logs.is_empty() {
            self.queue.push(Payload::Logs(request.clone()));
        }
        outcome
    }
}

#[cfg(test)]
mod tests;
