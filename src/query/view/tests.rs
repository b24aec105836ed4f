use std::sync::Arc;

use super::*;
use crate::store::{ManualClock, Sample, StoreConfig};

const SECOND: u64 = 1_000_000_000;

/// A store with 10 s windows whose clock stands at `now_secs`.
fn store_at(now_secs: u64) -> Store {
    Store::with_clock(
        StoreConfig::default(),
        Arc::new(ManualClock::new(now_secs * SECOND)),
    )
}

fn sample(end_secs: u64, millis: u64, error: bool) -> Sample {
    Sample {
        end_unix_nanos: end_secs * SECOND,
        duration_nanos: millis * 1_000_000,
        error,
        trace_id: 7,
    }
}

/// checkout (2 operations) calls payment (1 operation) and postgres
/// (untraced): 100 + 50 checkout requests in window 99 (990-1000 s).
fn shop() -> Store {
    let store = store_at(1_000);
    let checkout = store.service("checkout");
    let payment = store.service("payment");
    for millis in 1..=100 {
        store.record_operation(
            &checkout,
            "GET /cart",
            sample(995, millis, millis % 10 == 0),
        );
        store.record_edge(&checkout, "payment", sample(995, millis, millis % 20 == 0));
        store.record_operation(&payment, "Charge", sample(995, millis / 2 + 1, false));
    }
    for _ in 0..50 {
        store.record_operation(&checkout, "POST /order", sample(992, 400, false));
        store.record_edge(&checkout, "postgres", sample(992, 3, false));
    }
    store
}

#[test]
fn services_list_operations_and_callees() {
    let store = shop();
    let listed = services(&store);
    let names: Vec<&str> = listed.iter().map(|service| service.name.as_str()).collect();
    assert_eq!(names, ["checkout", "payment"]);
    assert_eq!(listed[0].operations, ["GET /cart", "POST /order"]);
    assert_eq!(listed[0].callees, ["payment", "postgres"]);
    assert!(listed[1].callees.is_empty());
}

#[test]
fn service_stats_merge_operations_and_split_edges() {
    let store = shop();
    let range = Range::resolve(&store, 0, 0);
    let stats = service_stats(&store, "checkout", range).expect("known service");
    assert_eq!(stats.total.requests, 150);
    assert_eq!(stats.total.errors, 10);
    // One 10 s window holds everything.
    assert!((stats.total.rate_per_second - 15.0).abs() < 1e-9);
    assert_eq!(stats.total.from_unix_nanos, 990 * SECOND);
    assert_eq!(stats.total.to_unix_nanos, 1_000 * SECOND);
    // A third of the requests take 400 ms: the merged p95 is theirs, which an
    // average of the two operations' p95s would not be.
    let p95 = stats.total.p95_ms.expect("latency");
    assert!((p95 - 400.0).abs() < 4.0, "{p95}");
    let cart = &stats.operations[0];
    assert_eq!(cart.operation, "GET /cart");
    assert_eq!((cart.stats.requests, cart.stats.errors), (100, 10));
    let p50 = cart.stats.p50_ms.expect("latency");
    assert!((p50 - 50.0).abs() < 1.0, "{p50}");
    let edges: Vec<(&str, u64, u64)> = stats
        .edges
        .iter()
        .map(|edge| (edge.callee.as_str(), edge.stats.requests, edge.stats.errors))
        .collect();
    assert_eq!(edges, [("payment", 100, 5), ("postgres", 50, 0)]);
    assert!(service_stats(&store, "nobody", range).is_none());
}

#[test]
fn ranges_cover_whole_windows() {
    let store = shop();
    // The data's window starts at 990 s: a range starting after it misses it,
    // one starting inside [980, 990] keeps it.
    let later = Range::resolve(&store, 991 * SECOND, 0);
    let stats = service_stats(&store, "checkout", later).expect("known");
    assert_eq!(stats.total.requests, 0);
    assert_eq!(stats.total.p50_ms, None);
    assert_eq!(stats.total.rate_per_second, 0.0);
    let including = Range::resolve(&store, 985 * SECOND, 1_000 * SECOND);
    assert_eq!(
        service_stats(&store, "checkout", including)
            .expect("known")
            .total
            .requests,
        150
    );
    let before = Range::resolve(&store, 0, 990 * SECOND);
    assert_eq!(
        service_stats(&store, "checkout", before)
            .expect("known")
            .total
            .requests,
        0
    );
    let empty = Range {
        since_unix_nanos: 5,
        until_unix_nanos: 5,
    };
    assert_eq!(empty.windows(&store), None);
}

#[test]
fn topology_measures_edges_from_both_ends() {
    let store = shop();
    let graph = topology(&store, Range::resolve(&store, 0, 0));
    let nodes: Vec<(&str, bool)> = graph
        .nodes
        .iter()
        .map(|node| (node.service.as_str(), node.traced))
        .collect();
    assert_eq!(
        nodes,
        [("checkout", true), ("payment", true), ("postgres", false)]
    );
    let to_payment = &graph.edges[0];
    assert_eq!(
        (to_payment.caller.as_str(), to_payment.callee.as_str()),
        ("checkout", "payment")
    );
    assert!((to_payment.call_rate_per_second - 10.0).abs() < 1e-9);
    assert!((to_payment.error_rate - 0.05).abs() < 1e-9);
    let caller_p50 = to_payment.caller_side.p50_ms.expect("latency");
    let callee_p50 = to_payment
        .callee_side
        .as_ref()
        .and_then(|side| side.p50_ms)
        .expect("payment is traced");
    // The callee's own spans are half as long as the caller's view of them.
    assert!(
        callee_p50 < caller_p50 * 0.6,
        "{callee_p50} vs {caller_p50}"
    );
    assert!(
        graph.edges[1].callee_side.is_none(),
        "postgres is not traced"
    );
}

/// Pages of every size cover the topology exactly once, in order, each
/// node before the edges its service calls.
#[test]
fn topology_pages_cover_every_node_and_edge_once() {
    let store = shop();
    let whole = topology(&store, Range::resolve(&store, 0, 0));
    let n_items = whole.nodes.len() + whole.edges.len();
    assert_eq!(n_items, 5);
    for page_size in 1..=6 {
        let mut after = None;
        let mut nodes = Vec::new();
        let mut edges = Vec::new();
        let mut n_pages = 0;
        loop {
            let (page, next) = topology_page(whole.clone(), page_size, after.as_ref());
            assert!(page.nodes.len() + page.edges.len() <= page_size);
            n_pages += 1;
            nodes.extend(page.nodes);
            edges.extend(page.edges);
            match next {
                Some(key) => after = Some(key),
                None => break,
            }
        }
        assert_eq!(
            n_pages,
            n_items.div_ceil(page_size),
            "page size {page_size}"
        );
        assert_eq!(nodes, whole.nodes);
        assert_eq!(edges, whole.edges);
    }
    // checkout, then its two edges, then payment.
    let (first, next) = topology_page(whole.clone(), 3, None);
    assert_eq!(first.nodes.len(), 1);
    assert_eq!(first.edges.len(), 2);
    assert_eq!(
        next,
        Some(TopologyKey {
            service: "checkout".into(),
            callee: Some("postgres".into()),
        })
    );
}
