//! The `changes:` section: settings of change tracking ([`ChangesConfig`],
//! [`ApiToken`]), the keys and rules that validate them, and their part of
//! the example config.
//!
//! A token file is read while validating, so a missing or empty one is
//! reported before anything starts.

use std::num::NonZeroUsize;
use std::time::Duration;

use super::RARE_SHARE;
use crate::store::changes::DEFAULT_CAPACITY;
use crate::validate::{at_least, at_most, count, duration, flag, positive, real, text};
use crate::validate::{Bound, Checker, Section};

/// Validated settings of change tracking.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangesConfig {
    /// How far before an incident's onset changes are correlated with it.
    pub lookback: Duration,
    /// Changes kept in memory; the oldest is dropped first.
    pub capacity: NonZeroUsize,
    /// Bearer token `POST /api/v1/changes` requires; `None` accepts any
    /// caller that can reach the admin port.
    pub api_token: Option<ApiToken>,
    /// Whether changes are inferred from the telemetry (versions, instances,
    /// flag variants, Kubernetes events).
    pub detect_from_telemetry: bool,
    /// A rollout or scaling is reported once no instance has come or gone
    /// for this long, as one change.
    pub rollout_debounce: Duration,
    /// An instance that sends nothing for this long has gone; also the
    /// start-up period whose versions and instances are the baseline.
    pub instance_timeout: Duration,
    /// Length of the periods whose flag-variant shares are compared; a key's
    /// first period is its baseline.
    pub flag_window: Duration,
    /// A variant that served under 5% of a key's evaluations in one period
    /// and serves at least this share in the next is a flag change.
    pub flag_shift: f64,
}

impl Default for ChangesConfig {
    fn default() -> Self {
        ChangesConfig {
            lookback: Duration::from_secs(30 * 60),
            capacity: NonZeroUsize::new(DEFAULT_CAPACITY).expect("non-zero"),
            api_token: None,
            detect_from_telemetry: true,
            rollout_debounce: Duration::from_secs(2 * 60),
            instance_timeout: Duration::from_secs(60),
            flag_window: Duration::from_secs(5 * 60),
            flag_shift: 0.2,
        }
    }
}

/// A bearer token, kept out of `Debug` output so settings can be logged:
/// the same type as every listener's tokens.
pub use crate::security::Secret as ApiToken;

// === the `changes:` section of the config file ===

/// Keys of `changes`.
pub(crate) const CHANGES_KEYS: &[&str] = &[
    "lookback",
    "capacity",
    "api_token",
    "api_token_file",
    "detect_from_telemetry",
    "rollout_debounce",
    "instance_timeout",
    "flag_window",
    "flag_shift",
];
/// Longest change look-back: an incident is rarely caused by a change a
/// day old, and listing a day of changes on it would bury the likely ones.
const MAX_CHANGES_LOOKBACK: Duration = Duration::from_secs(24 * 3600);
/// Most changes kept in memory (about a kilobyte each).
const MAX_CHANGES_CAPACITY: usize = 1_000_000;
/// Shortest instance timeout and flag window: SDKs export every few
/// seconds, so shorter ones would see changes in every pause.
const MIN_CHANGES_PERIOD: Duration = Duration::from_secs(1);

/// The `changes:` part of the example config (`triage example-config`),
/// with the comment above it.
pub(crate) const EXAMPLE: &str = r#"# Change events (deploys, config changes, feature flags, scaling and
# infrastructure events), posted by tools to POST /api/v1/changes on the
# admin port or seen in the telemetry, and correlated with incidents.
# See docs/CHANGES.md.
changes:
  # How far before an incident's onset changes are considered (at most 1d).
  lookback: 30m
  # Changes kept in memory; the oldest are dropped first.
  capacity: 10000
  # Require `Authorization: Bearer <token>` on POST /api/v1/changes. Give the
  # token or a file holding it, not both. Without one, anything that can
  # reach the admin port may post changes.
  # api_token: "change-me"
  # api_token_file: /etc/triage/changes-token
  # Infer changes from the telemetry: a new service.version, instances
  # (k8s.pod.name, else service.instance.id) turning over, feature-flag
  # variants on spans, Kubernetes events received as logs.
  detect_from_telemetry: true
  # A rollout or scaling is reported as one change once no instance has come
  # or gone for this long.
  rollout_debounce: 2m
  # An instance that sends nothing for this long has gone (at least 1s).
  # Versions and instances seen within this time of a service's first span
  # were already there: they are its baseline, not changes.
  instance_timeout: 1m
  # Flag-variant shares are compared between consecutive periods this long
  # (at least 1s); variants seen in a flag's first period are its baseline.
  flag_window: 5m
  # A variant under 5% of a flag's evaluations in one period that reaches at
  # least this share (above 0.05, at most 1) in the next is a flag change.
  flag_shift: 0.2
"#;

/// Reads the `changes` section into `changes`. A token file is read
/// here, so a missing or empty one is reported before anything starts.
pub(crate) fn check(checker: &mut Checker, top: &Section<'_>, changes: &mut ChangesConfig) {
    let section = checker.section(top, "changes", CHANGES_KEYS);
    checker.field(&section, "lookback", &mut changes.lookback, |value| {
        at_most(positive(duration(value)?)?, MAX_CHANGES_LOOKBACK)
    });
    checker.field(&section, "capacity", &mut changes.capacity, |value| {
        count(value, 1, MAX_CHANGES_CAPACITY)
    });
    checker.field(
        &section,
        "detect_from_telemetry",
        &mut changes.detect_from_telemetry,
        flag,
    );
    checker.field(
        &section,
        "rollout_debounce",
        &mut changes.rollout_debounce,
        |value| positive(duration(value)?),
    );
    checker.field(
        &section,
        "instance_timeout",
        &mut changes.instance_timeout,
        |value| at_least(duration(value)?, MIN_CHANGES_PERIOD),
    );
    checker.field(&section, "flag_window", &mut changes.flag_window, |value| {
        at_least(duration(value)?, MIN_CHANGES_PERIOD)
    });
    checker.field(&section, "flag_shift", &mut changes.flag_shift, |value| {
        real(value, Bound::Open(RARE_SHARE), Bound::Closed(1.0))
    });
    let mut inline = None;
    checker.field(&section, "api_token", &mut inline, |value| {
        let token = text(value, "a token string")?;
        // It travels in an HTTP header, so it must be visible ASCII.
        if !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err("must be printable ASCII without spaces".to_owned());
        }
        ApiToken::new(token).map(Some).ok_or_else(|| {
            "must not be empty; remove the key to accept changes without a token".to_owned()
        })
    });
    let mut from_file = None;
    checker.field(&section, "api_token_file", &mut from_file, |value| {
        let path = text(value, "a file path")?;
        let contents = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {path}: {error}"))?;
        ApiToken::new(&contents)
            .map(Some)
            .ok_or_else(|| format!("{path} holds no token"))
    });
    changes.api_token = match (inline, from_file) {
        (Some(_), Some(_)) => {
            checker.report(
                section.key_path("api_token_file"),
                "give changes.api_token or api_token_file, not both",
            );
            None
        }
        (inline, from_file) => inline.or(from_file),
    };
}
