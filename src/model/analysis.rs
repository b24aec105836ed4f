//! What root-cause analysis adds to an incident: the ranked origins, the
//! named production pattern, the correlated changes, the blast radius and
//! the hypotheses. Plain data, serializable both ways so that storage, the
//! query API and alerts carry the same structure.

use serde::{Deserialize, Serialize};

/// One candidate origin of an incident, with its score and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootCause {
    pub service: String,
    /// Operation (`GET /cart`) or edge (`-> payment`) when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Higher ranks first; comparable only within one incident.
    pub score: f64,
    /// Why, for people: "own time p95 x6.1 while callees flat; 412 local errors".
    pub reason: String,
}

/// A recognised production pattern (retry storm, missing timeout, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternKind {
    RetryStorm,
    TimeoutsFiring,
    MissingTimeout,
    PoolWait,
    ResourceContention,
    MemoryLeak,
    DataIssue,
    BadDeploy,
    FlagFlip,
    DependencyDown,
}

impl PatternKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PatternKind::RetryStorm => "retry_storm",
            PatternKind::TimeoutsFiring => "timeouts_firing",
            PatternKind::MissingTimeout => "missing_timeout",
            PatternKind::PoolWait => "pool_wait",
            PatternKind::ResourceContention => "resource_contention",
            PatternKind::MemoryLeak => "memory_leak",
            PatternKind::DataIssue => "data_issue",
            PatternKind::BadDeploy => "bad_deploy",
            PatternKind::FlagFlip => "flag_flip",
            PatternKind::DependencyDown => "dependency_down",
        }
    }
}

/// A pattern found on a subject (service or edge), with the numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pattern {
    pub kind: PatternKind,
    /// `payment` or `checkout -> payment`.
    pub subject: String,
    pub detail: String,
}

/// One piece of evidence: a sentence with its numbers, and trace ids that
/// show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trace_ids: Vec<String>,
}

/// What a hypothesis is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HypothesisKind {
    /// A change (deploy, config, flag, scale, infra) caused it.
    Change,
    /// The origin service itself is slow or failing (no change explains it).
    Origin,
    /// A named production pattern (retry storm, pool wait, ...).
    Pattern,
    /// Failures concentrate on one attribute value (region, pod, tenant).
    Scope,
    /// A resource runs out (memory, CPU, connection pool).
    Saturation,
}

/// A ranked explanation with evidence and the smallest change to try.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hypothesis {
    pub kind: HypothesisKind,
    /// What it is about: a service, an edge, a change id, `region=eu-west-1`.
    pub subject: String,
    /// 0..1; hypotheses of one incident are sorted by it.
    pub score: f64,
    /// One sentence for people.
    pub summary: String,
    pub evidence_for: Vec<Evidence>,
    pub evidence_against: Vec<Evidence>,
    /// The smallest effective change to try, in words.
    pub suggested_action: String,
}

/// A change event listed on an incident, with its rank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrelatedChange {
    pub id: u64,
    pub service: String,
    /// deploy | config | feature_flag | scale | infra
    pub kind: String,
    /// Version, flag key or config key the change is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The change's own id where it came from (a deploy id, a pipeline
    /// run), as posted or announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub description: String,
    pub time_unix_nanos: u64,
    pub time: String,
    /// Seconds from the change to the incident's onset.
    pub before_onset_secs: f64,
    pub score: f64,
    pub reason: String,
}

/// An attribute value over-represented among failing or slow spans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeLift {
    pub key: String,
    pub value: String,
    /// Share of the incident's bad spans that carry this value.
    pub bad_share: f64,
    /// Share of the baseline's spans that carry it.
    pub baseline_share: f64,
    /// bad_share / baseline_share.
    pub lift: f64,
    pub bad_spans: u64,
}

/// Who is hurt and how much.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlastRadius {
    /// Requests (all services' server spans) in the incident's windows.
    pub total_requests: u64,
    /// Of those, failing or slow on an affected service.
    pub affected_requests: u64,
    pub affected_share: f64,
    /// Affected services, origin first, then callers up to entry points.
    pub services: Vec<String>,
    /// Affected operations, as `service operation`.
    pub operations: Vec<String>,
    /// Entry-point services (no traced callers) that are affected.
    pub entry_points: Vec<String>,
    /// Attribute values over-represented among bad spans, highest lift first.
    pub attributes: Vec<AttributeLift>,
}
