//! The `tls:` and `auth:` sections every listener has ([`TlsConfig`],
//! [`AuthConfig`]), the keys and rules that validate them, and their part of
//! the example config.
//!
//! The TLS keys are the OTel Collector's (`configtls.ServerConfig`:
//! `cert_file`, `key_file`, `client_ca_file`, `min_version`,
//! `reload_interval`), so a collector's config block can be moved over as
//! it is. The auth keys are ours: the Collector delegates to a
//! `bearertokenauth` extension, which holds one token; here a listener
//! accepts several, so that a token can be rotated without a window in
//! which one side is refused.
//!
//! Files and environment variables are only named here; `super::tls` and
//! `super::auth` read them when the listener is bound.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::Value;

use crate::validate::{at_most, describe, duration, file_path, text, Checker, Section};

/// How often certificate and token files are checked for changes, unless
/// `reload_interval` says otherwise. Kubernetes takes about as long to
/// update a mounted Secret.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(60);

/// Longest `reload_interval`.
const MAX_RELOAD_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// Server TLS of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates that client certificates must chain to; `None`:
    /// clients are not asked for a certificate. Set: every client must
    /// present a valid one (mTLS), as the Collector does.
    pub client_ca_file: Option<PathBuf>,
    /// Oldest protocol version accepted.
    pub min_version: TlsVersion,
    /// How often the three files are checked for changes (at most once per
    /// interval, when a connection arrives); zero: never reloaded.
    pub reload_interval: Duration,
}

/// A TLS protocol version (rustls speaks no older one than 1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3; the Collector's default.
    V1_2,
    /// TLS 1.3 only.
    V1_3,
}

/// The bearer tokens one listener accepts. Empty: no authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Tokens written in the config file.
    pub bearer_tokens: Vec<Secret>,
    /// Files each holding one token (surrounding whitespace trimmed), so
    /// that a token can live in a Kubernetes Secret volume; re-read when
    /// they change.
    pub bearer_token_files: Vec<PathBuf>,
    /// Environment variables each holding one token, read at start-up.
    pub bearer_token_env: Vec<String>,
    /// How often the token files are checked for changes (at most once per
    /// interval, when a request arrives); zero: never reloaded.
    pub reload_interval: Duration,
}

/// A secret: kept out of `Debug` output, compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

// === impl TlsConfig ===

impl TlsConfig {
    /// A certificate and key with the defaults for everything else: no
    /// client certificates, TLS 1.2 and up, reloaded every minute.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> TlsConfig {
        TlsConfig {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            client_ca_file: None,
            min_version: TlsVersion::V1_2,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
        }
    }
}

// === impl TlsVersion ===

impl TlsVersion {
    /// As written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }
}

// === impl AuthConfig ===

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            bearer_tokens: Vec::new(),
            bearer_token_files: Vec::new(),
            bearer_token_env: Vec::new(),
            reload_interval: DEFAULT_RELOAD_INTERVAL,
        }
    }
}

impl AuthConfig {
    /// Whether any token source is configured, that is, whether the
    /// listener requires a token.
    pub fn is_enabled(&self) -> bool {
        !(self.bearer_tokens.is_empty()
            && self.bearer_token_files.is_empty()
            && self.bearer_token_env.is_empty())
    }

    /// Accepts exactly `tokens` (tests and embedding).
    pub fn tokens<I, S>(tokens: I) -> AuthConfig
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        AuthConfig {
            bearer_tokens: tokens
                .into_iter()
                .filter_map(|token| Secret::new(token.as_ref()))
                .collect(),
            ..AuthConfig::default()
        }
    }
}

// === impl Secret ===

impl Secret {
    /// Wraps a token, trimmed; `None` when nothing is left, which would
    /// accept an empty `Bearer` header.
    pub fn new(token: &str) -> Option<Secret> {
        let token = token.trim();
        (!token.is_empty()).then(|| Secret(token.to_owned()))
    }

    /// Whether `given` is this secret. The time taken depends on the
    /// secret's length only, not on where the first difference is, so the
    /// secret cannot be guessed byte by byte from response times.
    pub fn matches(&self, given: &str) -> bool {
        let (expected, given) = (self.0.as_bytes(), given.as_bytes());
        let mut difference = u8::from(expected.len() != given.len());
        for (i, byte) in expected.iter().enumerate() {
            difference |= byte ^ given.get(i).copied().unwrap_or(0);
        }
        difference == 0
    }
}

// Written by hand so that a token never reaches a log line or a panic
// message through `{:?}` of the settings.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

// === the `tls:` and `auth:` sections of the config file ===

/// Keys of every listener's `tls`.
pub(crate) const TLS_KEYS: &[&str] = &[
    "cert_file",
    "key_file",
    "client_ca_file",
    "min_version",
    "reload_interval",
];

/// Keys of every listener's `auth`.
pub(crate) const AUTH_KEYS: &[&str] = &[
    "bearer_tokens",
    "bearer_token_files",
    "bearer_token_env",
    "reload_interval",
];

/// The `tls:` and `auth:` part of a listener's example, at the top level;
/// [`example`] indents and comments it out (neither is on by default).
pub(crate) const EXAMPLE: &str = r#"# Serve TLS with this PEM certificate chain and key (both, or no tls).
# See docs/SECURITY.md.
tls:
  cert_file: /etc/triage/tls/tls.crt
  key_file: /etc/triage/tls/tls.key
  # Require client certificates signed by these CAs (mTLS).
  client_ca_file: /etc/triage/tls/ca.crt
  # Oldest TLS version accepted: "1.2" or "1.3".
  min_version: "1.2"
  # How often the three files are checked for changes; a changed
  # certificate is served to new connections, a broken one is logged and
  # the old one kept. 0s: never.
  reload_interval: 1m
# Require `authorization: Bearer <token>` with one of these tokens.
auth:
  bearer_tokens: ["change-me"]
  # Files holding one token each (a Secret volume), re-read on change.
  bearer_token_files: [/etc/triage/tokens/otlp]
  # Environment variables holding one token each, read at start-up.
  bearer_token_env: [TRIAGE_TOKEN]
  # How often the token files are checked for changes; 0s: never.
  reload_interval: 1m
"#;

/// [`EXAMPLE`] indented by `indent` spaces with every value commented out,
/// leaving `tls:` and `auth:` empty (their defaults: off). `extra` lines
/// (a listener's own notes or keys, already commented) go under `auth:`.
pub(crate) fn example(indent: usize, extra_auth: &str) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::new();
    for line in EXAMPLE.lines() {
        let body = line.trim_start();
        let depth = line.len() - body.len();
        if depth == 0 || body.starts_with('#') {
            out.push_str(&format!("{pad}{line}\n"));
        } else {
            out.push_str(&format!("{pad}{}# {body}\n", &line[..depth]));
        }
        if line == "auth:" {
            for extra in extra_auth.lines() {
                out.push_str(&format!("{pad}  {extra}\n"));
            }
        }
    }
    out
}

/// Reads `tls` under `parent` into `tls`: `None` when the section is
/// absent or empty; both files are required once it has anything.
pub fn check_tls(checker: &mut Checker, parent: &Section<'_>, tls: &mut Option<TlsConfig>) {
    let section = checker.section(parent, "tls", TLS_KEYS);
    if !section.is_present() {
        return;
    }
    let mut cert_file = None;
    checker.field(&section, "cert_file", &mut cert_file, |value| {
        file_path(value).map(Some)
    });
    let mut key_file = None;
    checker.field(&section, "key_file", &mut key_file, |value| {
        file_path(value).map(Some)
    });
    let mut client_ca_file = None;
    checker.field(&section, "client_ca_file", &mut client_ca_file, |value| {
        file_path(value).map(Some)
    });
    let mut min_version = TlsVersion::V1_2;
    checker.field(&section, "min_version", &mut min_version, tls_version);
    let mut reload_interval = DEFAULT_RELOAD_INTERVAL;
    checker.field(&section, "reload_interval", &mut reload_interval, |value| {
        at_most(duration(value)?, MAX_RELOAD_INTERVAL)
    });
    *tls = match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => Some(TlsConfig {
            cert_file,
            key_file,
            client_ca_file,
            min_version,
            reload_interval,
        }),
        (cert_file, key_file) => {
            // A key that is present but wrong was reported already.
            for (key, found) in [
                ("cert_file", cert_file.is_some()),
                ("key_file", key_file.is_some()),
            ] {
                if !found && section.get(key).is_none() {
                    checker.report(
                        section.key_path(key),
                        "required when tls is set: serving TLS needs a certificate and its key",
                    );
                }
            }
            None
        }
    };
}

/// Reads `auth` under `parent` into `auth`, and returns the section so
/// that a listener with keys of its own (`api.auth`'s older single-token
/// keys) can read them; `known` lists every key the section may have.
pub fn check_auth<'a>(
    checker: &mut Checker,
    parent: &Section<'a>,
    known: &[&str],
    auth: &mut AuthConfig,
) -> Section<'a> {
    let section = checker.section(parent, "auth", known);
    list(
        checker,
        &section,
        "bearer_tokens",
        &mut auth.bearer_tokens,
        token,
    );
    list(
        checker,
        &section,
        "bearer_token_files",
        &mut auth.bearer_token_files,
        file_path,
    );
    list(
        checker,
        &section,
        "bearer_token_env",
        &mut auth.bearer_token_env,
        |value| {
            let name = text(value, "an environment variable name")?;
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!(
                    "\"{name}\" is not an environment variable name (letters, digits and _)"
                ));
            }
            Ok(name.to_owned())
        },
    );
    checker.field(
        &section,
        "reload_interval",
        &mut auth.reload_interval,
        |value| at_most(duration(value)?, MAX_RELOAD_INTERVAL),
    );
    section
}

/// A bearer token written in the file.
pub fn token(value: &Value) -> Result<Secret, String> {
    let token = text(value, "a token string")?;
    // It travels in an HTTP header, so it must be visible ASCII.
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces".to_owned());
    }
    Secret::new(token).ok_or_else(|| "must not be empty".to_owned())
}

/// `"1.2"` or `"1.3"` (also accepted unquoted, as YAML numbers).
fn tls_version(value: &Value) -> Result<TlsVersion, String> {
    let written = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        other => {
            return Err(format!(
                "expected \"1.2\" or \"1.3\", got {}",
                describe(other)
            ))
        }
    };
    match written.as_str() {
        "1.2" => Ok(TlsVersion::V1_2),
        "1.3" => Ok(TlsVersion::V1_3),
        "1.0" | "1.1" => Err(format!(
            "TLS {written} is not supported (it is deprecated, RFC 8996); write \"1.2\" or \"1.3\""
        )),
        _ => Err(format!("expected \"1.2\" or \"1.3\", got \"{written}\"")),
    }
}

/// Reads a list under `key`, reporting each bad entry at its own index; a
/// single value is read as a list of one.
fn list<T>(
    checker: &mut Checker,
    section: &Section<'_>,
    key: &str,
    target: &mut Vec<T>,
    parse: impl Fn(&Value) -> Result<T, String>,
) {
    let path = section.key_path(key);
    let items = match section.get(key) {
        None | Some(Value::Null) => return,
        Some(Value::Sequence(items)) => items.iter().collect::<Vec<_>>(),
        Some(one) => vec![one],
    };
    let mut parsed = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        match parse(item) {
            Ok(value) => parsed.push(value),
            Err(message) => checker.report(format!("{path}[{index}]"), message),
        }
    }
    *target = parsed;
}

#[cfg(test)]
mod tests;
