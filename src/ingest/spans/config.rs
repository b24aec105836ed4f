//! The `analyze:` section: settings of the span analysis ([`SpanConfig`]),
//! the keys and rules that validate them, and their part of the example
//! config.

use std::num::NonZeroUsize;
use std::time::Duration;

use serde_yaml::Value;

use crate::model::{SpanAttributes, MAX_EXTRA_KEYS};
use crate::validate::{count, describe, duration, positive, share, whole, Checker, Section};

/// Settings of the span analysis (`analyze:` in the YAML file).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanConfig {
    /// Extra span attribute keys the drill-down looks at (at most
    /// [`MAX_EXTRA_KEYS`]; `*.suffix` matches any key ending
    /// so).
    pub attributes: Vec<String>,
    /// Bound on spans waiting in the trace buffer for their parent.
    pub trace_buffer_capacity: NonZeroUsize,
    /// How long (store-clock time) a span waits there for its parent.
    pub trace_buffer_ttl: Duration,
    /// Counters per attribute key, per service and window, in the
    /// drill-down's heavy-hitter sketches.
    pub sketch_size: NonZeroUsize,
    /// Fewest bad spans a value needs before the drill-down reports it.
    pub min_bad_spans: u64,
    /// Smallest share of the bad spans a value needs to be reported.
    pub min_bad_share: f64,
}

impl Default for SpanConfig {
    fn default() -> Self {
        SpanConfig {
            // Tenant-like keys are where data issues concentrate, and cost
            // one sketch per service and window when present.
            attributes: vec!["*.tenant".to_string()],
            trace_buffer_capacity: NonZeroUsize::new(100_000).expect("non-zero"),
            trace_buffer_ttl: Duration::from_secs(30),
            sketch_size: NonZeroUsize::new(32).expect("non-zero"),
            min_bad_spans: 5,
            min_bad_share: 0.2,
        }
    }
}

// === the `analyze:` section of the config file ===

/// Keys of `analyze`.
pub(crate) const ANALYZE_KEYS: &[&str] = &[
    "attributes",
    "trace_buffer",
    "sketch_size",
    "min_bad_spans",
    "min_bad_share",
];
/// Keys of `analyze.trace_buffer`.
pub(crate) const TRACE_BUFFER_KEYS: &[&str] = &["capacity", "ttl"];
/// Most counters per heavy-hitter sketch: each costs about 100 bytes per
/// attribute key, service and window.
const MAX_SKETCH_SIZE: usize = 1_024;

/// The `analyze:` part of the example config (`triage example-config`),
/// with the comment above it.
pub(crate) const EXAMPLE: &str = r#"# Span analysis, for root cause: each span's own (exclusive) time and
# whether its error started in its own service (kept as `own` series beside
# the operations), repeated calls per edge, and which attribute values the
# failing or slow spans share (service.version, pod, host, region, zone,
# environment, http.route, rpc.method, feature flags, plus the keys below).
analyze:
  # Extra span attribute keys for the drill-down (at most 8); `*.tenant`
  # matches every key ending in `.tenant` (watched by default: a failure
  # that hits one customer shows there).
  attributes: ["*.tenant"]
  # Spans wait here for their parent span.
  trace_buffer:
    # Most spans waiting at once; more are dropped and counted.
    capacity: 100000
    # How long a span waits (event time) before it is dropped.
    ttl: 30s
  # Counters per attribute key, service and window: values beyond the most
  # frequent ones share the remaining counts (bounded memory).
  sketch_size: 32
  # A value is reported only when at least this many bad spans carry it...
  min_bad_spans: 5
  # ...making up at least this share of all bad spans.
  min_bad_share: 0.2
"#;

/// Reads the `analyze` section into `analyze`.
pub(crate) fn check(checker: &mut Checker, top: &Section<'_>, analyze: &mut SpanConfig) {
    let section = checker.section(top, "analyze", ANALYZE_KEYS);
    analyze_attributes(checker, &section, &mut analyze.attributes);
    let buffer = checker.section(&section, "trace_buffer", TRACE_BUFFER_KEYS);
    checker.field(
        &buffer,
        "capacity",
        &mut analyze.trace_buffer_capacity,
        |value| count(value, 1, usize::MAX),
    );
    checker.field(&buffer, "ttl", &mut analyze.trace_buffer_ttl, |value| {
        positive(duration(value)?)
    });
    checker.field(&section, "sketch_size", &mut analyze.sketch_size, |value| {
        count(value, 1, MAX_SKETCH_SIZE)
    });
    checker.field(&section, "min_bad_spans", &mut analyze.min_bad_spans, whole);
    checker.field(&section, "min_bad_share", &mut analyze.min_bad_share, share);
}

/// `analyze.attributes`: at most `MAX_EXTRA_KEYS` span attribute keys,
/// exact or `*.suffix`, none of them one the drill-down reads anyway.
fn analyze_attributes(checker: &mut Checker, section: &Section<'_>, target: &mut Vec<String>) {
    let path = section.key_path("attributes");
    let items = match section.get("attributes") {
        None => return,
        Some(Value::Sequence(items)) => items,
        Some(other) => {
            checker.report(
                path,
                format!(
                    "expected a list of span attribute keys such as [\"app.tenant\"], got {}",
                    describe(other)
                ),
            );
            return;
        }
    };
    let mut keys: Vec<String> = Vec::with_capacity(items.len());
    let mut all_ok = true;
    for (index, item) in items.iter().enumerate() {
        let problem = match item {
            Value::String(key) if key.is_empty() || key == "*" => {
                Some("an empty key matches nothing".to_string())
            }
            Value::String(key) if key.strip_prefix('*').unwrap_or(key).contains('*') => {
                Some(format!("{key:?}: `*` may only start a key (`*.tenant`)"))
            }
            Value::String(key) if SpanAttributes::reads(key.as_bytes()) => Some(format!(
                "{key:?} is read already; the drill-down covers it without listing it"
            )),
            Value::String(key) if keys.contains(key) => Some(format!("{key:?} is listed twice")),
            Value::String(key) => {
                keys.push(key.clone());
                None
            }
            other => Some(format!(
                "expected an attribute key such as \"app.tenant\", got {}",
                describe(other)
            )),
        };
        if let Some(problem) = problem {
            all_ok = false;
            checker.report(format!("{path}[{index}]"), problem);
        }
    }
    if keys.len() > MAX_EXTRA_KEYS {
        all_ok = false;
        checker.report(
            path,
            format!(
                "{} keys listed; at most {MAX_EXTRA_KEYS} are looked up per span",
                keys.len()
            ),
        );
    }
    if all_ok {
        *target = keys;
    }
}
