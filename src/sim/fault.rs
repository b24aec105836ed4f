//! Injectable faults: what they are ([`FaultKind`], [`Fault`]), how they are
//! written on the command line ([`parse_fault`], [`parse_duration`]), and the
//! numbers that say how strongly each one bites (the constants below).
//!
//! A fault names services by their `service.name`; `resolve` checks those
//! names against the model once, so the engine only handles ids that exist.

use std::fmt;
use std::time::Duration;

use super::model::{model, Model, OpId, ServiceId};
use super::SimError;

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

/// What goes wrong. Services are named by `service.name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The service's own time is multiplied by [`LATENCY_FACTOR`]; callers
    /// inherit it.
    Latency { service: String },
    /// The service (or one route/method of it) fails [`ERROR_RATE`] of its
    /// requests; callers propagate the failures.
    Errors {
        service: String,
        route: Option<String>,
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
        }
    }

    /// The service where the fault shows first: the faulty service itself,
    /// or for a retry storm the callee whose traffic it multiplies.
    pub fn service(&self) -> &str {
        match self {
            FaultKind::Latency { service }
            | FaultKind::Errors { service, .. }
            | FaultKind::Down { service }
            | FaultKind::SlowDependency { service }
            | FaultKind::MemoryLeak { service }
            | FaultKind::PoolExhaustion { service }
            | FaultKind::CpuThrottling { service }
            | FaultKind::BadDeploy { service } => service,
            FaultKind::RetryStorm { callee, .. } => callee,
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
            } => write!(f, "errors:{service}:{route}"),
            FaultKind::RetryStorm { caller, callee } => {
                write!(f, "retry-storm:{caller}:{callee}")
            }
            other => write!(f, "{}:{}", other.name(), other.service()),
        }
    }
}

/// Fault specs accepted by [`parse_fault`], for help and error messages.
pub const FAULT_SPECS: &str = "latency:SERVICE, errors:SERVICE[:ROUTE], down:SERVICE, \
     slow-dependency:SERVICE, retry-storm:CALLER:CALLEE, memory-leak:SERVICE, \
     pool-exhaustion:SERVICE, cpu-throttling:SERVICE, bad-deploy:SERVICE";

/// Reads a fault spec such as `latency:payment`,
/// `errors:checkout:/api/checkout`, `down:inventory`,
/// `retry-storm:checkout:payment` or `bad-deploy:payment`, and checks it
/// against the simulated topology.
pub fn parse_fault(spec: &str) -> Result<FaultKind, SimError> {
    let bad = |reason: String| SimError::Fault {
        spec: spec.to_owned(),
        reason,
    };
    let mut parts = spec.trim().splitn(3, ':');
    let kind = parts.next().unwrap_or_default().to_ascii_lowercase();
    let first = parts.next().map(str::trim).filter(|part| !part.is_empty());
    let second = parts.next().map(str::trim).filter(|part| !part.is_empty());
    let Some(service) = first.map(str::to_owned) else {
        return Err(bad(format!("expected KIND:SERVICE, one of {FAULT_SPECS}")));
    };
    let takes_two = matches!(kind.as_str(), "errors" | "retry-storm" | "retry_storm");
    if second.is_some() && !takes_two {
        return Err(bad(format!(
            "{kind} takes one service; expected one of {FAULT_SPECS}"
        )));
    }
    let fault = match kind.as_str() {
        "latency" => FaultKind::Latency { service },
        "errors" => FaultKind::Errors {
            service,
            route: second.map(str::to_owned),
        },
        "down" => FaultKind::Down { service },
        "slow-dependency" | "slow-dep" | "slow_dependency" => FaultKind::SlowDependency { service },
        "retry-storm" | "retry_storm" => {
            let Some(callee) = second else {
                return Err(bad("expected retry-storm:CALLER:CALLEE".to_owned()));
            };
            FaultKind::RetryStorm {
                caller: service,
                callee: callee.to_owned(),
            }
        }
        "memory-leak" | "memory_leak" => FaultKind::MemoryLeak { service },
        "pool-exhaustion" | "pool_exhaustion" => FaultKind::PoolExhaustion { service },
        "cpu-throttling" | "cpu_throttling" => FaultKind::CpuThrottling { service },
        "bad-deploy" | "bad_deploy" => FaultKind::BadDeploy { service },
        other => {
            return Err(bad(format!(
                "unknown fault kind {other:?}; expected one of {FAULT_SPECS}"
            )))
        }
    };
    resolve(model(), &fault).map_err(bad)?;
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
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Resolved {
    Latency(ServiceId),
    Errors(ServiceId, Option<OpId>),
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
    Ok(match fault {
        FaultKind::Latency { service: name } => Resolved::Latency(service(name)?),
        FaultKind::Errors {
            service: name,
            route,
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
            Resolved::Errors(id, op)
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
            Resolved::RetryStorm {
                caller: caller_id,
                callee: callee_id,
            }
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
    })
}

impl Resolved {
    /// The services the fault changes directly.
    pub(crate) fn services(&self) -> [Option<ServiceId>; 2] {
        match *self {
            Resolved::Latency(id)
            | Resolved::Errors(id, _)
            | Resolved::Down(id)
            | Resolved::SlowDependency(id)
            | Resolved::MemoryLeak(id)
            | Resolved::PoolExhaustion(id)
            | Resolved::CpuThrottling(id)
            | Resolved::BadDeploy(id) => [Some(id), None],
            Resolved::RetryStorm { caller, callee } => [Some(caller), Some(callee)],
        }
    }
}
