//! The machinery that reads a YAML config section by hand and collects
//! every problem with its path.
//!
//! The config file is read as a generic `serde_yaml::Value` tree rather than
//! derived into `#[serde(deny_unknown_fields)]` structs, because serde stops
//! at the first error while someone fixing a config file wants every problem,
//! each with its field path, in one go. Each section's keys, rules and
//! example live beside its settings type (`api:` in `query::config`, `store:`
//! in `store::config`, ...) and use what is here: a [`Checker`] that collects
//! [`Problem`]s, the [`Section`] being read, and the value parsers, which
//! return a message without the path so one parser serves both the file and
//! the command-line overrides.
//!
//! A leaf: nothing here knows any section, so every section module may use
//! it.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

/// Bytes in one MiB, the unit the file uses for message sizes.
pub const MIB: usize = 1024 * 1024;

/// Largest message size accepted, in MiB. Receivers buffer a whole message,
/// so a bigger limit is more likely a typo than a need.
const MAX_SIZE_MIB: f64 = 1024.0;

/// Bounds of every listener's connection settings (`receivers.otlp.*`,
/// `admin`, `api`), one place for all of them.
pub(crate) mod listener_bounds {
    use std::time::Duration;

    /// Most connections one listener may be allowed. Each takes a file
    /// descriptor, and open-files limits past a million are rare.
    pub(crate) const MAX_MAX_CONNECTIONS: usize = 1 << 20;
    /// Most concurrent gRPC streams per connection that may be configured.
    pub(crate) const MAX_CONCURRENT_STREAMS: usize = 10_000;
    /// Longest `read_header_timeout`: headers are a few hundred bytes.
    pub(crate) const MAX_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(5 * 60);
    /// Longest `read_timeout` and `request_timeout`.
    pub(crate) const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(60 * 60);
    /// Longest `idle_timeout` and `keepalive_interval`.
    pub(crate) const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
    /// Shortest `keepalive_interval`: pinging every client more often than
    /// once a second is load, not liveness checking.
    pub(crate) const MIN_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
    /// Longest `keepalive_timeout`.
    pub(crate) const MAX_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
}

/// One wrong value: where it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the key in the file (`store.window`,
    /// `store.metric_attributes[2]`), or the flag and environment variable
    /// of an override.
    pub path: String,
    /// What is wrong and what is expected instead.
    pub message: String,
}

/// Collects every problem found while reading the document and the
/// overrides, so that all of them are reported at once.
#[derive(Debug, Default)]
pub struct Checker {
    /// Problems found so far, in the order found (document order).
    problems: Vec<Problem>,
}

/// One mapping of the document being read, and where it sits in it.
#[derive(Debug)]
pub struct Section<'a> {
    /// Dotted path of this mapping; empty for the document itself.
    path: String,
    /// Its entries; `None` when the section is absent, null, or not a
    /// mapping (the last one already reported), so every key reads as unset.
    entries: Option<&'a Mapping>,
}

// === impl Checker ===

impl Checker {
    /// Records a problem.
    pub fn report(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Opens the mapping at `path` (the document itself when `path` is
    /// empty), reporting each key not in `known` and a value that is not a
    /// mapping at all.
    pub fn open<'a>(
        &mut self,
        path: String,
        value: Option<&'a Value>,
        known: &[&str],
    ) -> Section<'a> {
        let entries = match value {
            // A section with everything under it commented out is null;
            // that means "all defaults", like leaving it out.
            None | Some(Value::Null) => None,
            Some(Value::Mapping(entries)) => {
                for key in entries.keys() {
                    let name = key_name(key);
                    if !known.contains(&name.as_str()) {
                        self.report(
                            join(&path, &name),
                            format!("unknown field `{name}`, expected one of {}", list(known)),
                        );
                    }
                }
                Some(entries)
            }
            Some(other) => {
                let at = if path.is_empty() {
                    "(top level)"
                } else {
                    path.as_str()
                };
                self.report(
                    at,
                    format!(
                        "expected a mapping with keys {}, got {}",
                        list(known),
                        describe(other)
                    ),
                );
                None
            }
        };
        Section { path, entries }
    }

    /// Opens the mapping under `key` of `parent`.
    pub fn section<'a>(&mut self, parent: &Section<'a>, key: &str, known: &[&str]) -> Section<'a> {
        self.open(parent.key_path(key), parent.get(key), known)
    }

    /// Reads the value under `key` of `section` into `target`, which keeps
    /// its default when the key is absent. Returns whether `target` now holds
    /// a value from the file or the default, that is, whether rules between
    /// fields may use it.
    pub fn field<T>(
        &mut self,
        section: &Section<'_>,
        key: &str,
        target: &mut T,
        parse: impl FnOnce(&Value) -> Result<T, String>,
    ) -> bool {
        let Some(value) = section.get(key) else {
            return true;
        };
        if value.is_null() {
            // `window:` with nothing after it is more likely an unfinished
            // edit than a wish for the default, so it is not silently accepted.
            self.report(
                section.key_path(key),
                "no value given; write one, or remove the key to use the default",
            );
            return false;
        }
        match parse(value) {
            Ok(parsed) => {
                *target = parsed;
                true
            }
            Err(message) => {
                self.report(section.key_path(key), message);
                false
            }
        }
    }

    /// Applies one override, if given, to `target`; a bad value is a problem
    /// named by `label`.
    pub fn apply<T>(
        &mut self,
        label: &str,
        given: Option<&str>,
        target: &mut T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) {
        if let Some(text) = given {
            match parse(text) {
                Ok(parsed) => *target = parsed,
                Err(message) => self.report(label, message),
            }
        }
    }

    /// Reports that `key` of `section` (a severe threshold) is below `other`
    /// (the ordinary one), which would make severe easier than ordinary.
    pub fn report_below(
        &mut self,
        section: &Section<'_>,
        key: &str,
        value: f64,
        other: &str,
        bound: f64,
    ) {
        let other_path = section.key_path(other);
        self.report(
            section.key_path(key),
            format!(
                "{value}{} is less than {other_path} ({bound}); \
                 a severe deviation must be at least as large as an ordinary one",
                default_note(section, key),
            ),
        );
    }

    /// Reads a list of metric name patterns, reporting each bad entry at its
    /// own index.
    pub fn patterns(&mut self, section: &Section<'_>, key: &str, target: &mut Vec<String>) {
        let path = section.key_path(key);
        match section.get(key) {
            None => {}
            Some(Value::Sequence(items)) => {
                let mut patterns = Vec::with_capacity(items.len());
                let mut all_ok = true;
                for (index, item) in items.iter().enumerate() {
                    match item {
                        Value::String(pattern) if !pattern.is_empty() => {
                            patterns.push(pattern.clone())
                        }
                        other => {
                            all_ok = false;
                            self.report(
                                format!("{path}[{index}]"),
                                format!(
                                    "expected a metric name pattern such as \"db.client.*\", got {}",
                                    describe(other)
                                ),
                            );
                        }
                    }
                }
                if all_ok {
                    *target = patterns;
                }
            }
            Some(other) => self.report(
                path,
                format!(
                    "expected a list of metric name patterns such as [\"process.memory.usage\"], got {}",
                    describe(other)
                ),
            ),
        }
    }

    /// Reads `limits` (metric name pattern -> positive number), reporting
    /// each bad entry at its own key.
    pub fn limits(
        &mut self,
        section: &Section<'_>,
        target: &mut std::collections::BTreeMap<String, f64>,
    ) {
        let path = section.key_path("limits");
        match section.get("limits") {
            // `limits:` with nothing after it: no limits, like `{}`.
            None | Some(Value::Null) => {}
            Some(Value::Mapping(entries)) => {
                let mut limits = std::collections::BTreeMap::new();
                let mut all_ok = true;
                for (key, value) in entries {
                    let name = key_name(key);
                    let entry_path = format!("{path}.{name}");
                    if !matches!(key, Value::String(pattern) if !pattern.is_empty()) {
                        all_ok = false;
                        self.report(
                            entry_path,
                            "expected a metric name pattern such as \"process.memory.usage\" as the key",
                        );
                        continue;
                    }
                    match real(value, Bound::Open(0.0), Bound::Unbounded) {
                        Ok(limit) => {
                            limits.insert(name, limit);
                        }
                        Err(message) => {
                            all_ok = false;
                            self.report(entry_path, message);
                        }
                    }
                }
                if all_ok {
                    *target = limits;
                }
            }
            Some(other) => self.report(
                path,
                format!(
                    "expected a mapping of metric name pattern to limit, \
                     such as {{process.memory.usage: 2147483648}}, got {}",
                    describe(other)
                ),
            ),
        }
    }

    /// `value` when no problem was found, else every problem, in the order
    /// found.
    pub fn finish<T>(self, value: T) -> Result<T, Vec<Problem>> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(self.problems)
        }
    }
}

// === impl Section ===

impl<'a> Section<'a> {
    /// The value under `key`, if the key is present.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.entries.and_then(|entries| entries.get(key))
    }

    /// The dotted path of `key` in this section.
    pub fn key_path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Whether the section is present as a mapping (absent, null, or not a
    /// mapping all read as unset).
    pub fn is_present(&self) -> bool {
        self.entries.is_some()
    }
}

// === impl Problem ===

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

// === value parsers ===
//
// Each returns a message without the path; `Checker` adds where the value
// came from, so one parser serves both the file and the overrides.

/// A listening address given as a YAML value.
pub fn endpoint(value: &Value, port: u16) -> Result<SocketAddr, String> {
    let expected = format!("an address such as \"0.0.0.0:{port}\"");
    socket_addr(text(value, &expected)?, port)
}

/// `IP:port` (IPv6 in brackets) or `localhost:port`; `port` is the one the
/// examples in the message use.
pub fn socket_addr(text: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    // Only `localhost` is resolved, and without DNS: binding to whatever a
    // name resolves to at start-up would make the listening address depend
    // on the resolver.
    if let Some(local_port) = text.strip_prefix("localhost:") {
        if let Ok(local_port) = local_port.parse::<u16>() {
            return Ok(localhost(local_port));
        }
    }
    Err(format!(
        "\"{text}\" is not a socket address; write IP:port, \
         e.g. \"0.0.0.0:{port}\", \"[::]:{port}\" or \"localhost:{port}\""
    ))
}

/// A file name given as a YAML value.
pub fn file_path(value: &Value) -> Result<PathBuf, String> {
    let name = text(value, "a file path")?;
    if name.trim().is_empty() {
        return Err("expected a file path, got an empty string".to_owned());
    }
    Ok(PathBuf::from(name))
}

/// A file named in the config (read later, when it is used).
pub fn named_file(value: &Value) -> Result<PathBuf, String> {
    let name = text(value, "a file path")?;
    if name.trim().is_empty() {
        return Err("expected a file path, got an empty string".to_owned());
    }
    Ok(PathBuf::from(name))
}

/// A size in MiB (possibly fractional), returned in bytes.
pub fn size_mib(value: &Value) -> Result<usize, String> {
    let Value::Number(number) = value else {
        return Err(format!(
            "expected a size in MiB such as 4, got {}",
            describe(value)
        ));
    };
    let mib = number.as_f64().unwrap_or(f64::NAN);
    // Written so that NaN fails too.
    if !(mib > 0.0 && mib <= MAX_SIZE_MIB) {
        return Err(format!(
            "must be more than 0 and at most {MAX_SIZE_MIB} (MiB), got {number}"
        ));
    }
    // In range by the check above, so the cast cannot truncate.
    let bytes = (mib * MIB as f64).round() as usize;
    if bytes == 0 {
        return Err(format!("{number} MiB is less than one byte"));
    }
    Ok(bytes)
}

/// One end of the range a number must lie in.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    /// The end itself is allowed.
    Closed(f64),
    /// Only values strictly inside are allowed.
    Open(f64),
    /// No limit on this side.
    Unbounded,
}

/// A finite number between `low` and `high`.
pub fn real(value: &Value, low: Bound, high: Bound) -> Result<f64, String> {
    let Value::Number(number) = value else {
        return Err(format!("expected a number, got {}", describe(value)));
    };
    let amount = number.as_f64().unwrap_or(f64::NAN);
    let above = match low {
        Bound::Closed(min) => amount >= min,
        Bound::Open(min) => amount > min,
        Bound::Unbounded => true,
    };
    let below = match high {
        Bound::Closed(max) => amount <= max,
        Bound::Open(max) => amount < max,
        Bound::Unbounded => true,
    };
    // NaN fails every comparison above; infinities are refused here.
    if above && below && amount.is_finite() {
        return Ok(amount);
    }
    let low_text = match low {
        Bound::Closed(min) => Some(format!("at least {min}")),
        Bound::Open(min) => Some(format!("more than {min}")),
        Bound::Unbounded => None,
    };
    let high_text = match high {
        Bound::Closed(max) => Some(format!("at most {max}")),
        Bound::Open(max) => Some(format!("less than {max}")),
        Bound::Unbounded => None,
    };
    let range = match (low_text, high_text) {
        (Some(low), Some(high)) => format!("{low} and {high}"),
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => "a finite number".to_owned(),
    };
    Err(format!("must be {range}, got {number}"))
}

/// A probability or significance level, strictly between 0 and 1.
pub fn probability(value: &Value) -> Result<f64, String> {
    real(value, Bound::Open(0.0), Bound::Open(1.0))
}

/// A share of a whole, more than 0 and at most 1.
pub fn share(value: &Value) -> Result<f64, String> {
    real(value, Bound::Open(0.0), Bound::Closed(1.0))
}

/// A multiple that means "more than usual": above 1.
pub fn above_one(value: &Value) -> Result<f64, String> {
    real(value, Bound::Open(1.0), Bound::Unbounded)
}

/// A threshold that may be 0 (off) but not negative.
pub fn non_negative(value: &Value) -> Result<f64, String> {
    real(value, Bound::Closed(0.0), Bound::Unbounded)
}

/// A whole number of at least 1, as a count of requests.
pub fn whole(value: &Value) -> Result<u64, String> {
    // usize is at most 64 bits on every target Rust supports.
    Ok(count(value, 1, usize::MAX)?.get() as u64)
}

/// `true` or `false`.
pub fn flag(value: &Value) -> Result<bool, String> {
    match value {
        Value::Bool(flag) => Ok(*flag),
        other => Err(format!(
            "expected `true` or `false`, got {}",
            describe(other)
        )),
    }
}

/// A whole number from `min` to `max`; `min` is at least 1.
pub fn count(value: &Value, min: usize, max: usize) -> Result<NonZeroUsize, String> {
    let Value::Number(number) = value else {
        return Err(format!("expected a whole number, got {}", describe(value)));
    };
    let whole = match number.as_u64() {
        // Saturating is fine: a count past usize::MAX is over any `max`.
        Some(whole) => usize::try_from(whole).unwrap_or(usize::MAX),
        // Negative: below any `min`.
        None if number.as_i64().is_some() => 0,
        None => return Err(format!("expected a whole number, got {number}")),
    };
    let range = if max == usize::MAX {
        format!("must be at least {min}, got {number}")
    } else {
        format!("must be from {min} to {max}, got {number}")
    };
    NonZeroUsize::new(whole)
        .filter(|_| (min..=max).contains(&whole))
        .ok_or(range)
}

/// A duration given as a YAML value.
pub fn duration(value: &Value) -> Result<Duration, String> {
    match value {
        Value::String(text) => parse_duration(text),
        // A bare YAML number gets the same "add a unit" advice as a quoted one.
        Value::Number(number) => parse_duration(&number.to_string()),
        other => Err(format!(
            "expected a duration such as \"10s\", got {}",
            describe(other)
        )),
    }
}

/// Parses one or more `<number><unit>` parts ("500ms", "1.5h", "1m30s") and
/// adds them up. Units are ms, s, m, h and d; numbers may have decimals.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let text = text.trim();
    let not_a_duration = || {
        format!(
            "\"{text}\" is not a duration; write a number with a unit (ms, s, m, h or d), \
             e.g. \"500ms\", \"10s\" or \"1m30s\""
        )
    };
    let too_long = || format!("\"{text}\" is too long a duration");
    if text.is_empty() {
        return Err(not_a_duration());
    }
    if text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "\"{text}\" is not a duration; write it with a unit, e.g. \"{text}s\""
        ));
    }

    // Nanoseconds, in u128 so that no sum of parts a u64 of seconds can hold
    // overflows on the way.
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        rest = after;

        let unit_nanos: u128 = match unit {
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 60 * 60 * NANOS_PER_SEC,
            "d" => 24 * 60 * 60 * NANOS_PER_SEC,
            _ => return Err(not_a_duration()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(not_a_duration());
        }
        // Digits past the 18th are worth less than a nanosecond even in days,
        // so they are dropped rather than allowed to overflow the arithmetic.
        // Only ASCII digits remain here, so slicing by bytes is safe.
        let fraction = &fraction[..fraction.len().min(18)];
        // `whole` holds only digits, so failing to parse means overflow.
        let whole: u128 = match whole {
            "" => 0,
            digits => digits.parse().map_err(|_| too_long())?,
        };
        let fraction_nanos = match fraction {
            "" => 0,
            digits => {
                let numerator: u128 = digits.parse().map_err(|_| not_a_duration())?;
                // At most 10^18 * 8.64 * 10^13, far inside u128.
                numerator * unit_nanos / 10u128.pow(digits.len() as u32)
            }
        };
        total = whole
            .checked_mul(unit_nanos)
            .and_then(|nanos| nanos.checked_add(fraction_nanos))
            .and_then(|nanos| nanos.checked_add(total))
            .ok_or_else(too_long)?;
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| too_long())?;
    // A remainder of a division by 10^9 always fits in u32.
    Ok(Duration::new(secs, (total % NANOS_PER_SEC) as u32))
}

/// `duration` if it is more than zero.
pub fn positive(duration: Duration) -> Result<Duration, String> {
    if duration.is_zero() {
        Err("must be more than 0s".to_owned())
    } else {
        Ok(duration)
    }
}

/// `duration` if it is at least `min`.
pub fn at_least(duration: Duration, min: Duration) -> Result<Duration, String> {
    if duration < min {
        Err(format!(
            "must be at least {}, got {}",
            format_duration(min),
            format_duration(duration)
        ))
    } else {
        Ok(duration)
    }
}

/// `duration` if it is at most `max`.
pub fn at_most(duration: Duration, max: Duration) -> Result<Duration, String> {
    if duration > max {
        Err(format!(
            "must be at most {}, got {}",
            format_duration(max),
            format_duration(duration)
        ))
    } else {
        Ok(duration)
    }
}

/// The string in `value`, or a message saying `expected` was wanted.
pub fn text<'v>(value: &'v Value, expected: &str) -> Result<&'v str, String> {
    match value {
        Value::String(text) => Ok(text),
        other => Err(format!("expected {expected}, got {}", describe(other))),
    }
}

// === helpers ===

/// `127.0.0.1:port`.
pub fn localhost(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// `parent.key`, or `key` at the top level.
fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// A mapping key as text; keys are meant to be strings, but YAML allows
/// others and they are reported as unknown fields.
pub fn key_name(key: &Value) -> String {
    match key {
        Value::String(name) => name.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Null => "~".to_owned(),
        _ => "?".to_owned(),
    }
}

/// What a value is, for "expected X, got Y" messages.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".to_owned(),
        Value::Bool(flag) => format!("`{flag}`"),
        Value::Number(number) => number.to_string(),
        Value::String(text) => format!("\"{text}\""),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(tagged) => format!("a value tagged {}", tagged.tag),
    }
}

/// `` `a`, `b`, `c` ``.
fn list(keys: &[&str]) -> String {
    keys.iter()
        .map(|key| format!("`{key}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// " (the default)" when `key` is absent from `section`, so a message about a
/// rule between fields says which side the user did not write.
pub fn default_note(section: &Section<'_>, key: &str) -> &'static str {
    if section.get(key).is_none() {
        " (the default)"
    } else {
        ""
    }
}

/// A duration in the largest unit that shows it exactly, as the file would
/// write it ("15m" rather than "900s").
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    let units: [(u128, &str); 5] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
    ];
    for (unit_nanos, unit) in units {
        if nanos > 0 && nanos.is_multiple_of(unit_nanos) {
            return format!("{}{unit}", nanos / unit_nanos);
        }
    }
    // Zero, or not a whole number of milliseconds: Debug writes both sensibly.
    format!("{duration:?}")
}

/// `problems`, one per line, as a config error shows them.
pub fn display_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The files and flag of a TLS client's `tls` section.
#[derive(Debug, Default)]
pub struct ClientTlsFields {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

/// Reads a TLS client's `tls` section (`ca_file`, `cert_file`, `key_file`,
/// `insecure_skip_verify`); `cert_file` and `key_file` go together.
pub fn client_tls(checker: &mut Checker, section: &Section<'_>) -> ClientTlsFields {
    let mut tls = ClientTlsFields::default();
    for (key, target) in [
        ("ca_file", &mut tls.ca_file),
        ("cert_file", &mut tls.cert_file),
        ("key_file", &mut tls.key_file),
    ] {
        checker.field(section, key, target, |value| named_file(value).map(Some));
    }
    checker.field(
        section,
        "insecure_skip_verify",
        &mut tls.insecure_skip_verify,
        flag,
    );
    for (given, missing) in [("cert_file", "key_file"), ("key_file", "cert_file")] {
        if section.get(given).is_some() && section.get(missing).is_none() {
            checker.report(
                section.key_path(missing),
                format!("missing; required with {given}"),
            );
        }
    }
    tls
}
