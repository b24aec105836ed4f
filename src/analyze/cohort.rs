//! Cohort comparison: a version or a feature-flag variant that fails where
//! its siblings do not.
//!
//! A canary on one pod of six, or a flag served to half the requests, can
//! leave a service's totals inside their normal range while every request
//! it touches suffers. The per-series detectors judge totals; this watch
//! compares the cohorts of a service's entry spans *with each other, in the
//! same windows*: each value of `service.version` against the other
//! versions, and each variant of a flag against the flag's other variants.
//! Comparing in the same windows needs no baseline (the other cohort is the
//! control group, as in canary analysis), so a deploy that changes nothing
//! never differs from its predecessor, and a low-traffic service can be
//! judged over a longer range.
//!
//! A cohort is anomalous when its share of bad spans (failed, or slower
//! than twice its operation's recent p95, as the drill-down counts them)
//! over the last `windows` windows is higher than the rest's by at least
//! `min_increase`, at least twice as high, and the two-proportion z-score
//! reaches `min_z`, with `min_spans` spans on each side and `min_bad` bad
//! spans in the cohort. It opens an incident after `open_after` consecutive
//! evaluations (one per closed window) and resolves after `resolve_after`
//! evaluations without, as the per-series detectors do; while open it holds
//! on half the evidence (half the bad spans and the rise, a z-score one
//! lower). Once the other values have left the store's ring, an open
//! cohort is compared with them as last measured.
//!
//! Like the rest of the analysis it reads the store and the span analysis
//! and never a clock: replays give the same events.

use std::collections::BTreeMap;

use crate::ingest::spans::{Cohort, SpanAnalyzer};
use crate::model::{rfc3339, Incident, IncidentEvent, IncidentState, SeriesAnomaly};
use crate::model::{Anomaly, AnomalyKind, Severity};
use crate::store::Store;

/// The `series_kind` of a cohort's anomaly.
pub const SERIES_KIND: &str = "cohort";

/// Thresholds of the cohort comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortConfig {
    /// Windows compared at each evaluation. Default 6 (one minute of 10 s
    /// windows): enough spans for a service serving one request a second.
    pub windows: i64,
    /// Fewest spans in the cohort and in the rest. Default 20.
    pub min_spans: u64,
    /// Fewest bad spans in the cohort. Default 8: a handful of slow
    /// requests on a new pod is not an incident.
    pub min_bad: u64,
    /// Smallest rise of the bad share over the rest's. Default 5
    /// percentage points: a bad version's slowness soon raises its
    /// operation's p95 and with it the slow threshold, so what is left to
    /// see may be its errors alone (a few percent), and the z-score guards
    /// against noise.
    pub min_increase: f64,
    /// Smallest two-proportion z-score. Default 4 (one-sided p ≈ 3e-5 per
    /// comparison).
    pub min_z: f64,
    /// Consecutive anomalous evaluations before an incident opens.
    /// Default 2.
    pub open_after: u32,
    /// Consecutive normal evaluations before it resolves. Default 3.
    pub resolve_after: u32,
}

impl Default for CohortConfig {
    fn default() -> Self {
        CohortConfig {
            windows: 6,
            min_spans: 20,
            min_bad: 8,
            min_increase: 0.05,
            min_z: 4.0,
            open_after: 2,
            resolve_after: 3,
        }
    }
}

/// What one evaluation found for a cohort.
#[derive(Debug, Clone, PartialEq)]
struct Finding {
    cohort: Cohort,
    /// Spans and bad spans of the other values of the key.
    rest_spans: u64,
    rest_bad: u64,
    z: f64,
}

impl Finding {
    fn share(&self) -> f64 {
        self.cohort.bad as f64 / self.cohort.spans.max(1) as f64
    }

    fn rest_share(&self) -> f64 {
        self.rest_bad as f64 / self.rest_spans.max(1) as f64
    }
}

/// One cohort being watched.
#[derive(Debug, Clone, Default)]
struct Track {
    /// Consecutive anomalous evaluations, and the window of the first.
    streak: u32,
    first_window: i64,
    /// Consecutive normal evaluations while open.
    quiet: u32,
    open: Option<Incident>,
    /// The siblings' spans and bad spans when last measured: once a new
    /// version has replaced the others everywhere and they have left the
    /// ring, an open incident is judged against them as they were.
    control: Option<(u64, u64)>,
}

/// Watches every service's version and flag cohorts; see the module docs.
#[derive(Debug, Default)]
pub struct CohortWatch {
    config: CohortConfig,
    /// Last window evaluated.
    evaluated: Option<i64>,
    /// By (service, key, value).
    tracks: BTreeMap<(String, String, String), Track>,
}

impl CohortWatch {
    pub fn new(config: CohortConfig) -> Self {
        CohortWatch {
            config,
            ..CohortWatch::default()
        }
    }

    /// Open cohort incidents.
    pub fn open_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.tracks.values().filter_map(|track| track.open.as_ref())
    }

    /// Evaluates every window closed since the last call (at most the
    /// store's ring of them), oldest first.
    pub fn evaluate(&mut self, store: &Store, spans: &SpanAnalyzer) -> Vec<IncidentEvent> {
        let Some(closed) = store.closed_through() else {
            return Vec::new();
        };
        let ring = store.config().windows.get() as i64;
        let first = match self.evaluated {
            Some(last) if last >= closed => return Vec::new(),
            Some(last) => (last + 1).max(closed - ring + 1),
            None => closed,
        };
        self.evaluated = Some(closed);
        let mut events = Vec::new();
        for window in first..=closed {
            events.extend(self.evaluate_window(store, spans, window));
        }
        events
    }

    fn evaluate_window(
        &mut self,
        store: &Store,
        spans: &SpanAnalyzer,
        window: i64,
    ) -> Vec<IncidentEvent> {
        let recent = (window - self.config.windows + 1)..(window + 1);
        let ring = store.config().windows.get() as i64;
        let control = (window - ring + 1)..(window + 1);
        let mut found: BTreeMap<(String, String, String), Finding> = BTreeMap::new();
        for service in store.services() {
            let recent = spans.cohorts(&service, recent.clone());
            if recent.is_empty() {
                continue;
            }
            let control = spans.cohorts(&service, control.clone());
            let remembered = |cohort: &Cohort| {
                let key = (
                    service.to_string(),
                    cohort.key.clone(),
                    cohort.value.clone(),
                );
                self.tracks
                    .get(&key)
                    .filter(|track| track.open.is_some())
                    .and_then(|track| track.control)
            };
            let key_of = |finding: &Finding| {
                (
                    service.to_string(),
                    finding.cohort.key.clone(),
                    finding.cohort.value.clone(),
                )
            };
            for finding in anomalous(&recent, &control, remembered, &self.config) {
                found.insert(key_of(&finding), finding);
            }
            // An open incident stays open on half the evidence, as alerts
            // with hysteresis do: a bad version's slowness raises its own
            // slow threshold, so its bad share shrinks once it serves alone.
            let staying = CohortConfig {
                min_bad: self.config.min_bad / 2,
                min_increase: self.config.min_increase / 2.0,
                min_z: self.config.min_z - 1.0,
                ..self.config.clone()
            };
            for finding in anomalous(&recent, &control, remembered, &staying) {
                let key = key_of(&finding);
                let open = self
                    .tracks
                    .get(&key)
                    .is_some_and(|track| track.open.is_some());
                if open {
                    found.entry(key).or_insert(finding);
                }
            }
        }
        let mut events = Vec::new();
        for (key, finding) in &found {
            let track = self.tracks.entry(key.clone()).or_default();
            track.quiet = 0;
            track.control = Some((finding.rest_spans, finding.rest_bad));
            if track.streak == 0 {
                track.first_window = window;
            }
            track.streak += 1;
            let severity = severity(finding);
            match &mut track.open {
                Some(open) => {
                    let escalated = severity > open.severity;
                    *open = incident(&key.0, finding, open.onset_unix_nanos, store, window);
                    open.severity = open.severity.max(severity);
                    if escalated {
                        events.push(IncidentEvent::Updated(open.clone()));
                    }
                }
                None if track.streak >= self.config.open_after => {
                    let onset = store.window_start(track.first_window);
                    let opened = incident(&key.0, finding, onset, store, window);
                    track.open = Some(opened.clone());
                    events.push(IncidentEvent::Opened(opened));
                }
                None => {}
            }
        }
        let resolve_after = self.config.resolve_after;
        self.tracks.retain(|key, track| {
            if found.contains_key(key) {
                return true;
            }
            track.streak = 0;
            let Some(open) = &mut track.open else {
                return false;
            };
            track.quiet += 1;
            if track.quiet < resolve_after {
                return true;
            }
            let end = store.window_start(window + 1);
            open.state = IncidentState::Resolved;
            open.resolved_unix_nanos = Some(end);
            open.resolved = Some(rfc3339(end));
            events.push(IncidentEvent::Resolved(open.clone()));
            false
        });
        events
    }
}

/// The cohorts of one service that fare worse than their siblings: each
/// value's `recent` spans against the spans of the key's other values in
/// `control` (a longer range ending at the same window, so a version that
/// replaced all others in a rolling update is still compared with the
/// version it replaced).
fn anomalous(
    recent: &[Cohort],
    control: &[Cohort],
    remembered: impl Fn(&Cohort) -> Option<(u64, u64)>,
    config: &CohortConfig,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for cohort in recent {
        let (mut rest_spans, mut rest_bad) = control
            .iter()
            .filter(|other| other.key == cohort.key && other.value != cohort.value)
            .fold((0, 0), |(spans, bad), other| {
                (spans + other.spans, bad + other.bad.min(other.spans))
            });
        if rest_spans < config.min_spans {
            if let Some((spans, bad)) = remembered(cohort) {
                (rest_spans, rest_bad) = (spans, bad);
            }
        }
        let cohort_bad = cohort.bad.min(cohort.spans);
        if cohort.spans < config.min_spans
            || rest_spans < config.min_spans
            || cohort_bad < config.min_bad
        {
            continue;
        }
        let share = cohort_bad as f64 / cohort.spans as f64;
        let rest_share = rest_bad as f64 / rest_spans as f64;
        if share - rest_share < config.min_increase || share < 2.0 * rest_share {
            continue;
        }
        let pooled = (cohort_bad + rest_bad) as f64 / (cohort.spans + rest_spans) as f64;
        let spread =
            (pooled * (1.0 - pooled) * (1.0 / cohort.spans as f64 + 1.0 / rest_spans as f64))
                .sqrt();
        let z = if spread > 0.0 {
            (share - rest_share) / spread
        } else {
            f64::INFINITY
        };
        if z < config.min_z {
            continue;
        }
        findings.push(Finding {
            cohort: cohort.clone(),
            rest_spans,
            rest_bad,
            z,
        });
    }
    findings
}

/// Critical when most of the cohort's requests go wrong.
fn severity(finding: &Finding) -> Severity {
    if finding.share() - finding.rest_share() >= 0.3 {
        Severity::Critical
    } else {
        Severity::Warning
    }
}

/// The incident of a cohort as of `window`.
fn incident(service: &str, finding: &Finding, onset: u64, store: &Store, window: i64) -> Incident {
    let cohort = &finding.cohort;
    let subject = format!("{}={}", cohort.key, cohort.value);
    let what = if cohort.key == "service.version" {
        format!("version {} of {service}", cohort.value)
    } else {
        format!(
            "{service} with {} = {}",
            cohort.key.trim_start_matches("feature_flag."),
            cohort.value
        )
    };
    let others = if cohort.key == "service.version" {
        "its other versions"
    } else {
        "the flag's other variants"
    };
    let summary = format!(
        "{what}: {:.0}% of requests fail or are slow vs {:.1}% on {others} ({} of {}, z {:.1})",
        finding.share() * 100.0,
        finding.rest_share() * 100.0,
        cohort.bad,
        cohort.spans,
        finding.z.min(99.0),
    );
    let severity = severity(finding);
    let opened = store.window_start(window + 1);
    let id = format!("{service}/{subject}@{}", onset / 1_000_000_000);
    Incident {
        kinds: vec![AnomalyKind::ErrorRate],
        severity,
        anomalies: vec![SeriesAnomaly {
            series_kind: SERIES_KIND.to_string(),
            series: subject,
            anomaly: Anomaly {
                kind: AnomalyKind::ErrorRate,
                severity,
                severe: false,
                measure: "failing or slow share".to_string(),
                current: finding.share() * 100.0,
                baseline: finding.rest_share() * 100.0,
                unit: "%".to_string(),
                summary: summary.clone(),
                time_to_limit_secs: None,
            },
        }],
        summary: format!("{service}: {summary}"),
        ..Incident::open(id, service, onset, opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cohort(key: &str, value: &str, spans: u64, bad: u64) -> Cohort {
        Cohort {
            key: key.into(),
            value: value.into(),
            spans,
            bad,
        }
    }

    #[test]
    fn a_canary_failing_where_its_siblings_do_not_is_found() {
        let cohorts = [
            cohort("service.version", "1.4.0", 300, 6),
            cohort("service.version", "1.5.0", 60, 20),
        ];
        let found = anomalous(&cohorts, &cohorts, |_| None, &CohortConfig::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].cohort.value, "1.5.0");
        assert!(found[0].z > 4.0);
        assert_eq!(severity(&found[0]), Severity::Critical);
    }

    #[test]
    fn equal_cohorts_small_cohorts_and_lone_values_are_not() {
        let config = CohortConfig::default();
        // Same share of bad spans on both versions.
        let same = [
            cohort("service.version", "1.4.0", 300, 15),
            cohort("service.version", "1.5.0", 300, 16),
        ];
        assert!(anomalous(&same, &same, |_| None, &config).is_empty());
        // Too few spans or too few bad ones to say.
        let small = [
            cohort("service.version", "1.4.0", 300, 3),
            cohort("service.version", "1.5.0", 12, 6),
        ];
        assert!(anomalous(&small, &small, |_| None, &config).is_empty());
        let few_bad = [
            cohort("service.version", "1.4.0", 300, 0),
            cohort("service.version", "1.5.0", 100, 5),
        ];
        assert!(anomalous(&few_bad, &few_bad, |_| None, &config).is_empty());
        // One version: nothing to compare with.
        let alone = [cohort("service.version", "1.5.0", 300, 150)];
        assert!(anomalous(&alone, &alone, |_| None, &config).is_empty());
        // Flag variants compare within their flag only.
        let flags = [
            cohort("feature_flag.a", "on", 100, 40),
            cohort("feature_flag.b", "on", 100, 2),
        ];
        assert!(anomalous(&flags, &flags, |_| None, &config).is_empty());
    }

    #[test]
    fn a_version_that_replaced_all_others_is_judged_against_them_as_they_were() {
        let config = CohortConfig::default();
        let recent = [cohort("service.version", "1.5.0", 120, 15)];
        // The old version has left the ring: nothing to compare with...
        assert!(anomalous(&recent, &recent, |_| None, &config).is_empty());
        // ...unless it was measured while both ran.
        let found = anomalous(&recent, &recent, |_| Some((400, 2)), &config);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].rest_spans, found[0].rest_bad), (400, 2));
    }

    #[test]
    fn a_flag_variant_is_compared_with_the_flags_other_variants() {
        let cohorts = [
            cohort("feature_flag.new-checkout-flow", "off", 50, 1),
            cohort("feature_flag.new-checkout-flow", "on", 50, 18),
            cohort("service.version", "2.0.0", 100, 17),
        ];
        let found = anomalous(&cohorts, &cohorts, |_| None, &CohortConfig::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].cohort.key, "feature_flag.new-checkout-flow");
        assert_eq!(found[0].cohort.value, "on");
        assert_eq!((found[0].rest_spans, found[0].rest_bad), (50, 1));
    }
}
