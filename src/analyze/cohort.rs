//! Cohort comparison: a version, a feature-flag variant, or a place (a pod,
//! a node, a zone) that fails where its siblings do not.
//!
//! A canary on one pod of six, a flag served to half the requests, or a
//! noisy neighbour slowing the pods on one node, can leave a service's
//! totals inside their normal range while every request it touches
//! suffers. The per-series detectors judge totals; this watch compares the
//! cohorts of a service's entry spans *with each other, in the same
//! windows*: each value of `service.version` against the other versions,
//! each variant of a flag against the flag's other variants, and each
//! instance, pod, host, node and zone against the service's others.
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
//! A second test finds a cohort that is merely *slower*: its share of spans
//! slower than their operation's recent median (about half of every
//! cohort's while nothing changes) against its siblings' share in the same
//! windows. A noisy neighbour adding a fifth to the requests on one node
//! moves that share from a half to two thirds long before any of them
//! passes the slow threshold. It needs a rise of `min_slower_increase` and
//! a z-score of `min_slower_z`; a place (pod, node, zone) must also have
//! risen that much against its own earlier windows in the ring, so a pod
//! that is always a little slower, or a new pod warming up, does not page.
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
    /// Smallest rise of the share of spans slower than their operation's
    /// median, against the siblings (and, for a place, its own earlier
    /// windows). Default 15 percentage points.
    pub min_slower_increase: f64,
    /// Smallest two-proportion z-score of that rise. Default 5: every
    /// value of seven keys is tested in every window.
    pub min_slower_z: f64,
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
            min_slower_increase: 0.15,
            min_slower_z: 5.0,
            open_after: 2,
            resolve_after: 3,
        }
    }
}

/// What one evaluation found for a cohort.
#[derive(Debug, Clone, PartialEq)]
struct Finding {
    cohort: Cohort,
    /// `ErrorRate`: the cohort's bad spans are counted (failed or slow);
    /// `Latency`: its spans slower than their operation's median.
    kind: AnomalyKind,
    /// The cohort's spans counted (bad or slower).
    hits: u64,
    /// Spans and counted spans of the other values of the key.
    rest_spans: u64,
    rest_bad: u64,
    z: f64,
}

impl Finding {
    fn share(&self) -> f64 {
        self.hits as f64 / self.cohort.spans.max(1) as f64
    }

    fn rest_share(&self) -> f64 {
        self.rest_bad as f64 / self.rest_spans.max(1) as f64
    }
}

/// One-sided two-proportion z-score of `hits` of `spans` against
/// `rest_hits` of `rest_spans`.
fn two_proportion_z(hits: u64, spans: u64, rest_hits: u64, rest_spans: u64) -> f64 {
    let share = hits as f64 / spans as f64;
    let rest_share = rest_hits as f64 / rest_spans as f64;
    let pooled = (hits + rest_hits) as f64 / (spans + rest_spans) as f64;
    let spread = (pooled * (1.0 - pooled) * (1.0 / spans as f64 + 1.0 / rest_spans as f64)).sqrt();
    if spread > 0.0 {
        (share - rest_share) / spread
    } else {
        f64::INFINITY
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
        let earlier = control.start..recent.start;
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
            let is_open = |finding: &Finding| {
                self.tracks
                    .get(&key_of(finding))
                    .is_some_and(|track| track.open.is_some())
            };
            let mut mine: BTreeMap<(String, String, String), Finding> = BTreeMap::new();
            for finding in anomalous(&recent, &control, remembered, &self.config) {
                mine.insert(key_of(&finding), finding);
            }
            let earlier = spans.cohorts(&service, earlier.clone());
            for finding in slower(&recent, &earlier, &self.config) {
                mine.entry(key_of(&finding)).or_insert(finding);
            }
            // An open incident stays open on half the evidence, as alerts
            // with hysteresis do: a bad version's slowness raises its own
            // slow threshold, so its bad share shrinks once it serves alone.
            let staying = CohortConfig {
                min_bad: self.config.min_bad / 2,
                min_increase: self.config.min_increase / 2.0,
                min_z: self.config.min_z - 1.0,
                min_slower_increase: self.config.min_slower_increase / 2.0,
                min_slower_z: self.config.min_slower_z - 1.0,
                ..self.config.clone()
            };
            let holding = anomalous(&recent, &control, remembered, &staying)
                .into_iter()
                .chain(slower(&recent, &earlier, &staying));
            for finding in holding {
                if is_open(&finding) {
                    mine.entry(key_of(&finding)).or_insert(finding);
                }
            }
            let mine = one_place(mine.into_values().collect(), is_open, &self.config);
            found.extend(mine.into_iter().map(|finding| (key_of(&finding), finding)));
        }
        let mut events = Vec::new();
        for (key, finding) in &found {
            let track = self.tracks.entry(key.clone()).or_default();
            track.quiet = 0;
            if finding.kind == AnomalyKind::ErrorRate {
                track.control = Some((finding.rest_spans, finding.rest_bad));
            }
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
        let z = two_proportion_z(cohort_bad, cohort.spans, rest_bad, rest_spans);
        if z < config.min_z {
            continue;
        }
        findings.push(Finding {
            cohort: cohort.clone(),
            kind: AnomalyKind::ErrorRate,
            hits: cohort_bad,
            rest_spans,
            rest_bad,
            z,
        });
    }
    findings
}

/// The cohorts of one service slower than their siblings in the same
/// `recent` windows: more of their spans slower than the operation's
/// median. A place (not a version or flag) must also be slower than it was
/// in `earlier` windows of the ring, with enough spans there to say.
fn slower(recent: &[Cohort], earlier: &[Cohort], config: &CohortConfig) -> Vec<Finding> {
    let mut findings = Vec::new();
    for cohort in recent {
        let (rest_spans, rest_slower) = recent
            .iter()
            .filter(|other| other.key == cohort.key && other.value != cohort.value)
            .fold((0, 0), |(spans, slower), other| {
                (spans + other.spans, slower + other.slower.min(other.spans))
            });
        let hits = cohort.slower.min(cohort.spans);
        if cohort.spans < config.min_spans || rest_spans < config.min_spans {
            continue;
        }
        let share = hits as f64 / cohort.spans as f64;
        let rest_share = rest_slower as f64 / rest_spans as f64;
        if share - rest_share < config.min_slower_increase {
            continue;
        }
        if !is_change(&cohort.key) {
            let before = earlier
                .iter()
                .find(|other| other.key == cohort.key && other.value == cohort.value)
                .filter(|before| before.spans >= config.min_spans);
            let Some(before) = before else {
                continue;
            };
            let before_share = before.slower.min(before.spans) as f64 / before.spans as f64;
            if share - before_share < config.min_slower_increase {
                continue;
            }
        }
        let z = two_proportion_z(hits, cohort.spans, rest_slower, rest_spans);
        if z < config.min_slower_z {
            continue;
        }
        findings.push(Finding {
            cohort: cohort.clone(),
            kind: AnomalyKind::Latency,
            hits,
            rest_spans,
            rest_bad: rest_slower,
            z,
        });
    }
    findings
}

/// Of one service's findings, those worth an incident: a version or flag
/// that fails explains where it runs, so places are dropped beside it; of
/// the places, the one already open, else the narrowest unless a broader
/// one's other spans fare as badly (a node whose pods are all slower, not
/// the first of its pods; the pod alone when its node's other pods are
/// fine). Keys that name the same spans keep the first of pod, instance,
/// node, host and zone.
fn one_place(
    findings: Vec<Finding>,
    is_open: impl Fn(&Finding) -> bool,
    config: &CohortConfig,
) -> Vec<Finding> {
    let (changes, mut places): (Vec<Finding>, Vec<Finding>) = findings
        .into_iter()
        .partition(|finding| is_change(&finding.cohort.key));
    if !changes.is_empty() || places.len() <= 1 {
        return if changes.is_empty() { places } else { changes };
    }
    if places.iter().any(&is_open) {
        places.retain(&is_open);
        return places;
    }
    let rank = |key: &str| {
        [
            "k8s.pod.name",
            "service.instance.id",
            "k8s.node.name",
            "host.name",
        ]
        .iter()
        .position(|place| *place == key)
        .unwrap_or(4)
    };
    places.sort_by(|a, b| {
        rank(&a.cohort.key)
            .cmp(&rank(&b.cohort.key))
            .then_with(|| a.cohort.value.cmp(&b.cohort.value))
    });
    let mut chosen = 0;
    for (index, broad) in places.iter().enumerate().skip(1) {
        let narrow = &places[chosen];
        if broad.cohort.spans <= narrow.cohort.spans || broad.hits < narrow.hits {
            continue;
        }
        let extra_spans = broad.cohort.spans - narrow.cohort.spans;
        let extra_hits = broad.hits - narrow.hits;
        let increase = match broad.kind {
            AnomalyKind::Latency => config.min_slower_increase,
            _ => config.min_increase,
        };
        let extra_share = extra_hits as f64 / extra_spans as f64;
        if extra_hits >= 3 && extra_share >= broad.rest_share() + increase / 2.0 {
            chosen = index;
        }
    }
    vec![places.swap_remove(chosen)]
}

/// Whether a cohort key is something that changes (a version, a flag's
/// variant), rather than where the spans ran (a pod, a node, a zone): only
/// such a cohort can name a change as the cause.
pub fn is_change(key: &str) -> bool {
    key == "service.version" || key.starts_with("feature_flag.")
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
    let what = match cohort.key.as_str() {
        "service.version" => format!("version {} of {service}", cohort.value),
        key if is_change(key) => format!(
            "{service} with {} = {}",
            key.trim_start_matches("feature_flag."),
            cohort.value
        ),
        key => format!("{service} on {key} {}", cohort.value),
    };
    let others = match cohort.key.as_str() {
        "service.version" => "its other versions",
        "service.instance.id" => "its other instances",
        "k8s.pod.name" => "its other pods",
        "host.name" => "its other hosts",
        "k8s.node.name" => "its other nodes",
        "cloud.availability_zone" => "its other zones",
        _ => "the flag's other variants",
    };
    let (counted, measure) = match finding.kind {
        AnomalyKind::Latency => (
            "are slower than their operation's usual median",
            "share slower than the median",
        ),
        _ => ("fail or are slow", "failing or slow share"),
    };
    let summary = format!(
        "{what}: {:.0}% of requests {counted} vs {:.1}% on {others} ({} of {}, z {:.1})",
        finding.share() * 100.0,
        finding.rest_share() * 100.0,
        finding.hits,
        cohort.spans,
        finding.z.min(99.0),
    );
    let severity = severity(finding);
    let opened = store.window_start(window + 1);
    let id = format!("{service}/{subject}@{}", onset / 1_000_000_000);
    Incident {
        kinds: vec![finding.kind],
        severity,
        anomalies: vec![SeriesAnomaly {
            series_kind: SERIES_KIND.to_string(),
            series: subject,
            anomaly: Anomaly {
                kind: finding.kind,
                severity,
                severe: false,
                measure: measure.to_string(),
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
            slower: spans / 2,
        }
    }

    fn slowed(key: &str, value: &str, spans: u64, slower: u64) -> Cohort {
        Cohort {
            slower,
            ..cohort(key, value, spans, 0)
        }
    }

    fn finding(key: &str, value: &str, spans: u64, hits: u64) -> Finding {
        Finding {
            cohort: slowed(key, value, spans, hits),
            kind: AnomalyKind::Latency,
            hits,
            rest_spans: 800,
            rest_bad: 400,
            z: 6.0,
        }
    }

    #[test]
    fn one_place_is_named_the_node_whose_pods_all_slowed_or_the_pod_alone() {
        let config = CohortConfig::default();
        let never = |_: &Finding| false;
        let names = |found: Vec<Finding>| -> Vec<String> {
            found
                .iter()
                .map(|finding| format!("{}={}", finding.cohort.key, finding.cohort.value))
                .collect()
        };
        // Both pods of the node slowed: the node (its zone and host name
        // the same spans).
        let node = vec![
            finding("cloud.availability_zone", "z1", 400, 270),
            finding("host.name", "n1", 400, 270),
            finding("k8s.node.name", "n1", 400, 270),
            finding("k8s.pod.name", "p1", 200, 136),
            finding("k8s.pod.name", "p2", 200, 134),
        ];
        assert_eq!(names(one_place(node, never, &config)), ["k8s.node.name=n1"]);
        // One pod slowed, the other on its node did not.
        let pod = vec![
            finding("k8s.node.name", "n1", 400, 236),
            finding("k8s.pod.name", "p1", 200, 136),
        ];
        assert_eq!(names(one_place(pod, never, &config)), ["k8s.pod.name=p1"]);
        // A version failing explains the pods it runs on.
        let version = vec![
            finding("k8s.pod.name", "p1", 200, 136),
            finding("service.version", "2.0", 200, 136),
        ];
        assert_eq!(
            names(one_place(version, never, &config)),
            ["service.version=2.0"]
        );
        // What is open stays what is named.
        let open = |finding: &Finding| finding.cohort.key == "k8s.pod.name";
        let both = vec![
            finding("k8s.node.name", "n1", 400, 270),
            finding("k8s.pod.name", "p1", 200, 136),
        ];
        assert_eq!(names(one_place(both, open, &config)), ["k8s.pod.name=p1"]);
    }

    #[test]
    fn a_node_whose_requests_turned_slower_than_its_siblings_is_found() {
        let config = CohortConfig::default();
        let node = "k8s.node.name";
        // One node's spans: two thirds above the median, the others half.
        let recent = [
            slowed(node, "a", 400, 267),
            slowed(node, "b", 400, 197),
            slowed(node, "c", 400, 203),
        ];
        let before = [
            slowed(node, "a", 960, 470),
            slowed(node, "b", 960, 480),
            slowed(node, "c", 960, 490),
        ];
        let found = slower(&recent, &before, &config);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].cohort.value, "a");
        assert_eq!(found[0].kind, AnomalyKind::Latency);
        assert!(found[0].z >= 5.0, "{}", found[0].z);
        // The same node, slower like that all along: not news.
        let always = [
            slowed(node, "a", 960, 640),
            slowed(node, "b", 960, 480),
            slowed(node, "c", 960, 490),
        ];
        assert!(slower(&recent, &always, &config).is_empty());
        // A new pod has no earlier windows to judge by.
        let pods = [
            slowed("k8s.pod.name", "new", 400, 267),
            slowed("k8s.pod.name", "old", 800, 400),
        ];
        assert!(slower(&pods, &[], &config).is_empty());
        // A new version does not need them: its siblings are the control.
        let versions = [
            slowed("service.version", "2.0", 400, 267),
            slowed("service.version", "1.9", 800, 400),
        ];
        assert_eq!(slower(&versions, &[], &config).len(), 1);
        // Every node slower alike (the whole service slowed): no cohort.
        let all = [
            slowed(node, "a", 400, 283),
            slowed(node, "b", 400, 275),
            slowed(node, "c", 400, 280),
        ];
        assert!(slower(&all, &before, &config).is_empty());
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
