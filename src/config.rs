//! The YAML config file, its embedded defaults, and their validation into
//! typed [`Settings`].
//!
//! Loading starts from [`Settings::default`], applies the file, then the
//! [`Overrides`] (flags and environment, which clap has already merged), so
//! precedence is flag > environment > file > default.
//!
//! Invariant: a [`Settings`] value holds only validated values (socket
//! addresses, byte sizes, durations, non-zero counts that agree with each
//! other), so nothing downstream checks them again.
//!
//! The file is read as a generic `serde_yaml::Value` tree and walked by hand
//! rather than derived into `#[serde(deny_unknown_fields)]` structs, which is
//! the house default. The reason is that serde stops at the first error, and
//! someone fixing a config file wants every problem, each with its field path,
//! in one go. The machinery for that (the problem collector, sections, value
//! parsers) is in [`crate::validate`].
//!
//! One knob is one place: each section's keys (its `*_KEYS` lists, the
//! schema), its rules and its part of [`example_yaml`] live beside the type it
//! fills, as a `check` function and an `EXAMPLE` fragment:
//!
//! - `api:` in [`crate::query::config`],
//! - `store:` in [`crate::store::config`],
//! - `analyze:` in [`crate::ingest::spans::config`],
//! - `detect:` in [`crate::detect::config`],
//! - `changes:` in [`crate::ingest::changes::config`],
//! - `storage:` in [`crate::history::config`],
//! - `alerting:` in [`crate::alert::config`].
//!
//! This module keeps the top level, the receivers, `admin:`, `log:` and
//! `shutdown_timeout`, whose types live here, and the overrides. It opens the
//! document and hands each section to its `check` in file order, so problems
//! come out in the order they always have; a test checks that the example
//! names every key the sections know and parses to the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use clap::ValueEnum;
use serde_yaml::Value;

use crate::alert::{self, AlertConfig};
use crate::detect::{self, DetectConfig};
use crate::history::{self, StorageConfig};
use crate::ingest::changes::{self, ChangesConfig};
use crate::ingest::spans::{self, SpanConfig};
use crate::query::{self, ApiConfig};
use crate::store::{self, StoreConfig};
use crate::validate::{at_most, display_problems, duration, endpoint, localhost, positive};
use crate::validate::{size_mib, socket_addr, text, Checker, MIB};

pub use crate::validate::Problem;

/// Default port of the OTLP/gRPC receiver (the OTLP standard port).
const GRPC_PORT: u16 = 4317;
/// Default port of the OTLP/HTTP receiver (the OTLP standard port).
const HTTP_PORT: u16 = 4318;
/// Default port of the admin server.
const ADMIN_PORT: u16 = 8888;

/// Longest shutdown drain. Orchestrators kill a process that takes longer
/// than a few minutes to stop anyway.
const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Keys of the document's top level.
const TOP_KEYS: &[&str] = &[
    "receivers",
    "admin",
    "api",
    "store",
    "detect",
    "alerting",
    "changes",
    "storage",
    "analyze",
    "log",
    "shutdown_timeout",
];
/// Keys of `receivers`.
const RECEIVERS_KEYS: &[&str] = &["otlp"];
/// Keys of `receivers.otlp`.
const OTLP_KEYS: &[&str] = &["grpc", "http"];
/// Keys of `receivers.otlp.grpc`.
const GRPC_KEYS: &[&str] = &["endpoint", "max_recv_msg_size_mib"];
/// Keys of `receivers.otlp.http`.
const HTTP_KEYS: &[&str] = &["endpoint", "max_request_body_size_mib"];
/// Keys of `admin`.
const ADMIN_KEYS: &[&str] = &["endpoint"];
/// Keys of `log`.
const LOG_KEYS: &[&str] = &["level", "format"];

// How each override is named in problems. clap merges a flag and its
// environment variable before we see the value, so both are named. These
// must match the names `main.rs` gives its flags.
/// Label of [`Overrides::grpc_endpoint`].
const GRPC_ENDPOINT_OVERRIDE: &str = "--grpc-endpoint / TRIAGE_GRPC_ENDPOINT";
/// Label of [`Overrides::http_endpoint`].
const HTTP_ENDPOINT_OVERRIDE: &str = "--http-endpoint / TRIAGE_HTTP_ENDPOINT";
/// Label of [`Overrides::admin_endpoint`].
const ADMIN_ENDPOINT_OVERRIDE: &str = "--admin-endpoint / TRIAGE_ADMIN_ENDPOINT";
/// Label of [`Overrides::api_endpoint`].
const API_ENDPOINT_OVERRIDE: &str = "--api-endpoint / TRIAGE_API_ENDPOINT";
/// Label of [`Overrides::log_level`].
const LOG_LEVEL_OVERRIDE: &str = "--log-level / TRIAGE_LOG_LEVEL";

/// Validated settings for the whole process.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The OTLP/gRPC receiver.
    pub grpc: GrpcSettings,
    /// The OTLP/HTTP receiver.
    pub http: HttpSettings,
    /// The admin HTTP server (`/metrics`, `/healthz`, `/readyz`).
    pub admin: AdminSettings,
    /// The gRPC query API (with health and reflection).
    pub api: ApiConfig,
    /// Windowing, cardinality bounds and span pairing of the store.
    pub store: StoreConfig,
    /// Detection thresholds, baselines and hysteresis.
    pub detect: DetectConfig,
    /// Alert delivery to Alertmanagers and webhooks.
    pub alerting: AlertConfig,
    /// Change events: the posting API, detection from telemetry, correlation.
    pub changes: ChangesConfig,
    /// Where the incident history and detection snapshots are kept.
    pub storage: StorageConfig,
    /// Span analysis: own time, local errors, retries, attribute drill-down.
    pub analyze: SpanConfig,
    /// Logging.
    pub log: LogSettings,
    /// How long shutdown waits for in-flight work to drain before giving up.
    pub shutdown_timeout: Duration,
}

/// Settings of the OTLP/gRPC receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcSettings {
    /// Address the receiver listens on; port 0 picks a free port.
    pub endpoint: SocketAddr,
    /// Largest request message accepted, in bytes.
    pub max_recv_msg_size: usize,
}

/// Settings of the OTLP/HTTP receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Address the receiver listens on; port 0 picks a free port.
    pub endpoint: SocketAddr,
    /// Largest request body accepted, in bytes, after decompression.
    pub max_request_body_size: usize,
}

/// Settings of the admin HTTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Address the server listens on; port 0 picks a free port.
    pub endpoint: SocketAddr,
}

/// Settings of the process's own logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// A `tracing` `EnvFilter` directive string, e.g. `info` or
    /// `triage=debug,info`; already checked to parse.
    pub level: String,
    /// How each log line is written.
    pub format: LogFormat,
}

pub use crate::telemetry::LogFormat;

/// Values from command-line flags or environment (clap merges flag > env
/// before we see them). Each one, when set, replaces the file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replaces `receivers.otlp.grpc.endpoint`.
    pub grpc_endpoint: Option<String>,
    /// Replaces `receivers.otlp.http.endpoint`.
    pub http_endpoint: Option<String>,
    /// Replaces `admin.endpoint`.
    pub admin_endpoint: Option<String>,
    /// Replaces `api.endpoint`.
    pub api_endpoint: Option<String>,
    /// Replaces `log.level`.
    pub log_level: Option<String>,
    /// Replaces `log.format`; clap has already parsed it, so it cannot be
    /// invalid.
    pub log_format: Option<LogFormat>,
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", .path.display())]
    Read {
        /// The file as given.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The text is not YAML, so none of it could be checked.
    #[error("invalid YAML in {message}")]
    Syntax {
        /// Where the text came from, then serde_yaml's message, which gives
        /// the line and column.
        message: String,
    },
    /// The YAML parsed but some values are wrong; every one found is listed.
    #[error("{}", display_problems(.0))]
    Invalid(Vec<Problem>),
}

// === impl Settings ===

impl Default for Settings {
    fn default() -> Self {
        Settings {
            grpc: GrpcSettings {
                endpoint: localhost(GRPC_PORT),
                max_recv_msg_size: 4 * MIB,
            },
            http: HttpSettings {
                endpoint: localhost(HTTP_PORT),
                max_request_body_size: 20 * MIB,
            },
            admin: AdminSettings {
                endpoint: localhost(ADMIN_PORT),
            },
            api: ApiConfig::default(),
            store: StoreConfig::default(),
            detect: DetectConfig::default(),
            alerting: AlertConfig::default(),
            changes: ChangesConfig::default(),
            storage: StorageConfig::default(),
            analyze: SpanConfig::default(),
            log: LogSettings {
                level: "info".to_owned(),
                format: LogFormat::Text,
            },
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl Settings {
    /// The settings of the stages the pipeline builds.
    pub fn pipeline(&self) -> crate::pipeline::Settings {
        crate::pipeline::Settings {
            store: self.store.clone(),
            detect: self.detect.clone(),
            spans: self.analyze.clone(),
            changes: self.changes.clone(),
            rca: crate::analyze::context::RcaConfig::default(),
        }
    }

    /// Load: defaults, then the file (if any), then overrides; validate
    /// everything; return all problems at once.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Settings, ConfigError> {
        match file {
            None => Settings::parse("", "config", overrides),
            Some(path) => {
                let yaml = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Settings::parse(&yaml, &path.display().to_string(), overrides)
            }
        }
    }

    /// Same from a YAML string (used by tests and by `load`). Syntax errors
    /// name the source as "config text".
    pub fn from_yaml(yaml: &str, overrides: &Overrides) -> Result<Settings, ConfigError> {
        Settings::parse(yaml, "config text", overrides)
    }

    /// Parses `yaml`, naming it `origin` in syntax errors, and validates it
    /// together with the overrides.
    fn parse(yaml: &str, origin: &str, overrides: &Overrides) -> Result<Settings, ConfigError> {
        let syntax = |error: serde_yaml::Error| ConfigError::Syntax {
            message: format!("{origin}: {error}"),
        };
        // An empty or comments-only document parses to null, which reads as
        // "everything default" below.
        let mut document: Value = serde_yaml::from_str(yaml).map_err(syntax)?;
        // serde_yaml leaves `<<: *anchor` merge keys as plain keys; applying
        // them lets people share blocks between sections instead of seeing
        // `<<` reported as an unknown field.
        document.apply_merge().map_err(syntax)?;
        Settings::validate(&document, overrides).map_err(ConfigError::Invalid)
    }

    /// Applies `document`, then `overrides`, over the defaults, checking every
    /// value and the rules between them.
    fn validate(document: &Value, overrides: &Overrides) -> Result<Settings, Vec<Problem>> {
        let mut settings = Settings::default();
        let mut check = Checker::default();
        let top = check.open(String::new(), Some(document), TOP_KEYS);

        let receivers = check.section(&top, "receivers", RECEIVERS_KEYS);
        let otlp = check.section(&receivers, "otlp", OTLP_KEYS);
        let grpc = check.section(&otlp, "grpc", GRPC_KEYS);
        check.field(&grpc, "endpoint", &mut settings.grpc.endpoint, |value| {
            endpoint(value, GRPC_PORT)
        });
        check.field(
            &grpc,
            "max_recv_msg_size_mib",
            &mut settings.grpc.max_recv_msg_size,
            size_mib,
        );
        let http = check.section(&otlp, "http", HTTP_KEYS);
        check.field(&http, "endpoint", &mut settings.http.endpoint, |value| {
            endpoint(value, HTTP_PORT)
        });
        check.field(
            &http,
            "max_request_body_size_mib",
            &mut settings.http.max_request_body_size,
            size_mib,
        );

        let admin = check.section(&top, "admin", ADMIN_KEYS);
        check.field(&admin, "endpoint", &mut settings.admin.endpoint, |value| {
            endpoint(value, ADMIN_PORT)
        });

        query::config::check(&mut check, &top, &mut settings.api);
        store::config::check(&mut check, &top, &mut settings.store);
        detect::config::check(&mut check, &top, &mut settings.detect);
        alert::config::check(&mut check, &top, &mut settings.alerting);
        changes::config::check(&mut check, &top, &mut settings.changes);
        history::config::check(&mut check, &top, &mut settings.storage);
        spans::config::check(&mut check, &top, &mut settings.analyze);

        let log = check.section(&top, "log", LOG_KEYS);
        check.field(&log, "level", &mut settings.log.level, |value| {
            log_level(text(value, "a log filter such as \"info\"")?)
        });
        check.field(&log, "format", &mut settings.log.format, |value| {
            log_format(text(value, "`text` or `json`")?)
        });

        check.field(
            &top,
            "shutdown_timeout",
            &mut settings.shutdown_timeout,
            |value| at_most(positive(duration(value)?)?, MAX_SHUTDOWN_TIMEOUT),
        );

        check.apply(
            GRPC_ENDPOINT_OVERRIDE,
            overrides.grpc_endpoint.as_deref(),
            &mut settings.grpc.endpoint,
            |text| socket_addr(text, GRPC_PORT),
        );
        check.apply(
            HTTP_ENDPOINT_OVERRIDE,
            overrides.http_endpoint.as_deref(),
            &mut settings.http.endpoint,
            |text| socket_addr(text, HTTP_PORT),
        );
        check.apply(
            ADMIN_ENDPOINT_OVERRIDE,
            overrides.admin_endpoint.as_deref(),
            &mut settings.admin.endpoint,
            |text| socket_addr(text, ADMIN_PORT),
        );
        check.apply(
            API_ENDPOINT_OVERRIDE,
            overrides.api_endpoint.as_deref(),
            &mut settings.api.endpoint,
            |text| socket_addr(text, query::config::API_PORT),
        );
        check.apply(
            LOG_LEVEL_OVERRIDE,
            overrides.log_level.as_deref(),
            &mut settings.log.level,
            log_level,
        );
        if let Some(format) = overrides.log_format {
            settings.log.format = format;
        }

        check.finish(settings)
    }
}

/// A fully commented config file listing every key with its default value
/// (printed by `triage example-config`). It parses to [`Settings::default`].
///
/// Each section's part lives beside its settings type; they are joined here
/// in the order the file has always listed them, a blank line apart.
pub fn example_yaml() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        [
            EXAMPLE_HEAD,
            query::config::EXAMPLE,
            store::config::EXAMPLE,
            spans::config::EXAMPLE,
            detect::config::EXAMPLE,
            changes::config::EXAMPLE,
            history::config::EXAMPLE,
            alert::config::EXAMPLE,
            EXAMPLE_TAIL,
        ]
        .join("\n")
    })
}

/// The top of the example config: how to read it, then the `receivers:` and
/// `admin:` sections, whose types live here.
const EXAMPLE_HEAD: &str = r#"# triage configuration.
#
# Every key is optional; the values below are the defaults. Precedence is
# command-line flag > environment variable > this file > default.
#
# Addresses are IP:port ("localhost:PORT" also works). Quote them, and write
# IPv6 in brackets: "[::]:4317". Port 0 picks a free port.
# Durations are a number with a unit (ms, s, m, h or d), and parts may be
# combined: "500ms", "10s", "1m30s", "1.5h".

receivers:
  otlp:
    grpc:
      # Where the OTLP/gRPC receiver listens. Use "0.0.0.0:4317" to accept
      # traffic from other hosts. Flag --grpc-endpoint, env TRIAGE_GRPC_ENDPOINT.
      endpoint: "127.0.0.1:4317"
      # Largest gRPC message accepted, in MiB (fractions allowed; at most 1024).
      max_recv_msg_size_mib: 4
    http:
      # Where the OTLP/HTTP receiver listens.
      # Flag --http-endpoint, env TRIAGE_HTTP_ENDPOINT.
      endpoint: "127.0.0.1:4318"
      # Largest request body accepted after decompression, in MiB (at most 1024).
      max_request_body_size_mib: 20

admin:
  # Where /metrics, /healthz and /readyz are served.
  # Flag --admin-endpoint, env TRIAGE_ADMIN_ENDPOINT.
  endpoint: "127.0.0.1:8888"
"#;

/// The end of the example config: `log:` and `shutdown_timeout`.
const EXAMPLE_TAIL: &str = r#"log:
  # A tracing filter: trace, debug, info, warn or error, or directives such
  # as "triage=debug,info". Flag --log-level, env TRIAGE_LOG_LEVEL.
  level: info
  # text or json. Flag --log-format, env TRIAGE_LOG_FORMAT.
  format: text

# How long shutdown waits for in-flight work to drain (at most 5m).
shutdown_timeout: 10s
"#;

/// A `tracing` filter directive string.
fn log_level(text: &str) -> Result<String, String> {
    const ADVICE: &str = "write a level (trace, debug, info, warn or error) \
                          or directives such as \"triage=debug,info\"";
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_:=,.-".contains(c);
    if text.is_empty() || !text.chars().all(allowed) {
        return Err(format!("\"{text}\" is not a log filter; {ADVICE}"));
    }
    // To `EnvFilter` a bare word that is not a level names a target to log
    // at every level, and everything else is then off. In a config file that
    // is almost always a misspelt level ("warning", "verbose") that would
    // silence the logs, so it is refused; `target=trace` says the same thing
    // on purpose.
    let levels = ["trace", "debug", "info", "warn", "error", "off"];
    for directive in text.split(',').filter(|directive| !directive.is_empty()) {
        if !directive.contains('=') && !levels.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "\"{directive}\" is not a log level; {ADVICE} \
                 (to log everything from one target, write \"{directive}=trace\")"
            ));
        }
    }
    // Parsing it here catches a bad level name ("triage=verbose") now
    // rather than when logging starts.
    tracing_subscriber::EnvFilter::builder()
        .parse(text)
        .map_err(|error| format!("\"{text}\" is not a log filter ({error}); {ADVICE}"))?;
    Ok(text.to_owned())
}

/// `text` or `json`, spelled as the `--log-format` flag spells them.
fn log_format(text: &str) -> Result<LogFormat, String> {
    LogFormat::from_str(text, false)
        .map_err(|_| format!("expected `text` or `json`, got \"{text}\""))
}

#[cfg(test)]
mod tests;
