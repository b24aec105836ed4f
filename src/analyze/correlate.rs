//! Which changes may have caused an incident, ranked.
//!
//! [`correlate`] is a pure function of the changes and what root-cause
//! analysis already knows about the incident (its onset, the ranked origin
//! candidates, their dependencies, and the attribute values over-represented
//! among failing spans). It lists the changes on those services from the
//! look-back window before the onset (plus a short grace after it: a
//! deploy's first bad spans can precede the change's recorded time), and
//! scores each in 0..1 from three things, each spelt out in its `reason`:
//!
//! - closeness in time: the score halves every sixth of the look-back
//!   (5 minutes for the default 30);
//! - attribution: whether the failing traffic concentrates on what changed
//!   (the new version, the flag variant, the pod), from the attribute lifts.
//!   A change whose version or variant carries none of it while another
//!   value does is ranked down;
//! - placement: on the top-ranked origin, on another candidate, or on a
//!   service a candidate depends on.
//!
//! A change both posted by a tool and seen in the telemetry is listed once,
//! as the posted one, which usually has a link.

use std::time::Duration;

use crate::model::{relative_to_onset, rfc3339};
use crate::model::{AttributeLift, CorrelatedChange};
use crate::model::{Change, ChangeKind, ChangeSource};

/// Weight of closeness in time in the score.
const TIME_WEIGHT: f64 = 0.45;
/// Weight of attribution (failing traffic on what changed).
const ATTRIBUTION_WEIGHT: f64 = 0.35;
/// Weight of placement (origin, candidate, dependency).
const PLACEMENT_WEIGHT: f64 = 0.20;
/// Attribution when the lifts say nothing either way.
const NEUTRAL_ATTRIBUTION: f64 = 0.25;
/// A value carrying at least this share of the bad spans is where the
/// failures concentrate; the changed value carrying less than
/// [`NONE_SHARE`] of them while another value carries this much means the
/// change does not explain them.
const CONCENTRATED_SHARE: f64 = 0.5;
/// Below this share of the bad spans a value carries none of them, in effect.
const NONE_SHARE: f64 = 0.1;
/// Factor applied to a change the failing traffic contradicts.
const CONTRADICTED_FACTOR: f64 = 0.5;
/// Shortest half-life of the time score, so a short look-back does not make
/// a change two minutes old look unrelated.
const MIN_HALF_LIFE: Duration = Duration::from_secs(60);

/// What correlation needs to know about an incident.
#[derive(Debug, Clone, Default)]
pub struct CorrelationInput {
    /// When the incident began (its first anomalous window), Unix nanoseconds.
    pub onset_unix_nanos: u64,
    /// How far before the onset changes are considered.
    pub lookback: Duration,
    /// How long after the onset a change is still considered (about one
    /// window).
    pub grace: Duration,
    /// Origin candidates with their scores, best first.
    pub candidates: Vec<(String, f64)>,
    /// Services the candidates call (their dependencies).
    pub dependencies: Vec<String>,
    /// Attribute values over-represented among the failing or slow spans,
    /// per service. Keys: `service.version`, `k8s.pod.name`,
    /// `service.instance.id`, `feature_flag.<key>`.
    pub lifts: Vec<(String, AttributeLift)>,
    /// Versions and flag variants found failing where their siblings do
    /// not (the cohort comparison): (service, key, value, summary).
    pub cohorts: Vec<(String, String, String, String)>,
}

/// Where the change sits relative to the origin candidates.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Placement {
    TopOrigin,
    /// Another candidate, with its score relative to the top one.
    Candidate(f64),
    /// A service some candidate depends on.
    Dependency,
}

/// What the failing traffic says about the change.
#[derive(Debug, Clone, PartialEq)]
enum Attribution {
    /// The changed value carries this lift.
    Concentrated(AttributeLift),
    /// The changed value carries little of the failing traffic while this
    /// other value carries much of it.
    Contradicted {
        changed: String,
        share: f64,
        other: AttributeLift,
    },
    /// The changed version or variant fails where its siblings do not
    /// (the cohort comparison's summary): the strongest attribution, since
    /// it compares failure rates, not only where failures land.
    Cohort(String),
    /// Nothing to go on.
    Unknown,
}

/// The changes that may explain an incident, best first.
pub fn correlate(changes: &[Change], input: &CorrelationInput) -> Vec<CorrelatedChange> {
    let onset = input.onset_unix_nanos;
    let from = onset.saturating_sub(nanos(input.lookback));
    let until = onset.saturating_add(nanos(input.grace));
    let half_life = (input.lookback / 6).max(MIN_HALF_LIFE).as_secs_f64();
    let top_score = input
        .candidates
        .first()
        .map(|(_, score)| *score)
        .unwrap_or(0.0);

    let mut ranked: Vec<(CorrelatedChange, f64)> = Vec::new();
    for change in changes {
        if change.time_unix_nanos < from || change.time_unix_nanos > until {
            continue;
        }
        if change.source == ChangeSource::Telemetry && posted_twin(changes, change, from, until) {
            continue;
        }
        let Some(placement) = placement(&change.service, input, top_score) else {
            continue;
        };
        let before = (onset as f64 - change.time_unix_nanos as f64) / 1e9;
        let closeness = if before <= 0.0 {
            1.0
        } else {
            0.5f64.powf(before / half_life)
        };
        let attribution = attribution(change, input);
        let attribution_score = match &attribution {
            Attribution::Cohort(_) => 1.0,
            Attribution::Concentrated(lift) => lift.bad_share.clamp(0.0, 1.0),
            Attribution::Contradicted { .. } => 0.0,
            Attribution::Unknown => NEUTRAL_ATTRIBUTION,
        };
        let placement_score = match placement {
            Placement::TopOrigin => 1.0,
            // Another candidate is between a dependency and the top origin,
            // by how close its own score comes to the top one's.
            Placement::Candidate(relative) => 0.4 + 0.5 * relative.clamp(0.0, 1.0),
            Placement::Dependency => 0.3,
        };
        let mut score = TIME_WEIGHT * closeness
            + ATTRIBUTION_WEIGHT * attribution_score
            + PLACEMENT_WEIGHT * placement_score;
        if matches!(attribution, Attribution::Contradicted { .. }) {
            score *= CONTRADICTED_FACTOR;
        }
        let score = score.clamp(0.0, 1.0);
        let reason = [
            format!("{} {}", what(change), relative_to_onset(before)),
            explain_attribution(change, &attribution),
            explain_placement(&change.service, placement, input),
        ]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
        ranked.push((
            CorrelatedChange {
                id: change.id,
                service: change.service.clone(),
                kind: change.kind.as_str().to_owned(),
                subject: change.version.clone().or_else(|| change.key.clone()),
                external_id: change.external_id.clone(),
                description: change.description.clone(),
                time_unix_nanos: change.time_unix_nanos,
                time: rfc3339(change.time_unix_nanos),
                before_onset_secs: before,
                score,
                reason,
            },
            closeness,
        ));
    }
    ranked.sort_by(|(a, a_close), (b, b_close)| {
        b.score
            .total_cmp(&a.score)
            .then(b_close.total_cmp(a_close))
            .then(a.id.cmp(&b.id))
    });
    ranked.into_iter().map(|(change, _)| change).collect()
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Whether a tool posted the same change (service, kind, version, key and
/// value) within the window: then the telemetry's sighting adds nothing.
fn posted_twin(changes: &[Change], seen: &Change, from: u64, until: u64) -> bool {
    changes.iter().any(|other| {
        other.source == ChangeSource::Api
            && (from..=until).contains(&other.time_unix_nanos)
            && other.service == seen.service
            && other.kind == seen.kind
            && other.version == seen.version
            && other.key == seen.key
            && (other.value == seen.value || other.value.is_none())
    })
}

fn placement(service: &str, input: &CorrelationInput, top_score: f64) -> Option<Placement> {
    if let Some(index) = input
        .candidates
        .iter()
        .position(|(candidate, _)| candidate == service)
    {
        if index == 0 {
            return Some(Placement::TopOrigin);
        }
        let relative = if top_score > 0.0 {
            input.candidates[index].1 / top_score
        } else {
            0.0
        };
        return Some(Placement::Candidate(relative));
    }
    input
        .dependencies
        .iter()
        .any(|dependency| dependency == service)
        .then_some(Placement::Dependency)
}

/// The attribute key and value that would carry the failing traffic if the
/// change caused it.
fn changed_attribute(change: &Change) -> Option<(String, &str)> {
    match change.kind {
        ChangeKind::Deploy => change
            .version
            .as_deref()
            .map(|version| ("service.version".to_owned(), version)),
        ChangeKind::FeatureFlag => {
            let key = change.key.as_deref()?;
            let value = change.value.as_deref()?;
            Some((format!("feature_flag.{key}"), value))
        }
        // Kubernetes events name their object as `Pod/<name>`.
        ChangeKind::Infra | ChangeKind::Scale => change
            .value
            .as_deref()
            .and_then(|object| object.strip_prefix("Pod/"))
            .map(|pod| ("k8s.pod.name".to_owned(), pod)),
        ChangeKind::Config => None,
    }
}

fn attribution(change: &Change, input: &CorrelationInput) -> Attribution {
    let Some((key, value)) = changed_attribute(change) else {
        return Attribution::Unknown;
    };
    if let Some((.., summary)) = input
        .cohorts
        .iter()
        .find(|(service, k, v, _)| *service == change.service && *k == key && v.as_str() == value)
    {
        return Attribution::Cohort(summary.clone());
    }
    let lifts = &input.lifts;
    let same_key = || {
        lifts
            .iter()
            .filter(|(service, lift)| *service == change.service && lift.key == key)
            .map(|(_, lift)| lift)
    };
    let changed = same_key().find(|lift| lift.value == value);
    if let Some(lift) = changed {
        if lift.bad_share >= NONE_SHARE {
            return Attribution::Concentrated(lift.clone());
        }
    }
    let other = same_key()
        .filter(|lift| lift.value != value && lift.bad_share >= CONCENTRATED_SHARE)
        .max_by(|a, b| a.bad_share.total_cmp(&b.bad_share));
    match other {
        Some(other) => Attribution::Contradicted {
            changed: value.to_owned(),
            share: changed.map_or(0.0, |lift| lift.bad_share),
            other: other.clone(),
        },
        None => Attribution::Unknown,
    }
}

/// "deploy of payment v2", "flag new-checkout = on on cart", ...
fn what(change: &Change) -> String {
    let service = &change.service;
    match change.kind {
        ChangeKind::Deploy => match &change.version {
            Some(version) => format!("deploy of {service} {version}"),
            None => format!("rollout of {service}"),
        },
        ChangeKind::FeatureFlag => match (&change.key, &change.value) {
            (Some(key), Some(value)) => format!("flag {key} = {value} on {service}"),
            (Some(key), None) => format!("flag {key} changed on {service}"),
            _ => format!("flag change on {service}"),
        },
        ChangeKind::Config => match (&change.key, &change.value) {
            (Some(key), Some(value)) => format!("config {key} = {value} on {service}"),
            (Some(key), None) => format!("config {key} changed on {service}"),
            _ => format!("config change on {service}"),
        },
        ChangeKind::Scale => format!("scaling of {service}"),
        ChangeKind::Infra => match &change.key {
            Some(reason) => format!("{reason} on {service}"),
            None => format!("infrastructure event on {service}"),
        },
    }
}

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

fn explain_attribution(change: &Change, attribution: &Attribution) -> String {
    let verb = match change.kind {
        ChangeKind::FeatureFlag => "evaluated",
        ChangeKind::Deploy => "run",
        _ => "are on",
    };
    match attribution {
        Attribution::Concentrated(lift) => format!(
            "{} of failing spans {verb} {} (lift {:.1})",
            percent(lift.bad_share),
            lift.value,
            lift.lift
        ),
        Attribution::Contradicted {
            changed,
            share,
            other,
        } => {
            let carried = if *share > 0.0 {
                format!("only {} of failing spans {verb} {changed}", percent(*share))
            } else {
                format!("no failing spans {verb} {changed}")
            };
            format!(
                "{carried}, {} {verb} {} instead, so this change is unlikely the cause",
                percent(other.bad_share),
                other.value
            )
        }
        Attribution::Cohort(summary) => summary.clone(),
        Attribution::Unknown => String::new(),
    }
}

fn explain_placement(service: &str, placement: Placement, input: &CorrelationInput) -> String {
    match placement {
        Placement::TopOrigin => "on the top-ranked origin".to_owned(),
        Placement::Candidate(_) => format!("on {service}, an origin candidate"),
        Placement::Dependency => match input.candidates.first() {
            Some((origin, _)) => format!("on {service}, a dependency of {origin}"),
            None => format!("on {service}, a dependency"),
        },
    }
}

#[cfg(test)]
mod tests;
