use super::*;
use crate::query::tests::full_incident;
use crate::query::view::{OperationStats, TopologyEdge, TopologyNode};

#[test]
fn tables_align_columns() {
    let text = table(
        &["A", "LONG HEADER"],
        &[
            vec!["wide cell".into(), "x".into()],
            vec!["y".into(), "".into()],
        ],
    );
    assert_eq!(text, "A          LONG HEADER\nwide cell  x\ny\n");
}

#[test]
fn stats_table_lists_total_operations_and_edges() {
    let stats = ServiceStats {
        service: "checkout".into(),
        since_unix_nanos: 0,
        until_unix_nanos: 1,
        total: RedStats {
            requests: 150,
            errors: 3,
            error_rate: 0.02,
            rate_per_second: 15.0,
            p50_ms: Some(12.34),
            p95_ms: Some(400.0),
            p99_ms: None,
            max_ms: None,
            from_unix_nanos: 990_000_000_000,
            to_unix_nanos: 1_000_000_000_000,
        },
        operations: vec![OperationStats {
            operation: "GET /cart".into(),
            stats: RedStats::default(),
        }],
        edges: vec![super::super::view::EdgeStats {
            callee: "payment".into(),
            stats: RedStats::default(),
        }],
    };
    let text = stats_table(&stats);
    assert!(
        text.starts_with("checkout (1970-01-01T00:16:30Z .. 1970-01-01T00:16:40Z)\n"),
        "{text}"
    );
    assert!(
        text.contains("total      checkout    15.00  150       2.00%   12.3ms  400ms  -"),
        "{text}"
    );
    assert!(text.contains("operation  GET /cart"), "{text}");
    assert!(text.contains("calls      -> payment"), "{text}");
}

#[test]
fn topology_table_names_untraced_services() {
    let topology = Topology {
        since_unix_nanos: 0,
        until_unix_nanos: 1,
        nodes: vec![
            TopologyNode {
                service: "cart".into(),
                traced: true,
                stats: RedStats::default(),
            },
            TopologyNode {
                service: "redis".into(),
                traced: false,
                stats: RedStats::default(),
            },
        ],
        edges: vec![TopologyEdge {
            caller: "cart".into(),
            callee: "redis".into(),
            call_rate_per_second: 3.0,
            error_rate: 0.0,
            caller_side: RedStats {
                p95_ms: Some(2.0),
                ..RedStats::default()
            },
            callee_side: None,
        }],
    };
    let text = topology_table(&topology);
    assert!(text.starts_with("2 services, 1 edges\n"), "{text}");
    assert!(
        text.contains("cart    redis   3.00     0.00%   2.0ms       -"),
        "{text}"
    );
    assert!(text.ends_with("not traced: redis\n"), "{text}");
}

#[test]
fn incident_report_shows_the_analysis() {
    let incident = full_incident();
    let text = incident_report(&incident, &[]);
    for expected in [
        "payment@1733011390  resolved  critical",
        "operation Charge: p95 840 ms vs 95 ms baseline",
        "0.90 payment Charge: own time x6",
        "1. [0.80] the v1.4.2 deploy",
        "+ latency rose 40 s after",
        "- errors unchanged",
        "fix: roll back payment to v1.4.1",
        "pool_wait on payment",
        "#3 payment deploy (40 s before onset)",
        "blast radius: 300 of 1000 requests (30.00%)",
        "cloud.region=eu-west-1",
        "exemplar traces:\n  http://jaeger:16686/trace/0af7651916cd43dd8448eb211c80319c",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(incidents_table(&[incident]).contains("payment@1733011390  resolved  critical"));
    assert_eq!(incidents_table(&[]), "no incidents\n");
}

#[test]
fn since_is_a_duration_back_from_now() {
    assert_eq!(since_nanos(None).expect("none"), 0);
    let since = since_nanos(Some("15m")).expect("valid");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as u64;
    let back = now.saturating_sub(since);
    assert!(
        (15 * 60 * 1_000_000_000..16 * 60 * 1_000_000_000).contains(&back),
        "{back}"
    );
    assert!(matches!(since_nanos(Some("15")), Err(QueryError::Since(_))));
    assert_eq!(since_nanos(Some("100000d")).expect("valid"), 1);
}
