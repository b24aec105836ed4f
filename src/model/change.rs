//! Change events: deploys, config changes, feature-flag flips, rollouts,
//! scaling, posted by tools or inferred from the telemetry
//! (docs/CHANGES.md).

use serde::{Deserialize, Serialize};

use super::rfc3339;

/// What kind of change happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A new version or a rollout of a service.
    Deploy,
    /// A configuration value changed.
    Config,
    /// A feature flag serves a new variant, or its variant shares shifted.
    FeatureFlag,
    /// Instances were added or removed without a new version.
    Scale,
    /// Something underneath the service: OOM kills, restarts, failing probes.
    Infra,
}

impl ChangeKind {
    /// Every kind, in the order the API documents them.
    pub const ALL: [ChangeKind; 5] = [
        ChangeKind::Deploy,
        ChangeKind::Config,
        ChangeKind::FeatureFlag,
        ChangeKind::Scale,
        ChangeKind::Infra,
    ];

    /// The name used in JSON, query parameters and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Deploy => "deploy",
            ChangeKind::Config => "config",
            ChangeKind::FeatureFlag => "feature_flag",
            ChangeKind::Scale => "scale",
            ChangeKind::Infra => "infra",
        }
    }

    /// The kind named `text` (as [`ChangeKind::as_str`] writes it).
    pub fn parse(text: &str) -> Option<ChangeKind> {
        ChangeKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// Where a change was learnt from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeSource {
    /// Posted by a tool (HTTP or gRPC API).
    Api,
    /// Inferred from telemetry (new version, pod turnover, flag variants,
    /// Kubernetes events in logs).
    Telemetry,
}

impl ChangeSource {
    /// The name used in JSON and self-metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeSource::Api => "api",
            ChangeSource::Telemetry => "telemetry",
        }
    }
}

/// One change event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Assigned on record; 0 before.
    #[serde(default)]
    pub id: u64,
    /// The service that changed.
    pub service: String,
    /// What kind of change it is.
    pub kind: ChangeKind,
    /// The new version (deploy) when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The flag or config key when the change is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The flag variant or config value after the change, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// One line for people.
    #[serde(default)]
    pub description: String,
    /// When the change happened, Unix nanoseconds.
    pub time_unix_nanos: u64,
    /// Where to read more (a pipeline run, a pull request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The change's own id where it came from (a deploy id, a pipeline
    /// run, a change ticket), kept as given so that incidents name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Who told us.
    pub source: ChangeSource,
}

impl Change {
    /// The change's time in RFC 3339.
    pub fn time(&self) -> String {
        rfc3339(self.time_unix_nanos)
    }
}

/// Which changes to list.
#[derive(Debug, Clone, Default)]
pub struct ChangeFilter {
    /// Only this service's changes.
    pub service: Option<String>,
    /// Only changes of this kind.
    pub kind: Option<ChangeKind>,
    /// Inclusive lower bound, Unix nanoseconds.
    pub since_unix_nanos: Option<u64>,
    /// Exclusive upper bound, Unix nanoseconds.
    pub until_unix_nanos: Option<u64>,
}

impl ChangeFilter {
    pub fn matches(&self, change: &Change) -> bool {
        self.service
            .as_deref()
            .is_none_or(|service| service == change.service)
            && self.kind.is_none_or(|kind| kind == change.kind)
            && self
                .since_unix_nanos
                .is_none_or(|since| change.time_unix_nanos >= since)
            && self
                .until_unix_nanos
                .is_none_or(|until| change.time_unix_nanos < until)
    }
}
