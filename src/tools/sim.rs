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
//!   [`BenignChange`]s are harmless deploys and flag flips (distractors).
//! - [`GroundTruth`] says, per fault, where it starts, who inherits it, the
//!   change behind it, its scope and its pattern; [`Simulator::changes`]
//!   lists the change events a CI/CD tool would post. [`rca_scenarios`] is
//!   the root-cause evaluation's set.
//! - [`write_json_lines`] and [`send_otlp`] are the two outputs;
//!   [`SimulateArgs`] and [`run_simulate`] the command line.
//!
//! Inside: `model` defines the shop (services, operations, calls, span
//! attribute templates); `engine` runs it second by second (deploys, faults,
//! traffic, buffering by end time), with `engine/request` generating each
//! trace; `metrics` keeps per-pod state and builds the metrics; `rng` is the
//! seeded generator; `truth` derives the ground truth; `output` and `cli`
//! are the edges.
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
pub(crate) mod rng;
mod topology;
mod truth;

pub use cli::{run_simulate, SimulateArgs};
pub use fault::{
    parse_duration, parse_fault, parse_fault_in, Fault, FaultKind, Scope, FAULT_SPECS,
};
pub use model::Shop;
pub use output::{send_otlp, write_json_lines, SimSummary};
pub use topology::{Edge, EdgeKind, ServiceInfo, Topology};
pub use truth::{GroundTruth, ScenarioTruth, ScopeAttribute, TruthEdge};

use crate::model::Change;

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
    /// Harmless changes at set times, posted like the harmful ones:
    /// distractors for change correlation.
    pub benign_changes: Vec<BenignChange>,
    /// The simulated system (the first shop unless set).
    pub shop: Shop,
}

/// A harmless change at a set time.
#[derive(Debug, Clone, PartialEq)]
pub struct BenignChange {
    /// Offset from the scenario start.
    pub at: Duration,
    pub kind: BenignChangeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BenignChangeKind {
    /// A new patch version of the service rolls out pod by pod and behaves
    /// exactly like the old one.
    Deploy { service: String },
    /// A feature flag of the service (evaluated on its requests from the
    /// start of the run, variant `off`) starts serving variant `on` to part
    /// of them; both variants behave alike.
    FlagFlip { service: String, flag: String },
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
            benign_changes: Vec::new(),
            shop: Shop::First,
        }
    }
}

// === impl Scenario ===

impl Scenario {
    /// One healthy hour of `shop` at its own default rate, with its daily
    /// (and weekly) shape, bursts and benign changes.
    pub fn for_shop(shop: Shop) -> Self {
        Scenario {
            entry_rate_per_sec: model::model_of(shop).traffic.default_rate,
            shop,
            ..Scenario::default()
        }
    }

    /// The ground truth of the scenario's faults and the change events of
    /// its run (what [`Simulator::ground_truth`] and [`Simulator::changes`]
    /// give, without keeping a simulator).
    pub fn truth(&self) -> ScenarioTruth {
        let simulator = Simulator::new(self.clone());
        ScenarioTruth {
            ground_truth: simulator.ground_truth().to_vec(),
            changes: simulator.changes().to_vec(),
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
    // The cause is part of the message and deliberately not a `source()`:
    // printed as a chain (`{:#}`) it would appear twice.
    #[error("cannot write {path}: {error}")]
    Io { path: String, error: std::io::Error },
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
        let schedule = engine::Engine::schedule(&scenario, false).unwrap_or_default();
        let engine = engine::Engine::new(&scenario, schedule);
        Simulator { engine, scenario }
    }

    /// A simulator for `scenario`, or why one of its faults does not fit the
    /// simulated topology.
    pub fn try_new(scenario: Scenario) -> Result<Self, SimError> {
        let schedule = engine::Engine::schedule(&scenario, true).map_err(|reason| {
            let spec = scenario
                .faults
                .iter()
                .find(|fault| fault::resolve(model::model_of(scenario.shop), &fault.kind).is_err())
                .map(|fault| fault.kind.to_string())
                .unwrap_or_else(|| "benign change".to_owned());
            SimError::Fault { spec, reason }
        })?;
        let engine = engine::Engine::new(&scenario, schedule);
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

    /// The ground truth of each fault, in the scenario's order (faults that
    /// did not resolve are left out, as they are from the run).
    pub fn ground_truth(&self) -> &[GroundTruth] {
        self.engine.truth()
    }

    /// The change events a CI/CD pipeline and a flag service would post
    /// during the run, in time order: every deploy (benign, bad, canary,
    /// rollback) and every flag change, `source: api`.
    pub fn changes(&self) -> &[Change] {
        self.engine.changes()
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

/// The first shop's topology, without building a simulator.
pub fn topology() -> &'static Topology {
    &model::model().topology
}

/// The topology of `shop`, without building a simulator.
pub fn topology_of(shop: Shop) -> &'static Topology {
    &model::model_of(shop).topology
}

/// The scenarios the evaluation runs: "healthy" and one per fault kind (two
/// for errors: a whole service and one endpoint). Each is 40 minutes at the
/// default rate with the fault starting 6 s after minute 30, so that
/// detectors have warmed up and the fault begins in the middle of a 10 s
/// window, where the onset has to be placed by its sub-windows; the memory
/// leak runs 100 minutes, because a trend needs half an hour to be
/// believed.
pub fn named_scenarios() -> Vec<(&'static str, Scenario)> {
    let minutes = |m: u64| Duration::from_secs(m * 60);
    let with = |spec: &str, length: u64| {
        let kind = parse_fault(spec).expect("built-in fault specs are valid");
        Scenario {
            duration: minutes(length),
            faults: vec![Fault {
                kind,
                start: minutes(30) + Duration::from_secs(6),
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
    .into_iter()
    .chain(shop2_scenarios())
    .collect()
}

/// The faults written for the second shop, as (spec, what happens), for
/// `--list`. Every other fault spec applies to it too, with its names.
pub const SHOP2_FAULTS: [(&str, &str); 12] = [
    (
        "slow-deploy:search",
        "a new version rolls out pod by pod, 3x slower on its own pods only",
    ),
    (
        "slowdown:listing:1.4:/listings/batch",
        "one endpoint of a busy service takes 1.4x as long (p95 +40%)",
    ),
    (
        "error-rate:auth:1:ValidateToken",
        "one endpoint of a busy service: +1 percentage point of errors",
    ),
    (
        "noisy-neighbour:search",
        "search's pods on one k8s.node.name 2.5x slower, the others not",
    ),
    (
        "error-rate:webhook-receiver:20",
        "a low-rate service (about 0.6/s): 0.1% -> 20% errors",
    ),
    (
        "error-rate:backoffice:20",
        "a low-rate admin console (0.3/s): 0.1% -> 20% errors",
    ),
    (
        "slowdown:reporting:3",
        "a low-rate job (0.2/s) takes 3x as long (p95 x3)",
    ),
    (
        "slowdown:ledger:3",
        "a low-rate service (about 2/s) takes 3x as long",
    ),
    ("down:availability", "a service down: its callers time out"),
    (
        "slow-dependency:booking",
        "a slow database: booking-db answers 10x slower",
    ),
    (
        "errors:search (with --fault-for 3m)",
        "an error burst: 25% of searches fail for 3 minutes",
    ),
    (
        "errors:reviews + slow-dependency:guest-profile",
        "two independent faults at once on unrelated services",
    ),
];

/// The second shop's detection scenarios (in [`named_scenarios`], named
/// `shop2-*`): each 40 minutes at the shop's default rate (40 entry
/// requests/s) from Monday 09:00 UTC with its daily and weekly shape,
/// bursts, benign deploys and configuration changes, the fault from
/// 30 min 6 s as in the first shop's set; and `shop2-healthy`, four
/// healthy hours from Friday 20:00 UTC (the evening peak, its decline and
/// the easing into the weekend) for counting false incidents.
pub fn shop2_scenarios() -> Vec<(&'static str, Scenario)> {
    let minutes = |m: u64| Duration::from_secs(m * 60);
    let base = || Scenario {
        duration: minutes(40),
        ..Scenario::for_shop(Shop::Second)
    };
    let fault = |spec: &str, length: Option<Duration>| Fault {
        kind: parse_fault_in(Shop::Second, spec).expect("built-in fault specs are valid"),
        start: minutes(30) + Duration::from_secs(6),
        duration: length,
    };
    let with = |specs: &[&str]| Scenario {
        faults: specs.iter().map(|spec| fault(spec, None)).collect(),
        ..base()
    };
    vec![
        (
            "shop2-healthy",
            Scenario {
                // Friday 2025-01-10 20:00 UTC.
                start_unix_nanos: DEFAULT_START_UNIX_NANOS
                    + (4 * 86_400 + 11 * 3600) * 1_000_000_000,
                duration: minutes(240),
                ..base()
            },
        ),
        ("shop2-slow-deploy", with(&["slow-deploy:search"])),
        (
            "shop2-endpoint-latency",
            with(&["slowdown:listing:1.4:/listings/batch"]),
        ),
        (
            "shop2-endpoint-errors",
            with(&["error-rate:auth:1:ValidateToken"]),
        ),
        ("shop2-noisy-neighbour", with(&["noisy-neighbour:search"])),
        (
            "shop2-two-faults",
            with(&["errors:reviews", "slow-dependency:guest-profile"]),
        ),
        (
            "shop2-lowrate-errors",
            with(&["error-rate:webhook-receiver:20"]),
        ),
        (
            "shop2-lowrate-admin-errors",
            with(&["error-rate:backoffice:20"]),
        ),
        ("shop2-lowrate-latency", with(&["slowdown:reporting:3"])),
        ("shop2-lowrate-ledger-latency", with(&["slowdown:ledger:3"])),
        ("shop2-down", with(&["down:availability"])),
        ("shop2-slow-db", with(&["slow-dependency:booking"])),
        (
            "shop2-error-burst",
            Scenario {
                faults: vec![fault("errors:search", Some(minutes(3)))],
                ..base()
            },
        ),
    ]
}

/// Name of the long healthy scenario ([`healthy_days`]). It is not in
/// [`named_scenarios`], the fast set, because it simulates whole days.
pub const HEALTHY_DAYS: &str = "healthy-days";

/// `days` simulated days of healthy traffic from midnight UTC: the daily
/// shape (trough at 04:00, peak at 16:00), bursts and benign deploys, no
/// fault. Long enough for the time-of-day baselines to take part, which
/// needs a day of history, so it measures false incidents as a collector
/// running for days would raise them.
pub fn healthy_days(days: u64) -> Scenario {
    Scenario {
        start_unix_nanos: DEFAULT_START_UNIX_NANOS - 9 * 3600 * 1_000_000_000,
        duration: Duration::from_secs(days.max(1) * 86_400),
        ..Scenario::default()
    }
}

/// The scenarios the root-cause evaluation runs, each with a ground truth
/// ([`Scenario::truth`]). Each is 16 minutes at 10 entry requests per
/// second: ten minutes of healthy traffic (the detectors' 5-minute warm-up
/// and then some), the fault at minute 10, and six minutes to detect and
/// explain it. Benign changes on other services shortly before the fault
/// act as distractors; random benign deploys are off so that every change
/// is a planned one. Change the seed for more runs of the same set.
///
/// Covered: cascades through two and three levels (a slow, a failing and a
/// down leaf), a bad deploy, a canary (both versions serving), a feature
/// flag flip, a retry storm, timeouts firing against a missing timeout,
/// connection-pool exhaustion, CPU throttling, region-, pod- and
/// tenant-scoped faults, two simultaneous independent faults, and changes
/// with no fault at all.
pub fn rca_scenarios() -> Vec<(&'static str, Scenario)> {
    let minutes = |m: u64| Duration::from_secs(m * 60);
    let seconds = Duration::from_secs;
    let fault = |spec: &str| Fault {
        kind: parse_fault(spec).expect("built-in fault specs are valid"),
        start: minutes(10),
        duration: None,
    };
    let deploy = |service: &str, at: Duration| BenignChange {
        at,
        kind: BenignChangeKind::Deploy {
            service: service.to_owned(),
        },
    };
    let flag = |service: &str, key: &str, at: Duration| BenignChange {
        at,
        kind: BenignChangeKind::FlagFlip {
            service: service.to_owned(),
            flag: key.to_owned(),
        },
    };
    let with = |specs: &[&str], benign_changes: Vec<BenignChange>| Scenario {
        duration: minutes(16),
        // The simulator's default rate, as in the detection set; services
        // called by one request in ten still see only two a second.
        entry_rate_per_sec: 20.0,
        faults: specs.iter().map(|spec| fault(spec)).collect(),
        benign_deploys: false,
        benign_changes,
        ..Scenario::default()
    };
    vec![
        // inventory -> catalog, cart, checkout -> frontend.
        (
            "rca-cascade-slow",
            with(
                &["slow:inventory:250"],
                vec![deploy("recommendation", minutes(8))],
            ),
        ),
        // currency -> pricing -> checkout -> frontend.
        (
            "rca-cascade-errors",
            with(
                &["errors:currency"],
                vec![flag("frontend", "product-page-v2", seconds(9 * 60 + 15))],
            ),
        ),
        ("rca-cascade-down", with(&["down:shipping"], Vec::new())),
        (
            "rca-bad-deploy",
            with(&["bad-deploy:payment"], vec![deploy("cart", minutes(9))]),
        ),
        (
            "rca-canary",
            with(
                &["canary:catalog"],
                vec![flag("checkout", "express-shipping", minutes(9))],
            ),
        ),
        (
            "rca-flag-flip",
            with(
                &["flag-flip:checkout:new-checkout-flow"],
                vec![
                    deploy("frontend", minutes(8)),
                    flag("cart", "cart-recommendations", seconds(9 * 60 + 30)),
                ],
            ),
        ),
        (
            "rca-retry-storm",
            with(&["retry-storm:checkout:payment"], Vec::new()),
        ),
        (
            "rca-timeouts",
            with(
                &["timeouts:checkout:payment"],
                vec![deploy("checkout", minutes(8))],
            ),
        ),
        (
            "rca-missing-timeout",
            with(&["missing-timeout:checkout:payment"], Vec::new()),
        ),
        (
            "rca-pool-exhaustion",
            with(
                &["pool-exhaustion:catalog"],
                vec![deploy("inventory", minutes(9))],
            ),
        ),
        (
            "rca-cpu-throttling",
            with(&["cpu-throttling:pricing"], Vec::new()),
        ),
        (
            "rca-region",
            with(&["errors:inventory@cloud.region=eu-west-1"], Vec::new()),
        ),
        (
            "rca-pod",
            with(&["slow:cart:400@pod=1"], vec![deploy("user", minutes(9))]),
        ),
        (
            "rca-data-issue",
            with(
                &["errors:catalog:/products/{id}@app.tenant=initech"],
                vec![deploy("frontend", minutes(8))],
            ),
        ),
        (
            "rca-two-faults",
            with(
                &["pool-exhaustion:user", "errors:recommendation"],
                Vec::new(),
            ),
        ),
        (
            "rca-changes-only",
            with(
                &[],
                vec![
                    deploy("payment", minutes(9)),
                    flag("checkout", "new-checkout-flow", seconds(9 * 60 + 30)),
                ],
            ),
        ),
    ]
}

/// A named scenario from either set ([`named_scenarios`] or
/// [`rca_scenarios`]).
pub fn find_scenario(name: &str) -> Option<Scenario> {
    named_scenarios()
        .into_iter()
        .chain(rca_scenarios())
        .find(|(known, _)| *known == name)
        .map(|(_, scenario)| scenario)
}

#[cfg(test)]
mod tests;
