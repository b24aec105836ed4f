//! Saturation rules: judgements that need several metric series of one
//! service in the same window, which no single [`SeriesDetector`] sees.
//!
//! - **Connection pool**: `db.client.connection.count` with state `used`
//!   against `db.client.connection.max` (or the older
//!   `db.client.connections.usage` / `.max`) at `pool_usage_ratio` or more,
//!   with `pending_requests` above zero.
//! - **CPU throttling**: throttled CFS periods over all periods, from
//!   `container.cpu.throttling_data.throttled_periods` / `.periods` (docker
//!   stats) or cAdvisor's `container_cpu_cfs_throttled_periods_total` /
//!   `container_cpu_cfs_periods_total`, at `cpu_throttled_ratio` or more.
//! - **Memory**: a rising trend of `process.memory.usage`,
//!   `container.memory.usage` or `container.memory.working_set` projected to
//!   reach its limit (a limit metric of the same container, else a
//!   configured limit) within `trend_horizon`.
//!
//! Series names may carry `{attr=value,...}` suffixes; rules match on the
//! name before `{` and pair series by their attributes (pool name,
//! container), falling back to the only candidate when there is one.
//!
//! Reading values: levels (pool counts, pending requests, memory limits) are
//! the newest value in the window (`values.last`), so they must arrive as
//! gauges or as non-monotonic sums kept as levels; throttling counters are
//! cumulative sums the store has turned into deltas, so the window's
//! `values.sum` is what happened in it. A series without points in the
//! window takes part in nothing.
//!
//! Every anomaly here is a [`AnomalyKind::Saturation`] with severity
//! critical but not severe (a pool can be full for one window under a burst;
//! two windows in a row are needed). Its `baseline` is the threshold it
//! crossed (or, for memory, the limit), since a rule has no history.
//!
//! [`SeriesDetector`]: super::SeriesDetector

use super::config::base_name;
use super::series::{format_duration, format_percent, format_value, Trend};
use crate::detect::{DetectConfig, WindowStats};
use crate::model::{Anomaly, AnomalyKind, Severity};

/// Names of the connection count (filtered to state `used`).
const POOL_USED: &[&str] = &["db.client.connection.count", "db.client.connections.usage"];
/// Names of the pool size.
const POOL_MAX: &[&str] = &["db.client.connection.max", "db.client.connections.max"];
/// Names of the requests waiting for a connection.
const POOL_PENDING: &[&str] = &[
    "db.client.connection.pending_requests",
    "db.client.connections.pending_requests",
];
/// Attribute keys that hold the connection state.
const STATE_KEYS: &[&str] = &["db.client.connection.state", "state"];
/// Pairs of (throttled periods, all periods) counter names.
const THROTTLING: &[(&str, &str)] = &[
    (
        "container.cpu.throttling_data.throttled_periods",
        "container.cpu.throttling_data.periods",
    ),
    (
        "container_cpu_cfs_throttled_periods_total",
        "container_cpu_cfs_periods_total",
    ),
];
/// Fewest CFS periods in a window for the throttled share to be judged: a
/// period is 100 ms of CPU scheduling, and a container that asked for CPU
/// in fewer than ten of them was mostly idle.
const MIN_CFS_PERIODS: f64 = 10.0;
/// Names of memory usage that can be projected to a limit.
const MEMORY_USAGE: &[&str] = &[
    "process.memory.usage",
    "container.memory.usage",
    "container.memory.working_set",
];
/// Names of memory limit metrics: the semantic convention, the Kubernetes
/// cluster receiver's older spelling, and docker stats.
const MEMORY_LIMIT: &[&str] = &[
    "k8s.container.memory.limit",
    "k8s.container.memory_limit",
    "container.memory.usage.limit",
];
/// Attribute keys that name a container, to pair usage with its limit.
const CONTAINER_KEYS: &[&str] = &["k8s.container.name", "container.name"];

/// One metric series of the service in this window, its name split.
struct Series<'a> {
    /// The full series name.
    name: &'a str,
    /// The name before `{`.
    base: &'a str,
    /// The `key=value` attributes of the suffix, in order.
    attributes: Vec<(&'a str, &'a str)>,
    /// The window.
    stats: &'a WindowStats,
    /// The series' trend, if its detector has one.
    trend: Option<&'a Trend>,
}

/// The saturation rules over the metric series of `service` in one window:
/// `metrics` holds each series' name, window statistics and trend.
pub fn service_rules(
    config: &DetectConfig,
    _service: &str,
    metrics: &[(&str, &WindowStats, Option<&Trend>)],
) -> Vec<Anomaly> {
    let series: Vec<Series<'_>> = metrics
        .iter()
        .map(|(name, stats, trend)| Series::new(name, stats, *trend))
        .collect();
    let mut anomalies = Vec::new();
    anomalies.extend(pool_saturation(config, &series));
    anomalies.extend(cpu_throttling(config, &series));
    anomalies.extend(memory_exhaustion(config, &series));
    anomalies
}

/// Pools at `pool_usage_ratio` or more with requests waiting.
fn pool_saturation(config: &DetectConfig, series: &[Series<'_>]) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    for (family, used_name) in POOL_USED.iter().enumerate() {
        let of = |names: &[&str]| -> Vec<&Series<'_>> {
            series
                .iter()
                .filter(|one| one.base == names[family])
                .collect()
        };
        let maxes = of(POOL_MAX);
        let pendings = of(POOL_PENDING);
        for used in series.iter().filter(|one| one.base == *used_name) {
            if !STATE_KEYS
                .iter()
                .any(|key| used.attribute(key) == Some("used"))
            {
                continue;
            }
            let identity = used.identity_without(STATE_KEYS);
            let (Some(in_use), Some(size), Some(waiting)) = (
                used.level(),
                partner(&maxes, &identity, &[]).and_then(Series::level),
                partner(&pendings, &identity, &[]).and_then(Series::level),
            ) else {
                continue;
            };
            // NaN sizes fail `> 0.0` too, so they are skipped.
            if size.is_nan() || size <= 0.0 || waiting <= 0.0 {
                continue;
            }
            let usage = in_use / size;
            if usage < config.pool_usage_ratio {
                continue;
            }
            let pool = identity
                .iter()
                .find(|(key, _)| key.ends_with("pool.name"))
                .map_or(String::new(), |(_, value)| format!(" {value}"));
            anomalies.push(Anomaly {
                kind: AnomalyKind::Saturation,
                severity: Severity::Critical,
                severe: false,
                measure: format!("{}/max", used.name),
                current: usage * 100.0,
                baseline: config.pool_usage_ratio * 100.0,
                unit: "%".to_owned(),
                summary: format!(
                    "connection pool{pool} {} used ({} of {} connections), {} requests waiting",
                    format_percent(usage),
                    format_value(in_use),
                    format_value(size),
                    format_value(waiting),
                ),
                time_to_limit_secs: None,
            });
        }
    }
    anomalies
}

/// Containers throttled in `cpu_throttled_ratio` of their CFS periods or
/// more.
fn cpu_throttling(config: &DetectConfig, series: &[Series<'_>]) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    for (throttled_name, periods_name) in THROTTLING {
        let all_periods: Vec<&Series<'_>> = series
            .iter()
            .filter(|one| one.base == *periods_name)
            .collect();
        for throttled in series.iter().filter(|one| one.base == *throttled_name) {
            let identity = throttled.identity_without(&[]);
            let (Some(throttled_count), Some(periods)) = (
                throttled.delta(),
                partner(&all_periods, &identity, &[]).and_then(Series::delta),
            ) else {
                continue;
            };
            if periods < MIN_CFS_PERIODS {
                continue;
            }
            let share = (throttled_count / periods).clamp(0.0, 1.0);
            if share < config.cpu_throttled_ratio {
                continue;
            }
            let container = container_of(&identity)
                .map_or(String::new(), |name| format!(" of container {name}"));
            anomalies.push(Anomaly {
                kind: AnomalyKind::Saturation,
                severity: Severity::Critical,
                severe: false,
                measure: format!("{}/{periods_name}", throttled.name),
                current: share * 100.0,
                baseline: config.cpu_throttled_ratio * 100.0,
                unit: "%".to_owned(),
                summary: format!(
                    "CPU{container} throttled in {} of periods ({} of {})",
                    format_percent(share),
                    format_value(throttled_count),
                    format_value(periods),
                ),
                time_to_limit_secs: None,
            });
        }
    }
    anomalies
}

/// Memory rising steadily enough to reach its limit within `trend_horizon`.
fn memory_exhaustion(config: &DetectConfig, series: &[Series<'_>]) -> Vec<Anomaly> {
    let limits: Vec<&Series<'_>> = series
        .iter()
        .filter(|one| MEMORY_LIMIT.contains(&one.base))
        .collect();
    let mut anomalies = Vec::new();
    for usage in series.iter().filter(|one| MEMORY_USAGE.contains(&one.base)) {
        let Some(trend) = usage.trend else {
            continue;
        };
        if trend.slope_per_sec.is_nan()
            || trend.slope_per_sec <= 0.0
            || trend.r2 < config.trend_min_r2
            || trend.duration_secs < config.trend_min_duration.as_secs_f64()
        {
            continue;
        }
        let identity = usage.identity_without(&[]);
        let limit = partner(&limits, &identity, CONTAINER_KEYS)
            .and_then(Series::level)
            .filter(|limit| *limit > 0.0)
            .or_else(|| config.limit_for(usage.name));
        let Some(limit) = limit else {
            continue;
        };
        let time_to_limit = ((limit - trend.last) / trend.slope_per_sec).max(0.0);
        if !time_to_limit.is_finite() || time_to_limit > config.trend_horizon.as_secs_f64() {
            continue;
        }
        anomalies.push(Anomaly {
            kind: AnomalyKind::Saturation,
            severity: Severity::Critical,
            severe: false,
            measure: usage.name.to_owned(),
            current: trend.last,
            baseline: limit,
            unit: "By".to_owned(),
            summary: format!(
                "{} {} rising {}/h, reaches its {} limit in {}",
                usage.name,
                format_value(trend.last),
                format_value(trend.slope_per_sec * 3600.0),
                format_value(limit),
                format_duration(time_to_limit),
            ),
            time_to_limit_secs: Some(time_to_limit),
        });
    }
    anomalies
}

/// The candidate that goes with a series of attributes `identity`: the one
/// with exactly those attributes; else, when `keys` is given, the one that
/// agrees on the first of `keys` both carry (e.g. the container name);
/// else the only candidate, if there is just one.
fn partner<'s, 'a>(
    candidates: &[&'s Series<'a>],
    identity: &[(&str, &str)],
    keys: &[&str],
) -> Option<&'s Series<'a>> {
    if let Some(exact) = candidates
        .iter()
        .find(|candidate| candidate.identity_without(&[]) == identity)
    {
        return Some(exact);
    }
    for key in keys {
        let Some(wanted) = identity
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| *value)
        else {
            continue;
        };
        if let Some(matching) = candidates
            .iter()
            .find(|candidate| candidate.attribute(key) == Some(wanted))
        {
            return Some(matching);
        }
    }
    match candidates {
        [only] => Some(only),
        _ => None,
    }
}

/// The container named in `identity`, if any.
fn container_of<'a>(identity: &[(&str, &'a str)]) -> Option<&'a str> {
    identity
        .iter()
        .find(|(key, _)| CONTAINER_KEYS.contains(key))
        .map(|(_, value)| *value)
}

// === impl Series ===

impl<'a> Series<'a> {
    /// Splits `name` into its base and `key=value` attributes. The store
    /// writes values verbatim, so a value containing `,` or `=` is split
    /// wrongly; that only costs a pairing, never a panic.
    fn new(name: &'a str, stats: &'a WindowStats, trend: Option<&'a Trend>) -> Self {
        let base = base_name(name);
        let attributes = name
            .split_once('{')
            .map(|(_, rest)| rest.strip_suffix('}').unwrap_or(rest))
            .map(|inner| {
                inner
                    .split(',')
                    .filter_map(|pair| pair.split_once('='))
                    .collect()
            })
            .unwrap_or_default();
        Series {
            name,
            base,
            attributes,
            stats,
            trend,
        }
    }

    /// The value of attribute `key`.
    fn attribute(&self, key: &str) -> Option<&'a str> {
        self.attributes
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| *value)
    }

    /// The attributes other than `skip`, sorted, to pair series by.
    fn identity_without(&self, skip: &[&str]) -> Vec<(&'a str, &'a str)> {
        let mut identity: Vec<(&'a str, &'a str)> = self
            .attributes
            .iter()
            .copied()
            .filter(|(key, _)| !skip.contains(key))
            .collect();
        identity.sort_unstable();
        identity
    }

    /// The newest value in the window, for levels.
    fn level(&self) -> Option<f64> {
        let values = &self.stats.values;
        (values.points > 0 && values.last.is_finite()).then_some(values.last)
    }

    /// The total of the window's deltas, for counters.
    fn delta(&self) -> Option<f64> {
        let values = &self.stats.values;
        (values.points > 0 && values.sum.is_finite()).then_some(values.sum.max(0.0))
    }
}

#[cfg(test)]
mod tests;
