//! Ground truth: what each injected fault is, where it starts, who inherits
//! it and what it should be recognised as, so that a root-cause evaluation
//! can score an analysis against it.
//!
//! The truth is worked out from the model and the scenario's plan when the
//! simulator is built, never from the generated telemetry, so it cannot
//! agree with a flaw in the data by construction. Tests in `tests/rca.rs`
//! check that the telemetry shows each fault the way its truth says.

use serde::{Deserialize, Serialize};

use crate::model::Change;
use crate::model::PatternKind;
use crate::tools::sim::fault::Resolved;
use crate::tools::sim::model::{Model, OpId, Target};

/// What one injected fault is, for scoring a root-cause analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    /// The fault in its spec form (`errors:inventory@cloud.region=eu-west-1`).
    pub fault: String,
    /// When the fault takes effect (the start of the simulated second).
    pub start_unix_nanos: u64,
    /// When it ends, if it does before the run ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_unix_nanos: Option<u64>,
    /// The service where it starts: the one whose own time or own errors
    /// change. For a retry storm and for timeouts, the callee.
    pub origin: String,
    /// The origin's operation (SERVER span name) when only one is faulty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// The dependency edge the fault acts on: caller -> callee for retry
    /// storms and timeouts, service -> database for pool exhaustion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<TruthEdge>,
    /// The origin first, then every service whose spans can show the
    /// symptom (transitive callers of the faulty operations), nearest
    /// first. Errors do not climb through optional calls (the caller
    /// degrades gracefully); latency does.
    pub affected: Vec<String>,
    /// The change that causes the fault (a bad deploy, a flag flip), as the
    /// CI/CD tool posts it; it is also in the run's list of changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// The attribute value the fault is confined to, if any:
    /// `cloud.region`, `k8s.pod.name`, `service.version`, a tenant key such
    /// as `app.tenant`, or `feature_flag.<key>` (the variant, carried on the
    /// `feature_flag.evaluation` span events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ScopeAttribute>,
    /// The production pattern an analysis should name, if one fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<PatternKind>,
}

/// A dependency edge, named as the collector names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthEdge {
    pub caller: String,
    /// A service name, or the `server.address` of a database.
    pub callee: String,
}

/// An attribute key and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeAttribute {
    pub key: String,
    pub value: String,
}

/// Everything an evaluation needs to know about a run besides its
/// telemetry: the faults' ground truth and the change events a CI/CD tool
/// and a flag service would post (harmful and harmless alike).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScenarioTruth {
    pub ground_truth: Vec<GroundTruth>,
    /// In time order, `source: api`, ids 0 (assigned when recorded).
    pub changes: Vec<Change>,
}

/// The pattern a fault should be recognised as.
pub(crate) fn pattern(fault: &Resolved) -> Option<PatternKind> {
    use crate::tools::sim::fault::ResolvedScope;
    match fault {
        Resolved::RetryStorm { .. } => Some(PatternKind::RetryStorm),
        Resolved::Hang { timeout_ms, .. } => {
            if *timeout_ms >= super::fault::NO_TIMEOUT_MS {
                Some(PatternKind::MissingTimeout)
            } else {
                Some(PatternKind::TimeoutsFiring)
            }
        }
        Resolved::PoolExhaustion(_) => Some(PatternKind::PoolWait),
        Resolved::CpuThrottling(_) => Some(PatternKind::ResourceContention),
        Resolved::MemoryLeak(_) => Some(PatternKind::MemoryLeak),
        Resolved::Errors(_, _, Some(ResolvedScope::Attribute { .. })) => {
            Some(PatternKind::DataIssue)
        }
        Resolved::BadDeploy(_) | Resolved::Canary(_) | Resolved::SlowDeploy(_) => {
            Some(PatternKind::BadDeploy)
        }
        Resolved::FlagFlip(..) => Some(PatternKind::FlagFlip),
        Resolved::Down(_) => Some(PatternKind::DependencyDown),
        Resolved::Latency(..)
        | Resolved::Errors(..)
        | Resolved::SlowDependency(_)
        | Resolved::Slow(..)
        | Resolved::Degrade { .. }
        | Resolved::NoisyNeighbour(_) => None,
    }
}

/// The origin, then the services whose spans can show the fault, nearest
/// first (by call depth from the origin, then by name).
pub(crate) fn affected(model: &Model, fault: &Resolved) -> Vec<String> {
    let ops_of = |service: usize| model.services[service].ops.clone();
    let calls_db = |op: OpId, pooled_only: bool| {
        model.ops[op]
            .steps
            .iter()
            .flatten()
            .any(|call| match call.target {
                Target::Db(db_op) => {
                    !pooled_only
                        || model.dbs[model.db_ops[db_op].db].system
                            == super::model::DbSystem::Postgresql
                }
                _ => false,
            })
    };
    // The faulty operations, and whether the symptom includes latency
    // (which also shows through optional calls).
    let (origin, faulty, latency): (usize, Vec<OpId>, bool) = match fault {
        Resolved::Latency(service, _)
        | Resolved::Slow(service, _, _)
        | Resolved::CpuThrottling(service)
        | Resolved::BadDeploy(service)
        | Resolved::Canary(service)
        | Resolved::SlowDeploy(service)
        | Resolved::NoisyNeighbour(service)
        | Resolved::Down(service) => (*service, ops_of(*service), true),
        Resolved::Degrade {
            service,
            op,
            latency,
            ..
        } => (
            *service,
            op.map_or_else(|| ops_of(*service), |op| vec![op]),
            *latency > 1.0,
        ),
        Resolved::Hang { callee, .. } => (*callee, ops_of(*callee), true),
        Resolved::Errors(service, Some(op), _) => (*service, vec![*op], false),
        Resolved::Errors(service, None, _) | Resolved::FlagFlip(service, _) => {
            (*service, ops_of(*service), false)
        }
        // Until the pod is OOM-killed, a leak shows in metrics only.
        Resolved::MemoryLeak(service) => (*service, Vec::new(), false),
        Resolved::SlowDependency(service) => (
            *service,
            ops_of(*service)
                .into_iter()
                .filter(|&op| calls_db(op, false))
                .collect(),
            true,
        ),
        Resolved::PoolExhaustion(service) => (
            *service,
            ops_of(*service)
                .into_iter()
                .filter(|&op| calls_db(op, true))
                .collect(),
            true,
        ),
        Resolved::RetryStorm { callee, .. } => (*callee, ops_of(*callee), true),
    };

    // Breadth-first up the call graph: an operation is affected when it
    // calls an affected one (and, for errors, needs the call). Messages
    // through the queue do not carry symptoms back to the producer.
    let mut depth: Vec<Option<usize>> = vec![None; model.ops.len()];
    for &op in &faulty {
        depth[op] = Some(0);
    }
    let mut frontier = faulty;
    let mut level = 0;
    while !frontier.is_empty() {
        level += 1;
        let mut next = Vec::new();
        for (op, def) in model.ops.iter().enumerate() {
            if depth[op].is_some() {
                continue;
            }
            let inherits = def.steps.iter().flatten().any(|call| match call.target {
                Target::Op(target) => frontier.contains(&target) && (latency || !call.optional),
                _ => false,
            });
            if inherits {
                depth[op] = Some(level);
                next.push(op);
            }
        }
        frontier = next;
    }

    let mut services: Vec<(usize, &str)> = Vec::new();
    for (op, level) in depth.iter().enumerate() {
        let Some(level) = *level else { continue };
        let service = model.ops[op].service;
        if service == origin {
            continue;
        }
        let name = model.services[service].name;
        match services.iter_mut().find(|(_, known)| *known == name) {
            Some(entry) => entry.0 = entry.0.min(level),
            None => services.push((level, name)),
        }
    }
    services.sort();
    std::iter::once(model.services[origin].name.to_owned())
        .chain(services.into_iter().map(|(_, name)| name.to_owned()))
        .collect()
}
