//! Typed settings of alert delivery (the `alerting:` section), and the value
//! checks `crate::config` uses to validate that section.
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

// === value checks used by `crate::config` ===

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
    fn inline_secrets_are_not_printed() {
        let text = format!("{:?}", Secret::Inline("hunter2".into()));
        assert!(!text.contains("hunter2"), "{text}");
    }
}
