//! Injectable faults: what they are ([`FaultKind`], [`Fault`]), how they are
//! written on the command line ([`parse_fault`], [`parse_duration`]), and the
//! numbers that say how strongly each one bites (the constants below).
//!
//! A fault names services by their `service.name`; `resolve` checks those
//! names against the model once, so the engine only handles ids that exist.
//!
//! Some faults can be narrowed to a [`Scope`]: one region, one pod, or the
//! requests of one tenant (a trace attribute set at the entry). Only the
//! spans in the scope change; the spec form appends it as `@KEY=VALUE`.

use std::fmt;
use std::time::Duration;

use crate::tools::sim::model::{model_of, Model, OpId, ServiceId, Shop};
use crate::tools::sim::SimError;

/// Own time multiplier of a `Latency` fault.
pub const LATENCY_FACTOR: f64 = 6.0;
/// Probability that a request fails locally under an `Errors` fault.
pub const ERROR_RATE: f64 = 0.25;
/// Time multiplier of database/API calls under a `SlowDependency` fault.
pub const SLOW_DEPENDENCY_FACTOR: f64 = 10.0;
/// Own time multiplier while CPU-throttled.
pub const THROTTLING_LATENCY_FACTOR: f64 = 2.5;
/// Own time multiplier and local error rate of the bad version of a
/// `BadDeploy`.
pub const BAD_DEPLOY_LATENCY_FACTOR: f64 = 3.0;
pub const BAD_DEPLOY_ERROR_RATE: f64 = 0.08;
/// Under a retry storm, each attempt of the caller fails with this
/// probability (the callee sheds load) and the caller tries up to
/// `RETRY_MAX_ATTEMPTS` times: about three attempts per call on average.
pub const RETRY_FAILURE: f64 = 0.75;
pub const RETRY_MAX_ATTEMPTS: u32 = 5;
/// Own time multiplier of the callee of a retry storm (it is overloaded).
pub const RETRY_CALLEE_LATENCY_FACTOR: f64 = 2.0;
/// A leaking pod reaches its memory limit this long after the leak starts
/// (then it is OOM-killed and restarts).
pub const MEMORY_LEAK_TIME_TO_LIMIT: Duration = Duration::from_secs(2 * 3600);
/// Mean wait for a pooled connection when the pool is exhausted, and the
/// pool's acquire timeout (a wait that reaches it fails the query).
pub const POOL_WAIT_MEAN_MS: f64 = 200.0;
pub const POOL_ACQUIRE_TIMEOUT_MS: f64 = 800.0;
/// Extra own time of a `Slow` fault when the spec gives none.
pub const SLOW_DEFAULT_MS: u64 = 250;
/// Probability that a request in scope fails under a scoped `Errors` fault:
/// higher than [`ERROR_RATE`], because a narrow fault that bit as softly
/// would hide in the service's totals.
pub const SCOPED_ERROR_RATE: f64 = 0.5;
/// A hanging service (under `Timeouts` or `MissingTimeout`) holds each
/// request this long more: log-normal with this median and log-space
/// spread, so that most calls outlast a 2 s timeout and a few last 10 s.
pub const HANG_MEDIAN_MS: f64 = 3_000.0;
pub const HANG_SIGMA: f64 = 0.5;
/// The caller's timeout on the hanging edge under `Timeouts`: its CLIENT
/// spans pile up at this ceiling.
pub const TIMEOUT_CEILING_MS: f64 = 2_000.0;
/// Under `MissingTimeout` the caller waits as long as it takes; an hour
/// stands for "no timeout".
pub const NO_TIMEOUT_MS: f64 = 3_600_000.0;
/// Share of a flag's evaluations that serve the new variant (`on`) once it
/// is flipped: a percentage rollout.
pub const FLAG_ROLLOUT_SHARE: f64 = 0.5;
/// Probability that a request served the new variant of a harmful flag
/// fails.
pub const FLAG_ERROR_RATE: f64 = 0.3;
/// Own time multiplier of the pods of a service on the node with a noisy
/// neighbour (CPU steal, a saturated disk or network link).
pub const NOISY_NEIGHBOUR_LATENCY_FACTOR: f64 = 2.5;
/// The values of a tenant-like trace attribute (`app.tenant` in the specs),
/// with their shares of the traffic.
pub const TENANTS: [(&str, f64); 5] = [
    ("acme", 0.35),
    ("globex", 0.25),
    ("initech", 0.2),
    ("umbrella", 0.12),
    ("hooli", 0.08),
];

/// What goes wrong. Services are named by `service.name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The service's own time is multiplied by [`LATENCY_FACTOR`]; callers
    /// inherit it. With a scope, only requests in it.
    Latency {
        service: String,
        scope: Option<Scope>,
    },
    /// The service (or one route/method of it) fails [`ERROR_RATE`] of its
    /// requests; callers propagate the failures. With a scope, only requests
    /// in it fail, [`SCOPED_ERROR_RATE`] of them; scoped to a tenant it is a
    /// data issue (one customer's records are bad).
    Errors {
        service: String,
        route: Option<String>,
        scope: Option<Scope>,
    },
    /// The service emits nothing; callers' CLIENT spans end at their timeout
    /// (1 s, or 5 s for slow calls) with errors.
    Down { service: String },
    /// The service's databases, caches and external APIs answer
    /// [`SLOW_DEPENDENCY_FACTOR`] times slower; callers inherit it.
    SlowDependency { service: String },
    /// The callee sheds load and the caller retries each call up to
    /// [`RETRY_MAX_ATTEMPTS`] times: many CLIENT spans under one parent.
    RetryStorm { caller: String, callee: String },
    /// Memory grows linearly towards the container limit.
    MemoryLeak { service: String },
    /// The PostgreSQL pool is exhausted: all connections used, requests
    /// pending, DB CLIENT spans include the wait for a connection (the query
    /// time itself, `db.client.connection.use_time`, stays flat).
    PoolExhaustion { service: String },
    /// CPU throttled in 30-60% of CFS periods; own time up
    /// [`THROTTLING_LATENCY_FACTOR`] times.
    CpuThrottling { service: String },
    /// A new `service.version` rolls out; it is slower and fails more. When
    /// the fault has a duration, the old version is rolled back at its end.
    BadDeploy { service: String },
    /// The service's own time gains a fixed `added_ms` (a lock, a slow
    /// untraced call); callers inherit it in their CLIENT spans while their
    /// own time stays flat. With a scope, only requests in it.
    Slow {
        service: String,
        added_ms: u64,
        scope: Option<Scope>,
    },
    /// The callee hangs ([`HANG_MEDIAN_MS`]) and the caller's calls to it
    /// time out at [`TIMEOUT_CEILING_MS`]: CLIENT spans pile up at the
    /// ceiling and fail with a timeout.
    Timeouts { caller: String, callee: String },
    /// The callee hangs and the caller has no timeout on its calls to it:
    /// the caller's CLIENT spans follow the callee's unbounded tail.
    MissingTimeout { caller: String, callee: String },
    /// A feature flag of the service, evaluated on every request from the
    /// start of the run (variant `off`), is flipped: [`FLAG_ROLLOUT_SHARE`]
    /// of requests get variant `on`, and [`FLAG_ERROR_RATE`] of those fail.
    /// With a duration, the flag is turned off again at its end.
    FlagFlip { service: String, flag: String },
    /// A bad new version goes to one pod only (a canary), so both versions
    /// serve side by side and only the canary's spans are slower and fail.
    Canary { service: String },
    /// A new `service.version` rolls out pod by pod and is
    /// [`BAD_DEPLOY_LATENCY_FACTOR`] times slower on its own pods, with no
    /// more errors. Rolled back at the end of a fault with a duration.
    SlowDeploy { service: String },
    /// The service (or one route/method of it) takes `factor_milli / 1000`
    /// times as long: its own time is multiplied and it waits as much
    /// longer around its calls, so its SERVER spans (and their p95) stretch
    /// by the factor; a moderate rise such as 1.4, or a larger one on a
    /// quiet service.
    Slowdown {
        service: String,
        factor_milli: u32,
        route: Option<String>,
    },
    /// The service (or one route/method of it) fails `basis_points /
    /// 10_000` more of its requests: +1 percentage point on a busy
    /// endpoint, or 20% on a quiet service.
    ErrorRate {
        service: String,
        basis_points: u32,
        route: Option<String>,
    },
    /// Something else on one node (the node of the service's first pod)
    /// hogs it: the service's pods on that node are
    /// [`NOISY_NEIGHBOUR_LATENCY_FACTOR`] times slower, its pods elsewhere
    /// are not.
    NoisyNeighbour { service: String },
}

/// Where a scoped fault bites.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Pods in this region (`cloud.region`).
    Region(String),
    /// One pod of the service, by index: region by region, replica by
    /// replica (`k8s.pod.name` of the pod running there when the run
    /// starts).
    Pod(usize),
    /// Requests whose trace carries `key` = `value`: an attribute set at the
    /// entry and copied onto every SERVER span of the trace (as a baggage
    /// span processor does), with values from [`TENANTS`].
    Attribute { key: String, value: String },
}

// === impl Scope ===

impl Scope {
    /// Reads `region=eu-west-1`, `cloud.region=eu-west-1`, `pod=1`,
    /// `k8s.pod.name=1` or `KEY=VALUE` (a trace attribute such as
    /// `app.tenant=acme`).
    fn parse(text: &str) -> Result<Scope, String> {
        let Some((key, value)) = text.split_once('=') else {
            return Err(format!(
                "scope {text:?}: expected KEY=VALUE, e.g. @cloud.region=eu-west-1, @pod=1 or @app.tenant=acme"
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || value.is_empty() {
            return Err(format!(
                "scope {text:?}: both the key and the value are needed"
            ));
        }
        Ok(match key {
            "region" | "cloud.region" => Scope::Region(value.to_owned()),
            "pod" | "k8s.pod.name" => Scope::Pod(value.parse().map_err(|_| {
                format!("scope {text:?}: give the pod as an index (0 for the service's first pod)")
            })?),
            _ => Scope::Attribute {
                key: key.to_owned(),
                value: value.to_owned(),
            },
        })
    }
}

/// The spec form, after the `@`.
impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Region(region) => write!(f, "cloud.region={region}"),
            Scope::Pod(index) => write!(f, "pod={index}"),
            Scope::Attribute { key, value } => write!(f, "{key}={value}"),
        }
    }
}

/// A fault with its timing.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    /// Offset from the scenario start.
    pub start: Duration,
    /// `None`: until the end of the run.
    pub duration: Option<Duration>,
}

// === impl FaultKind ===

impl FaultKind {
    /// The kind's name as used in fault specs ("latency", "retry-storm"...).
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Latency { .. } => "latency",
            FaultKind::Errors { .. } => "errors",
            FaultKind::Down { .. } => "down",
            FaultKind::SlowDependency { .. } => "slow-dependency",
            FaultKind::RetryStorm { .. } => "retry-storm",
            FaultKind::MemoryLeak { .. } => "memory-leak",
            FaultKind::PoolExhaustion { .. } => "pool-exhaustion",
            FaultKind::CpuThrottling { .. } => "cpu-throttling",
            FaultKind::BadDeploy { .. } => "bad-deploy",
            FaultKind::Slow { .. } => "slow",
            FaultKind::Timeouts { .. } => "timeouts",
            FaultKind::MissingTimeout { .. } => "missing-timeout",
            FaultKind::FlagFlip { .. } => "flag-flip",
            FaultKind::Canary { .. } => "canary",
            FaultKind::SlowDeploy { .. } => "slow-deploy",
            FaultKind::Slowdown { .. } => "slowdown",
            FaultKind::ErrorRate { .. } => "error-rate",
            FaultKind::NoisyNeighbour { .. } => "noisy-neighbour",
        }
    }

    /// The fault's scope, if it has one.
    pub fn scope(&self) -> Option<&Scope> {
        match self {
            FaultKind::Latency { scope, .. }
            | FaultKind::Errors { scope, .. }
            | FaultKind::Slow { scope, .. } => scope.as_ref(),
            _ => None,
        }
    }

    /// The service where the fault shows first: the faulty service itself,
    /// for a retry storm the callee whose traffic it multiplies, and for
    /// timeouts the callee that hangs.
    pub fn service(&self) -> &str {
        match self {
            FaultKind::Latency { service, .. }
            | FaultKind::Errors { service, .. }
            | FaultKind::Down { service }
            | FaultKind::SlowDependency { service }
            | FaultKind::MemoryLeak { service }
            | FaultKind::PoolExhaustion { service }
            | FaultKind::CpuThrottling { service }
            | FaultKind::BadDeploy { service }
            | FaultKind::Slow { service, .. }
            | FaultKind::FlagFlip { service, .. }
            | FaultKind::Canary { service }
            | FaultKind::SlowDeploy { service }
            | FaultKind::Slowdown { service, .. }
            | FaultKind::ErrorRate { service, .. }
            | FaultKind::NoisyNeighbour { service } => service,
            FaultKind::RetryStorm { callee, .. }
            | FaultKind::Timeouts { callee, .. }
            | FaultKind::MissingTimeout { callee, .. } => callee,
        }
    }
}

/// The spec form, which [`parse_fault`] reads back.
impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultKind::Errors {
                service,
                route: Some(route),
                ..
            } => write!(f, "errors:{service}:{route}")?,
            FaultKind::RetryStorm { caller, callee }
            | FaultKind::Timeouts { caller, callee }
            | FaultKind::MissingTimeout { caller, callee } => {
                write!(f, "{}:{caller}:{callee}", self.name())?
            }
            FaultKind::Slow {
                service, added_ms, ..
            } => write!(f, "slow:{service}:{added_ms}")?,
            FaultKind::FlagFlip { service, flag } => write!(f, "flag-flip:{service}:{flag}")?,
            FaultKind::Slowdown {
                service,
                factor_milli,
                route,
            } => {
                write!(
                    f,
                    "slowdown:{service}:{}",
                    f64::from(*factor_milli) / 1000.0
                )?;
                if let Some(route) = route {
                    write!(f, ":{route}")?;
                }
            }
            FaultKind::ErrorRate {
                service,
                basis_points,
                route,
            } => {
                write!(
                    f,
                    "error-rate:{service}:{}",
                    f64::from(*basis_points) / 100.0
                )?;
                if let Some(route) = route {
                    write!(f, ":{route}")?;
                }
            }
            other => write!(f, "{}:{}", other.name(), other.service())?,
        }
        match self.scope() {
            Some(scope) => write!(f, "@{scope}"),
            None => Ok(()),
        }
    }
}

/// Fault specs accepted by [`parse_fault`], for help and error messages.
pub const FAULT_SPECS: &str = "latency:SERVICE, errors:SERVICE[:ROUTE], down:SERVICE, \
     slow-dependency:SERVICE, retry-storm:CALLER:CALLEE, memory-leak:SERVICE, \
     pool-exhaustion:SERVICE, cpu-throttling:SERVICE, bad-deploy:SERVICE, \
     slow:SERVICE[:MS], timeouts:CALLER:CALLEE, missing-timeout:CALLER:CALLEE, \
     flag-flip:SERVICE:FLAG, canary:SERVICE, slow-deploy:SERVICE, \
     slowdown:SERVICE:FACTOR[:ROUTE], error-rate:SERVICE:PERCENT[:ROUTE], \
     noisy-neighbour:SERVICE; latency, errors and slow take a scope: \
     @cloud.region=REGION, @pod=INDEX or @KEY=TENANT (e.g. @app.tenant=acme)";

/// Reads a fault spec such as `latency:payment`,
/// `errors:checkout:/api/checkout`, `down:inventory`,
/// `retry-storm:checkout:payment`, `bad-deploy:payment`, `slow:inventory:300`,
/// `flag-flip:checkout:new-checkout-flow` or a scoped one such as
/// `errors:inventory@cloud.region=eu-west-1`, and checks it against the
/// first shop's topology.
pub fn parse_fault(spec: &str) -> Result<FaultKind, SimError> {
    parse_fault_in(Shop::First, spec)
}

/// Reads a fault spec and checks it against the topology of `shop`.
pub fn parse_fault_in(shop: Shop, spec: &str) -> Result<FaultKind, SimError> {
    let bad = |reason: String| SimError::Fault {
        spec: spec.to_owned(),
        reason,
    };
    // Routes never contain '@', so the last one starts the scope.
    let (body, scope) = match spec.trim().rsplit_once('@') {
        Some((body, scope)) => (body, Some(Scope::parse(scope).map_err(bad)?)),
        None => (spec.trim(), None),
    };
    let mut parts = body.splitn(3, ':');
    let kind = parts.next().unwrap_or_default().to_ascii_lowercase();
    let first = parts.next().map(str::trim).filter(|part| !part.is_empty());
    let second = parts.next().map(str::trim).filter(|part| !part.is_empty());
    let Some(service) = first.map(str::to_owned) else {
        return Err(bad(format!("expected KIND:SERVICE, one of {FAULT_SPECS}")));
    };
    let takes_two = matches!(
        kind.as_str(),
        "errors"
            | "retry-storm"
            | "retry_storm"
            | "slow"
            | "timeouts"
            | "missing-timeout"
            | "missing_timeout"
            | "flag-flip"
            | "flag_flip"
            | "slowdown"
            | "error-rate"
            | "error_rate"
    );
    if second.is_some() && !takes_two {
        return Err(bad(format!(
            "{kind} takes one service; expected one of {FAULT_SPECS}"
        )));
    }
    if scope.is_some() && !matches!(kind.as_str(), "latency" | "errors" | "slow") {
        return Err(bad(format!(
            "{kind} takes no scope; only latency, errors and slow do"
        )));
    }
    let edge = |name: &str| -> Result<(String, String), SimError> {
        let Some(callee) = second else {
            return Err(bad(format!("expected {name}:CALLER:CALLEE")));
        };
        Ok((service.clone(), callee.to_owned()))
    };
    let fault = match kind.as_str() {
        "latency" => FaultKind::Latency {
            service: service.clone(),
            scope,
        },
        "errors" => FaultKind::Errors {
            service: service.clone(),
            route: second.map(str::to_owned),
            scope,
        },
        "slow" => FaultKind::Slow {
            service: service.clone(),
            added_ms: match second {
                None => SLOW_DEFAULT_MS,
                Some(ms) => ms.parse().map_err(|_| {
                    bad(format!(
                        "slow takes the added milliseconds as a whole number, e.g. slow:{service}:300"
                    ))
                })?,
            },
            scope,
        },
        "timeouts" => {
            let (caller, callee) = edge("timeouts")?;
            FaultKind::Timeouts { caller, callee }
        }
        "missing-timeout" | "missing_timeout" => {
            let (caller, callee) = edge("missing-timeout")?;
            FaultKind::MissingTimeout { caller, callee }
        }
        "flag-flip" | "flag_flip" => {
            let Some(flag) = second else {
                return Err(bad("expected flag-flip:SERVICE:FLAG".to_owned()));
            };
            FaultKind::FlagFlip {
                service: service.clone(),
                flag: flag.to_owned(),
            }
        }
        "canary" => FaultKind::Canary {
            service: service.clone(),
        },
        "down" => FaultKind::Down { service },
        "slow-dependency" | "slow-dep" | "slow_dependency" => FaultKind::SlowDependency { service },
        "retry-storm" | "retry_storm" => {
            let (caller, callee) = edge("retry-storm")?;
            FaultKind::RetryStorm { caller, callee }
        }
        "memory-leak" | "memory_leak" => FaultKind::MemoryLeak { service },
        "pool-exhaustion" | "pool_exhaustion" => FaultKind::PoolExhaustion { service },
        "cpu-throttling" | "cpu_throttling" => FaultKind::CpuThrottling { service },
        "bad-deploy" | "bad_deploy" => FaultKind::BadDeploy { service },
        "slow-deploy" | "slow_deploy" => FaultKind::SlowDeploy { service },
        "noisy-neighbour" | "noisy_neighbour" | "noisy-neighbor" | "noisy_neighbor" => {
            FaultKind::NoisyNeighbour { service }
        }
        "slowdown" | "error-rate" | "error_rate" => {
            let slowdown = kind == "slowdown";
            let example = if slowdown {
                format!("slowdown:{service}:1.4 or slowdown:{service}:3:ROUTE")
            } else {
                format!("error-rate:{service}:1 or error-rate:{service}:20:ROUTE")
            };
            let Some(rest) = second else {
                return Err(bad(format!("expected {example}")));
            };
            let (number, route) = match rest.split_once(':') {
                Some((number, route)) => (number.trim(), Some(route.trim().to_owned())),
                None => (rest, None),
            };
            let route = route.filter(|route| !route.is_empty());
            let value: f64 = number
                .trim_end_matches('%')
                .trim_start_matches('x')
                .parse()
                .map_err(|_| bad(format!("{number:?} is not a number; expected {example}")))?;
            if slowdown {
                if !(value > 0.0 && value <= 100.0) {
                    return Err(bad(format!(
                        "the factor must be above 0 and at most 100; expected {example}"
                    )));
                }
                FaultKind::Slowdown {
                    service: service.clone(),
                    factor_milli: (value * 1000.0).round() as u32,
                    route,
                }
            } else {
                if !(value > 0.0 && value <= 100.0) {
                    return Err(bad(format!(
                        "the percentage must be above 0 and at most 100; expected {example}"
                    )));
                }
                FaultKind::ErrorRate {
                    service: service.clone(),
                    basis_points: (value * 100.0).round() as u32,
                    route,
                }
            }
        }
        other => {
            return Err(bad(format!(
                "unknown fault kind {other:?}; expected one of {FAULT_SPECS}"
            )))
        }
    };
    resolve(model_of(shop), &fault).map_err(bad)?;
    Ok(fault)
}

/// Reads a duration such as `90s`, `30m`, `1h30m`, `500ms`, `2d`, or a plain
/// number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, SimError> {
    let bad = || {
        SimError::Args(format!(
            "invalid duration {text:?}: use e.g. 90s, 30m, 1h30m, 500ms, 2d or a number of seconds"
        ))
    };
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return if seconds.is_finite() && seconds >= 0.0 {
            Ok(Duration::from_secs_f64(seconds))
        } else {
            Err(bad())
        };
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(value * seconds);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A fault with its names resolved to model ids.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resolved {
    Latency(ServiceId, Option<ResolvedScope>),
    Errors(ServiceId, Option<OpId>, Option<ResolvedScope>),
    Down(ServiceId),
    SlowDependency(ServiceId),
    RetryStorm {
        caller: ServiceId,
        callee: ServiceId,
    },
    MemoryLeak(ServiceId),
    PoolExhaustion(ServiceId),
    CpuThrottling(ServiceId),
    BadDeploy(ServiceId),
    /// Extra own time in ms.
    Slow(ServiceId, f64, Option<ResolvedScope>),
    /// The callee hangs; the caller's timeout on the edge is `timeout_ms`.
    Hang {
        caller: ServiceId,
        callee: ServiceId,
        timeout_ms: f64,
    },
    FlagFlip(ServiceId, String),
    Canary(ServiceId),
    SlowDeploy(ServiceId),
    /// Own time x `latency` and `error_rate` more failures, on one
    /// operation or all.
    Degrade {
        service: ServiceId,
        op: Option<OpId>,
        latency: f64,
        error_rate: f64,
    },
    /// The pods of the service on one node are slower; the node is the one
    /// its first pod runs on when the run starts.
    NoisyNeighbour(ServiceId),
}

/// A scope with its names resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResolvedScope {
    /// Index into the model's regions.
    Region(usize),
    /// Index of the pod among the service's pods: `region * replicas +
    /// replica`.
    Pod(usize),
    /// A trace attribute and the index of its value in [`TENANTS`].
    Attribute { key: String, value: usize },
}

/// Checks a fault's names against the model; the error says what exists.
pub(crate) fn resolve(model: &Model, fault: &FaultKind) -> Result<Resolved, String> {
    let service = |name: &str| {
        model.service_id(name).ok_or_else(|| {
            format!(
                "unknown service {name:?}; the simulated services are {}",
                model.service_names()
            )
        })
    };
    let with_dependency = || {
        model
            .services
            .iter()
            .enumerate()
            .filter(|(id, _)| model.has_dependency(*id))
            .map(|(_, service)| service.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let with_pool = || {
        model
            .services
            .iter()
            .filter(|service| service.pool_max.is_some())
            .map(|service| service.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let edge = |caller: &str, callee: &str| -> Result<(ServiceId, ServiceId), String> {
        let (caller_id, callee_id) = (service(caller)?, service(callee)?);
        if !model.calls(caller_id, callee_id) {
            let callees: Vec<&str> = model
                .services
                .iter()
                .enumerate()
                .filter(|(id, _)| model.calls(caller_id, *id))
                .map(|(_, service)| service.name)
                .collect();
            return Err(format!(
                "{caller} does not call {callee}; it calls {}",
                if callees.is_empty() {
                    "no other service".to_owned()
                } else {
                    callees.join(", ")
                }
            ));
        }
        Ok((caller_id, callee_id))
    };
    let scope = |id: ServiceId, scope: &Option<Scope>| -> Result<Option<ResolvedScope>, String> {
        let Some(scope) = scope else {
            return Ok(None);
        };
        Ok(Some(match scope {
            Scope::Region(name) => {
                let index = model
                    .regions
                    .iter()
                    .position(|(region, _)| region == name)
                    .ok_or_else(|| {
                        let names: Vec<&str> =
                            model.regions.iter().map(|(region, _)| *region).collect();
                        format!(
                            "unknown region {name:?}; the regions are {}",
                            names.join(", ")
                        )
                    })?;
                ResolvedScope::Region(index)
            }
            Scope::Pod(index) => {
                let pods = model.services[id].replicas * model.regions.len();
                if *index >= pods {
                    return Err(format!(
                        "{} has {pods} pods: give an index from 0 to {}",
                        model.services[id].name,
                        pods - 1
                    ));
                }
                ResolvedScope::Pod(*index)
            }
            Scope::Attribute { key, value } => {
                if key.starts_with("service.")
                    || key.starts_with("k8s.")
                    || key.starts_with("cloud.")
                    || key.starts_with("feature_flag.")
                {
                    return Err(format!(
                        "{key:?} is not a trace attribute the simulator sets; scope by \
                         cloud.region=REGION, pod=INDEX, or a tenant key such as app.tenant"
                    ));
                }
                let index = TENANTS
                    .iter()
                    .position(|(tenant, _)| tenant == value)
                    .ok_or_else(|| {
                        let names: Vec<&str> = TENANTS.iter().map(|(tenant, _)| *tenant).collect();
                        format!(
                            "unknown {key} value {value:?}; the values are {}",
                            names.join(", ")
                        )
                    })?;
                ResolvedScope::Attribute {
                    key: key.clone(),
                    value: index,
                }
            }
        }))
    };
    let route_of = |id: ServiceId, name: &str, route: &Option<String>| match route {
        None => Ok(None),
        Some(route) => model.op_by_route(id, route).map(Some).ok_or_else(|| {
            let routes: Vec<&str> = model.services[id]
                .ops
                .iter()
                .map(|&op| model.ops[op].route())
                .collect();
            format!(
                "{name} has no route {route:?}; its routes are {}",
                routes.join(", ")
            )
        }),
    };
    Ok(match fault {
        FaultKind::SlowDeploy { service: name } => Resolved::SlowDeploy(service(name)?),
        FaultKind::NoisyNeighbour { service: name } => Resolved::NoisyNeighbour(service(name)?),
        FaultKind::Slowdown {
            service: name,
            factor_milli,
            route,
        } => {
            let id = service(name)?;
            Resolved::Degrade {
                service: id,
                op: route_of(id, name, route)?,
                latency: f64::from(*factor_milli) / 1000.0,
                error_rate: 0.0,
            }
        }
        FaultKind::ErrorRate {
            service: name,
            basis_points,
            route,
        } => {
            let id = service(name)?;
            Resolved::Degrade {
                service: id,
                op: route_of(id, name, route)?,
                latency: 1.0,
                error_rate: f64::from(*basis_points) / 10_000.0,
            }
        }
        FaultKind::Latency {
            service: name,
            scope: within,
        } => {
            let id = service(name)?;
            Resolved::Latency(id, scope(id, within)?)
        }
        FaultKind::Errors {
            service: name,
            route,
            scope: within,
        } => {
            let id = service(name)?;
            let op = match route {
                None => None,
                Some(route) => Some(model.op_by_route(id, route).ok_or_else(|| {
                    let routes: Vec<&str> = model.services[id]
                        .ops
                        .iter()
                        .map(|&op| model.ops[op].route())
                        .collect();
                    format!(
                        "{name} has no route {route:?}; its routes are {}",
                        routes.join(", ")
                    )
                })?),
            };
            Resolved::Errors(id, op, scope(id, within)?)
        }
        FaultKind::Down { service: name } => Resolved::Down(service(name)?),
        FaultKind::SlowDependency { service: name } => {
            let id = service(name)?;
            if !model.has_dependency(id) {
                return Err(format!(
                    "{name} has no database, cache or external API; services with one: {}",
                    with_dependency()
                ));
            }
            Resolved::SlowDependency(id)
        }
        FaultKind::RetryStorm { caller, callee } => {
            let (caller, callee) = edge(caller, callee)?;
            Resolved::RetryStorm { caller, callee }
        }
        FaultKind::MemoryLeak { service: name } => Resolved::MemoryLeak(service(name)?),
        FaultKind::PoolExhaustion { service: name } => {
            let id = service(name)?;
            if !model.has_pool(id) {
                return Err(format!(
                    "{name} has no connection pool; services with one: {}",
                    with_pool()
                ));
            }
            Resolved::PoolExhaustion(id)
        }
        FaultKind::CpuThrottling { service: name } => Resolved::CpuThrottling(service(name)?),
        FaultKind::BadDeploy { service: name } => Resolved::BadDeploy(service(name)?),
        FaultKind::Slow {
            service: name,
            added_ms,
            scope: within,
        } => {
            let id = service(name)?;
            Resolved::Slow(id, *added_ms as f64, scope(id, within)?)
        }
        FaultKind::Timeouts { caller, callee } => {
            let (caller, callee) = edge(caller, callee)?;
            Resolved::Hang {
                caller,
                callee,
                timeout_ms: TIMEOUT_CEILING_MS,
            }
        }
        FaultKind::MissingTimeout { caller, callee } => {
            let (caller, callee) = edge(caller, callee)?;
            Resolved::Hang {
                caller,
                callee,
                timeout_ms: NO_TIMEOUT_MS,
            }
        }
        FaultKind::FlagFlip {
            service: name,
            flag,
        } => {
            let id = service(name)?;
            let valid = !flag.is_empty()
                && flag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(format!(
                    "flag key {flag:?}: use letters, digits, '-', '_' or '.', e.g. new-checkout-flow"
                ));
            }
            Resolved::FlagFlip(id, flag.clone())
        }
        FaultKind::Canary { service: name } => Resolved::Canary(service(name)?),
    })
}

impl Resolved {
    /// The services the fault changes directly.
    pub(crate) fn services(&self) -> [Option<ServiceId>; 2] {
        match *self {
            Resolved::Latency(id, _)
            | Resolved::Errors(id, _, _)
            | Resolved::Down(id)
            | Resolved::SlowDependency(id)
            | Resolved::MemoryLeak(id)
            | Resolved::PoolExhaustion(id)
            | Resolved::CpuThrottling(id)
            | Resolved::BadDeploy(id)
            | Resolved::Slow(id, _, _)
            | Resolved::FlagFlip(id, _)
            | Resolved::Canary(id)
            | Resolved::SlowDeploy(id)
            | Resolved::Degrade { service: id, .. }
            | Resolved::NoisyNeighbour(id) => [Some(id), None],
            Resolved::RetryStorm { caller, callee } | Resolved::Hang { caller, callee, .. } => {
                [Some(caller), Some(callee)]
            }
        }
    }

    /// Whether the fault is bound to pods that exist when the run starts
    /// (a pod scope), so that no deploy may replace them before it ends.
    pub(crate) fn pins_pods(&self) -> bool {
        matches!(
            self,
            Resolved::NoisyNeighbour(_)
                | Resolved::Latency(_, Some(ResolvedScope::Pod(_)))
                | Resolved::Errors(_, _, Some(ResolvedScope::Pod(_)))
                | Resolved::Slow(_, _, Some(ResolvedScope::Pod(_)))
        )
    }
}
