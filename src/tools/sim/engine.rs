//! The generator: turns a [`Scenario`] into one [`Batch`] per simulated
//! second.
//!
//! Each second it applies deploys and fault transitions, works out what the
//! active faults do to each service ([`Effects`]), generates the entry
//! requests that arrive in that second (each a whole trace, recursively
//! through the call graph), closes a metrics interval every 10 s, and emits
//! the spans and log records that *end* in that second.
//!
//! Invariants:
//! - Output depends only on the scenario: one seeded generator per concern
//!   (traffic, requests, ids, metrics, logs, deploys), no hash maps, no
//!   clock; so turning a signal off changes nothing in the others.
//! - A span is emitted in the batch of the second its end time falls in.
//!   Spans that end after the run are dropped, as in-flight requests are when
//!   a recording stops. Every span of a trace starts at or after its arrival,
//!   so buffering future seconds is enough.
//! - Every call between services is a CLIENT span in the caller and, unless
//!   the callee is down, a SERVER (or CONSUMER) span in the callee whose
//!   parent is that CLIENT (or PRODUCER) span.
//! - What a scenario without the newer features (scopes, flags, hangs,
//!   planned changes) generates does not depend on them: they draw random
//!   numbers only when present, so older scenarios keep their exact output.
//! - The posted changes and the ground truth are worked out when the engine
//!   is built, from the same plan the run follows (see `plan_changes`).

use std::collections::VecDeque;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use crate::model::{Change, ChangeKind, ChangeSource};
use crate::tools::sim::fault::{self, FaultKind, Resolved, ResolvedScope};
use crate::tools::sim::metrics::{self, PodMetrics, INTERVAL_SECONDS, SCHEMA_URL};
use crate::tools::sim::model::{
    kv_int, kv_str, model_of, DailyShape, Model, OpId, Placement, ServiceId,
};
use crate::tools::sim::rng::Rng;
use crate::tools::sim::truth::{self, GroundTruth, ScopeAttribute, TruthEdge};
use crate::tools::sim::{Batch, BenignChangeKind, Scenario, Signals};

mod pod_metrics;
mod request;

const SECOND: u64 = 1_000_000_000;
const MS: f64 = 1e6;

/// Pods of one service are replaced this far apart during a rollout.
const ROLLOUT_STEP_SECONDS: u64 = 15;
/// Benign deploys keep this far from any fault's start: not within
/// `BEFORE` seconds before it nor `AFTER` seconds after it.
const DEPLOY_QUIET_BEFORE_SECONDS: u64 = 15 * 60;
const DEPLOY_QUIET_AFTER_SECONDS: u64 = 5 * 60;
// Traffic bursts (users arriving together: a campaign e-mail, a retrying
// client), benign deploys and configuration changes follow the shop's
// `TrafficProfile`: bursts are noise a detector should tolerate, so they
// stay short and moderate.
/// Background log records per pod per second.
const BACKGROUND_LOGS_PER_POD: f64 = 0.8;
/// Share of served requests that write an access log.
const ACCESS_LOG_SHARE: f64 = 0.1;

/// W3C trace flags: sampled; OTLP span flags: whether the parent is remote.
const FLAG_SAMPLED: u32 = 0x01;
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// What the active faults do to one service during the current second.
#[derive(Debug, Clone)]
pub struct Effects {
    /// Own time multiplier.
    pub latency: f64,
    /// Extra local error probability, for every operation or one.
    pub error_rate: f64,
    pub error_op: Option<OpId>,
    pub down: bool,
    /// Multiplier of database/API call time.
    pub dependency_slowdown: f64,
    pub pool_exhausted: bool,
    pub throttled: bool,
    pub leaking: bool,
    /// Fixed extra own time, in ms (a `Slow` fault).
    pub added_ms: f64,
    /// The service hangs: each request holds on for a heavy-tailed extra
    /// time (`Timeouts`, `MissingTimeout`).
    pub hang: bool,
    /// Effects that apply only to requests in a scope.
    pub scoped: Vec<ScopedEffect>,
    /// Own time multipliers and extra error rates of one operation (or
    /// all): (operation, latency, error rate).
    pub degrade: Vec<(Option<OpId>, f64, f64)>,
}

/// What a scoped fault does to the requests in its scope.
#[derive(Debug, Clone, Copy)]
pub struct ScopedEffect {
    pub scope: EngineScope,
    pub latency: f64,
    pub added_ms: f64,
    pub error_rate: f64,
    pub error_op: Option<OpId>,
    /// Failures are bad data (the scope is a tenant), not a crash.
    pub data: bool,
}

/// A scope in the engine's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineScope {
    /// Traces served in this region (index into the model's regions).
    Region(usize),
    /// Requests served by pods on this node (index into `Engine::nodes`).
    Node(usize),
    /// Requests served by this pod (index into `Engine::pods`).
    Pod(usize),
    /// Traces whose trace attribute `key` (index into
    /// `Engine::trace_keys`) has value `value` (index into `TENANTS`).
    Attribute { key: usize, value: usize },
}

impl Default for Effects {
    fn default() -> Self {
        Effects {
            latency: 1.0,
            error_rate: 0.0,
            error_op: None,
            down: false,
            dependency_slowdown: 1.0,
            pool_exhausted: false,
            throttled: false,
            leaking: false,
            added_ms: 0.0,
            hang: false,
            scoped: Vec::new(),
            degrade: Vec::new(),
        }
    }
}

/// One pod (a container of one version of one service).
#[derive(Debug)]
pub struct Pod {
    pub service: ServiceId,
    pub version: usize,
    /// The node it runs on (index into `Engine::nodes`).
    pub node: usize,
    pub resource: Resource,
    /// False once a rollout replaced it.
    pub live: bool,
    /// Container restarts (OOM kills).
    pub restarts: u32,
    pub metrics: PodMetrics,
}

/// A `service.version` of a service, and whether it behaves badly.
#[derive(Debug)]
struct Version {
    text: String,
    /// Slower (and rolled back from when its fault ends).
    bad: bool,
    /// Bad and also failing more (a bad deploy, not a slow one).
    failing: bool,
    /// The replica-set hash in its pods' names.
    hash: String,
}

/// A pod replacement, part of a rollout.
#[derive(Debug, Clone, Copy)]
struct Replacement {
    at: u64,
    service: ServiceId,
    region: usize,
    replica: usize,
    version: usize,
}

/// A fault with its absolute times.
#[derive(Debug)]
pub struct Scheduled {
    kind: FaultKind,
    fault: Resolved,
    start: u64,
    end: Option<u64>,
    started: bool,
    ended: bool,
    /// The scope in engine terms, once the engine is built.
    scope: Option<EngineScope>,
    /// The flag a `FlagFlip` flips (index into `Engine::flags`).
    flag: Option<usize>,
}

/// A harmless change planned by the scenario, resolved.
#[derive(Debug, Clone)]
pub enum Planned {
    Deploy(ServiceId),
    /// Flag key on a service.
    Flag(ServiceId, String),
}

/// What the scenario asks for, resolved against the model.
#[derive(Debug, Default)]
pub struct Schedule {
    faults: Vec<Scheduled>,
    /// Planned harmless changes: (time, change), in time order.
    changes: Vec<(u64, Planned)>,
}

/// A feature flag evaluated on every request of one service.
#[derive(Debug)]
struct Flag {
    service: ServiceId,
    key: String,
    /// Serving the new variant (`on`) to a share of the requests.
    flipped: bool,
    /// The new variant fails requests (a `FlagFlip` fault).
    harmful: bool,
}

/// Spans and log records waiting for the second they end in, grouped by
/// pod as they arrive (so that emitting them moves no span).
#[derive(Debug, Default)]
struct Bucket {
    groups: Vec<Group>,
    /// `slot[pod]` is 1 + the index of the pod's group, or 0.
    slot: Vec<u32>,
}

#[derive(Debug)]
struct Group {
    pod: usize,
    spans: Vec<Span>,
    logs: Vec<LogRecord>,
}

impl Bucket {
    fn group(&mut self, pod: usize) -> &mut Group {
        if self.slot.len() <= pod {
            self.slot.resize(pod + 1, 0);
        }
        let index = match self.slot[pod] {
            0 => {
                self.groups.push(Group {
                    pod,
                    spans: Vec::new(),
                    logs: Vec::new(),
                });
                self.slot[pod] = self.groups.len() as u32;
                self.groups.len() - 1
            }
            slot => slot as usize - 1,
        };
        &mut self.groups[index]
    }
}

/// A harmless configuration change: the service's pods reload it one
/// after the other and announce it in a log record.
#[derive(Debug, Clone)]
struct ConfigChange {
    second: u64,
    service: ServiceId,
    key: &'static str,
    value: &'static str,
    revision: u64,
}

/// Pods of a service pick up a configuration change this far apart.
const CONFIG_RELOAD_STEP_MS: u64 = 1_500;

/// A traffic burst in progress.
#[derive(Debug, Clone, Copy)]
struct Burst {
    until: u64,
    factor: f64,
}

/// The generator's state.
pub struct Engine {
    model: &'static Model,
    /// `k8s.node.name` of every node a pod was placed on, in order of
    /// first use.
    nodes: Vec<String>,
    start_ns: u64,
    seconds: u64,
    /// The next second to generate.
    second: u64,
    rate: f64,
    daily_shape: bool,
    faults: Vec<Scheduled>,
    traffic: Rng,
    requests: Rng,
    ids: Rng,
    metrics_rng: Rng,
    logs_rng: Rng,
    signals: Signals,
    deploys: Rng,
    burst: Option<Burst>,
    pods: Vec<Pod>,
    /// `[service][region][replica]` -> the pod currently in that slot.
    slots: Vec<Vec<Vec<usize>>>,
    versions: Vec<Vec<Version>>,
    /// Pending replacements, in time order.
    rollouts: VecDeque<Replacement>,
    /// Benign deploys still to start: (second, service).
    benign: VecDeque<(u64, ServiceId)>,
    /// Benign configuration changes still to apply, in time order.
    config_changes: VecDeque<ConfigChange>,
    effects: Vec<Effects>,
    storms: Vec<(ServiceId, ServiceId)>,
    /// Caller timeouts overridden this second: (caller, callee, ms).
    timeouts: Vec<(ServiceId, ServiceId, f64)>,
    /// Feature flags evaluated in the run (none unless the scenario flips
    /// one).
    flags: Vec<Flag>,
    /// Trace attributes drawn at the entry and copied onto every SERVER
    /// span (none unless a fault is scoped to one).
    trace_keys: Vec<String>,
    /// Planned harmless changes still to apply: (second, change).
    planned: VecDeque<(u64, Planned)>,
    /// What a CI/CD tool would post, and the ground truth per fault.
    changes: Vec<Change>,
    truth: Vec<GroundTruth>,
    /// `pending[i]` holds what ends in second `pending_base + i`.
    pending: VecDeque<Bucket>,
    pending_base: u64,
    /// Emptied buckets, kept for their allocations.
    spare: Vec<Bucket>,
    arrivals: Vec<u64>,
}

fn str_value(text: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(text.to_owned())),
    })
}

fn ms_to_ns(ms: f64) -> u64 {
    (ms * MS).max(1_000.0) as u64
}

/// The version after `latest`: a feature release (minor) for a bad one,
/// a patch otherwise.
fn next_version(latest: &str, bad: bool) -> String {
    let mut parts: Vec<u32> = latest
        .split('.')
        .map(|part| part.parse().unwrap_or(0))
        .collect();
    parts.resize(3, 0);
    if bad {
        parts[1] += 1;
        parts[2] = 0;
    } else {
        parts[2] += 1;
    }
    format!("{}.{}.{}", parts[0], parts[1], parts[2])
}

/// The daily (and weekly) factor of the entry rate at `now` (Unix ns).
pub(crate) fn shape_factor(daily: DailyShape, weekly: Option<[f64; 7]>, now: u64) -> f64 {
    let hour = (now / SECOND % 86_400) as f64 / 3600.0;
    let day_factor = match daily {
        // Peak at 16:00 UTC, trough at 04:00; peak = 3 x trough.
        DailyShape::Sine => 1.0 + 0.5 * (std::f64::consts::TAU * (hour - 10.0) / 24.0).sin(),
        DailyShape::TwoPeaks => {
            // Hours from `at`, the short way round the clock.
            let from = |at: f64| {
                let d = (hour - at).rem_euclid(24.0);
                d.min(24.0 - d)
            };
            let bump = |at: f64, width: f64| (-(from(at) / width).powi(2)).exp();
            // Normalised so that the day's mean is about 1.
            (0.35 + 0.75 * bump(11.5, 3.0) + 1.0 * bump(19.5, 2.5)) / 0.7
        }
    };
    let Some(days) = weekly else {
        return day_factor;
    };
    // 1970-01-01 was a Thursday: day 0 is index 3 from Monday. The factor
    // eases from one day's to the next over the three hours either side of
    // midnight.
    let day = now / SECOND / 86_400;
    let weekday = |day: u64| days[((day + 3) % 7) as usize];
    let week_factor = if hour >= 21.0 {
        let t = (hour - 21.0) / 6.0;
        weekday(day) + (weekday(day + 1) - weekday(day)) * t
    } else if hour < 3.0 {
        let t = (hour + 3.0) / 6.0;
        weekday(day.saturating_sub(1)) + (weekday(day) - weekday(day.saturating_sub(1))) * t
    } else {
        weekday(day)
    };
    day_factor * week_factor
}

/// A GKE-style node name for node `node` of `region`, derived from the
/// names alone (no random draw).
fn pool_node_name(namespace: &str, region: &str, node: u64) -> String {
    // FNV-1a of the region and node, for a stable instance suffix.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in region.bytes().chain(node.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = (0..4)
        .map(|i| ALPHABET[((hash >> (i * 8)) % ALPHABET.len() as u64) as usize] as char)
        .collect();
    format!(
        "gke-{namespace}-prod-pool-{}-{:08x}-{suffix}",
        node / 2 + 1,
        (hash >> 32) as u32
    )
}

/// The first simulated second at or after `time` (faults and planned
/// changes take effect at the start of a second).
fn second_at(time: u64, start_ns: u64) -> u64 {
    time.saturating_sub(start_ns).div_ceil(SECOND)
}

// === impl Engine ===

impl Engine {
    /// Resolves the scenario's faults to absolute times and model ids. A
    /// fault whose names do not resolve is an error when `strict`, and is
    /// skipped with a warning otherwise.
    pub fn schedule(scenario: &Scenario, strict: bool) -> Result<Schedule, String> {
        let mut faults = Vec::new();
        for fault in &scenario.faults {
            let model = model_of(scenario.shop);
            let resolved = match fault::resolve(model, &fault.kind) {
                Ok(resolved) => resolved,
                Err(reason) if strict => return Err(reason),
                Err(reason) => {
                    tracing::warn!(
                        fault = %fault.kind,
                        %reason,
                        "skipping a fault that does not fit the simulated topology"
                    );
                    continue;
                }
            };
            let start = scenario.start_unix_nanos + fault.start.as_nanos() as u64;
            faults.push(Scheduled {
                kind: fault.kind.clone(),
                fault: resolved,
                start,
                end: fault
                    .duration
                    .map(|duration| start + duration.as_nanos() as u64),
                started: false,
                ended: false,
                scope: None,
                flag: None,
            });
        }
        let mut changes = Vec::new();
        for change in &scenario.benign_changes {
            let (name, flag) = match &change.kind {
                BenignChangeKind::Deploy { service } => (service, None),
                BenignChangeKind::FlagFlip { service, flag } => (service, Some(flag)),
            };
            let model = model_of(scenario.shop);
            let Some(service) = model.service_id(name) else {
                let reason = format!(
                    "benign change on unknown service {name:?}; the simulated services are {}",
                    model.service_names()
                );
                if strict {
                    return Err(reason);
                }
                tracing::warn!(%reason, "skipping a planned change");
                continue;
            };
            let at = scenario.start_unix_nanos + change.at.as_nanos() as u64;
            let planned = match flag {
                None => Planned::Deploy(service),
                Some(flag) => Planned::Flag(service, flag.clone()),
            };
            changes.push((at, planned));
        }
        changes.sort_by_key(|(at, _)| *at);
        Ok(Schedule { faults, changes })
    }

    /// A generator for `scenario` with its faults already scheduled.
    pub fn new(scenario: &Scenario, schedule: Schedule) -> Self {
        let Schedule { faults, changes } = schedule;
        let model = model_of(scenario.shop);
        let seed = scenario.seed;
        let seconds = scenario.duration.as_secs();
        let start_ns = scenario.start_unix_nanos;
        let mut engine = Engine {
            model,
            nodes: Vec::new(),
            start_ns,
            seconds,
            second: 0,
            rate: scenario.entry_rate_per_sec.max(0.0),
            daily_shape: scenario.daily_shape,
            faults,
            traffic: Rng::new(seed, 1),
            requests: Rng::new(seed, 2),
            ids: Rng::new(seed, 3),
            metrics_rng: Rng::new(seed, 4),
            logs_rng: Rng::new(seed, 6),
            signals: Signals::ALL,
            deploys: Rng::new(seed, 5),
            burst: None,
            pods: Vec::new(),
            slots: Vec::new(),
            versions: Vec::new(),
            rollouts: VecDeque::new(),
            benign: VecDeque::new(),
            config_changes: VecDeque::new(),
            effects: vec![Effects::default(); model.services.len()],
            storms: Vec::new(),
            timeouts: Vec::new(),
            flags: Vec::new(),
            trace_keys: Vec::new(),
            planned: changes
                .into_iter()
                .map(|(at, change)| (second_at(at, start_ns), change))
                .collect(),
            changes: Vec::new(),
            truth: Vec::new(),
            pending: VecDeque::new(),
            pending_base: 0,
            spare: Vec::new(),
            arrivals: Vec::new(),
        };
        for (service, def) in model.services.iter().enumerate() {
            let (major, minor, patch) = def.version;
            let hash = engine.replica_set_hash();
            engine.versions.push(vec![Version {
                text: format!("{major}.{minor}.{patch}"),
                bad: false,
                failing: false,
                hash,
            }]);
            let mut regions = Vec::new();
            for region in 0..model.regions.len() {
                let mut replicas = Vec::new();
                for replica in 0..def.replicas {
                    // Pods have been up for a while when the run starts.
                    let started = start_ns.saturating_sub(3600 * SECOND);
                    let pod = engine.new_pod(service, region, replica, 0, started);
                    engine.pods[pod].metrics.warm_up(start_ns - started);
                    replicas.push(pod);
                }
                regions.push(replicas);
            }
            engine.slots.push(regions);
        }
        if scenario.benign_deploys {
            engine.plan_benign_deploys();
            engine.plan_config_changes(seed);
        }
        engine.bind_faults();
        let (mut changes, fault_changes) = engine.plan_changes();
        if !engine.config_changes.is_empty() {
            changes.extend(engine.config_changes.iter().map(|change| {
                let name = model.services[change.service].name;
                Change {
                    id: 0,
                    service: name.to_owned(),
                    kind: ChangeKind::Config,
                    version: None,
                    key: Some(change.key.to_owned()),
                    value: Some(change.value.to_owned()),
                    description: format!(
                        "config {}={} on {name} (revision {})",
                        change.key, change.value, change.revision
                    ),
                    time_unix_nanos: start_ns + change.second * SECOND,
                    link: Some(format!(
                        "https://config.example.com/{}/{name}/revisions/{}",
                        model.namespace, change.revision
                    )),
                    external_id: None,
                    source: ChangeSource::Api,
                }
            }));
            // Stable: changes of one second keep their order.
            changes.sort_by_key(|change| change.time_unix_nanos);
        }
        engine.truth = engine.ground_truth(fault_changes);
        engine.changes = changes;
        engine
    }

    /// Draws the benign configuration changes of the run (none unless the
    /// shop has keys to change), from a stream of their own. Like benign
    /// deploys they keep clear of the faults' starts.
    fn plan_config_changes(&mut self, seed: u64) {
        let Some(gap) = self.model.traffic.config_change_gap_seconds else {
            return;
        };
        if self.model.config_keys.is_empty() {
            return;
        }
        let mut rng = Rng::new(seed, 7);
        let mut at = 0.0;
        let mut revision = 4_000 + rng.below(1_000);
        loop {
            at += rng.exponential(gap);
            let second = at as u64;
            if second >= self.seconds {
                break;
            }
            let key =
                &self.model.config_keys[rng.below(self.model.config_keys.len() as u64) as usize];
            let value = key.values[rng.below(key.values.len() as u64) as usize];
            revision += 1 + rng.below(5);
            let near_fault = self.faults.iter().any(|fault| {
                let fault_second = (fault.start - self.start_ns) / SECOND;
                second + DEPLOY_QUIET_BEFORE_SECONDS >= fault_second
                    && second <= fault_second + DEPLOY_QUIET_AFTER_SECONDS
            });
            if !near_fault {
                self.config_changes.push_back(ConfigChange {
                    second,
                    service: key.service,
                    key: key.key,
                    value,
                    revision,
                });
            }
        }
    }

    /// Applies the configuration changes due at `now`: every live pod of the
    /// service reloads, one after the other, and logs it.
    fn apply_config_changes(&mut self, now: u64) {
        while self
            .config_changes
            .front()
            .is_some_and(|change| change.second <= self.second)
        {
            let Some(change) = self.config_changes.pop_front() else {
                break;
            };
            let pods: Vec<usize> = self.slots[change.service]
                .iter()
                .flatten()
                .copied()
                .collect();
            let body = format!(
                "configuration change applied: {}={} (revision {}, from config-server)",
                change.key, change.value, change.revision
            );
            for (index, pod) in pods.into_iter().enumerate() {
                let time = now + index as u64 * CONFIG_RELOAD_STEP_MS * 1_000_000 + 3_000_000;
                let attributes = vec![
                    kv_str("config.key", change.key),
                    kv_str("config.value", change.value),
                    kv_int("config.revision", change.revision as i64),
                    kv_str("config.source", "config-server"),
                ];
                self.log_with(pod, time, 9, "INFO", &body, None, attributes);
            }
        }
    }

    /// Binds what the faults and planned changes refer to: scopes to pods
    /// and trace attributes, flag flips to flags.
    fn bind_faults(&mut self) {
        for index in 0..self.faults.len() {
            let scope = match &self.faults[index].fault {
                Resolved::Latency(service, scope)
                | Resolved::Errors(service, _, scope)
                | Resolved::Slow(service, _, scope) => scope.clone().map(|scope| (*service, scope)),
                _ => None,
            };
            self.faults[index].scope = scope.map(|(service, scope)| match scope {
                ResolvedScope::Region(region) => EngineScope::Region(region),
                ResolvedScope::Pod(index) => {
                    let replicas = self.model.services[service].replicas;
                    EngineScope::Pod(self.slots[service][index / replicas][index % replicas])
                }
                ResolvedScope::Attribute { key, value } => {
                    let key = match self.trace_keys.iter().position(|known| *known == key) {
                        Some(position) => position,
                        None => {
                            self.trace_keys.push(key);
                            self.trace_keys.len() - 1
                        }
                    };
                    EngineScope::Attribute { key, value }
                }
            });
            if let Resolved::FlagFlip(service, key) = &self.faults[index].fault {
                let (service, key) = (*service, key.clone());
                self.faults[index].flag = Some(self.flag(service, &key, true));
            }
            if let Resolved::NoisyNeighbour(service) = self.faults[index].fault {
                let first = self.slots[service][0][0];
                self.faults[index].scope = Some(EngineScope::Node(self.pods[first].node));
            }
        }
        for index in 0..self.planned.len() {
            if let (_, Planned::Flag(service, key)) = &self.planned[index] {
                let (service, key) = (*service, key.clone());
                self.flag(service, &key, false);
            }
        }
    }

    /// The index of flag `key` of `service`, added if new. A flag flipped
    /// by a fault is harmful whatever else flips it.
    fn flag(&mut self, service: ServiceId, key: &str, harmful: bool) -> usize {
        match self
            .flags
            .iter()
            .position(|flag| flag.service == service && flag.key == key)
        {
            Some(index) => {
                self.flags[index].harmful |= harmful;
                index
            }
            None => {
                self.flags.push(Flag {
                    service,
                    key: key.to_owned(),
                    flipped: false,
                    harmful,
                });
                self.flags.len() - 1
            }
        }
    }

    /// The change events a CI/CD pipeline and a flag service would post for
    /// this run (every deploy, rollback and flag change, in time order), and
    /// for each fault the change that starts it, if any. Versions are
    /// numbered exactly as `advance` numbers them: it takes benign deploys,
    /// then planned changes, then fault starts and ends, each in order,
    /// within a second.
    fn plan_changes(&self) -> (Vec<Change>, Vec<Option<Change>>) {
        #[derive(Clone, Copy)]
        enum Step {
            Benign(ServiceId),
            Planned(usize),
            FaultStart(usize),
            FaultEnd(usize),
        }
        let mut steps: Vec<(u64, u8, usize, Step)> = Vec::new();
        for (order, &(second, service)) in self.benign.iter().enumerate() {
            steps.push((second, 0, order, Step::Benign(service)));
        }
        for (order, (second, _)) in self.planned.iter().enumerate() {
            steps.push((*second, 1, order, Step::Planned(order)));
        }
        for (index, fault) in self.faults.iter().enumerate() {
            steps.push((
                second_at(fault.start, self.start_ns),
                2,
                2 * index,
                Step::FaultStart(index),
            ));
            if let Some(end) = fault.end {
                steps.push((
                    second_at(end.max(fault.start), self.start_ns),
                    2,
                    2 * index + 1,
                    Step::FaultEnd(index),
                ));
            }
        }
        steps.sort_by_key(|(second, phase, order, _)| (*second, *phase, *order));

        // (text, bad) of every version of every service, as `new_version`
        // will push them.
        let mut versions: Vec<Vec<(String, bool)>> = self
            .versions
            .iter()
            .map(|list| list.iter().map(|v| (v.text.clone(), v.bad)).collect())
            .collect();
        let push = |versions: &mut Vec<Vec<(String, bool)>>, service: ServiceId, bad: bool| {
            let latest = versions[service].last().map_or("1.0.0", |(text, _)| text);
            let text = next_version(latest, bad);
            versions[service].push((text.clone(), bad));
            text
        };
        let mut changes = Vec::new();
        let mut fault_changes = vec![None; self.faults.len()];
        let mut pipeline = 0u64;
        for (second, _, _, step) in steps {
            if second >= self.seconds {
                continue;
            }
            let time = self.start_ns + second * SECOND;
            let mut deploy = |service: ServiceId, version: String, description: String| {
                pipeline += 1;
                let name = self.model.services[service].name;
                Change {
                    id: 0,
                    service: name.to_owned(),
                    kind: ChangeKind::Deploy,
                    version: Some(version),
                    key: None,
                    value: None,
                    description,
                    time_unix_nanos: time,
                    link: Some(format!(
                        "https://ci.example.com/{}/{name}/pipelines/{}",
                        self.model.namespace,
                        1000 + pipeline
                    )),
                    external_id: None,
                    source: ChangeSource::Api,
                }
            };
            let flag_change = |service: ServiceId, key: &str, on: bool| {
                let name = self.model.services[service].name;
                Change {
                    id: 0,
                    service: name.to_owned(),
                    kind: ChangeKind::FeatureFlag,
                    version: None,
                    key: Some(key.to_owned()),
                    value: Some(if on { "on" } else { "off" }.to_owned()),
                    description: if on {
                        format!(
                            "feature flag {key} on {name}: variant on for {:.0}% of requests",
                            fault::FLAG_ROLLOUT_SHARE * 100.0
                        )
                    } else {
                        format!("feature flag {key} on {name}: turned off (variant off for all)")
                    },
                    time_unix_nanos: time,
                    link: Some(format!(
                        "https://flags.example.com/{}/{key}",
                        self.model.namespace
                    )),
                    external_id: None,
                    source: ChangeSource::Api,
                }
            };
            let good = match step {
                Step::Benign(service) => Some(service),
                Step::Planned(index) => match &self.planned[index].1 {
                    Planned::Deploy(service) => Some(*service),
                    Planned::Flag(..) => None,
                },
                _ => None,
            };
            if let Some(service) = good {
                let version = push(&mut versions, service, false);
                let name = self.model.services[service].name;
                let description = format!("deploy {name} {version} (rolling update)");
                changes.push(deploy(service, version, description));
                continue;
            }
            match step {
                Step::Benign(_) => {}
                Step::Planned(index) => {
                    if let Planned::Flag(service, key) = &self.planned[index].1 {
                        changes.push(flag_change(*service, key, true));
                    }
                }
                Step::FaultStart(index) => match &self.faults[index].fault {
                    Resolved::BadDeploy(service)
                    | Resolved::Canary(service)
                    | Resolved::SlowDeploy(service) => {
                        let canary = matches!(self.faults[index].fault, Resolved::Canary(_));
                        let version = push(&mut versions, *service, true);
                        let name = self.model.services[*service].name;
                        let description = if canary {
                            format!("deploy {name} {version} to one pod (canary)")
                        } else {
                            format!("deploy {name} {version} (rolling update)")
                        };
                        let change = deploy(*service, version, description);
                        fault_changes[index] = Some(change.clone());
                        changes.push(change);
                    }
                    Resolved::FlagFlip(service, key) => {
                        let change = flag_change(*service, key, true);
                        fault_changes[index] = Some(change.clone());
                        changes.push(change);
                    }
                    _ => {}
                },
                Step::FaultEnd(index) => match &self.faults[index].fault {
                    Resolved::BadDeploy(service)
                    | Resolved::Canary(service)
                    | Resolved::SlowDeploy(service) => {
                        if let Some((good, _)) =
                            versions[*service].iter().rev().find(|(_, bad)| !bad)
                        {
                            let name = self.model.services[*service].name;
                            let description = format!("roll back {name} to {good}");
                            changes.push(deploy(*service, good.clone(), description));
                        }
                    }
                    Resolved::FlagFlip(service, key) => {
                        changes.push(flag_change(*service, key, false));
                    }
                    _ => {}
                },
            }
        }
        (changes, fault_changes)
    }

    /// The ground truth of every fault.
    fn ground_truth(&self, fault_changes: Vec<Option<Change>>) -> Vec<GroundTruth> {
        let model = self.model;
        self.faults
            .iter()
            .zip(fault_changes)
            .map(|(fault, change)| {
                let scope = match (&fault.fault, fault.scope) {
                    (_, Some(EngineScope::Region(region))) => Some(ScopeAttribute {
                        key: "cloud.region".to_owned(),
                        value: model.regions[region].0.to_owned(),
                    }),
                    (_, Some(EngineScope::Pod(pod))) => Some(ScopeAttribute {
                        key: "k8s.pod.name".to_owned(),
                        value: self.pod_name(pod).to_owned(),
                    }),
                    (_, Some(EngineScope::Node(node))) => Some(ScopeAttribute {
                        key: "k8s.node.name".to_owned(),
                        value: self.nodes[node].clone(),
                    }),
                    (_, Some(EngineScope::Attribute { key, value })) => Some(ScopeAttribute {
                        key: self.trace_keys[key].clone(),
                        value: fault::TENANTS[value].0.to_owned(),
                    }),
                    (
                        Resolved::BadDeploy(_) | Resolved::Canary(_) | Resolved::SlowDeploy(_),
                        None,
                    ) => change.as_ref().and_then(|change| {
                        change.version.as_ref().map(|version| ScopeAttribute {
                            key: "service.version".to_owned(),
                            value: version.clone(),
                        })
                    }),
                    (Resolved::FlagFlip(_, key), None) => Some(ScopeAttribute {
                        key: format!("feature_flag.{key}"),
                        value: "on".to_owned(),
                    }),
                    _ => None,
                };
                let name = |service: ServiceId| model.services[service].name.to_owned();
                let edge = match &fault.fault {
                    Resolved::RetryStorm { caller, callee }
                    | Resolved::Hang { caller, callee, .. } => Some(TruthEdge {
                        caller: name(*caller),
                        callee: name(*callee),
                    }),
                    Resolved::PoolExhaustion(service) => model.services[*service]
                        .dbs
                        .iter()
                        .map(|&db| &model.dbs[db])
                        .find(|db| db.system == super::model::DbSystem::Postgresql)
                        .map(|db| TruthEdge {
                            caller: name(*service),
                            callee: db.address.to_owned(),
                        }),
                    _ => None,
                };
                let operation = match &fault.fault {
                    Resolved::Errors(_, Some(op), _) | Resolved::Degrade { op: Some(op), .. } => {
                        Some(model.ops[*op].server_name.clone())
                    }
                    _ => None,
                };
                GroundTruth {
                    fault: fault.kind.to_string(),
                    start_unix_nanos: self.start_ns
                        + second_at(fault.start, self.start_ns) * SECOND,
                    end_unix_nanos: fault
                        .end
                        .map(|end| self.start_ns + second_at(end, self.start_ns) * SECOND),
                    origin: fault.kind.service().to_owned(),
                    operation,
                    edge,
                    affected: truth::affected(model, &fault.fault),
                    change,
                    scope,
                    pattern: truth::pattern(&fault.fault),
                }
            })
            .collect()
    }

    /// The `k8s.pod.name` of a pod.
    fn pod_name(&self, pod: usize) -> &str {
        self.pods[pod]
            .resource
            .attributes
            .iter()
            .find(|kv| kv.key == "k8s.pod.name")
            .and_then(|kv| kv.value.as_ref())
            .and_then(|value| match &value.value {
                Some(any_value::Value::StringValue(text)) => Some(text.as_str()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// The posted change events of the run, in time order.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// The ground truth of each fault, in the scenario's order.
    pub fn truth(&self) -> &[GroundTruth] {
        &self.truth
    }

    pub fn topology(&self) -> &'static super::Topology {
        &self.model.topology
    }

    /// Draws the benign deploys of the run. They keep clear of faults: none
    /// lands within `DEPLOY_QUIET_BEFORE_SECONDS` before or
    /// `DEPLOY_QUIET_AFTER_SECONDS` after a fault starts, and a faulty
    /// service is not redeployed from shortly before its fault on (a new
    /// version would end a bad deploy, a restart would reset a leak).
    fn plan_benign_deploys(&mut self) {
        let conflicts = |second: u64, service: ServiceId, faults: &[Scheduled], start_ns: u64| {
            faults.iter().any(|fault| {
                let fault_second = (fault.start - start_ns) / SECOND;
                let near = second + DEPLOY_QUIET_BEFORE_SECONDS >= fault_second;
                let faulty = fault.fault.services().contains(&Some(service));
                // A fault bound to a pod must find it there: no deploy of
                // its service until the fault is over.
                let pinned = faulty
                    && fault.fault.pins_pods()
                    && fault.end.is_none_or(|end| start_ns + second * SECOND < end);
                pinned || near && (second <= fault_second + DEPLOY_QUIET_AFTER_SECONDS || faulty)
            })
        };
        let mut at = 0.0;
        loop {
            at += self
                .deploys
                .exponential(self.model.traffic.benign_deploy_gap_seconds);
            let second = at as u64;
            if second >= self.seconds {
                break;
            }
            let service = self.deploys.below(self.model.services.len() as u64) as usize;
            if !conflicts(second, service, &self.faults, self.start_ns) {
                self.benign.push_back((second, service));
            }
        }
    }

    /// A 10-character replica-set hash, as Kubernetes writes them.
    fn replica_set_hash(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..10)
            .map(|_| ALPHABET[self.deploys.below(ALPHABET.len() as u64) as usize] as char)
            .collect()
    }

    fn new_pod(
        &mut self,
        service: ServiceId,
        region: usize,
        replica: usize,
        version: usize,
        started: u64,
    ) -> usize {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let def = &self.model.services[service];
        let suffix: String = (0..5)
            .map(|_| ALPHABET[self.deploys.below(ALPHABET.len() as u64) as usize] as char)
            .collect();
        let (hi, lo) = (self.deploys.next_u64(), self.deploys.next_u64());
        let uid = format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xfff,
            (lo >> 48) & 0x3fff | 0x8000,
            lo & 0xffff_ffff_ffff
        );
        let (region_name, _) = self.model.regions[region];
        let (node, node_name) = match self.model.placement {
            Placement::Random => {
                let node = self.deploys.below(6);
                let name = format!(
                    "ip-10-{}-{}-{}.{region_name}.compute.internal",
                    region * 16 + node as usize,
                    self.deploys.below(250) + 2,
                    (node * 37 + 11) % 250
                );
                (node, name)
            }
            Placement::Pool { nodes_per_region } => {
                // Replicas of a service on consecutive nodes, services
                // staggered, so that each node hosts a mix of services.
                let node = ((service * 3 + replica) % nodes_per_region) as u64;
                (
                    node,
                    pool_node_name(self.model.namespace, region_name, node),
                )
            }
        };
        let zone = ["a", "b", "c"][(node % 3) as usize];
        let node = match self.nodes.iter().position(|known| *known == node_name) {
            Some(index) => index,
            None => {
                self.nodes.push(node_name.clone());
                self.nodes.len() - 1
            }
        };
        let hash = &self.versions[service][version].hash;
        let mut attributes = def.resource_attrs.clone();
        attributes.extend([
            kv_str("service.version", &self.versions[service][version].text),
            kv_str("service.instance.id", &uid),
            kv_str("k8s.pod.name", &format!("{}-{hash}-{suffix}", def.name)),
            kv_str("k8s.pod.uid", &uid),
            kv_str("k8s.replicaset.name", &format!("{}-{hash}", def.name)),
            kv_str("k8s.node.name", &node_name),
            kv_str("host.name", &node_name),
            kv_str("cloud.region", region_name),
            kv_str("cloud.availability_zone", &format!("{region_name}{zone}")),
        ]);
        self.pods.push(Pod {
            service,
            version,
            node,
            resource: Resource {
                attributes,
                dropped_attributes_count: 0,
                entity_refs: Vec::new(),
            },
            live: true,
            restarts: 0,
            metrics: PodMetrics::new(started),
        });
        self.pods.len() - 1
    }

    /// Schedules a rolling update of `service` to `version`, one pod every
    /// [`ROLLOUT_STEP_SECONDS`], starting at `at`.
    fn roll_out(&mut self, service: ServiceId, version: usize, at: u64) {
        let replicas = self.model.services[service].replicas;
        let mut step = 0;
        for replica in 0..replicas {
            for region in 0..self.model.regions.len() {
                self.rollouts.push_back(Replacement {
                    at: at + step * ROLLOUT_STEP_SECONDS * SECOND,
                    service,
                    region,
                    replica,
                    version,
                });
                step += 1;
            }
        }
        self.rollouts
            .make_contiguous()
            .sort_by_key(|replacement| replacement.at);
    }

    /// A new version of `service`, derived from its newest one; a bad one
    /// is slower, and fails more when `failing`.
    fn new_version(&mut self, service: ServiceId, bad: bool, failing: bool) -> usize {
        let latest = self.versions[service]
            .last()
            .map_or("1.0.0", |version| version.text.as_str());
        let text = next_version(latest, bad);
        let hash = self.replica_set_hash();
        self.versions[service].push(Version {
            text,
            bad,
            failing: bad && failing,
            hash,
        });
        self.versions[service].len() - 1
    }

    /// Starts and ends faults, applies deploys, and works out the effects
    /// for the second starting at `now`.
    fn advance(&mut self, now: u64) {
        self.apply_config_changes(now);
        while let Some(&(second, service)) = self.benign.front() {
            if second > self.second {
                break;
            }
            self.benign.pop_front();
            let version = self.new_version(service, false, false);
            self.roll_out(service, version, now);
        }
        while let Some((second, _)) = self.planned.front() {
            if *second > self.second {
                break;
            }
            let Some((_, change)) = self.planned.pop_front() else {
                break;
            };
            match change {
                Planned::Deploy(service) => {
                    let version = self.new_version(service, false, false);
                    self.roll_out(service, version, now);
                }
                Planned::Flag(service, key) => {
                    if let Some(flag) = self
                        .flags
                        .iter_mut()
                        .find(|flag| flag.service == service && flag.key == key)
                    {
                        flag.flipped = true;
                    }
                }
            }
        }
        for index in 0..self.faults.len() {
            let fault = &self.faults[index];
            if !fault.started && fault.start <= now {
                self.faults[index].started = true;
                match self.faults[index].fault {
                    Resolved::BadDeploy(service) => {
                        let version = self.new_version(service, true, true);
                        self.roll_out(service, version, now);
                    }
                    Resolved::SlowDeploy(service) => {
                        let version = self.new_version(service, true, false);
                        self.roll_out(service, version, now);
                    }
                    Resolved::Canary(service) => {
                        // The first pod of the first region only.
                        let version = self.new_version(service, true, true);
                        self.rollouts.push_back(Replacement {
                            at: now,
                            service,
                            region: 0,
                            replica: 0,
                            version,
                        });
                        self.rollouts
                            .make_contiguous()
                            .sort_by_key(|replacement| replacement.at);
                    }
                    _ => {}
                }
                if let Some(flag) = self.faults[index].flag {
                    self.flags[flag].flipped = true;
                }
            }
            let fault = &self.faults[index];
            if fault.started && !fault.ended && fault.end.is_some_and(|end| end <= now) {
                self.faults[index].ended = true;
                if let Resolved::BadDeploy(service)
                | Resolved::Canary(service)
                | Resolved::SlowDeploy(service) = self.faults[index].fault
                {
                    // Roll back to the newest good version.
                    if let Some(good) = self.versions[service].iter().rposition(|v| !v.bad) {
                        self.roll_out(service, good, now);
                    }
                }
                if let Some(flag) = self.faults[index].flag {
                    self.flags[flag].flipped = false;
                }
            }
        }
        while let Some(&replacement) = self.rollouts.front() {
            if replacement.at > now {
                break;
            }
            self.rollouts.pop_front();
            let Replacement {
                service,
                region,
                replica,
                version,
                ..
            } = replacement;
            let old = self.slots[service][region][replica];
            if self.pods[old].version == version {
                continue;
            }
            self.pods[old].live = false;
            let pod = self.new_pod(service, region, replica, version, now);
            self.slots[service][region][replica] = pod;
            self.log(pod, now + 1_000_000, 9, "INFO", "service started", None);
        }

        for effect in &mut self.effects {
            *effect = Effects::default();
        }
        self.storms.clear();
        self.timeouts.clear();
        for fault in &self.faults {
            if !fault.started || fault.ended {
                continue;
            }
            let scoped = |effect: ScopedEffect| ScopedEffect {
                scope: fault.scope.unwrap_or(effect.scope),
                ..effect
            };
            let nothing = ScopedEffect {
                scope: EngineScope::Region(0),
                latency: 1.0,
                added_ms: 0.0,
                error_rate: 0.0,
                error_op: None,
                data: false,
            };
            match fault.fault {
                Resolved::Latency(service, None) => {
                    self.effects[service].latency *= fault::LATENCY_FACTOR
                }
                Resolved::Latency(service, Some(_)) => {
                    self.effects[service].scoped.push(scoped(ScopedEffect {
                        latency: fault::LATENCY_FACTOR,
                        ..nothing
                    }))
                }
                Resolved::Errors(service, op, None) => {
                    self.effects[service].error_rate = fault::ERROR_RATE;
                    self.effects[service].error_op = op;
                }
                Resolved::Errors(service, op, Some(ref scope)) => {
                    self.effects[service].scoped.push(scoped(ScopedEffect {
                        error_rate: fault::SCOPED_ERROR_RATE,
                        error_op: op,
                        data: matches!(scope, ResolvedScope::Attribute { .. }),
                        ..nothing
                    }))
                }
                Resolved::Slow(service, added_ms, None) => {
                    self.effects[service].added_ms += added_ms
                }
                Resolved::Slow(service, added_ms, Some(_)) => {
                    self.effects[service].scoped.push(scoped(ScopedEffect {
                        added_ms,
                        ..nothing
                    }))
                }
                Resolved::Hang {
                    caller,
                    callee,
                    timeout_ms,
                } => {
                    self.effects[callee].hang = true;
                    self.timeouts.push((caller, callee, timeout_ms));
                }
                Resolved::Down(service) => self.effects[service].down = true,
                Resolved::SlowDependency(service) => {
                    self.effects[service].dependency_slowdown *= fault::SLOW_DEPENDENCY_FACTOR
                }
                Resolved::RetryStorm { caller, callee } => {
                    self.storms.push((caller, callee));
                    self.effects[callee].latency *= fault::RETRY_CALLEE_LATENCY_FACTOR;
                }
                Resolved::MemoryLeak(service) => self.effects[service].leaking = true,
                Resolved::PoolExhaustion(service) => self.effects[service].pool_exhausted = true,
                Resolved::CpuThrottling(service) => {
                    self.effects[service].throttled = true;
                    self.effects[service].latency *= fault::THROTTLING_LATENCY_FACTOR;
                }
                Resolved::Degrade {
                    service,
                    op,
                    latency,
                    error_rate,
                } => self.effects[service]
                    .degrade
                    .push((op, latency, error_rate)),
                Resolved::NoisyNeighbour(service) => {
                    self.effects[service].scoped.push(scoped(ScopedEffect {
                        latency: fault::NOISY_NEIGHBOUR_LATENCY_FACTOR,
                        ..nothing
                    }))
                }
                // Work through the bad version's pods and the flags.
                Resolved::BadDeploy(_)
                | Resolved::Canary(_)
                | Resolved::SlowDeploy(_)
                | Resolved::FlagFlip(..) => {}
            }
        }
    }

    /// The entry rate for the second starting at `now`.
    fn entry_rate(&mut self, now: u64) -> f64 {
        let mut rate = self.rate;
        let profile = &self.model.traffic;
        if self.daily_shape {
            rate *= shape_factor(profile.daily, profile.weekly, now);
        }
        match self.burst {
            Some(burst) if burst.until > self.second => rate *= burst.factor,
            _ => {
                self.burst = None;
                if self.traffic.chance(1.0 / profile.burst_gap_seconds) {
                    let (shortest, longest) = profile.burst_seconds;
                    let length = shortest + self.traffic.below(longest - shortest + 1);
                    let factor = self
                        .traffic
                        .range(profile.burst_factor.0, profile.burst_factor.1);
                    self.burst = Some(Burst {
                        until: self.second + length,
                        factor,
                    });
                    rate *= factor;
                }
            }
        }
        rate
    }

    // --- output buffering ---

    fn bucket(&mut self, time: u64) -> &mut Bucket {
        let second = (time.saturating_sub(self.start_ns)) / SECOND;
        // Nothing ends before the second being generated.
        let index = second.saturating_sub(self.pending_base) as usize;
        while self.pending.len() <= index {
            let bucket = self.spare.pop().unwrap_or_default();
            self.pending.push_back(bucket);
        }
        &mut self.pending[index]
    }

    fn push_span(&mut self, pod: usize, span: Span) {
        if !self.signals.traces {
            return;
        }
        let end = span.end_time_unix_nano;
        self.bucket(end).group(pod).spans.push(span);
    }

    fn log(
        &mut self,
        pod: usize,
        time: u64,
        severity: i32,
        severity_text: &str,
        body: &str,
        context: Option<(&[u8; 16], u64)>,
    ) {
        self.log_with(
            pod,
            time,
            severity,
            severity_text,
            body,
            context,
            Vec::new(),
        );
    }

    /// A log record with attributes.
    #[allow(clippy::too_many_arguments)]
    fn log_with(
        &mut self,
        pod: usize,
        time: u64,
        severity: i32,
        severity_text: &str,
        body: &str,
        context: Option<(&[u8; 16], u64)>,
        attributes: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
    ) {
        if !self.signals.logs {
            return;
        }
        let (trace_id, span_id, flags) = match context {
            Some((trace, span)) => (trace.to_vec(), span.to_be_bytes().to_vec(), FLAG_SAMPLED),
            None => (Vec::new(), Vec::new(), 0),
        };
        let record = LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: time,
            severity_number: severity,
            severity_text: severity_text.to_owned(),
            body: str_value(body),
            attributes,
            dropped_attributes_count: 0,
            flags,
            trace_id,
            span_id,
            event_name: String::new(),
        };
        self.bucket(time).group(pod).logs.push(record);
    }

    /// Background logs of every live pod (not tied to a request).
    fn background_logs(&mut self, now: u64) {
        if !self.signals.logs {
            return;
        }
        const MESSAGES: [(i32, &str, &str); 6] = [
            (5, "DEBUG", "cache stats refreshed"),
            (5, "DEBUG", "connection keep-alive sent"),
            (9, "INFO", "health check passed"),
            (9, "INFO", "configuration reloaded"),
            (9, "INFO", "flushed metrics"),
            (13, "WARN", "slow garbage collection pause"),
        ];
        for pod in 0..self.pods.len() {
            if !self.pods[pod].live || self.effects[self.pods[pod].service].down {
                continue;
            }
            let count = self.logs_rng.poisson(BACKGROUND_LOGS_PER_POD);
            for _ in 0..count {
                let pick = self.logs_rng.uniform();
                // WARN is rare: 5% of background logs.
                let index = if pick < 0.05 {
                    5
                } else {
                    (pick * 100.0) as usize % 5
                };
                let (severity, text, body) = MESSAGES[index];
                let time = now + self.logs_rng.below(SECOND);
                self.log(pod, time, severity, text, body, None);
            }
        }
    }

    /// Turns the bucket of the second just generated into requests.
    fn emit(
        &mut self,
    ) -> (
        Option<ExportTraceServiceRequest>,
        Option<ExportLogsServiceRequest>,
    ) {
        let mut bucket = self.pending.pop_front().unwrap_or_default();
        self.pending_base += 1;
        // Resources in pod order, for a stable layout; each pod's items keep
        // their generation order.
        bucket.groups.sort_unstable_by_key(|group| group.pod);
        let scope = metrics::scope();
        let mut resource_spans = Vec::new();
        let mut resource_logs = Vec::new();
        for group in bucket.groups.drain(..) {
            bucket.slot[group.pod] = 0;
            let resource = &self.pods[group.pod].resource;
            if !group.spans.is_empty() {
                resource_spans.push(ResourceSpans {
                    resource: Some(resource.clone()),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(scope.clone()),
                        spans: group.spans,
                        schema_url: SCHEMA_URL.to_owned(),
                    }],
                    schema_url: String::new(),
                });
            }
            if !group.logs.is_empty() {
                resource_logs.push(ResourceLogs {
                    resource: Some(resource.clone()),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(scope.clone()),
                        log_records: group.logs,
                        schema_url: SCHEMA_URL.to_owned(),
                    }],
                    schema_url: String::new(),
                });
            }
        }
        self.spare.push(bucket);
        let traces =
            (!resource_spans.is_empty()).then_some(ExportTraceServiceRequest { resource_spans });
        let logs =
            (!resource_logs.is_empty()).then_some(ExportLogsServiceRequest { resource_logs });
        (traces, logs)
    }

    /// Generates the next second, or `None` at the end of the run.
    pub fn next_batch(&mut self) -> Option<Batch> {
        if self.second >= self.seconds {
            return None;
        }
        let now = self.start_ns + self.second * SECOND;
        // The interval that closes now saw the effects of the second before,
        // so metrics are taken before faults and deploys move on.
        let metrics = if self.signals.metrics
            && self.second > 0
            && self.second.is_multiple_of(INTERVAL_SECONDS)
        {
            pod_metrics::tick(
                self.model,
                &mut self.pods,
                &self.effects,
                now,
                &mut self.metrics_rng,
            )
        } else {
            None
        };
        self.advance(now);
        self.generate_traffic(now);
        self.background_logs(now);
        let (traces, logs) = self.emit();
        self.second += 1;
        Some(Batch {
            time_unix_nanos: now,
            traces,
            metrics,
            logs,
        })
    }

    /// Chooses the signals to generate.
    pub fn set_signals(&mut self, signals: Signals) {
        self.signals = signals;
    }

    /// The entry rate of each of the first `seconds` seconds, as the run
    /// would draw it (for tests of the traffic shape and bursts).
    #[cfg(test)]
    pub(crate) fn entry_rates(&mut self, seconds: u64) -> Vec<f64> {
        (0..seconds)
            .map(|second| {
                self.second = second;
                self.entry_rate(self.start_ns + second * SECOND)
            })
            .collect()
    }

    /// Batches left, for `Iterator::size_hint`.
    pub fn remaining(&self) -> usize {
        (self.seconds - self.second.min(self.seconds)) as usize
    }
}
