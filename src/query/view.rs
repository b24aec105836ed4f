//! What the query API answers about services and the topology, as plain
//! data computed from the store's read API.
//!
//! These types are the crate-side twins of the protobuf messages: the
//! service builds them from the store and converts them to prost types in
//! `query::mod`; the CLI converts responses back and prints them as tables
//! or JSON. No prost type appears here.
//!
//! Ranges: windows whose start lies in `[since, until)` are merged, so the
//! figures always cover whole windows.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::model::{SeriesKey, SeriesKind};
use crate::store::histogram::LatencyHistogram;
use crate::store::window::VALUE_SCALE;
use crate::store::Store;

/// A service and what it is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub name: String,
    /// Operations it handled, sorted.
    pub operations: Vec<String>,
    /// Services or peers it calls, sorted.
    pub callees: Vec<String>,
}

/// Rate, errors and duration of one or more series over a range.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RedStats {
    pub requests: u64,
    pub errors: u64,
    /// `errors / requests`; 0 without requests.
    pub error_rate: f64,
    /// Requests per second over the windows that had data.
    pub rate_per_second: f64,
    /// Latency quantiles in milliseconds; `None` when nothing had a latency.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Start of the first and end of the last window with data; 0 without.
    pub from_unix_nanos: u64,
    pub to_unix_nanos: u64,
}

/// One operation of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationStats {
    pub operation: String,
    pub stats: RedStats,
}

/// One outgoing dependency edge of a service, from its client spans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeStats {
    pub callee: String,
    pub stats: RedStats,
}

/// A service's statistics over a range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStats {
    pub service: String,
    /// The range used (window starts in `[since, until)`).
    pub since_unix_nanos: u64,
    pub until_unix_nanos: u64,
    /// All its operations together.
    pub total: RedStats,
    pub operations: Vec<OperationStats>,
    pub edges: Vec<EdgeStats>,
}

/// A service in the dependency graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopologyNode {
    pub service: String,
    /// Whether the service sends its own spans; a database or an external
    /// API is known only as someone's callee.
    pub traced: bool,
    /// All its operations together (empty when not traced).
    pub stats: RedStats,
}

/// A caller -> callee dependency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopologyEdge {
    pub caller: String,
    pub callee: String,
    pub call_rate_per_second: f64,
    pub error_rate: f64,
    /// From the caller's client spans (includes network and queueing).
    pub caller_side: RedStats,
    /// From the callee's server spans, all its callers together; only when
    /// the callee is traced.
    pub callee_side: Option<RedStats>,
}

/// The dependency graph over a range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    pub since_unix_nanos: u64,
    pub until_unix_nanos: u64,
    /// Sorted by service.
    pub nodes: Vec<TopologyNode>,
    /// Sorted by caller, then callee.
    pub edges: Vec<TopologyEdge>,
}

/// A resolved time range: windows starting in `[since, until)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub since_unix_nanos: u64,
    pub until_unix_nanos: u64,
}

impl Range {
    /// Fills in the defaults of a request: `since` 0 is as far back as the
    /// store holds; `until` 0 is now, including the window that is filling
    /// and the next one (spans up to a window ahead of the clock land there).
    pub fn resolve(store: &Store, since_unix_nanos: u64, until_unix_nanos: u64) -> Range {
        let until = if until_unix_nanos == 0 {
            let next = store.window_index(store.now_unix_nanos()) + 2;
            store.window_start(next)
        } else {
            until_unix_nanos
        };
        Range {
            since_unix_nanos,
            until_unix_nanos: until,
        }
    }

    /// First and last window index the range covers, or `None` when empty.
    fn windows(&self, store: &Store) -> Option<(i64, i64)> {
        if self.until_unix_nanos <= self.since_unix_nanos {
            return None;
        }
        // A window belongs to the range when its start does, so the first
        // window is the one starting at or after `since`.
        let first = store.window_index(self.since_unix_nanos.saturating_sub(1))
            + i64::from(self.since_unix_nanos > 0);
        let last = store.window_index(self.until_unix_nanos - 1);
        (first <= last).then_some((first, last))
    }
}

/// Every service with its operations and callees.
pub fn services(store: &Store) -> Vec<ServiceSummary> {
    let edges = store.edges();
    store
        .services()
        .into_iter()
        .map(|name| ServiceSummary {
            operations: store
                .operations(&name)
                .iter()
                .map(|operation| operation.to_string())
                .collect(),
            callees: edges
                .iter()
                .filter(|edge| edge.caller == name)
                .map(|edge| edge.callee.to_string())
                .collect(),
            name: name.to_string(),
        })
        .collect()
}

/// A service's statistics, or `None` when the store does not know it.
pub fn service_stats(store: &Store, service: &str, range: Range) -> Option<ServiceStats> {
    if !store.services().iter().any(|name| &**name == service) {
        return None;
    }
    let operations = store.series(service, SeriesKind::Operation);
    let edges = store.series(service, SeriesKind::Edge);
    Some(ServiceStats {
        service: service.to_string(),
        since_unix_nanos: range.since_unix_nanos,
        until_unix_nanos: range.until_unix_nanos,
        total: red(store, &operations, range),
        operations: operations
            .iter()
            .map(|key| OperationStats {
                operation: key.name.to_string(),
                stats: red(store, std::slice::from_ref(key), range),
            })
            .collect(),
        edges: edges
            .iter()
            .map(|key| EdgeStats {
                callee: key.name.to_string(),
                stats: red(store, std::slice::from_ref(key), range),
            })
            .collect(),
    })
}

/// The dependency graph with each edge measured from both ends.
pub fn topology(store: &Store, range: Range) -> Topology {
    let edges = store.edges();
    let mut names: BTreeSet<String> = store
        .services()
        .iter()
        .map(|name| name.to_string())
        .collect();
    names.extend(edges.iter().map(|edge| edge.callee.to_string()));

    // Each traced service's operations merged once, reused by its node and
    // by every edge into it.
    let mut server_side = std::collections::BTreeMap::new();
    for name in &names {
        let operations = store.series(name, SeriesKind::Operation);
        if !operations.is_empty() {
            server_side.insert(name.clone(), red(store, &operations, range));
        }
    }
    let nodes = names
        .iter()
        .map(|name| TopologyNode {
            service: name.clone(),
            traced: server_side.contains_key(name),
            stats: server_side.get(name).cloned().unwrap_or_default(),
        })
        .collect();
    let edges = edges
        .iter()
        .map(|edge| {
            let key = SeriesKey::new(SeriesKind::Edge, &edge.caller, &edge.callee);
            let caller_side = red(store, std::slice::from_ref(&key), range);
            TopologyEdge {
                caller: edge.caller.to_string(),
                callee: edge.callee.to_string(),
                call_rate_per_second: caller_side.rate_per_second,
                error_rate: caller_side.error_rate,
                callee_side: server_side.get(&*edge.callee).cloned(),
                caller_side,
            }
        })
        .collect();
    Topology {
        since_unix_nanos: range.since_unix_nanos,
        until_unix_nanos: range.until_unix_nanos,
        nodes,
        edges,
    }
}

/// Where an item of the topology sits in its paging order: each service's
/// node (`callee: None`) comes just before the edges it calls, and both are
/// in name order. A page ends after an item; the next starts after its key,
/// so services that appear between two pages do not shift the others.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TopologyKey {
    /// The node's service, or the edge's caller.
    pub service: String,
    /// The edge's callee; `None` for the node.
    pub callee: Option<String>,
}

/// The items of `topology` after `after` (all when `None`), at most
/// `page_size` nodes and edges together (at least one), and the key of the
/// last one when more follow.
pub fn topology_page(
    topology: Topology,
    page_size: usize,
    after: Option<&TopologyKey>,
) -> (Topology, Option<TopologyKey>) {
    let page_size = page_size.max(1);
    let node_key = |node: &TopologyNode| TopologyKey {
        service: node.service.clone(),
        callee: None,
    };
    let edge_key = |edge: &TopologyEdge| TopologyKey {
        service: edge.caller.clone(),
        callee: Some(edge.callee.clone()),
    };
    let is_next = |key: &TopologyKey| after.is_none_or(|after| key > after);
    let mut nodes = topology
        .nodes
        .into_iter()
        .filter(|node| is_next(&node_key(node)))
        .peekable();
    let mut edges = topology
        .edges
        .into_iter()
        .filter(|edge| is_next(&edge_key(edge)))
        .peekable();
    let mut page = Topology {
        since_unix_nanos: topology.since_unix_nanos,
        until_unix_nanos: topology.until_unix_nanos,
        nodes: Vec::new(),
        edges: Vec::new(),
    };
    let mut last = None;
    for _ in 0..page_size {
        let node_first = match (nodes.peek(), edges.peek()) {
            (None, None) => break,
            (Some(node), Some(edge)) => node_key(node) < edge_key(edge),
            (node, _) => node.is_some(),
        };
        if node_first {
            if let Some(node) = nodes.next() {
                last = Some(node_key(&node));
                page.nodes.push(node);
            }
        } else if let Some(edge) = edges.next() {
            last = Some(edge_key(&edge));
            page.edges.push(edge);
        }
    }
    let more = nodes.peek().is_some() || edges.peek().is_some();
    (page, last.filter(|_| more))
}

/// Merges `keys` over `range`: counts add up, histograms merge (so the
/// quantiles are those of all the requests together, not an average of
/// quantiles).
fn red(store: &Store, keys: &[SeriesKey], range: Range) -> RedStats {
    let Some((from, to)) = range.windows(store) else {
        return RedStats::default();
    };
    let mut requests = 0;
    let mut errors = 0;
    let mut covered: Option<(i64, i64)> = None;
    let mut merged: Option<LatencyHistogram> = None;
    for key in keys {
        let Some(stats) = store.stats_windows(key, from, to) else {
            continue;
        };
        requests += stats.requests;
        errors += stats.errors;
        if let Some((first, last)) = stats.windows {
            covered = Some(match covered {
                None => (first, last),
                Some((low, high)) => (low.min(first), high.max(last)),
            });
        }
        if let Some(histogram) = store.histogram(key, from, to) {
            match merged.as_mut() {
                None => merged = Some(histogram),
                Some(total) => total.merge(&histogram),
            }
        }
    }
    let histogram = merged.filter(|histogram| !histogram.is_empty());
    let quantile = |q: f64| {
        histogram
            .as_ref()
            .map(|histogram| histogram.value_at_quantile(q) as f64 / VALUE_SCALE)
    };
    let window_nanos = store.config().window.as_nanos() as u64;
    let (from_unix_nanos, to_unix_nanos) = match covered {
        Some((first, last)) => (
            store.window_start(first),
            store.window_start(last).saturating_add(window_nanos),
        ),
        None => (0, 0),
    };
    let seconds = to_unix_nanos.saturating_sub(from_unix_nanos) as f64 / 1e9;
    RedStats {
        requests,
        errors,
        error_rate: if requests == 0 {
            0.0
        } else {
            errors as f64 / requests as f64
        },
        rate_per_second: if seconds > 0.0 {
            requests as f64 / seconds
        } else {
            0.0
        },
        p50_ms: quantile(0.50),
        p95_ms: quantile(0.95),
        p99_ms: quantile(0.99),
        max_ms: histogram
            .as_ref()
            .map(|histogram| histogram.max() as f64 / VALUE_SCALE),
        from_unix_nanos,
        to_unix_nanos,
    }
}

#[cfg(test)]
mod tests;
