//! What an incident is explained with once its origins are ranked: the
//! production patterns found, the blast radius (who is hurt, which
//! attribute values carry the failures), the changes before the onset, and
//! one to three hypotheses with evidence and the smallest change to try.
//!
//! Everything here reads the store and the span analysis over the
//! incident's windows and the baseline windows before it; nothing reads a
//! clock.

use std::ops::Range;

use crate::analyze::cohort;
use crate::analyze::context::{
    ranges, Context, Graph, OriginEvidence, RcaConfig, MIN_BASELINE_WINDOWS,
};
use crate::analyze::correlate::correlate;
use crate::analyze::correlate::CorrelationInput;
use crate::ingest::spans::SpanAnalyzer;
use crate::model::AnomalyKind;
use crate::model::ChangeFilter;
use crate::model::{relative_to_onset, Incident};
use crate::model::{
    AttributeLift, BlastRadius, Evidence, Hypothesis, HypothesisKind, Pattern, PatternKind,
};
use crate::model::{SeriesKey, SeriesKind};

/// Most attribute lifts listed in a blast radius.
const MAX_LIFTS: usize = 5;
/// Values less over-represented than this among bad spans are not listed.
const MIN_LIFT: f64 = 1.2;
/// Most hypotheses per incident.
const MAX_HYPOTHESES: usize = 3;
/// A change correlated at least this well is offered as the cause.
const CHANGE_HYPOTHESIS_SCORE: f64 = 0.35;
/// Attribute keys that scope a fault to part of the infrastructure.
const INFRA_KEYS: &[&str] = &[
    "cloud.region",
    "cloud.availability_zone",
    "k8s.pod.name",
    "service.instance.id",
    "host.name",
    "k8s.node.name",
];

/// Fills patterns, blast radius, changes and hypotheses of `incident`.
/// `before` is the previous version (kept where the baseline has rotated
/// out of the store's ring and a number can no longer be recomputed).
pub(crate) fn explain(
    incident: &mut Incident,
    context: Context<'_>,
    graph: &Graph,
    ranked: &[(String, OriginEvidence, f64)],
    config: &RcaConfig,
    before: &Incident,
) {
    let store = context.store;
    let (now, baseline) = ranges(store, incident);
    // Once the windows before the onset have left the ring, there is no
    // baseline to compare with: the explanation made while there was one
    // stands.
    if baseline.end - baseline.start < MIN_BASELINE_WINDOWS && !before.root_causes.is_empty() {
        incident.patterns = before.patterns.clone();
        incident.blast_radius = before.blast_radius.clone();
        incident.changes = before.changes.clone();
        incident.hypotheses = before.hypotheses.clone();
        incident.summary = before.summary.clone();
        return;
    }
    let origin = ranked
        .first()
        .map(|(service, _, _)| service.clone())
        .unwrap_or_else(|| incident.service.clone());

    // Attribute drill-down per candidate (the correlation needs the lifts of
    // each), the origin's in the blast radius.
    let mut lifts: Vec<(String, AttributeLift)> = Vec::new();
    let mut origin_lifts: Vec<AttributeLift> = Vec::new();
    if let Some(spans) = context.spans {
        if baseline.end - baseline.start >= 3 {
            for (service, _, _) in ranked.iter().take(3) {
                // Against all spans of the same windows, not the windows
                // before: a version that has since rolled out everywhere
                // carries every failing span and every other one too, so
                // it is not where failures concentrate; a canary, a region
                // or a tenant is.
                let found = spans.drill_down(service, now.clone(), now.clone());
                if *service == origin {
                    origin_lifts = found.clone();
                }
                lifts.extend(found.into_iter().map(|lift| (service.clone(), lift)));
            }
        }
    }
    if origin_lifts.is_empty() {
        if let Some(previous) = &before.blast_radius {
            origin_lifts = previous.attributes.clone();
        }
    }
    // A value every span carries (one environment) is not over-represented.
    origin_lifts.retain(|lift| lift.lift >= MIN_LIFT);
    // The values that carry (nearly) as many of the failures as the best
    // one come first (a region before one of its zones); among those, the
    // narrowest and most actionable key (the changed version or flag, a
    // tenant, the pod before its host and zone: they carry the same spans
    // when the pod is the cause), then the most over-represented.
    let best = origin_lifts
        .iter()
        .map(|lift| lift.bad_share)
        .fold(0.0, f64::max);
    let leading = |lift: &AttributeLift| best - lift.bad_share <= SAME_SHARE;
    origin_lifts.sort_by(|a, b| {
        leading(b)
            .cmp(&leading(a))
            .then_with(|| {
                if leading(a) {
                    scope_rank(&a.key).cmp(&scope_rank(&b.key))
                } else {
                    b.bad_share.total_cmp(&a.bad_share)
                }
            })
            .then_with(|| b.lift.total_cmp(&a.lift))
            .then_with(|| a.key.cmp(&b.key))
    });
    if let Some(spans) = context.spans {
        let (all, bad) = spans.entry_spans(&origin, now.clone());
        widen_scope(&mut origin_lifts, all, bad);
    }
    // A version or flag variant the cohort comparison found failing on the
    // origin is the scope, whatever its share of today's spans (a bad
    // version rolled out everywhere carries every span).
    if let (Some(spans), Some((_, evidence, _))) = (context.spans, ranked.first()) {
        // Where it ran (a pod, its node) is left to the drill-down, which
        // weighs a pod against its node and zone.
        if let Some((subject, _)) = &evidence.cohort {
            if let Some((key, value)) = subject
                .split_once('=')
                .filter(|(key, _)| cohort::is_change(key))
            {
                let at = origin_lifts
                    .iter()
                    .position(|lift| lift.key == key && lift.value == value);
                let lift = match at {
                    Some(at) => Some(origin_lifts.remove(at)),
                    None => cohort_lift(spans, &origin, key, value, now.clone()),
                };
                if let Some(lift) = lift {
                    origin_lifts.insert(0, lift);
                }
            }
        }
    }
    origin_lifts.truncate(MAX_LIFTS);

    // Changes before the onset on the candidates and their dependencies.
    let candidates: Vec<(String, f64)> = ranked
        .iter()
        .map(|(service, _, score)| (service.clone(), *score))
        .collect();
    let mut dependencies: Vec<String> = Vec::new();
    for (service, _, _) in ranked {
        for callee in graph.callees(service) {
            if !dependencies.contains(callee) && !candidates.iter().any(|(c, _)| c == callee) {
                dependencies.push(callee.clone());
            }
        }
    }
    let from = incident
        .onset_unix_nanos
        .saturating_sub(config.lookback.as_nanos() as u64);
    let known = context.changes.list(&ChangeFilter {
        since_unix_nanos: Some(from),
        ..ChangeFilter::default()
    });
    let window = store.config().window;
    let changes = correlate(
        &known,
        &CorrelationInput {
            onset_unix_nanos: incident.onset_unix_nanos,
            lookback: config.lookback,
            grace: window,
            candidates: candidates.clone(),
            dependencies,
            lifts: lifts.clone(),
            cohorts: ranked
                .iter()
                .filter_map(|(service, evidence, _)| {
                    let (subject, summary) = evidence.cohort.as_ref()?;
                    let (key, value) = subject.split_once('=')?;
                    Some((
                        service.clone(),
                        key.to_string(),
                        value.to_string(),
                        summary.clone(),
                    ))
                })
                .collect(),
        },
    );
    incident.changes = if changes.is_empty() && lifts.is_empty() {
        before.changes.clone()
    } else {
        changes
    };

    incident.patterns = patterns(incident, context, graph, ranked, &origin_lifts);
    incident.blast_radius = Some(blast_radius(
        incident,
        context,
        graph,
        &origin,
        origin_lifts,
    ));
    incident.hypotheses = hypotheses(incident, ranked);
    if let Some(first) = incident.hypotheses.first() {
        incident.summary = format!(
            "{} — likely: {}",
            base_summary(incident, &origin),
            first.summary
        );
    } else {
        incident.summary = base_summary(incident, &origin);
    }
}

/// The drill-down numbers of one cohort of `service` over `windows`: its
/// share of the bad spans and of all spans.
fn cohort_lift(
    spans: &SpanAnalyzer,
    service: &str,
    key: &str,
    value: &str,
    windows: Range<i64>,
) -> Option<AttributeLift> {
    let cohort = spans
        .cohorts(service, windows.clone())
        .into_iter()
        .find(|cohort| cohort.key == key && cohort.value == value)?;
    let (all, bad) = spans.entry_spans(service, windows);
    if all == 0 || bad == 0 {
        return None;
    }
    let bad_share = (cohort.bad as f64 / bad as f64).min(1.0);
    let baseline_share = cohort.spans as f64 / all as f64;
    Some(AttributeLift {
        key: key.to_string(),
        value: value.to_string(),
        bad_share,
        baseline_share,
        lift: bad_share / baseline_share.max(0.5 / (all as f64 + 1.0)),
        bad_spans: cohort.bad,
    })
}

/// Among the leading values (sorted narrowest first), a broader one is the
/// better scope when the spans it adds to the narrowest one fail too: a
/// region whose other zones fail as well, not a pod whose zone's other pods
/// are healthy. Values of such keys nest (pod in host in zone in region),
/// so the broader value's extra spans are its spans minus the narrower's.
/// `all` and `bad` are the origin's entry spans and bad spans in the same
/// windows as the lifts (`baseline_share` is then a share of `all`).
fn widen_scope(lifts: &mut [AttributeLift], all: u64, bad: u64) {
    let Some(first) = lifts.first() else {
        return;
    };
    if all == 0 || bad == 0 {
        return;
    }
    let (all, bad) = (all as f64, bad as f64);
    let best = lifts.iter().map(|lift| lift.bad_share).fold(0.0, f64::max);
    let spans_of = |lift: &AttributeLift| lift.baseline_share * all;
    let bad_of = |lift: &AttributeLift| lift.bad_share * bad;
    let mut chosen = 0;
    let mut narrow = first.clone();
    for (index, broad) in lifts.iter().enumerate().skip(1) {
        if best - broad.bad_share > SAME_SHARE || spans_of(broad) <= spans_of(&narrow) {
            continue;
        }
        let extra_spans = spans_of(broad) - spans_of(&narrow);
        let extra_bad = (bad_of(broad) - bad_of(&narrow)).max(0.0);
        let outside_spans = (all - spans_of(broad)).max(1.0);
        let outside_bad = (bad - bad_of(broad)).max(0.0);
        let extra_rate = extra_bad / extra_spans.max(1.0);
        let outside_rate = outside_bad / outside_spans;
        if extra_bad >= 3.0 && extra_rate >= 2.0 * outside_rate.max(0.01) {
            chosen = index;
            narrow = broad.clone();
        }
    }
    lifts[..=chosen].rotate_right(1);
}

/// Shares of the bad spans this close to the best value's count as equal.
const SAME_SHARE: f64 = 0.15;

/// Which scoping key to name first among values carrying the same failing
/// spans: the narrowest, most actionable one.
fn scope_rank(key: &str) -> u8 {
    match key {
        "service.version" => 0,
        key if key.starts_with("feature_flag.") => 1,
        "k8s.pod.name" => 3,
        "service.instance.id" => 4,
        "host.name" => 5,
        "k8s.node.name" => 6,
        "http.route" => 7,
        "rpc.method" => 8,
        "cloud.availability_zone" => 9,
        "cloud.region" => 10,
        "deployment.environment.name" => 11,
        // Keys the user listed (tenants and the like).
        _ => 2,
    }
}

/// "checkout: p95 840 ms vs 95 ms baseline (+2 services)".
fn base_summary(incident: &Incident, origin: &str) -> String {
    let lead = incident
        .anomalies
        .iter()
        .find(|anomaly| anomaly.series.starts_with(&format!("{origin}: ")))
        .or_else(|| incident.anomalies.first());
    let what = lead
        .map(|anomaly| anomaly.anomaly.summary.clone())
        .unwrap_or_else(|| "anomalous".to_string());
    let others = incident.services.len().saturating_sub(1);
    if others == 0 {
        format!("{origin}: {what}")
    } else {
        format!(
            "{origin}: {what} (cascade: {others} more service{})",
            if others == 1 { "" } else { "s" }
        )
    }
}

fn ratio(current: Option<f64>, baseline: Option<f64>) -> Option<f64> {
    Some(current? / baseline?.max(0.1))
}

/// Production patterns on the incident's services and edges.
fn patterns(
    incident: &Incident,
    context: Context<'_>,
    graph: &Graph,
    ranked: &[(String, OriginEvidence, f64)],
    lifts: &[AttributeLift],
) -> Vec<Pattern> {
    let store = context.store;
    let (now, baseline) = ranges(store, incident);
    let mut found: Vec<Pattern> = Vec::new();
    let mut push = |kind: PatternKind, subject: String, detail: String| {
        if !found.iter().any(|p| p.kind == kind && p.subject == subject) {
            found.push(Pattern {
                kind,
                subject,
                detail,
            });
        }
    };
    let members: Vec<&str> = incident.services.iter().map(String::as_str).collect();
    let stats = |key: &SeriesKey, range: &std::ops::Range<i64>| {
        if range.is_empty() {
            return None;
        }
        store.stats_windows(key, range.start, range.end - 1)
    };
    for service in &members {
        for callee in graph.callees(service) {
            let key = SeriesKey::new(SeriesKind::Edge, service, callee);
            let (Some(current), Some(before)) = (stats(&key, &now), stats(&key, &baseline)) else {
                continue;
            };
            if current.requests < 20 {
                continue;
            }
            let edge = format!("{service} -> {callee}");
            // Retries: repeated calls under one parent, or calls per
            // parent jumping.
            if let Some(spans) = context.spans {
                let calls_now = spans.edge_calls(service, callee, now.clone());
                let calls_before = spans.edge_calls(service, callee, baseline.clone());
                let share = |calls: u64, repeated: u64| repeated as f64 / calls.max(1) as f64;
                let repeated_now = share(calls_now.calls, calls_now.repeated);
                let repeated_before = share(calls_before.calls, calls_before.repeated);
                let per_parent =
                    |c: &crate::ingest::spans::CallStats| c.calls as f64 / c.parents.max(1) as f64;
                if calls_now.calls >= 20
                    && repeated_now >= 0.2
                    && repeated_now >= 3.0 * repeated_before.max(0.01)
                {
                    push(
                        PatternKind::RetryStorm,
                        edge.clone(),
                        format!(
                            "{:.0}% of calls are repeats under the same parent span (was {:.0}%); {:.1} calls per parent (was {:.1})",
                            repeated_now * 100.0,
                            repeated_before * 100.0,
                            per_parent(&calls_now),
                            per_parent(&calls_before)
                        ),
                    );
                }
            }
            let error_rise = current.error_rate - before.error_rate;
            let latency_up = ratio(current.p95, before.p95).unwrap_or(1.0);
            // Timeouts: caller latency piled up at a fixed ceiling, failing.
            if let (Some(p50), Some(max), Some(base)) = (current.p50, current.max, before.p95) {
                if error_rise >= 0.05 && max >= 3.0 * base && p50 >= 0.8 * max {
                    push(
                        PatternKind::TimeoutsFiring,
                        edge.clone(),
                        format!(
                            "calls pile up at a ceiling of ~{:.0} ms (p50 {:.0} ms, max {:.0} ms; baseline p95 {:.0} ms) and {:.0}% fail: a timeout is firing",
                            max, p50, max, base, current.error_rate * 100.0
                        ),
                    );
                }
            }
            // Missing timeout: an unbounded tail while the callee is slow
            // or down.
            // No ceiling: the slowest calls are far above the typical one
            // (a timeout would hold them at one value), and they do not
            // fail (a timeout would fail them).
            if let (Some(p50), Some(p99), Some(max), Some(base)) =
                (current.p50, current.p99, current.max, before.p99)
            {
                let callee_bad = members.contains(&callee.as_str());
                if callee_bad && p99 >= 5.0 * base && max >= 1.5 * p50.max(1.0) && error_rise < 0.05
                {
                    push(
                        PatternKind::MissingTimeout,
                        edge.clone(),
                        format!(
                            "no ceiling on calls while {callee} is degraded: p99 {:.0} ms vs {:.0} ms baseline, max {:.0} ms",
                            p99, base, max
                        ),
                    );
                }
            }
            // Pool or queue wait: the caller's view slows, the callee's own
            // latency does not.
            if latency_up >= 1.5 && graph.is_service(callee) && !members.contains(&callee.as_str())
            {
                push(
                    PatternKind::PoolWait,
                    edge.clone(),
                    format!(
                        "{service} sees calls to {callee} at p95 x{latency_up:.1} while {callee}'s own latency is normal: waiting for a connection or a queue on {service}'s side"
                    ),
                );
            }
            if latency_up >= 1.5
                && !graph.is_service(callee)
                && incident.anomalies.iter().any(|a| {
                    a.anomaly.measure.contains("db.client.connection")
                        && a.series.starts_with(&format!("{service}: "))
                })
            {
                push(
                    PatternKind::PoolWait,
                    edge.clone(),
                    format!("connection pool of {service} exhausted: calls to {callee} at p95 x{latency_up:.1}"),
                );
            }
        }
    }
    for anomaly in &incident.anomalies {
        let service = anomaly
            .series
            .split_once(": ")
            .map(|(service, _)| service.to_string())
            .unwrap_or_else(|| incident.service.clone());
        let measure = anomaly.anomaly.measure.as_str();
        let is_saturation = matches!(
            anomaly.anomaly.kind,
            AnomalyKind::Saturation | AnomalyKind::LevelShift
        );
        if is_saturation && (measure.contains("throttl") || measure.contains("cpu")) {
            push(
                PatternKind::ResourceContention,
                service.clone(),
                format!("{}; latency rises with it", anomaly.anomaly.summary),
            );
        }
        if is_saturation && measure.contains("db.client.connection") {
            push(
                PatternKind::PoolWait,
                service.clone(),
                anomaly.anomaly.summary.clone(),
            );
        }
        if matches!(
            anomaly.anomaly.kind,
            AnomalyKind::Trend | AnomalyKind::Saturation
        ) && measure.contains("memory")
        {
            let detail = match anomaly.anomaly.time_to_limit_secs {
                Some(secs) => format!(
                    "{}; projected to reach its limit in {:.1} h",
                    anomaly.anomaly.summary,
                    secs / 3600.0
                ),
                None => anomaly.anomaly.summary.clone(),
            };
            push(PatternKind::MemoryLeak, service, detail);
        }
    }
    for (service, evidence, _) in ranked {
        if evidence.down {
            push(
                PatternKind::DependencyDown,
                service.clone(),
                format!("{service} stopped answering while its callers kept calling"),
            );
        }
    }
    // Data issue: failures concentrated on a request attribute (route,
    // method, tenant) rather than on infrastructure or a version.
    if let Some(lift) = lifts.iter().find(|lift| {
        !INFRA_KEYS.contains(&lift.key.as_str())
            && lift.key != "service.version"
            && !lift.key.starts_with("feature_flag")
            && lift.bad_share >= 0.6
            && lift.lift >= 2.0
    }) {
        push(
            PatternKind::DataIssue,
            format!("{}={}", lift.key, lift.value),
            format!(
                "{:.0}% of failing or slow spans carry {}={} against {:.0}% of normal traffic",
                lift.bad_share * 100.0,
                lift.key,
                lift.value,
                lift.baseline_share * 100.0
            ),
        );
    }
    if let Some(change) = incident
        .changes
        .first()
        .filter(|c| c.score >= CHANGE_HYPOTHESIS_SCORE)
    {
        // A change is a bad deploy or a harmful flip only when what it
        // brought fails where its predecessor does not (the cohort
        // comparison); a change that merely came shortly before is listed
        // with the changes, not named as the pattern.
        let subject = change.subject.as_deref().unwrap_or_default();
        let (kind, cohort) = match change.kind.as_str() {
            "feature_flag" => (
                Some(PatternKind::FlagFlip),
                format!("feature_flag.{subject}="),
            ),
            "deploy" => (
                Some(PatternKind::BadDeploy),
                format!("service.version={subject}"),
            ),
            _ => (None, String::new()),
        };
        let failing = ranked.iter().any(|(service, evidence, _)| {
            *service == change.service
                && evidence.cohort.as_ref().is_some_and(|(found, _)| {
                    if kind == Some(PatternKind::FlagFlip) {
                        found.starts_with(&cohort)
                    } else {
                        *found == cohort
                    }
                })
        });
        if let (Some(kind), true) = (kind, failing) {
            push(kind, change.service.clone(), change.reason.clone());
        }
    }
    found
}

/// Who is hurt: share of requests, affected services up to the entry
/// points, operations, and the attribute values carrying the failures.
fn blast_radius(
    incident: &Incident,
    context: Context<'_>,
    graph: &Graph,
    origin: &str,
    attributes: Vec<AttributeLift>,
) -> BlastRadius {
    let store = context.store;
    let (now, _) = ranges(store, incident);
    let mut services: Vec<String> = vec![origin.to_string()];
    for service in &incident.services {
        if !services.contains(service) {
            services.push(service.clone());
        }
    }
    for caller in graph.upstream(origin) {
        if !services.contains(&caller) {
            services.push(caller);
        }
    }
    let entry_points: Vec<String> = graph.entry_points();
    let affected_entries: Vec<String> = entry_points
        .iter()
        .filter(|entry| services.contains(entry))
        .cloned()
        .collect();
    let mut total = 0;
    let mut affected = 0;
    for entry in &entry_points {
        let (all, bad) = match context.spans {
            Some(spans) => spans.entry_spans(entry, now.clone()),
            None => (0, 0),
        };
        total += all;
        if affected_entries.contains(entry) {
            affected += bad;
        }
    }
    BlastRadius {
        total_requests: total,
        affected_requests: affected,
        affected_share: if total == 0 {
            0.0
        } else {
            affected as f64 / total as f64
        },
        services,
        operations: incident.operations.clone(),
        entry_points: affected_entries,
        attributes,
    }
}

/// One to three ranked hypotheses.
fn hypotheses(incident: &Incident, ranked: &[(String, OriginEvidence, f64)]) -> Vec<Hypothesis> {
    let mut out: Vec<Hypothesis> = Vec::new();
    let origin = ranked.first();
    let lifts = incident
        .blast_radius
        .as_ref()
        .map(|blast| blast.attributes.clone())
        .unwrap_or_default();
    let exemplars: Vec<String> = incident
        .exemplar_trace_ids
        .iter()
        .take(3)
        .cloned()
        .collect();

    // A change that explains it.
    if let Some(change) = incident
        .changes
        .first()
        .filter(|change| change.score >= CHANGE_HYPOTHESIS_SCORE)
    {
        let subject = change.subject.clone().unwrap_or_default();
        let action = match change.kind.as_str() {
            "deploy" => {
                let previous = change
                    .description
                    .split("(was ")
                    .nth(1)
                    .and_then(|rest| rest.split(')').next())
                    .map(|version| format!(" to {version}"))
                    .unwrap_or_else(|| " to the previous version".to_string());
                format!(
                    "roll back {} from {}{previous}",
                    change.service,
                    if subject.is_empty() {
                        "the new version".to_string()
                    } else {
                        subject.clone()
                    }
                )
            }
            "feature_flag" => format!(
                "turn flag {} off (back to its previous variant) on {}",
                subject, change.service
            ),
            "config" => format!("revert the config change {} on {}", subject, change.service),
            "scale" => format!("scale {} back", change.service),
            _ => format!("undo the {} change on {}", change.kind, change.service),
        };
        let mut against = Vec::new();
        if origin.is_some_and(|(service, _, _)| *service != change.service) {
            against.push(Evidence {
                text: format!(
                    "the change is on {}, not on the top-ranked origin {}",
                    change.service,
                    origin.map(|(s, _, _)| s.as_str()).unwrap_or("")
                ),
                trace_ids: Vec::new(),
            });
        }
        out.push(Hypothesis {
            kind: HypothesisKind::Change,
            subject: format!("change {}", change.id),
            score: change.score.clamp(0.0, 1.0),
            summary: format!(
                "the {} of {}{} {} caused it",
                change.kind.replace('_', " "),
                change.service,
                if subject.is_empty() {
                    String::new()
                } else {
                    format!(" ({subject})")
                },
                relative_to_onset(change.before_onset_secs)
            ),
            evidence_for: vec![Evidence {
                text: change.reason.clone(),
                trace_ids: exemplars.clone(),
            }],
            evidence_against: against,
            suggested_action: action,
        });
    }

    // A named pattern.
    if let Some(pattern) = incident
        .patterns
        .iter()
        .find(|pattern| !matches!(pattern.kind, PatternKind::BadDeploy | PatternKind::FlagFlip))
    {
        let (kind, action) = match pattern.kind {
            PatternKind::RetryStorm => (
                HypothesisKind::Pattern,
                format!("cap retries on {} (retry budget, exponential backoff with jitter) or open a circuit breaker", pattern.subject),
            ),
            PatternKind::TimeoutsFiring => (
                HypothesisKind::Pattern,
                format!("the callee on {} is too slow for its timeout: fix or scale the callee; consider a circuit breaker", pattern.subject),
            ),
            PatternKind::MissingTimeout => (
                HypothesisKind::Pattern,
                format!("add a timeout and a circuit breaker on {}", pattern.subject),
            ),
            PatternKind::PoolWait => (
                HypothesisKind::Saturation,
                format!("raise the connection pool size or add a timeout on {}", pattern.subject),
            ),
            PatternKind::ResourceContention => (
                HypothesisKind::Saturation,
                format!("raise the CPU limit of {} or move it off the busy node", pattern.subject),
            ),
            PatternKind::MemoryLeak => (
                HypothesisKind::Saturation,
                format!("restart {} before it hits its limit, then find the leak (heap profile)", pattern.subject),
            ),
            PatternKind::DataIssue => (
                HypothesisKind::Scope,
                format!("look at requests with {}: a bad record or input; block or fix it", pattern.subject),
            ),
            PatternKind::DependencyDown => (
                HypothesisKind::Origin,
                format!("restore {} (check its pods and recent events); scale it", pattern.subject),
            ),
            // Excluded above: the change hypothesis explains these.
            PatternKind::BadDeploy | PatternKind::FlagFlip => (
                HypothesisKind::Change,
                format!("undo the last change on {}", pattern.subject),
            ),
        };
        out.push(Hypothesis {
            kind,
            subject: pattern.subject.clone(),
            score: 0.6,
            summary: format!(
                "{}: {}",
                pattern.kind.as_str().replace('_', " "),
                pattern.subject
            ),
            evidence_for: vec![Evidence {
                text: pattern.detail.clone(),
                trace_ids: exemplars.clone(),
            }],
            evidence_against: Vec::new(),
            suggested_action: action,
        });
    }

    // Failures scoped to part of the infrastructure.
    if let Some(lift) = lifts.iter().find(|lift| {
        INFRA_KEYS.contains(&lift.key.as_str()) && lift.bad_share >= 0.6 && lift.lift >= 1.5
    }) {
        let action = match lift.key.as_str() {
            "cloud.region" | "cloud.availability_zone" => {
                format!("shift traffic away from {}={}", lift.key, lift.value)
            }
            _ => format!("restart or drain {}={}", lift.key, lift.value),
        };
        out.push(Hypothesis {
            kind: HypothesisKind::Scope,
            subject: format!("{}={}", lift.key, lift.value),
            score: (0.4 + 0.1 * lift.lift).min(0.8),
            summary: format!(
                "failures concentrate on {}={} ({:.0}% of bad spans, {:.0}% of normal traffic)",
                lift.key,
                lift.value,
                lift.bad_share * 100.0,
                lift.baseline_share * 100.0
            ),
            evidence_for: vec![Evidence {
                text: format!(
                    "{} bad spans carry it; lift {:.1}",
                    lift.bad_spans, lift.lift
                ),
                trace_ids: Vec::new(),
            }],
            evidence_against: Vec::new(),
            suggested_action: action,
        });
    }

    // The origin itself.
    if let Some((service, evidence, score)) = origin {
        let mut against = Vec::new();
        if incident.changes.is_empty() {
            against.push(Evidence {
                text: format!(
                    "no change recorded on {service} or its dependencies before the onset"
                ),
                trace_ids: Vec::new(),
            });
        }
        if let Some((second, _, second_score)) = ranked.get(1) {
            against.push(Evidence {
                text: format!("{second} is also a candidate (score {second_score:.2})"),
                trace_ids: Vec::new(),
            });
        }
        let action = if evidence.down {
            format!("restore {service}: check its pods, recent events and dependencies")
        } else if let Some((callee, _)) = &evidence.dependency {
            format!("check {service}'s dependency {callee} (pool size, timeouts, its health)")
        } else {
            let slow = evidence.own_time_ratio.is_some_and(|ratio| ratio >= 1.2);
            let failing = evidence
                .local_error_increase
                .is_some_and(|increase| increase > 0.0);
            match (slow, failing) {
                (false, true) => format!(
                    "investigate {service}'s failures (its error logs and the failing traces)"
                ),
                (true, true) => format!(
                    "investigate {service} (its error logs and the failing traces, then the slow operation)"
                ),
                _ => format!(
                    "investigate {service} (profile the slow operation, check its logs); scale it out if it is overloaded"
                ),
            }
        };
        out.push(Hypothesis {
            kind: HypothesisKind::Origin,
            subject: service.clone(),
            score: score * 0.8,
            summary: format!("{service} is where it starts"),
            evidence_for: vec![Evidence {
                text: super::context::reason(evidence),
                trace_ids: exemplars,
            }],
            evidence_against: against,
            suggested_action: action,
        });
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out.truncate(MAX_HYPOTHESES);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lift(key: &str, value: &str, bad_share: f64, baseline_share: f64) -> AttributeLift {
        AttributeLift {
            key: key.into(),
            value: value.into(),
            bad_share,
            baseline_share,
            lift: bad_share / baseline_share,
            bad_spans: (bad_share * 100.0) as u64,
        }
    }

    fn first(mut lifts: Vec<AttributeLift>) -> String {
        // 1,000 spans, 100 bad.
        widen_scope(&mut lifts, 1_000, 100);
        format!("{}={}", lifts[0].key, lifts[0].value)
    }

    #[test]
    fn a_pod_whose_zone_is_otherwise_healthy_stays_the_scope() {
        // The pod carries 75 of the bad spans in 10% of the traffic; its
        // zone adds 200 spans and 8 bad ones, the rate elsewhere.
        let lifts = vec![
            lift("k8s.pod.name", "cart-1", 0.75, 0.10),
            lift("cloud.availability_zone", "us-east-1a", 0.83, 0.30),
        ];
        assert_eq!(first(lifts), "k8s.pod.name=cart-1");
    }

    #[test]
    fn a_region_whose_other_zones_fail_too_is_the_scope() {
        // The zone carries 88 bad spans in 25% of the traffic; the region
        // adds 150 spans with 12 more bad ones, where outside the region
        // nothing fails.
        let lifts = vec![
            lift("cloud.availability_zone", "eu-west-1c", 0.88, 0.25),
            lift("cloud.region", "eu-west-1", 1.0, 0.40),
        ];
        assert_eq!(first(lifts), "cloud.region=eu-west-1");
    }
}
