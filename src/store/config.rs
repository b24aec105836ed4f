//! The `store:` section: store settings ([`StoreConfig`]), the keys and
//! rules that validate them (`metric_attributes` included), and their part of
//! the example config.

use std::num::NonZeroUsize;
use std::time::Duration;

use serde_yaml::Value;

use crate::validate::{
    at_least, count, default_note, describe, duration, format_duration, positive, Checker, Section,
};

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

// === the `store:` section of the config file ===

/// Keys of `store`.
pub(crate) const STORE_KEYS: &[&str] = &[
    "window",
    "windows",
    "max_series",
    "max_series_per_service",
    "series_ttl",
    "pairing_timeout",
    "pairing_capacity",
    "metric_attributes",
];
/// Shortest store window: below it, per-window bookkeeping would cost more
/// than the statistics are worth.
const MIN_WINDOW: Duration = Duration::from_millis(100);
/// Fewest windows a series keeps: detection compares a window with those
/// before it, so it needs at least two.
const MIN_WINDOWS: usize = 2;
/// Most windows a series keeps, bounding the memory of one series.
const MAX_WINDOWS: usize = 10_000;

/// The `store:` part of the example config (`triage example-config`).
pub(crate) const EXAMPLE: &str = r#"store:
  # Length of one event-time window (at least 100ms).
  window: 10s
  # How many windows each series keeps, from 2 to 10000. Together with
  # `window` this is how far back detection can look (here 5 minutes).
  windows: 30
  # Cap on series across all services. Beyond it, samples fold into each
  # service's overflow series instead of using more memory.
  max_series: 20000
  # Cap on series of one service (operations and their own time, edges,
  # metrics and logs); at most `max_series`.
  max_series_per_service: 2000
  # Series that record nothing for this long are dropped (at least `window`).
  series_ttl: 15m
  # How long a client span waits for its server-side child before its callee
  # is worked out from its own attributes.
  pairing_timeout: 5s
  # Most spans waiting to be paired at once.
  pairing_capacity: 100000
  # Metric attribute keys that become part of a metric series' key; all
  # other attributes are folded away so cardinality stays bounded.
  metric_attributes:
    - db.client.connection.state
    - db.client.connection.pool.name
    - state
    - pool.name
    - cpu.mode
    - system.cpu.state
    - direction
    - http.route
    - http.request.method
    - http.response.status_code
    - rpc.method
    - k8s.container.name
    - container.name
"#;

/// Reads the `store` section into `store`, including the rules between
/// its fields.
pub(crate) fn check(checker: &mut Checker, top: &Section<'_>, store: &mut StoreConfig) {
    let section = checker.section(top, "store", STORE_KEYS);
    let window_ok = checker.field(&section, "window", &mut store.window, |value| {
        at_least(duration(value)?, MIN_WINDOW)
    });
    checker.field(&section, "windows", &mut store.windows, |value| {
        count(value, MIN_WINDOWS, MAX_WINDOWS)
    });
    let max_series_ok = checker.field(&section, "max_series", &mut store.max_series, |value| {
        count(value, 1, usize::MAX)
    });
    let per_service_ok = checker.field(
        &section,
        "max_series_per_service",
        &mut store.max_series_per_service,
        |value| count(value, 1, usize::MAX),
    );
    let ttl_ok = checker.field(&section, "series_ttl", &mut store.series_ttl, duration);
    checker.field(
        &section,
        "pairing_timeout",
        &mut store.pairing_timeout,
        |value| positive(duration(value)?),
    );
    checker.field(
        &section,
        "pairing_capacity",
        &mut store.pairing_capacity,
        |value| count(value, 1, usize::MAX),
    );
    metric_attributes(checker, &section, &mut store.metric_attributes);

    // The rules between fields are only checked when both sides are
    // known good; otherwise they would repeat a problem already reported.
    if max_series_ok && per_service_ok && store.max_series_per_service > store.max_series {
        checker.report(
            section.key_path("max_series_per_service"),
            format!(
                "{}{} is more than store.max_series ({}); lower it or raise store.max_series",
                store.max_series_per_service,
                default_note(&section, "max_series_per_service"),
                store.max_series,
            ),
        );
    }
    if window_ok && ttl_ok && store.series_ttl < store.window {
        checker.report(
            section.key_path("series_ttl"),
            format!(
                "{}{} is shorter than store.window ({}); \
                 a series would expire before its first window closes",
                format_duration(store.series_ttl),
                default_note(&section, "series_ttl"),
                format_duration(store.window),
            ),
        );
    }
}

/// Reads `metric_attributes`, reporting each bad entry at its own index.
fn metric_attributes(checker: &mut Checker, section: &Section<'_>, target: &mut Vec<String>) {
    let path = section.key_path("metric_attributes");
    match section.get("metric_attributes") {
        None => {}
        Some(Value::Sequence(items)) => {
            let mut keys = Vec::with_capacity(items.len());
            let mut all_ok = true;
            for (index, item) in items.iter().enumerate() {
                match item {
                    Value::String(key) if !key.is_empty() => keys.push(key.clone()),
                    other => {
                        all_ok = false;
                        checker.report(
                            format!("{path}[{index}]"),
                            format!(
                                "expected an attribute key such as \"http.route\", got {}",
                                describe(other)
                            ),
                        );
                    }
                }
            }
            if all_ok {
                *target = keys;
            }
        }
        Some(other) => checker.report(
            path,
            format!(
                "expected a list of attribute keys such as [\"http.route\"], got {}",
                describe(other)
            ),
        ),
    }
}
