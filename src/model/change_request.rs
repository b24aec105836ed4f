//! The JSON a tool posts to `POST /api/v1/changes`, and the query of
//! `GET /api/v1/changes`, validated into a [`Change`] and a
//! [`ChangeFilter`]. The admin listener does the HTTP; this module decides
//! what is valid, so the rules are tested without a server.
//!
//! Every problem is reported with the field it is about, all at once, so a
//! pipeline author fixes a request in one go. Unknown fields are refused
//! rather than ignored: a misspelt `verison` would otherwise vanish. The
//! same fields, read from a log record's attributes, are how a change is
//! announced in the telemetry (`ingest::announced`).

use serde_json::{Map, Value};

use crate::model::{Change, ChangeFilter, ChangeKind, ChangeSource};

/// Largest request body accepted, in bytes. A change is a few hundred bytes;
/// anything near this is a mistake (a log file piped into curl).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Fields of a posted change, as documented in docs/CHANGES.md.
pub const FIELDS: &[&str] = &[
    "service",
    "kind",
    "version",
    "key",
    "value",
    "description",
    "time",
    "link",
    "id",
];

/// Longest `service`, `version`, `key` or `value`, in bytes.
const MAX_NAME_LEN: usize = 256;
/// Longest `description` or `link`, in bytes.
const MAX_TEXT_LEN: usize = 4096;
/// How far in the future a posted time may be: clocks of CI runners drift,
/// but a change dated tomorrow is a wrong time zone or a typo.
const MAX_FUTURE_NANOS: u64 = 24 * 60 * 60 * 1_000_000_000;

/// One thing wrong with a request, and the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldProblem {
    /// The field (`service`, `time`, ...), or `body` for the whole request.
    pub field: String,
    /// What is wrong and what is expected instead.
    pub message: String,
}

/// Why a posted change or a list query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe(.problems))]
pub struct RequestError {
    /// Every problem found, in field order.
    pub problems: Vec<FieldProblem>,
}

fn describe(problems: &[FieldProblem]) -> String {
    problems
        .iter()
        .map(|problem| format!("{}: {}", problem.field, problem.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl RequestError {
    fn one(field: &str, message: impl Into<String>) -> Self {
        RequestError {
            problems: vec![FieldProblem {
                field: field.to_owned(),
                message: message.into(),
            }],
        }
    }
}

/// Collects problems while reading fields.
#[derive(Default)]
struct Problems(Vec<FieldProblem>);

impl Problems {
    fn report(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldProblem {
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// The string under `field`, if present; a non-string or an over-long
    /// one is a problem.
    fn text(&mut self, body: &Map<String, Value>, field: &str, max: usize) -> Option<String> {
        match body.get(field)? {
            Value::Null => None,
            Value::String(text) if text.len() > max => {
                self.report(field, format!("must be at most {max} bytes long"));
                None
            }
            Value::String(text) => Some(text.clone()),
            other => {
                self.report(field, format!("must be a string, got {}", kind_of(other)));
                None
            }
        }
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads a posted change. `now_unix_nanos` is its time when the body gives
/// none. The change comes back with id 0 and source `api`.
pub fn parse_change(body: &[u8], now_unix_nanos: u64) -> Result<Change, RequestError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| RequestError::one("body", format!("not valid JSON: {error}")))?;
    let Value::Object(body) = value else {
        return Err(RequestError::one(
            "body",
            format!("must be a JSON object, got {}", kind_of(&value)),
        ));
    };
    parse_fields(&body, now_unix_nanos)
}

/// Reads a change from its fields (the JSON body's, or a log record's
/// attributes mapped to them: see `ingest::announced`), with the same rules
/// and the same problems. `now_unix_nanos` is its time when it gives none.
pub fn parse_fields(
    body: &Map<String, Value>,
    now_unix_nanos: u64,
) -> Result<Change, RequestError> {
    let mut problems = Problems::default();
    for key in body.keys() {
        if !FIELDS.contains(&key.as_str()) {
            problems.report(
                key,
                format!("unknown field, expected one of {}", FIELDS.join(", ")),
            );
        }
    }
    let absent = |field: &str| body.get(field).is_none_or(Value::is_null);
    let service = problems.text(body, "service", MAX_NAME_LEN);
    match service.as_deref() {
        None if absent("service") => {
            problems.report("service", "is required: the service that changed")
        }
        Some(service) if service.trim().is_empty() => {
            problems.report("service", "must not be empty")
        }
        _ => {}
    }
    let kinds = ChangeKind::ALL.map(ChangeKind::as_str).join(", ");
    let kind = match problems.text(body, "kind", MAX_NAME_LEN) {
        None => {
            if absent("kind") {
                problems.report("kind", format!("is required: one of {kinds}"));
            }
            None
        }
        Some(text) => {
            let kind = ChangeKind::parse(&text);
            if kind.is_none() {
                problems.report(
                    "kind",
                    format!("unknown kind \"{text}\", expected one of {kinds}"),
                );
            }
            kind
        }
    };
    let version = problems.text(body, "version", MAX_NAME_LEN);
    let key = problems.text(body, "key", MAX_NAME_LEN);
    let value = problems.text(body, "value", MAX_NAME_LEN);
    // A blank description reads as none: the default says more (a CI
    // template whose variables came out empty would otherwise store "").
    let description = problems
        .text(body, "description", MAX_TEXT_LEN)
        .filter(|text| !text.trim().is_empty());
    let link = problems.text(body, "link", MAX_TEXT_LEN);
    let external_id = problems
        .text(body, "id", MAX_NAME_LEN)
        .filter(|id| !id.trim().is_empty());
    if kind == Some(ChangeKind::FeatureFlag) && key.is_none() && absent("key") {
        problems.report(
            "key",
            "is required for a feature_flag change: the flag's key",
        );
    }
    if let Some(link) = &link {
        if !(link.starts_with("https://") || link.starts_with("http://")) {
            problems.report("link", "must be an http:// or https:// URL");
        }
    }
    let time = match problems.text(body, "time", MAX_NAME_LEN) {
        None => Some(now_unix_nanos),
        Some(text) => match parse_rfc3339(&text) {
            Ok(time) if time > now_unix_nanos.saturating_add(MAX_FUTURE_NANOS) => {
                problems.report(
                    "time",
                    format!("\"{text}\" is more than a day in the future; check the time zone"),
                );
                None
            }
            Ok(time) => Some(time),
            Err(message) => {
                problems.report("time", message);
                None
            }
        },
    };
    match (service, kind, time) {
        (Some(service), Some(kind), Some(time)) if problems.0.is_empty() => {
            let service = service.trim().to_owned();
            let description = description.unwrap_or_else(|| {
                default_description(
                    &service,
                    kind,
                    version.as_deref(),
                    key.as_deref(),
                    value.as_deref(),
                )
            });
            Ok(Change {
                id: 0,
                service,
                kind,
                version,
                key,
                value,
                description,
                time_unix_nanos: time,
                link,
                external_id,
                source: ChangeSource::Api,
            })
        }
        _ => Err(RequestError {
            problems: problems.0,
        }),
    }
}

/// A description for a change posted without one.
fn default_description(
    service: &str,
    kind: ChangeKind,
    version: Option<&str>,
    key: Option<&str>,
    value: Option<&str>,
) -> String {
    let subject = match (version, key, value) {
        (Some(version), _, _) => format!(" {version}"),
        (None, Some(key), Some(value)) => format!(" {key} = {value}"),
        (None, Some(key), None) => format!(" {key}"),
        _ => String::new(),
    };
    format!("{service}: {}{subject}", kind.as_str().replace('_', " "))
}

/// Reads the query of `GET /api/v1/changes`: `service`, `kind`, `since`
/// and `until` (RFC 3339), each optional. Unknown parameters are refused.
pub fn parse_filter<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<ChangeFilter, RequestError> {
    let mut filter = ChangeFilter::default();
    let mut problems = Problems::default();
    for (name, value) in pairs {
        match name {
            "service" => filter.service = Some(value.to_owned()),
            "kind" => match ChangeKind::parse(value) {
                Some(kind) => filter.kind = Some(kind),
                None => problems.report(
                    "kind",
                    format!(
                        "unknown kind \"{value}\", expected one of {}",
                        ChangeKind::ALL.map(ChangeKind::as_str).join(", ")
                    ),
                ),
            },
            "since" | "until" => match parse_rfc3339(value) {
                Ok(time) if name == "since" => filter.since_unix_nanos = Some(time),
                Ok(time) => filter.until_unix_nanos = Some(time),
                Err(message) => problems.report(name, message),
            },
            other => problems.report(
                other,
                "unknown parameter, expected service, kind, since or until",
            ),
        }
    }
    if problems.0.is_empty() {
        Ok(filter)
    } else {
        Err(RequestError {
            problems: problems.0,
        })
    }
}

/// Parses an RFC 3339 timestamp (`2024-05-01T12:30:00Z`,
/// `2024-05-01T14:30:00.250+02:00`) into Unix nanoseconds.
pub fn parse_rfc3339(text: &str) -> Result<u64, String> {
    let invalid = || {
        format!(
            "\"{text}\" is not an RFC 3339 time; write e.g. \"2024-05-01T12:30:00Z\" \
             or \"2024-05-01T14:30:00+02:00\""
        )
    };
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u64> {
        let part = bytes.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let separator =
        |index: usize, allowed: &[u8]| bytes.get(index).is_some_and(|byte| allowed.contains(byte));
    if !(separator(4, b"-")
        && separator(7, b"-")
        && separator(10, b"Tt ")
        && separator(13, b":")
        && separator(16, b":"))
    {
        return Err(invalid());
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        digits(0..4),
        digits(5..7),
        digits(8..10),
        digits(11..13),
        digits(14..16),
        digits(17..19),
    ) else {
        return Err(invalid());
    };
    let mut rest = &text[19..];
    let mut fraction_nanos: u64 = 0;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let length = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if length == 0 {
            return Err(invalid());
        }
        // Digits past nanoseconds are dropped.
        let kept = &after_dot[..length.min(9)];
        let value: u64 = kept.parse().map_err(|_| invalid())?;
        fraction_nanos = value * 10u64.pow(9 - kept.len() as u32);
        rest = &after_dot[length..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return Err(invalid()),
            };
            let offset = &rest.as_bytes()[1..];
            if offset.len() != 5 || offset[2] != b':' {
                return Err(invalid());
            }
            let number = |part: &[u8]| -> Option<i64> {
                if !part.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                std::str::from_utf8(part).ok()?.parse().ok()
            };
            let (Some(hours), Some(minutes)) = (number(&offset[..2]), number(&offset[3..])) else {
                return Err(invalid());
            };
            if hours > 23 || minutes > 59 {
                return Err(invalid());
            }
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let valid_day = (1..=12).contains(&month)
        && day >= 1
        && day <= month_days[(month as usize).saturating_sub(1).min(11)];
    // Second 60 is a leap second; it is read as the next second's start.
    if !valid_day || hour > 23 || minute > 59 || second > 60 {
        return Err(format!("\"{text}\" is not a valid date and time"));
    }
    let days = days_from_civil(year as i64, month as i64, day as i64);
    let seconds = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64 - offset_secs;
    if seconds < 0 {
        return Err(format!("\"{text}\" is before 1970"));
    }
    (seconds as u64)
        .checked_mul(1_000_000_000)
        .and_then(|nanos| nanos.checked_add(fraction_nanos))
        .ok_or_else(|| format!("\"{text}\" is too far in the future"))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm, the
/// inverse of the one `detect::incident::rfc3339` uses).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_index = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests;
