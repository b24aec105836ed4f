//! A deterministic traffic simulator: a microservice shop that emits OTLP
//! traces, metrics and logs, with injectable faults.
//!
//! It exists to exercise and evaluate detection: `triage simulate` writes OTLP
//! JSON lines for `triage replay` or sends live OTLP/gRPC to a collector, and
//! the evaluation runs [`named_scenarios`] through the detectors.
//!
//! - [`Scenario`] says what to simulate (seed, start, duration, rate, faults);
//!   [`Simulator`] is an iterator of one [`Batch`] per simulated second.
//! - [`Topology`] tells who calls whom (12 services, 4 deep; 5 counting
//!   databases and external APIs).
//! - [`FaultKind`] lists the faults; [`parse_fault`] reads their spec form.
//! - [`write_json_lines`] and [`send_otlp`] are the two outputs;
//!   [`SimulateArgs`] and [`run_simulate`] the command line.
//!
//! Inside: `model` defines the shop (services, operations, calls, span
//! attribute templates); `engine` runs it second by second (deploys, faults,
//! traffic, buffering by end time), with `engine/request` generating each
//! trace; `metrics` keeps per-pod state and builds the metrics; `rng` is the
//! seeded generator; `output` and `cli` are the edges.
//!
//! Invariants: the same scenario always produces byte-identical output (no
//! clock, no hash-map order, seeded generators only); batches come in event
//! time order and every span of a batch ends within its second; every call
//! between services is a CLIENT span in the caller with exactly one SERVER
//! child in the callee (unless the callee is down). Protobuf types are the
//! output format here, so unlike the store this module builds them directly.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};

mod cli;
mod engine;
pub mod fault;
mod metrics;
mod model;
mod output;
mod rng;
mod topology;

pub use cli::{run_simulate, SimulateArgs};
pub use fault::{parse_duration, parse_fault, Fault, FaultKind, FAULT_SPECS};
pub use output::{send_otlp, write_json_lines, SimSummary};
pub use topology::{Edge, EdgeKind, ServiceInfo, Topology};

/// 2025-01-06T09:00:00Z, a Monday morning: the default start, so that runs
/// are reproducible unless a start is chosen.
pub const DEFAULT_START_UNIX_NANOS: u64 = 1_736_154_000 * 1_000_000_000;

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Seeds every random choice; the same scenario gives the same output.
    pub seed: u64,
    /// Event time of the first batch.
    pub start_unix_nanos: u64,
    /// Length of the run (whole seconds are simulated).
    pub duration: Duration,
    /// Mean entry (user) requests per second, before the daily shape and
    /// bursts. Each request is a trace of about 13 spans.
    pub entry_rate_per_sec: f64,
    pub faults: Vec<Fault>,
    /// Roll new versions of random services at random times (about one every
    /// 30 minutes), with no change in behaviour. They keep clear of faults:
    /// none starts within 15 minutes before or 5 minutes after a fault starts.
    pub benign_deploys: bool,
    /// Modulate the entry rate over the day (UTC): trough at 04:00 (0.5x),
    /// peak at 16:00 (1.5x).
    pub daily_shape: bool,
}

impl Default for Scenario {
    /// One healthy hour at 20 requests per second, with the daily shape and
    /// benign deploys.
    fn default() -> Self {
        Scenario {
            seed: 1,
            start_unix_nanos: DEFAULT_START_UNIX_NANOS,
            duration: Duration::from_secs(3600),
            entry_rate_per_sec: 20.0,
            faults: Vec::new(),
            benign_deploys: true,
            daily_shape: true,
        }
    }
}

/// One simulated second: the spans and log records that end in
/// `[time_unix_nanos, time_unix_nanos + 1 s)`, and every 10 s the metrics
/// of the interval that closes at `time_unix_nanos`. Empty signals are
/// `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub time_unix_nanos: u64,
    pub traces: Option<ExportTraceServiceRequest>,
    pub metrics: Option<ExportMetricsServiceRequest>,
    pub logs: Option<ExportLogsServiceRequest>,
}

/// Which signals a [`Simulator`] emits. Each signal draws from its own
/// random stream, so leaving one out changes nothing in the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signals {
    pub traces: bool,
    pub metrics: bool,
    pub logs: bool,
}

impl Signals {
    pub const ALL: Signals = Signals {
        traces: true,
        metrics: true,
        logs: true,
    };
    pub const TRACES: Signals = Signals {
        traces: true,
        metrics: false,
        logs: false,
    };
}

impl Default for Signals {
    fn default() -> Self {
        Signals::ALL
    }
}

/// Why simulating failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid fault {spec:?}: {reason}")]
    Fault { spec: String, reason: String },
    #[error("unknown scenario {name:?}; known scenarios: {known} (list them with `triage simulate --list`)")]
    UnknownScenario { name: String, known: String },
    #[error("{0}")]
    Args(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to the OTLP/gRPC endpoint {endpoint}: {reason}; is a collector listening there (e.g. `triage run`)? The endpoint looks like http://127.0.0.1:4317")]
    Connect { endpoint: String, reason: String },
    #[error("exporting {signal} to {endpoint} failed: {status}")]
    Export {
        signal: &'static str,
        endpoint: String,
        status: Box<tonic::Status>,
    },
}

/// The generator: an iterator of one [`Batch`] per simulated second.
pub struct Simulator {
    engine: engine::Engine,
    scenario: Scenario,
}

// === impl Simulator ===

impl Simulator {
    /// A simulator for `scenario`. Faults that name unknown services or
    /// routes are skipped with a warning; use [`Simulator::try_new`] to have
    /// them rejected.
    pub fn new(scenario: Scenario) -> Self {
        // Lenient scheduling skips what does not resolve; it cannot fail.
        let faults = engine::Engine::schedule(&scenario, false).unwrap_or_default();
        let engine = engine::Engine::new(&scenario, faults);
        Simulator { engine, scenario }
    }

    /// A simulator for `scenario`, or why one of its faults does not fit the
    /// simulated topology.
    pub fn try_new(scenario: Scenario) -> Result<Self, SimError> {
        let faults = engine::Engine::schedule(&scenario, true).map_err(|reason| {
            let spec = scenario
                .faults
                .iter()
                .find(|fault| fault::resolve(model::model(), &fault.kind).is_err())
                .map(|fault| fault.kind.to_string())
                .unwrap_or_default();
            SimError::Fault { spec, reason }
        })?;
        let engine = engine::Engine::new(&scenario, faults);
        Ok(Simulator { engine, scenario })
    }

    /// The simulated services and who calls whom.
    pub fn topology(&self) -> &Topology {
        self.engine.topology()
    }

    /// Emits only the chosen signals (all by default). Leaving out metrics
    /// and logs makes long runs much cheaper when only traces matter.
    pub fn with_signals(mut self, signals: Signals) -> Self {
        self.engine.set_signals(signals);
        self
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }
}

impl Iterator for Simulator {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        self.engine.next_batch()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let remaining = self.engine.remaining();
        (remaining, Some(remaining))
    }
}

/// The simulated topology, without building a simulator.
pub fn topology() -> &'static Topology {
    &model::model().topology
}

/// The scenarios the evaluation runs: "healthy" and one per fault kind (two
/// for errors: a whole service and one endpoint). Each is 40 minutes at the
/// default rate with the fault starting at 30 minutes, so that detectors
/// have warmed up; the memory leak runs 100 minutes, because a trend needs
/// half an hour to be believed.
pub fn named_scenarios() -> Vec<(&'static str, Scenario)> {
    let minutes = |m: u64| Duration::from_secs(m * 60);
    let with = |spec: &str, length: u64| {
        let kind = parse_fault(spec).expect("built-in fault specs are valid");
        Scenario {
            duration: minutes(length),
            faults: vec![Fault {
                kind,
                start: minutes(30),
                duration: None,
            }],
            ..Scenario::default()
        }
    };
    vec![
        (
            "healthy",
            Scenario {
                duration: minutes(40),
                ..Scenario::default()
            },
        ),
        ("latency", with("latency:payment", 40)),
        ("errors", with("errors:cart", 40)),
        ("errors-endpoint", with("errors:catalog:/products/{id}", 40)),
        ("down", with("down:inventory", 40)),
        ("slow-dependency", with("slow-dependency:user", 40)),
        ("retry-storm", with("retry-storm:checkout:payment", 40)),
        ("memory-leak", with("memory-leak:cart", 100)),
        ("pool-exhaustion", with("pool-exhaustion:catalog", 40)),
        ("cpu-throttling", with("cpu-throttling:pricing", 40)),
        ("bad-deploy", with("bad-deploy:payment", 40)),
    ]
}

#[cfg(test)]
mod tests;
