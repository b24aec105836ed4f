//! Store settings, already validated (see `crate::config` for the YAML side).

use std::num::NonZeroUsize;
use std::time::Duration;

/// Attribute keys kept on metric series by default: the ones that split a
/// metric into parts detection needs to tell apart (pool used vs idle, CPU
/// mode, ...). Anything else is folded away so cardinality stays bounded.
pub const DEFAULT_METRIC_ATTRIBUTES: &[&str] = &[
    "db.client.connection.state",
    "db.client.connection.pool.name",
    "state",
    "pool.name",
    "cpu.mode",
    "system.cpu.state",
    "direction",
    "http.route",
    "http.request.method",
    "http.response.status_code",
    "rpc.method",
    "k8s.container.name",
    "container.name",
];

/// How the store windows, bounds and pairs what it records.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Length of one event-time window.
    pub window: Duration,
    /// How many windows each series keeps (a ring; older windows are reused).
    pub windows: NonZeroUsize,
    /// Cap on series across all services; beyond it samples fold into the
    /// service's overflow series.
    pub max_series: NonZeroUsize,
    /// Cap on series of one service (operations + edges + metrics + logs).
    pub max_series_per_service: NonZeroUsize,
    /// Series idle (no sample recorded) longer than this are dropped.
    pub series_ttl: Duration,
    /// How long a client span waits for its server-side child before its
    /// callee is resolved from its own attributes.
    pub pairing_timeout: Duration,
    /// Bound on spans waiting in the pairing buffer.
    pub pairing_capacity: NonZeroUsize,
    /// Metric attribute keys that become part of a metric series' key.
    pub metric_attributes: Vec<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            window: Duration::from_secs(10),
            windows: NonZeroUsize::new(30).expect("non-zero"),
            max_series: NonZeroUsize::new(20_000).expect("non-zero"),
            max_series_per_service: NonZeroUsize::new(2_000).expect("non-zero"),
            series_ttl: Duration::from_secs(15 * 60),
            pairing_timeout: Duration::from_secs(5),
            pairing_capacity: NonZeroUsize::new(100_000).expect("non-zero"),
            metric_attributes: DEFAULT_METRIC_ATTRIBUTES
                .iter()
                .map(|key| key.to_string())
                .collect(),
        }
    }
}
