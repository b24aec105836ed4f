use super::*;

const SECOND: u64 = 1_000_000_000;
const ONSET: u64 = 1_714_566_600 * SECOND;

fn change(id: u64, service: &str, kind: ChangeKind, secs_before: i64) -> Change {
    Change {
        id,
        service: service.to_owned(),
        kind,
        version: None,
        key: None,
        value: None,
        description: format!("change {id}"),
        time_unix_nanos: (ONSET as i64 - secs_before * SECOND as i64) as u64,
        link: None,
        external_id: None,
        source: ChangeSource::Api,
    }
}

fn deploy(id: u64, service: &str, version: &str, secs_before: i64) -> Change {
    Change {
        version: Some(version.to_owned()),
        ..change(id, service, ChangeKind::Deploy, secs_before)
    }
}

fn flag(id: u64, service: &str, key: &str, variant: &str, secs_before: i64) -> Change {
    Change {
        key: Some(key.to_owned()),
        value: Some(variant.to_owned()),
        ..change(id, service, ChangeKind::FeatureFlag, secs_before)
    }
}

fn lift(
    service: &str,
    key: &str,
    value: &str,
    bad_share: f64,
    lift: f64,
) -> (String, AttributeLift) {
    (
        service.to_owned(),
        AttributeLift {
            key: key.to_owned(),
            value: value.to_owned(),
            bad_share,
            baseline_share: bad_share / lift,
            lift,
            bad_spans: (bad_share * 100.0) as u64,
        },
    )
}

fn input(lifts: Vec<(String, AttributeLift)>) -> CorrelationInput {
    CorrelationInput {
        onset_unix_nanos: ONSET,
        lookback: Duration::from_secs(30 * 60),
        grace: Duration::from_secs(10),
        candidates: vec![("payment".to_owned(), 0.9), ("checkout".to_owned(), 0.45)],
        dependencies: vec!["ledger".to_owned()],
        lifts,
        cohorts: Vec::new(),
    }
}

fn ranked_ids(changes: &[Change], input: &CorrelationInput) -> Vec<u64> {
    correlate(changes, input).iter().map(|c| c.id).collect()
}

/// Table of ranking rules: each case lists changes and the expected order.
#[test]
fn ranking_rules() {
    struct Case {
        name: &'static str,
        changes: Vec<Change>,
        lifts: Vec<(String, AttributeLift)>,
        expected: &'static [u64],
    }
    let cases = [
        Case {
            name: "closer in time ranks higher",
            changes: vec![
                deploy(1, "payment", "v2", 25 * 60),
                deploy(2, "payment", "v3", 3 * 60),
            ],
            lifts: vec![],
            expected: &[2, 1],
        },
        Case {
            name: "outside the look-back, after the grace, or on unrelated services: left out",
            changes: vec![
                deploy(1, "payment", "v2", 31 * 60),
                deploy(2, "payment", "v3", -60),
                deploy(3, "search", "v9", 60),
                deploy(4, "payment", "v4", -5),
            ],
            lifts: vec![],
            expected: &[4],
        },
        Case {
            name: "the top-ranked origin beats another candidate and a dependency at the same time",
            changes: vec![
                deploy(1, "ledger", "v2", 120),
                deploy(2, "checkout", "v2", 120),
                deploy(3, "payment", "v2", 120),
            ],
            lifts: vec![],
            expected: &[3, 2, 1],
        },
        Case {
            name: "failing traffic on the new version beats being closer in time",
            changes: vec![
                deploy(1, "payment", "v2", 10 * 60),
                flag(2, "payment", "fast-path", "on", 60),
            ],
            lifts: vec![
                lift("payment", "service.version", "v2", 0.97, 3.1),
                lift("payment", "feature_flag.fast-path", "off", 0.9, 1.2),
            ],
            expected: &[1, 2],
        },
        Case {
            name: "a version carrying none of the failing traffic is ranked down",
            changes: vec![
                deploy(1, "payment", "v2", 60),
                change(2, "checkout", ChangeKind::Config, 6 * 60),
            ],
            lifts: vec![lift("payment", "service.version", "v1", 0.95, 1.9)],
            expected: &[2, 1],
        },
        Case {
            name: "a flag variant carrying the failing traffic",
            changes: vec![
                deploy(1, "checkout", "v7", 60),
                flag(2, "checkout", "new-cart", "on", 5 * 60),
            ],
            lifts: vec![lift("checkout", "feature_flag.new-cart", "on", 0.9, 4.0)],
            expected: &[2, 1],
        },
    ];
    for case in cases {
        let input = input(case.lifts);
        assert_eq!(
            ranked_ids(&case.changes, &input),
            case.expected,
            "{}",
            case.name
        );
        for ranked in correlate(&case.changes, &input) {
            assert!(
                (0.0..=1.0).contains(&ranked.score),
                "{}: {ranked:?}",
                case.name
            );
        }
    }
}

#[test]
fn the_reason_spells_out_the_evidence() {
    let changes = [deploy(7, "payment", "v2", 4 * 60)];
    let found = correlate(
        &changes,
        &input(vec![lift("payment", "service.version", "v2", 0.97, 3.1)]),
    );
    assert_eq!(found.len(), 1);
    let ranked = &found[0];
    assert_eq!(
        ranked.reason,
        "deploy of payment v2 4 min before onset; 97% of failing spans run v2 (lift 3.1); \
         on the top-ranked origin"
    );
    assert_eq!(ranked.kind, "deploy");
    assert_eq!(ranked.subject.as_deref(), Some("v2"));
    assert_eq!(ranked.before_onset_secs, 240.0);
    assert!(ranked.score > 0.75, "{}", ranked.score);

    let contradicted = correlate(
        &changes,
        &input(vec![lift("payment", "service.version", "v1", 0.95, 1.9)]),
    );
    assert_eq!(
        contradicted[0].reason,
        "deploy of payment v2 4 min before onset; no failing spans run v2, 95% run v1 instead, \
         so this change is unlikely the cause; on the top-ranked origin"
    );
    assert!(contradicted[0].score < ranked.score / 2.0);
}

#[test]
fn a_change_posted_and_seen_in_telemetry_is_listed_once() {
    let posted = Change {
        link: Some("https://ci.example.com/runs/1".to_owned()),
        ..deploy(1, "payment", "v2", 200)
    };
    let seen = Change {
        external_id: None,
        source: ChangeSource::Telemetry,
        ..deploy(2, "payment", "v2", 180)
    };
    let other = Change {
        external_id: None,
        source: ChangeSource::Telemetry,
        ..deploy(3, "payment", "v3", 100)
    };
    assert_eq!(ranked_ids(&[posted, seen, other], &input(vec![])), [3, 1]);
}
