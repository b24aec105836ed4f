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

use std::collections::VecDeque;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::{Event, SpanKind},
    status::StatusCode,
    ResourceSpans, ScopeSpans, Span, Status,
};

use super::fault::{self, Resolved};
use super::metrics::{self, PodMetrics, INTERVAL_SECONDS, SCHEMA_URL};
use super::model::{
    kv_int, kv_str, model, DbSystem, Model, OpId, OpKind, ServiceId, Target, REGIONS,
};
use super::rng::Rng;
use super::{Batch, Scenario, Signals};

const SECOND: u64 = 1_000_000_000;
const MS: f64 = 1e6;

/// Pods of one service are replaced this far apart during a rollout.
const ROLLOUT_STEP_SECONDS: u64 = 15;
/// Mean time between benign deploys (across all services).
const BENIGN_DEPLOY_MEAN_GAP_SECONDS: f64 = 30.0 * 60.0;
/// Benign deploys keep this far from any fault's start: not within
/// `BEFORE` seconds before it nor `AFTER` seconds after it.
const DEPLOY_QUIET_BEFORE_SECONDS: u64 = 15 * 60;
const DEPLOY_QUIET_AFTER_SECONDS: u64 = 5 * 60;
/// Mean time between traffic bursts, their length and size.
const BURST_MEAN_GAP_SECONDS: f64 = 15.0 * 60.0;
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
        }
    }
}

/// One pod (a container of one version of one service).
#[derive(Debug)]
pub struct Pod {
    pub service: ServiceId,
    pub version: usize,
    pub resource: Resource,
    /// False once a rollout replaced it.
    pub live: bool,
    pub restarts: u32,
    pub metrics: PodMetrics,
}

/// A `service.version` of a service, and whether it behaves badly.
#[derive(Debug)]
struct Version {
    text: String,
    bad: bool,
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
    fault: Resolved,
    start: u64,
    end: Option<u64>,
    started: bool,
    ended: bool,
}

/// How a request or call turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// A 4xx: the caller's fault, not a server failure.
    ClientError(i64),
    Failed(Failure),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// A bug or fault in this service.
    Internal,
    /// A call this request needed failed.
    Dependency,
    /// Load shed (overloaded).
    Unavailable,
    /// The client gave up waiting.
    Timeout,
    /// No pooled connection within the acquire timeout.
    PoolTimeout,
}

impl Outcome {
    fn failed(self) -> bool {
        !matches!(self, Outcome::Ok)
    }
}

impl Failure {
    fn message(self) -> &'static str {
        match self {
            Failure::Internal => "internal error",
            Failure::Dependency => "a dependency failed",
            Failure::Unavailable => "service unavailable: overloaded",
            Failure::Timeout => "deadline exceeded",
            Failure::PoolTimeout => "timed out waiting for a database connection",
        }
    }

    fn exception_type(self) -> &'static str {
        match self {
            Failure::Internal => "InternalError",
            Failure::Dependency => "UpstreamError",
            Failure::Unavailable => "ServiceUnavailable",
            Failure::Timeout => "TimeoutError",
            Failure::PoolTimeout => "ConnectionPoolTimeout",
        }
    }

    fn http_status(self) -> i64 {
        match self {
            Failure::Unavailable => 503,
            Failure::Timeout => 504,
            _ => 500,
        }
    }

    fn grpc_status(self) -> i64 {
        match self {
            Failure::Unavailable => 14,
            Failure::Timeout => 4,
            _ => 13,
        }
    }
}

fn grpc_client_error(http: i64) -> i64 {
    match http {
        401 => 16,
        404 => 5,
        _ => 3,
    }
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

/// The trace being generated.
struct TraceCtx {
    id: [u8; 16],
    region: usize,
}

/// Where a call ended and how.
#[derive(Debug, Clone, Copy)]
struct Served {
    end: u64,
    outcome: Outcome,
}

/// A traffic burst in progress.
#[derive(Debug, Clone, Copy)]
struct Burst {
    until: u64,
    factor: f64,
}

/// The generator's state.
pub struct Engine {
    model: &'static Model,
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
    pub(crate) pods: Vec<Pod>,
    /// `[service][region][replica]` -> the pod currently in that slot.
    slots: Vec<Vec<Vec<usize>>>,
    versions: Vec<Vec<Version>>,
    /// Pending replacements, in time order.
    rollouts: VecDeque<Replacement>,
    /// Benign deploys still to start: (second, service).
    benign: VecDeque<(u64, ServiceId)>,
    effects: Vec<Effects>,
    storms: Vec<(ServiceId, ServiceId)>,
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

/// A copy of an attribute template with room for the per-span attributes,
/// so that adding them does not reallocate.
fn with_room(template: &[KeyValue]) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(template.len() + 4);
    attributes.extend_from_slice(template);
    attributes
}

fn ms_to_ns(ms: f64) -> u64 {
    (ms * MS).max(1_000.0) as u64
}

// === impl Engine ===

impl Engine {
    /// Resolves the scenario's faults to absolute times and model ids. A
    /// fault whose names do not resolve is an error when `strict`, and is
    /// skipped with a warning otherwise.
    pub fn schedule(scenario: &Scenario, strict: bool) -> Result<Vec<Scheduled>, String> {
        let mut faults = Vec::new();
        for fault in &scenario.faults {
            let resolved = match fault::resolve(model(), &fault.kind) {
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
                fault: resolved,
                start,
                end: fault
                    .duration
                    .map(|duration| start + duration.as_nanos() as u64),
                started: false,
                ended: false,
            });
        }
        Ok(faults)
    }

    /// A generator for `scenario` with its faults already scheduled.
    pub fn new(scenario: &Scenario, faults: Vec<Scheduled>) -> Self {
        let model = model();
        let seed = scenario.seed;
        let seconds = scenario.duration.as_secs();
        let start_ns = scenario.start_unix_nanos;
        let mut engine = Engine {
            model,
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
            effects: vec![Effects::default(); model.services.len()],
            storms: Vec::new(),
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
                hash,
            }]);
            let mut regions = Vec::new();
            for region in 0..REGIONS.len() {
                let mut replicas = Vec::new();
                for _ in 0..def.replicas {
                    // Pods have been up for a while when the run starts.
                    let started = start_ns.saturating_sub(3600 * SECOND);
                    replicas.push(engine.new_pod(service, region, 0, started));
                }
                regions.push(replicas);
            }
            engine.slots.push(regions);
        }
        if scenario.benign_deploys {
            engine.plan_benign_deploys();
        }
        engine
    }

    pub fn topology(&self) -> &'static super::Topology {
        &self.model.topology
    }

    fn plan_benign_deploys(&mut self) {
        let quiet = |second: u64, faults: &[Scheduled], start_ns: u64| {
            faults.iter().any(|fault| {
                let fault_second = (fault.start - start_ns) / SECOND;
                second + DEPLOY_QUIET_BEFORE_SECONDS >= fault_second
                    && second <= fault_second + DEPLOY_QUIET_AFTER_SECONDS
            })
        };
        let mut at = 0.0;
        loop {
            at += self.deploys.exponential(BENIGN_DEPLOY_MEAN_GAP_SECONDS);
            let second = at as u64;
            if second >= self.seconds {
                break;
            }
            let service = self.deploys.below(self.model.services.len() as u64) as usize;
            if !quiet(second, &self.faults, self.start_ns) {
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
        let (region_name, _) = REGIONS[region];
        let node = self.deploys.below(6);
        let zone = ["a", "b", "c"][(node % 3) as usize];
        let node_name = format!(
            "ip-10-{}-{}-{}.{region_name}.compute.internal",
            region * 16 + node as usize,
            self.deploys.below(250) + 2,
            (node * 37 + 11) % 250
        );
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
            for region in 0..REGIONS.len() {
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

    /// A new version of `service`, derived from its newest one.
    fn new_version(&mut self, service: ServiceId, bad: bool) -> usize {
        let latest = &self.versions[service].last().map(|v| v.text.clone());
        let mut parts: Vec<u32> = latest
            .as_deref()
            .unwrap_or("1.0.0")
            .split('.')
            .map(|part| part.parse().unwrap_or(0))
            .collect();
        parts.resize(3, 0);
        if bad {
            // A feature release.
            parts[1] += 1;
            parts[2] = 0;
        } else {
            parts[2] += 1;
        }
        let hash = self.replica_set_hash();
        self.versions[service].push(Version {
            text: format!("{}.{}.{}", parts[0], parts[1], parts[2]),
            bad,
            hash,
        });
        self.versions[service].len() - 1
    }

    /// Starts and ends faults, applies deploys, and works out the effects
    /// for the second starting at `now`.
    fn advance(&mut self, now: u64) {
        while let Some(&(second, service)) = self.benign.front() {
            if second > self.second {
                break;
            }
            self.benign.pop_front();
            let version = self.new_version(service, false);
            self.roll_out(service, version, now);
        }
        for index in 0..self.faults.len() {
            let fault = &self.faults[index];
            if !fault.started && fault.start <= now {
                self.faults[index].started = true;
                if let Resolved::BadDeploy(service) = self.faults[index].fault {
                    let version = self.new_version(service, true);
                    self.roll_out(service, version, now);
                }
            }
            let fault = &self.faults[index];
            if fault.started && !fault.ended && fault.end.is_some_and(|end| end <= now) {
                self.faults[index].ended = true;
                if let Resolved::BadDeploy(service) = self.faults[index].fault {
                    // Roll back to the newest good version.
                    if let Some(good) = self.versions[service].iter().rposition(|v| !v.bad) {
                        self.roll_out(service, good, now);
                    }
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
            let pod = self.new_pod(service, region, version, now);
            self.slots[service][region][replica] = pod;
            self.log(pod, now + 1_000_000, 9, "INFO", "service started", None);
        }

        for effect in &mut self.effects {
            *effect = Effects::default();
        }
        self.storms.clear();
        for fault in &self.faults {
            if !fault.started || fault.ended {
                continue;
            }
            match fault.fault {
                Resolved::Latency(service) => {
                    self.effects[service].latency *= fault::LATENCY_FACTOR
                }
                Resolved::Errors(service, op) => {
                    self.effects[service].error_rate = fault::ERROR_RATE;
                    self.effects[service].error_op = op;
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
                // Works through the bad version's pods.
                Resolved::BadDeploy(_) => {}
            }
        }
    }

    /// The entry rate for the second starting at `now`.
    fn entry_rate(&mut self, now: u64) -> f64 {
        let mut rate = self.rate;
        if self.daily_shape {
            // Peak at 16:00 UTC, trough at 04:00; peak = 3 x trough.
            let hour = (now / SECOND % 86_400) as f64 / 3600.0;
            rate *= 1.0 + 0.5 * (std::f64::consts::TAU * (hour - 10.0) / 24.0).sin();
        }
        match self.burst {
            Some(burst) if burst.until > self.second => rate *= burst.factor,
            _ => {
                self.burst = None;
                if self.traffic.chance(1.0 / BURST_MEAN_GAP_SECONDS) {
                    let length = 5 + self.traffic.below(26);
                    let factor = self.traffic.range(1.3, 2.0);
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
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            flags,
            trace_id,
            span_id,
            event_name: String::new(),
        };
        self.bucket(time).group(pod).logs.push(record);
    }

    // --- requests ---

    fn pick_pod(&mut self, service: ServiceId, region: usize) -> usize {
        let replicas = &self.slots[service][region];
        let index = if replicas.len() > 1 {
            self.requests.below(replicas.len() as u64) as usize
        } else {
            0
        };
        replicas[index]
    }

    /// One-way network time inside a region.
    fn network(&mut self) -> u64 {
        ms_to_ns(self.requests.log_normal(0.3, 0.3))
    }

    /// Serves one request of `op` arriving at `start`, whose parent span (in
    /// the caller) is `parent` (0 for a root span). With `shed`, the callee
    /// is overloaded and rejects the request at once.
    fn serve(
        &mut self,
        trace: &TraceCtx,
        op_id: OpId,
        start: u64,
        parent: u64,
        shed: bool,
        path: usize,
    ) -> Served {
        let model = self.model;
        let op = &model.ops[op_id];
        let service = op.service;
        let pod = self.pick_pod(service, trace.region);
        let effect = &self.effects[service];
        let mut latency = effect.latency;
        let mut error_rate = op.error_rate;
        if effect.error_op.is_none_or(|target| target == op_id) {
            error_rate += effect.error_rate;
        }
        if self.versions[service][self.pods[pod].version].bad {
            latency *= fault::BAD_DEPLOY_LATENCY_FACTOR;
            error_rate += fault::BAD_DEPLOY_ERROR_RATE;
        }
        let own_ms = self.requests.log_normal(op.own_ms, op.own_sigma);
        let own = if shed {
            ms_to_ns(own_ms * 0.1)
        } else {
            ms_to_ns(own_ms * latency)
        };
        let span_id = self.ids.id64();
        let before = own * 7 / 10;
        let mut time = start + before;
        let mut outcome = Outcome::Ok;
        if !shed {
            'steps: for step in &op.steps {
                let mut step_end = time;
                for call in step {
                    if call.probability < 1.0 && !self.requests.chance(call.probability) {
                        continue;
                    }
                    let served = self.client_call(trace, service, pod, call, time, span_id);
                    step_end = step_end.max(served.end);
                    if !call.optional && outcome == Outcome::Ok {
                        outcome = match served.outcome {
                            Outcome::Ok => Outcome::Ok,
                            Outcome::ClientError(code) => Outcome::ClientError(code),
                            Outcome::Failed(Failure::PoolTimeout) => {
                                Outcome::Failed(Failure::PoolTimeout)
                            }
                            Outcome::Failed(_) => Outcome::Failed(Failure::Dependency),
                        };
                    }
                }
                time = step_end;
                if outcome.failed() {
                    break 'steps;
                }
            }
        }
        time += own - before;
        let local_error = self.requests.chance(error_rate);
        let client_error = op
            .client_error
            .filter(|(share, _)| self.requests.chance(*share));
        if shed {
            outcome = Outcome::Failed(Failure::Unavailable);
        } else if outcome == Outcome::Ok {
            if local_error {
                outcome = Outcome::Failed(Failure::Internal);
            } else if let Some((_, code)) = client_error {
                outcome = Outcome::ClientError(code);
            }
        }
        let end = time;

        // The server span.
        let mut attributes = with_room(&op.server_attrs);
        let mut status = Status::default();
        let mut events = Vec::new();
        match op.kind {
            OpKind::Http { .. } => {
                attributes.push(kv_str("url.path", &op.paths[path % op.paths.len()]));
                let code = match outcome {
                    Outcome::Ok => 200,
                    Outcome::ClientError(code) => code,
                    Outcome::Failed(failure) => failure.http_status(),
                };
                attributes.push(kv_int("http.response.status_code", code));
                if code >= 500 {
                    attributes.push(kv_str("error.type", http_error_type(code)));
                }
                self.pods[pod]
                    .metrics
                    .http_request(op_id, code, end - start);
            }
            OpKind::Grpc { .. } => {
                let code = match outcome {
                    Outcome::Ok => 0,
                    Outcome::ClientError(code) => grpc_client_error(code),
                    Outcome::Failed(failure) => failure.grpc_status(),
                };
                attributes.push(kv_int("rpc.grpc.status_code", code));
            }
            OpKind::Consume => {}
        }
        if let Outcome::Failed(failure) = outcome {
            status = Status {
                message: failure.message().to_owned(),
                code: StatusCode::Error as i32,
            };
            events.push(Event {
                time_unix_nano: end,
                name: "exception".to_owned(),
                attributes: vec![
                    kv_str("exception.type", failure.exception_type()),
                    kv_str("exception.message", failure.message()),
                ],
                dropped_attributes_count: 0,
            });
        }
        let kind = match op.kind {
            OpKind::Consume => SpanKind::Consumer,
            _ => SpanKind::Server,
        };
        let flags = if parent == 0 {
            FLAG_SAMPLED | FLAG_HAS_IS_REMOTE
        } else {
            FLAG_SAMPLED | FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE
        };
        let span = Span {
            trace_id: trace.id.to_vec(),
            span_id: span_id.to_be_bytes().to_vec(),
            trace_state: String::new(),
            parent_span_id: if parent == 0 {
                Vec::new()
            } else {
                parent.to_be_bytes().to_vec()
            },
            flags,
            name: op.server_name.clone(),
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            dropped_attributes_count: 0,
            events,
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status: Some(status),
        };
        self.push_span(pod, span);
        self.pods[pod]
            .metrics
            .request((own_ms * latency).min(60_000.0) * MS);

        // Logs: every failure, a share of the successes.
        match outcome {
            Outcome::Failed(failure) => {
                let body = match failure {
                    Failure::Dependency => "request failed: a downstream call failed",
                    Failure::Unavailable => "request rejected: too many requests in flight",
                    Failure::PoolTimeout => "request failed: connection pool exhausted",
                    _ => "request failed: unhandled exception",
                };
                self.log(pod, end, 17, "ERROR", body, Some((&trace.id, span_id)));
            }
            _ => {
                if self.signals.logs && self.logs_rng.chance(ACCESS_LOG_SHARE) {
                    self.log(
                        pod,
                        end,
                        9,
                        "INFO",
                        "request completed",
                        Some((&trace.id, span_id)),
                    );
                }
            }
        }
        Served { end, outcome }
    }

    /// One call made by a request of `service` served on `pod`.
    fn client_call(
        &mut self,
        trace: &TraceCtx,
        service: ServiceId,
        pod: usize,
        call: &super::model::Call,
        start: u64,
        parent: u64,
    ) -> Served {
        match call.target {
            Target::Op(target) => {
                self.call_service(trace, service, pod, call, target, start, parent)
            }
            Target::Db(db_op) => self.call_db(trace, service, pod, call, db_op, start, parent),
            Target::Publish => self.publish(trace, pod, start, parent),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn call_service(
        &mut self,
        trace: &TraceCtx,
        service: ServiceId,
        pod: usize,
        call: &super::model::Call,
        target: OpId,
        start: u64,
        parent: u64,
    ) -> Served {
        let model = self.model;
        let op = &model.ops[target];
        let callee = op.service;
        let storm = self.storms.contains(&(service, callee));
        let attempts = if storm { fault::RETRY_MAX_ATTEMPTS } else { 1 };
        let timeout = ms_to_ns(call.timeout_ms);
        let path = if op.paths.len() > 1 {
            self.requests.below(op.paths.len() as u64) as usize
        } else {
            0
        };
        let mut time = start;
        let mut result = Served {
            end: start,
            outcome: Outcome::Ok,
        };
        for attempt in 1..=attempts {
            let client_id = self.ids.id64();
            let (end, outcome) = if self.effects[callee].down {
                (time + timeout, Outcome::Failed(Failure::Timeout))
            } else {
                let shed = storm && self.requests.chance(fault::RETRY_FAILURE);
                let there = self.network();
                let served = self.serve(trace, target, time + there, client_id, shed, path);
                let end = served.end + self.network();
                if end - time > timeout {
                    (time + timeout, Outcome::Failed(Failure::Timeout))
                } else {
                    (end, served.outcome)
                }
            };

            let mut attributes = with_room(&op.client_attrs);
            let mut status = Status::default();
            match op.kind {
                OpKind::Http { .. } => {
                    attributes.push(kv_str("url.full", &op.urls[path % op.urls.len()]));
                    match outcome {
                        Outcome::Ok => attributes.push(kv_int("http.response.status_code", 200)),
                        Outcome::ClientError(code) => {
                            attributes.push(kv_int("http.response.status_code", code));
                            attributes.push(kv_str("error.type", http_error_type(code)));
                        }
                        Outcome::Failed(Failure::Timeout) => {
                            attributes.push(kv_str("error.type", "timeout"));
                        }
                        Outcome::Failed(failure) => {
                            let code = failure.http_status();
                            attributes.push(kv_int("http.response.status_code", code));
                            attributes.push(kv_str("error.type", http_error_type(code)));
                        }
                    }
                    if attempt > 1 {
                        attributes
                            .push(kv_int("http.request.resend_count", i64::from(attempt - 1)));
                    }
                }
                OpKind::Grpc { .. } => {
                    let code = match outcome {
                        Outcome::Ok => 0,
                        Outcome::ClientError(code) => grpc_client_error(code),
                        Outcome::Failed(failure) => failure.grpc_status(),
                    };
                    attributes.push(kv_int("rpc.grpc.status_code", code));
                }
                OpKind::Consume => {}
            }
            if let Outcome::Failed(failure) = outcome {
                status = Status {
                    message: failure.message().to_owned(),
                    code: StatusCode::Error as i32,
                };
            } else if matches!(outcome, Outcome::ClientError(_)) {
                // A 4xx is a failure of the call from the client's side.
                status.code = StatusCode::Error as i32;
            }
            let span = Span {
                trace_id: trace.id.to_vec(),
                span_id: client_id.to_be_bytes().to_vec(),
                trace_state: String::new(),
                parent_span_id: parent.to_be_bytes().to_vec(),
                flags: FLAG_SAMPLED | FLAG_HAS_IS_REMOTE,
                name: op.client_name.clone(),
                kind: SpanKind::Client as i32,
                start_time_unix_nano: time,
                end_time_unix_nano: end,
                attributes,
                dropped_attributes_count: 0,
                events: Vec::new(),
                dropped_events_count: 0,
                links: Vec::new(),
                dropped_links_count: 0,
                status: Some(status),
            };
            self.push_span(pod, span);
            result = Served { end, outcome };
            if !outcome.failed()
                || matches!(outcome, Outcome::ClientError(_))
                || attempt == attempts
            {
                break;
            }
            self.log(
                pod,
                end,
                13,
                "WARN",
                "call failed, retrying",
                Some((&trace.id, parent)),
            );
            // An aggressive retry policy: a short backoff with jitter.
            time = end + ms_to_ns(self.requests.range(5.0, 30.0));
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn call_db(
        &mut self,
        trace: &TraceCtx,
        service: ServiceId,
        pod: usize,
        call: &super::model::Call,
        db_op: usize,
        start: u64,
        parent: u64,
    ) -> Served {
        let model = self.model;
        let def = &model.db_ops[db_op];
        let db = &model.dbs[def.db];
        let effect = &self.effects[service];
        let slowdown = effect.dependency_slowdown;
        let exhausted = effect.pool_exhausted && db.system == DbSystem::Postgresql;
        let use_ms = self.requests.log_normal(def.median_ms, def.sigma) * slowdown;
        let failed = self.requests.chance(def.error_rate);
        let mut outcome = if failed {
            Outcome::Failed(Failure::Internal)
        } else {
            Outcome::Ok
        };
        let (wait_ms, use_ms) = if exhausted {
            let wait = self.requests.exponential(fault::POOL_WAIT_MEAN_MS);
            if wait >= fault::POOL_ACQUIRE_TIMEOUT_MS {
                outcome = Outcome::Failed(Failure::PoolTimeout);
                (fault::POOL_ACQUIRE_TIMEOUT_MS, 0.0)
            } else {
                (wait, use_ms)
            }
        } else if db.system == DbSystem::Postgresql {
            (0.02, use_ms)
        } else {
            (0.0, use_ms)
        };
        let mut duration = ms_to_ns(wait_ms + use_ms);
        let timeout = ms_to_ns(call.timeout_ms);
        if duration > timeout {
            duration = timeout;
            outcome = Outcome::Failed(Failure::Timeout);
        }
        if db.system == DbSystem::Postgresql {
            self.pods[pod]
                .metrics
                .pooled_query(wait_ms * MS, use_ms * MS);
        }
        let end = start + duration;
        let mut attributes = with_room(&def.attrs);
        let mut status = Status::default();
        if let Outcome::Failed(failure) = outcome {
            let error_type = match failure {
                Failure::Timeout => "timeout",
                Failure::PoolTimeout => "ConnectionPoolTimeout",
                _ if db.system == DbSystem::External => "500",
                _ => "DatabaseError",
            };
            if db.system == DbSystem::External && failure != Failure::Timeout {
                attributes.push(kv_int("http.response.status_code", 500));
            }
            attributes.push(kv_str("error.type", error_type));
            status = Status {
                message: failure.message().to_owned(),
                code: StatusCode::Error as i32,
            };
        } else if db.system == DbSystem::External {
            attributes.push(kv_int("http.response.status_code", 200));
        }
        let span = Span {
            trace_id: trace.id.to_vec(),
            span_id: self.ids.id64().to_be_bytes().to_vec(),
            trace_state: String::new(),
            parent_span_id: parent.to_be_bytes().to_vec(),
            flags: FLAG_SAMPLED | FLAG_HAS_IS_REMOTE,
            name: def.name.clone(),
            kind: SpanKind::Client as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            dropped_attributes_count: 0,
            events: Vec::new(),
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status: Some(status),
        };
        self.push_span(pod, span);
        Served { end, outcome }
    }

    /// Publishes an order event; the consumer processes it a little later
    /// in the same trace (its parent is the PRODUCER span).
    fn publish(&mut self, trace: &TraceCtx, pod: usize, start: u64, parent: u64) -> Served {
        let model = self.model;
        let queue = &model.queue;
        let producer_id = self.ids.id64();
        let end = start + ms_to_ns(self.requests.log_normal(1.5, 0.4));
        let span = Span {
            trace_id: trace.id.to_vec(),
            span_id: producer_id.to_be_bytes().to_vec(),
            trace_state: String::new(),
            parent_span_id: parent.to_be_bytes().to_vec(),
            flags: FLAG_SAMPLED | FLAG_HAS_IS_REMOTE,
            name: queue.producer_name.clone(),
            kind: SpanKind::Producer as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: queue.producer_attrs.clone(),
            dropped_attributes_count: 0,
            events: Vec::new(),
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status: Some(Status::default()),
        };
        self.push_span(pod, span);
        let consumer = model.ops[queue.consumer].service;
        // A consumer that is down leaves the message in the queue.
        if !self.effects[consumer].down {
            let lag = ms_to_ns(2.0 + self.requests.exponential(20.0));
            self.serve(trace, queue.consumer, end + lag, producer_id, false, 0);
        }
        Served {
            end,
            outcome: Outcome::Ok,
        }
    }

    /// Generates the entry requests arriving in the second starting at `now`.
    fn generate_traffic(&mut self, now: u64) {
        let model = self.model;
        if self.effects[model.entry].down {
            // Users get connection errors at the load balancer; nothing is
            // traced. Keep the traffic generator in step anyway.
            let _ = self.entry_rate(now);
            return;
        }
        let rate = self.entry_rate(now);
        let count = self.traffic.poisson(rate) as usize;
        self.arrivals.clear();
        for _ in 0..count {
            self.arrivals.push(self.traffic.below(SECOND));
        }
        self.arrivals.sort_unstable();
        let total = model.entry_ops.last().map_or(1.0, |(_, total)| *total);
        for index in 0..self.arrivals.len() {
            let arrival = now + self.arrivals[index];
            let pick = self.traffic.uniform() * total;
            let op = model
                .entry_ops
                .iter()
                .find(|(_, cumulative)| pick < *cumulative)
                .or(model.entry_ops.last())
                .map_or(0, |(op, _)| *op);
            let region = if self.traffic.chance(REGIONS[0].1) {
                0
            } else {
                1
            };
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&self.ids.id64().to_be_bytes());
            id[8..].copy_from_slice(&self.ids.next_u64().to_be_bytes());
            let trace = TraceCtx { id, region };
            let path = self.requests.below(64) as usize;
            self.serve(&trace, op, arrival, 0, false, path);
        }
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
        let metrics =
            if self.signals.metrics && self.second > 0 && self.second % INTERVAL_SECONDS == 0 {
                metrics::tick(
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

    /// Batches left, for `Iterator::size_hint`.
    pub fn remaining(&self) -> usize {
        (self.seconds - self.second.min(self.seconds)) as usize
    }
}

fn http_error_type(code: i64) -> &'static str {
    match code {
        401 => "401",
        404 => "404",
        500 => "500",
        503 => "503",
        504 => "504",
        _ => "_OTHER",
    }
}
