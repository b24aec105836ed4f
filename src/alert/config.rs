//! The `alerting:` section: typed settings of alert delivery
//! ([`AlertConfig`]), the keys, value checks and rules that validate them,
//! and their part of the example config.
//!
//! Invariant: an [`AlertConfig`] holds only checked values: http(s) URLs with
//! a host, label names Alertmanager accepts and that do not replace the
//! labels triage sets itself, and a runbook template whose placeholders are
//! all known. Files (passwords, tokens, certificates) are only named here;
//! they are read when delivery starts, so that a missing file fails start-up
//! naming the file.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde_yaml::Value;

use crate::validate::{
    at_least, client_tls, count, describe, duration, key_name, named_file, positive, text, Checker,
    Section,
};

/// Labels triage sets on every alert; static labels may not replace them,
/// because grouping, routing and inhibition depend on them.
pub const RESERVED_LABELS: &[&str] = &[
    "alertname",
    "severity",
    "service",
    "operation",
    "incident_id",
    "root_cause_service",
    "role",
];

/// Placeholders a `runbook_url` template may use, each replaced by the
/// label of the same name (percent-encoded).
pub const RUNBOOK_PLACEHOLDERS: &[&str] = &[
    "alertname",
    "severity",
    "service",
    "operation",
    "incident_id",
    "root_cause_service",
];

/// Where and how alerts are delivered. With no targets nothing is sent and
/// no task runs.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertConfig {
    /// Alertmanagers (v2 API); every alert goes to every one of them.
    pub alertmanagers: Vec<TargetConfig>,
    /// Generic JSON webhooks; every incident event goes to every one of them.
    pub webhooks: Vec<TargetConfig>,
    /// How often firing alerts are sent again; `endsAt` is set four
    /// intervals ahead, so Alertmanager resolves them if triage goes away.
    pub resend_interval: Duration,
    /// How long a resolution keeps being sent, so an Alertmanager that
    /// missed it (restarted, unreachable) still learns of it.
    pub resolved_resend_for: Duration,
    /// Most alerts (or webhook events) waiting per target; the oldest are
    /// dropped, and counted, when it is full.
    pub queue_capacity: NonZeroUsize,
    /// Labels added to every alert (cluster, environment, ...).
    pub labels: BTreeMap<String, String>,
    /// Template of the `runbook_url` annotation, e.g.
    /// `https://runbooks.example/{alertname}?service={service}`.
    pub runbook_url: Option<String>,
    /// Template of a link to one trace, with `{trace_id}` (32 hex digits),
    /// e.g. `http://jaeger:16686/trace/{trace_id}`: every exemplar trace of
    /// an incident is given as such a link too.
    pub trace_url: Option<String>,
    /// Base of the `generatorURL` links; the admin address when unset.
    pub external_url: Option<Url>,
}

/// One Alertmanager or webhook: where it is and how to talk to it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetConfig {
    /// The Alertmanager's base URL (`/api/v2/alerts` is appended), or the
    /// webhook's full URL.
    pub url: Url,
    /// Longest wait for one request, connection included.
    pub timeout: Duration,
    /// Credentials sent with each request.
    pub auth: Auth,
    /// TLS options for `https` URLs.
    pub tls: TlsConfig,
}

/// Credentials for a target.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Auth {
    /// No `Authorization` header.
    #[default]
    None,
    /// HTTP basic authentication.
    Basic {
        /// The user name, sent as is.
        username: String,
        /// The password, inline or from a file.
        password: Secret,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
}

/// A secret given inline or as a file (read on each request, so a rotated
/// token is picked up without a restart).
#[derive(Clone, PartialEq)]
pub enum Secret {
    /// The secret itself, from the config file.
    Inline(String),
    /// A file holding the secret; surrounding whitespace is trimmed.
    File(PathBuf),
}

/// TLS options of one target.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsConfig {
    /// PEM file of CA certificates trusted in addition to the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; set with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. For testing only: it disables the
    /// protection TLS gives.
    pub insecure_skip_verify: bool,
}

// === impl AlertConfig ===

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            alertmanagers: Vec::new(),
            webhooks: Vec::new(),
            resend_interval: Duration::from_secs(60),
            resolved_resend_for: Duration::from_secs(15 * 60),
            queue_capacity: NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN),
            labels: BTreeMap::new(),
            runbook_url: None,
            trace_url: None,
            external_url: None,
        }
    }
}

impl AlertConfig {
    /// Whether any target is configured, that is, whether delivery runs.
    pub fn enabled(&self) -> bool {
        !self.alertmanagers.is_empty() || !self.webhooks.is_empty()
    }
}

// === impl TargetConfig ===

impl TargetConfig {
    /// Default request timeout (Prometheus uses the same for Alertmanager).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// A target at `url` with the default timeout, no auth and default TLS.
    pub fn new(url: Url) -> TargetConfig {
        TargetConfig {
            url,
            timeout: Self::DEFAULT_TIMEOUT,
            auth: Auth::None,
            tls: TlsConfig::default(),
        }
    }
}

// === impl Secret ===

impl fmt::Debug for Secret {
    // Settings are logged and printed in test failures; an inline secret
    // must not appear there.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Inline(<redacted>)"),
            Secret::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

// === value checks used by `check` ===

/// An `http` or `https` URL with a host.
pub fn http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|error| {
        format!("\"{text}\" is not a URL ({error}); write e.g. \"http://alertmanager:9093\"")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "\"{text}\" must be an http:// or https:// URL, not {}://",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("\"{text}\" has no host"));
    }
    if url.fragment().is_some() {
        return Err(format!("\"{text}\" has a #fragment, which is never sent"));
    }
    Ok(url)
}

/// A label name Alertmanager accepts (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting
/// with `__`, which Prometheus reserves) that triage does not set itself.
pub fn label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "\"{name}\" is not a label name; use letters, digits and _, not starting with a digit"
        ));
    }
    if name.starts_with("__") {
        return Err(format!(
            "\"{name}\" starts with __, which is reserved for internal use"
        ));
    }
    if RESERVED_LABELS.contains(&name) {
        return Err(format!(
            "\"{name}\" is set by triage on every alert and cannot be replaced; \
             static labels may not be any of {}",
            RESERVED_LABELS.join(", ")
        ));
    }
    Ok(())
}

/// A runbook URL template: `{name}` placeholders must be known, and with
/// them filled in the result must be an http(s) URL.
pub fn runbook_template(text: &str) -> Result<String, String> {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!("\"{text}\" has a `{{` without a closing `}}`"));
        };
        let name = &after[..close];
        if !RUNBOOK_PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}} in \"{text}\"; known: {}",
                RUNBOOK_PLACEHOLDERS
                    .iter()
                    .map(|known| format!("{{{known}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    let filled = fill_template(text, |_| "x".to_owned());
    http_url(&filled).map_err(|message| format!("with placeholders filled in, {message}"))?;
    Ok(text.to_owned())
}

/// A trace URL template: exactly the placeholder `{trace_id}`, at least
/// once, and an http(s) URL once it is filled in.
pub fn trace_template(text: &str) -> Result<String, String> {
    let mut rest = text;
    let mut found = false;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!("\"{text}\" has a `{{` without a closing `}}`"));
        };
        let name = &after[..close];
        if name != "trace_id" {
            return Err(format!(
                "unknown placeholder {{{name}}} in \"{text}\"; the only one is {{trace_id}}"
            ));
        }
        found = true;
        rest = &after[close + 1..];
    }
    if !found {
        return Err(format!(
            "\"{text}\" has no {{trace_id}}: every trace would get the same link"
        ));
    }
    let filled = fill_template(text, |_| "0af7651916cd43dd8448eb211c80319c".to_owned());
    http_url(&filled).map_err(|message| format!("with {{trace_id}} filled in, {message}"))?;
    Ok(text.to_owned())
}

/// Replaces each `{name}` in a checked template with `value(name)`.
pub(crate) fn fill_template(template: &str, value: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                out.push_str(&value(&after[..close]));
                rest = &after[close + 1..];
            }
            // Checked templates always close; keep the text as written.
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

// === the `alerting:` section of the config file ===

/// Keys of `alerting`.
pub(crate) const ALERTING_KEYS: &[&str] = &[
    "alertmanagers",
    "webhooks",
    "resend_interval",
    "resolved_resend_for",
    "queue_capacity",
    "labels",
    "runbook_url",
    "trace_url",
    "external_url",
];
/// Keys of each entry of `alerting.alertmanagers` and `alerting.webhooks`.
pub(crate) const ALERT_TARGET_KEYS: &[&str] = &[
    "url",
    "timeout",
    "basic_auth",
    "bearer_token",
    "bearer_token_file",
    "tls",
];
/// Keys of a target's `basic_auth`.
pub(crate) const BASIC_AUTH_KEYS: &[&str] = &["username", "password", "password_file"];
/// Keys of a target's `tls`.
pub(crate) const ALERT_TLS_KEYS: &[&str] =
    &["ca_file", "cert_file", "key_file", "insecure_skip_verify"];
/// Shortest alert resend interval: Alertmanager is not meant to be polled.
const MIN_RESEND_INTERVAL: Duration = Duration::from_millis(100);
/// Largest alert queue per target; an alert takes about a kilobyte.
const MAX_ALERT_QUEUE: usize = 1_000_000;

/// The `alerting:` part of the example config (`triage example-config`),
/// with the comment above it.
pub(crate) const EXAMPLE: &str = r#"# Alert delivery. Nothing is sent until a target is listed. Every alert goes
# to every Alertmanager listed (replicas deduplicate among themselves). The
# labels, annotations and a matching Alertmanager config are described in
# docs/ALERTING.md.
alerting:
  # Alertmanagers, by base URL (/api/v2/alerts is appended). For example:
  #   - url: "https://alertmanager.example:9093"
  #     timeout: 10s
  #     basic_auth:
  #       username: triage
  #       password_file: /etc/triage/alertmanager-password   # or password
  #     # Or instead of basic_auth: bearer_token or bearer_token_file.
  #     tls:
  #       ca_file: /etc/triage/ca.pem        # trusted besides the built-in roots
  #       cert_file: /etc/triage/client.pem  # client certificate, with key_file
  #       key_file: /etc/triage/client-key.pem
  #       insecure_skip_verify: false
  alertmanagers: []
  # JSON webhooks, by full URL, with the same keys as alertmanagers. Each
  # incident event is POSTed once as {"event": "opened", "incident": {...}}
  # (events: opened, updated, resolved).
  webhooks: []
  # Firing alerts are sent again this often, with endsAt 4 intervals ahead,
  # so Alertmanager resolves them by itself if triage stops.
  resend_interval: 60s
  # A resolution keeps being sent this long, for Alertmanagers that missed it.
  resolved_resend_for: 15m
  # Most alerts waiting per target while it is unreachable; beyond it the
  # oldest are dropped and counted in triage_alerts_dropped_total.
  queue_capacity: 10000
  # Labels added to every alert, e.g. {cluster: prod-eu, environment: prod}.
  labels: {}
  # Template of the runbook_url annotation ("" for none). Placeholders:
  # {alertname}, {severity}, {service}, {operation}, {incident_id},
  # {root_cause_service}; e.g. "https://runbooks.example/{alertname}?service={service}".
  runbook_url: ""
  # Template of a link to one trace ("" for none), with {trace_id}; every
  # exemplar trace of an incident is then also a link in alerts, webhooks,
  # the query API and the CLI. Jaeger: "http://jaeger:16686/trace/{trace_id}";
  # Tempo in Grafana: "https://grafana.example/explore?left=..." with the
  # trace id query where {trace_id} goes.
  trace_url: ""
  # Base URL of the generatorURL link to each incident
  # (<base>/api/v1/incidents/<id>); "" links to the admin address.
  external_url: ""
"#;

/// Reads the `alerting` section into `alerting`: the targets (each
/// problem at its list index), timings, queue size, static labels and
/// link templates.
pub(crate) fn check(checker: &mut Checker, top: &Section<'_>, alerting: &mut AlertConfig) {
    let section = checker.section(top, "alerting", ALERTING_KEYS);
    alerting.alertmanagers = alert_targets(checker, &section, "alertmanagers");
    alerting.webhooks = alert_targets(checker, &section, "webhooks");
    checker.field(
        &section,
        "resend_interval",
        &mut alerting.resend_interval,
        |value| at_least(duration(value)?, MIN_RESEND_INTERVAL),
    );
    checker.field(
        &section,
        "resolved_resend_for",
        &mut alerting.resolved_resend_for,
        duration,
    );
    checker.field(
        &section,
        "queue_capacity",
        &mut alerting.queue_capacity,
        |value| count(value, 1, MAX_ALERT_QUEUE),
    );
    alert_labels(checker, &section, &mut alerting.labels);
    checker.field(
        &section,
        "runbook_url",
        &mut alerting.runbook_url,
        |value| {
            let template = text(
                value,
                "a URL template such as \"https://runbooks.example/{alertname}\"",
            )?;
            if template.is_empty() {
                return Ok(None);
            }
            runbook_template(template).map(Some)
        },
    );
    checker.field(&section, "trace_url", &mut alerting.trace_url, |value| {
        let template = text(
            value,
            "a URL template such as \"http://jaeger:16686/trace/{trace_id}\"",
        )?;
        if template.is_empty() {
            return Ok(None);
        }
        trace_template(template).map(Some)
    });
    checker.field(
        &section,
        "external_url",
        &mut alerting.external_url,
        |value| {
            let url = text(value, "a URL such as \"https://triage.example\"")?;
            if url.is_empty() {
                return Ok(None);
            }
            http_url(url).map(Some)
        },
    );
}

/// Reads a list of alert targets; each entry's problems are reported
/// under its index (`alerting.alertmanagers[1].url`).
fn alert_targets(checker: &mut Checker, section: &Section<'_>, key: &str) -> Vec<TargetConfig> {
    let path = section.key_path(key);
    let items = match section.get(key) {
        // `webhooks:` with nothing after it: none, like `[]`.
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Sequence(items)) => items,
        Some(other) => {
            checker.report(
                path,
                format!(
                    "expected a list of targets such as [{{url: \"http://alertmanager:9093\"}}], got {}",
                    describe(other)
                ),
            );
            return Vec::new();
        }
    };
    let mut targets = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{index}]");
        if !matches!(item, Value::Mapping(_)) {
            checker.report(
                item_path,
                format!(
                    "expected a mapping with at least `url`, got {}",
                    describe(item)
                ),
            );
            continue;
        }
        let entry = checker.open(item_path, Some(item), ALERT_TARGET_KEYS);
        if let Some(target) = alert_target(checker, &entry) {
            targets.push(target);
        }
    }
    targets
}

/// Reads one alert target; `None` when its url is missing or wrong.
fn alert_target(checker: &mut Checker, entry: &Section<'_>) -> Option<TargetConfig> {
    let mut url = None;
    checker.field(entry, "url", &mut url, |value| {
        http_url(text(value, "an http:// or https:// URL")?).map(Some)
    });
    if entry.get("url").is_none() {
        checker.report(entry.key_path("url"), "missing; every target needs a url");
    }
    let mut timeout = TargetConfig::DEFAULT_TIMEOUT;
    checker.field(entry, "timeout", &mut timeout, |value| {
        positive(duration(value)?)
    });

    let mut auth = Auth::None;
    let basic = checker.section(entry, "basic_auth", BASIC_AUTH_KEYS);
    if basic.is_present() {
        let mut username = None;
        checker.field(&basic, "username", &mut username, |value| {
            Ok(Some(text(value, "a user name")?.to_owned()))
        });
        if basic.get("username").is_none() {
            checker.report(
                basic.key_path("username"),
                "missing; basic_auth needs a username",
            );
        }
        let password = secret(checker, &basic, "password", "password_file");
        if basic.get("password").is_none() && basic.get("password_file").is_none() {
            checker.report(
                basic.key_path("password"),
                "missing; give basic_auth a password or a password_file",
            );
        }
        if let (Some(username), Some(password)) = (username, password) {
            auth = Auth::Basic { username, password };
        }
    }
    if let Some(token) = secret(checker, entry, "bearer_token", "bearer_token_file") {
        if basic.is_present() {
            checker.report(
                entry.key_path("basic_auth"),
                "give basic_auth or a bearer token, not both",
            );
        } else {
            auth = Auth::Bearer(token);
        }
    }

    let tls_section = checker.section(entry, "tls", ALERT_TLS_KEYS);
    let fields = client_tls(checker, &tls_section);
    let tls = TlsConfig {
        ca_file: fields.ca_file,
        cert_file: fields.cert_file,
        key_file: fields.key_file,
        insecure_skip_verify: fields.insecure_skip_verify,
    };
    url.map(|url| TargetConfig {
        url,
        timeout,
        auth,
        tls,
    })
}

/// Reads a secret given inline under `inline` or in a file under `file`
/// (not both); `None` when neither is given or either is wrong.
fn secret(
    checker: &mut Checker,
    section: &Section<'_>,
    inline: &str,
    file: &str,
) -> Option<Secret> {
    let mut given = None;
    checker.field(section, inline, &mut given, |value| {
        let secret = text(value, "a string")?;
        if secret.is_empty() {
            return Err("must not be empty".to_owned());
        }
        Ok(Some(Secret::Inline(secret.to_owned())))
    });
    let mut from_file = None;
    checker.field(section, file, &mut from_file, |value| {
        named_file(value).map(|path| Some(Secret::File(path)))
    });
    match (given, from_file) {
        (Some(_), Some(_)) => {
            checker.report(
                section.key_path(file),
                format!("give {} or {file}, not both", section.key_path(inline)),
            );
            None
        }
        (given, from_file) => given.or(from_file),
    }
}

/// Reads `alerting.labels`, reporting each bad entry at its own key.
fn alert_labels(
    checker: &mut Checker,
    section: &Section<'_>,
    target: &mut std::collections::BTreeMap<String, String>,
) {
    let path = section.key_path("labels");
    match section.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(entries)) => {
            let mut labels = std::collections::BTreeMap::new();
            for (key, value) in entries {
                let name = key_name(key);
                let entry_path = format!("{path}.{name}");
                if let Err(message) = label_name(&name) {
                    checker.report(entry_path, message);
                    continue;
                }
                // Label values are text; numbers and flags read as written.
                let text = match value {
                    Value::String(text) => text.clone(),
                    Value::Number(number) => number.to_string(),
                    Value::Bool(flag) => flag.to_string(),
                    other => {
                        checker.report(
                            entry_path,
                            format!("expected a label value, got {}", describe(other)),
                        );
                        continue;
                    }
                };
                labels.insert(name, text);
            }
            *target = labels;
        }
        Some(other) => checker.report(
            path,
            format!(
                "expected a mapping of label name to value, \
                 such as {{cluster: prod-eu}}, got {}",
                describe(other)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_with_a_host() {
        assert!(http_url("http://127.0.0.1:9093").is_ok());
        assert!(http_url("https://am.example/prefix").is_ok());
        for bad in ["ftp://am", "am:9093", "not a url", "http://", "http://a/#x"] {
            assert!(http_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_names() {
        assert!(label_name("cluster").is_ok());
        assert!(label_name("_x9").is_ok());
        for bad in ["9x", "a-b", "", "__name", "severity", "incident_id"] {
            assert!(label_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn runbook_templates() {
        assert!(runbook_template("https://rb.example/{alertname}?service={service}").is_ok());
        let unknown = runbook_template("https://rb.example/{team}").unwrap_err();
        assert!(unknown.contains("{team}"), "{unknown}");
        assert!(runbook_template("https://rb.example/{alertname").is_err());
        assert!(runbook_template("{alertname}").is_err());
        assert_eq!(
            fill_template("a/{service}/{alertname}", |name| name.to_uppercase()),
            "a/SERVICE/ALERTNAME"
        );
    }

    #[test]
    fn trace_templates() {
        let jaeger = "http://jaeger:16686/trace/{trace_id}";
        assert_eq!(trace_template(jaeger).as_deref(), Ok(jaeger));
        assert_eq!(
            crate::model::trace_links(jaeger, &["0af7651916cd43dd8448eb211c80319c".to_owned()]),
            ["http://jaeger:16686/trace/0af7651916cd43dd8448eb211c80319c"]
        );
        let none = trace_template("http://jaeger:16686/search").unwrap_err();
        assert!(none.contains("no {trace_id}"), "{none}");
        let other = trace_template("http://jaeger/trace/{traceId}").unwrap_err();
        assert!(other.contains("{traceId}"), "{other}");
        assert!(trace_template("jaeger:16686/trace/{trace_id}").is_err());
        assert!(trace_template("http://jaeger/trace/{trace_id").is_err());
    }

    #[test]
    fn inline_secrets_are_not_printed() {
        let text = format!("{:?}", Secret::Inline("hunter2".into()));
        assert!(!text.contains("hunter2"), "{text}");
    }
}
