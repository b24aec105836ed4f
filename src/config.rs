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
//! - `alerting:` in [`crate::alert::config`],
//! - `forward:` in [`crate::forward::config`].
//! - `mode:` and `agent:` in [`crate::agent::config`].
//!
//! This module keeps the top level, the receivers, `admin:`, `log:` and
//! `shutdown_timeout`, whose types live here, and the overrides. The
//! listeners' connection limits (`max_connections`, the read and idle
//! timeouts) are read here too; `crate::server::listen` enforces them. It opens the
//! document and hands each section to its `check` in file order, so problems
//! come out in the order they always have; a test checks that the example
//! names every key the sections know and parses to the defaults.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use clap::ValueEnum;
use serde_yaml::Value;

use crate::agent::{self, AgentConfig};
use crate::alert::{self, AlertConfig};
use crate::detect::{self, DetectConfig};
use crate::history::{self, StorageConfig};
use crate::ingest::changes::{self, ChangesConfig};
use crate::ingest::spans::{self, SpanConfig};
use crate::query::{self, ApiConfig};
use crate::security::config::{check_auth, check_tls, AUTH_KEYS};
use crate::security::{self, AuthConfig, TlsConfig};
use crate::store::{self, StoreConfig};
use crate::validate::{at_least, at_most, count, display_problems, duration, endpoint, localhost};
use crate::validate::{default_note, positive, size_mib, socket_addr, text, Checker, Section, MIB};

pub use crate::validate::Problem;

/// Default port of the OTLP/gRPC receiver (the OTLP standard port).
const GRPC_PORT: u16 = 4317;
/// Default port of the OTLP/HTTP receiver (the OTLP standard port).
const HTTP_PORT: u16 = 4318;
/// Default port of the admin server.
const ADMIN_PORT: u16 = 8888;
/// Default connection cap of each OTLP listener.
const OTLP_MAX_CONNECTIONS: usize = 1024;
/// Default connection cap of the admin listener: probes and scrapes only.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Longest shutdown drain. Orchestrators kill a process that takes longer
/// than a few minutes to stop anyway.
const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5 * 60);

use crate::validate::listener_bounds::{
    MAX_CONCURRENT_STREAMS, MAX_IDLE_TIMEOUT, MAX_KEEPALIVE_TIMEOUT, MAX_MAX_CONNECTIONS,
    MAX_READ_HEADER_TIMEOUT, MAX_REQUEST_TIMEOUT, MIN_KEEPALIVE_INTERVAL,
};

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
    "forward",
    "mode",
    "agent",
    "log",
    "shutdown_timeout",
];
/// Keys of `receivers`.
const RECEIVERS_KEYS: &[&str] = &["otlp"];
/// Most items one export request may be allowed to carry.
const MAX_ITEMS_PER_REQUEST: usize = 10_000_000;
/// Keys of `receivers.otlp`.
const OTLP_KEYS: &[&str] = &[
    "grpc",
    "http",
    "max_items_per_request",
    "max_decoded_mib",
    "memory_limit_mib",
    "memory_spike_limit_mib",
    "memory_check_interval",
    "max_queued_requests",
    "max_queued_mib",
    "max_queue_wait",
];
/// Largest `memory_limit_mib`: 1 TiB.
const MAX_MEMORY_LIMIT_MIB: u64 = 1 << 20;
/// Most requests that may be allowed to wait for a decoder.
const MAX_QUEUED_REQUESTS: usize = 1_000_000;
/// Shortest and longest `memory_check_interval`.
const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(10);
const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// Longest `max_queue_wait`.
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(60);
/// Keys of `receivers.otlp.grpc`.
const GRPC_KEYS: &[&str] = &[
    "endpoint",
    "max_recv_msg_size_mib",
    "max_buffered_mib",
    "max_connections",
    "max_concurrent_streams",
    "read_header_timeout",
    "request_timeout",
    "idle_timeout",
    "keepalive_interval",
    "keepalive_timeout",
    "tls",
    "auth",
];
/// Keys of `receivers.otlp.http`.
const HTTP_KEYS: &[&str] = &[
    "endpoint",
    "max_request_body_size_mib",
    "max_buffered_mib",
    "max_connections",
    "read_header_timeout",
    "read_timeout",
    "idle_timeout",
    "tls",
    "auth",
];
/// Keys of `admin`.
const ADMIN_KEYS: &[&str] = &[
    "endpoint",
    "max_connections",
    "read_header_timeout",
    "read_timeout",
    "idle_timeout",
    "tls",
    "auth",
];
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
    /// Per-request decoding limits, shared by both OTLP receivers.
    pub decode: crate::receiver::decode::Limits,
    /// When the OTLP receivers refuse requests for now: the memory limit
    /// and the bounds of the decode queue (docs/RELIABILITY.md, "Memory
    /// limit and admission").
    pub admission: crate::receiver::admission::AdmissionSettings,
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
    /// Forwarding of everything accepted to upstream OTLP endpoints.
    pub forward: crate::forward::ForwardConfig,
    /// `mode: agent` and the `agent:` section: send window summaries to a
    /// gateway (docs/SCALING.md).
    pub agent: AgentConfig,
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
    /// Request bytes held at once across all calls on this listener; a
    /// call whose next bytes do not fit waits for room. At least
    /// `max_recv_msg_size`.
    pub max_buffered: usize,
    /// How many connections stay open, and how long one may stay silent.
    /// `read_header_timeout` is the time a new connection has to send the
    /// HTTP/2 connection preface.
    pub connections: ConnectionLimits,
    /// Calls in flight on one connection: advertised to the client as
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`, and enforced by the server
    /// as a per-connection concurrency limit.
    pub max_concurrent_streams: NonZeroUsize,
    /// Longest call, from its headers to its answer, body included; a
    /// client's shorter `grpc-timeout` wins.
    pub request_timeout: Duration,
    /// How often each connection is sent an HTTP/2 ping.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Server TLS (and mTLS with a client CA); `None`: plaintext.
    pub tls: Option<TlsConfig>,
    /// Bearer tokens every export call must carry; empty: none needed.
    pub auth: AuthConfig,
}

/// Settings of the OTLP/HTTP receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Address the receiver listens on; port 0 picks a free port.
    pub endpoint: SocketAddr,
    /// Largest request body accepted, in bytes, after decompression.
    pub max_request_body_size: usize,
    /// Request-body bytes held at once across all requests on this
    /// listener; a request whose next bytes do not fit waits for room (its
    /// sender is slowed by TCP). At least `max_request_body_size`.
    pub max_buffered: usize,
    /// How many connections stay open, and how long one may stay silent.
    pub connections: ConnectionLimits,
    /// How long a request body may take to arrive once its headers have;
    /// a slower upload is answered 408 and its buffers are freed.
    pub read_timeout: Duration,
    /// Server TLS (and mTLS with a client CA); `None`: plaintext.
    pub tls: Option<TlsConfig>,
    /// Bearer tokens every export request must carry; empty: none needed.
    pub auth: AuthConfig,
}

/// Settings of the admin HTTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Address the server listens on; port 0 picks a free port.
    pub endpoint: SocketAddr,
    /// How many connections stay open, and how long one may stay silent.
    /// Separate from the OTLP listeners' so that `/healthz` keeps
    /// answering while they are flooded.
    pub connections: ConnectionLimits,
    /// As [`HttpSettings::read_timeout`].
    pub read_timeout: Duration,
    /// Server TLS (and mTLS with a client CA); `None`: plaintext.
    pub tls: Option<TlsConfig>,
    /// Bearer tokens every request but the probes (`/healthz`, `/readyz`)
    /// must carry; empty: none needed.
    pub auth: AuthConfig,
}

/// What every listener bounds: the connections it keeps open, and how long
/// each may stay silent. See docs/RELIABILITY.md, "Listeners".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once. One more is closed as soon as it is
    /// accepted, and counted.
    pub max_connections: NonZeroUsize,
    /// How long a request's headers may take to arrive (HTTP/1.1), and how
    /// long a new connection may take to start speaking (the first request,
    /// or the HTTP/2 preface).
    pub read_header_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
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
    // The cause is part of the message and deliberately not a `source()`:
    // printed as a chain (`{:#}`) it would appear twice.
    #[error("cannot read config file {}: {error}", .path.display())]
    Read {
        /// The file as given.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
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
            decode: crate::receiver::decode::Limits::default(),
            admission: crate::receiver::admission::AdmissionSettings::default(),
            grpc: GrpcSettings {
                endpoint: localhost(GRPC_PORT),
                max_recv_msg_size: 4 * MIB,
                max_buffered: 128 * MIB,
                connections: ConnectionLimits {
                    max_connections: NonZeroUsize::new(OTLP_MAX_CONNECTIONS).expect("non-zero"),
                    read_header_timeout: Duration::from_secs(10),
                    // Longer than HTTP's: gRPC clients keep one connection
                    // and reconnect less cheaply; and a closed idle
                    // connection gets no GOAWAY (see server::listen).
                    idle_timeout: Duration::from_secs(5 * 60),
                },
                max_concurrent_streams: NonZeroUsize::new(100).expect("non-zero"),
                request_timeout: Duration::from_secs(30),
                keepalive_interval: Duration::from_secs(60),
                keepalive_timeout: Duration::from_secs(20),
                tls: None,
                auth: AuthConfig::default(),
            },
            http: HttpSettings {
                endpoint: localhost(HTTP_PORT),
                max_request_body_size: 20 * MIB,
                max_buffered: 128 * MIB,
                connections: ConnectionLimits {
                    max_connections: NonZeroUsize::new(OTLP_MAX_CONNECTIONS).expect("non-zero"),
                    read_header_timeout: Duration::from_secs(10),
                    idle_timeout: Duration::from_secs(2 * 60),
                },
                read_timeout: Duration::from_secs(30),
                tls: None,
                auth: AuthConfig::default(),
            },
            admin: AdminSettings {
                endpoint: localhost(ADMIN_PORT),
                connections: ConnectionLimits {
                    max_connections: NonZeroUsize::new(ADMIN_MAX_CONNECTIONS).expect("non-zero"),
                    read_header_timeout: Duration::from_secs(10),
                    idle_timeout: Duration::from_secs(2 * 60),
                },
                read_timeout: Duration::from_secs(30),
                tls: None,
                auth: AuthConfig::default(),
            },
            api: ApiConfig::default(),
            store: StoreConfig::default(),
            detect: DetectConfig::default(),
            alerting: AlertConfig::default(),
            changes: ChangesConfig::default(),
            storage: StorageConfig::default(),
            analyze: SpanConfig::default(),
            forward: crate::forward::ForwardConfig::default(),
            agent: AgentConfig::default(),
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
            rca: crate::analyze::context::RcaConfig {
                trace_url: self.alerting.trace_url.clone(),
                ..crate::analyze::context::RcaConfig::default()
            },
        }
    }

    /// Load: defaults, then the file (if any), then overrides; validate
    /// everything; return all problems at once.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Settings, ConfigError> {
        match file {
            None => Settings::parse("", "config", overrides),
            Some(path) => {
                let yaml = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                    path: path.to_owned(),
                    error,
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
        check.field(
            &otlp,
            "max_items_per_request",
            &mut settings.decode.max_items,
            |value| count(value, 1, MAX_ITEMS_PER_REQUEST).map(NonZeroUsize::get),
        );
        check.field(
            &otlp,
            "max_decoded_mib",
            &mut settings.decode.max_decoded_bytes,
            size_mib,
        );
        check_admission(&mut check, &otlp, &mut settings.admission);
        let grpc = check.section(&otlp, "grpc", GRPC_KEYS);
        check.field(&grpc, "endpoint", &mut settings.grpc.endpoint, |value| {
            endpoint(value, GRPC_PORT)
        });
        let message_ok = check.field(
            &grpc,
            "max_recv_msg_size_mib",
            &mut settings.grpc.max_recv_msg_size,
            size_mib,
        );
        let buffered_ok = check.field(
            &grpc,
            "max_buffered_mib",
            &mut settings.grpc.max_buffered,
            size_mib,
        );
        if message_ok && buffered_ok {
            fit_largest(
                &mut check,
                &grpc,
                ("max_buffered_mib", &mut settings.grpc.max_buffered),
                ("max_recv_msg_size_mib", settings.grpc.max_recv_msg_size),
            );
        }
        let limits = &mut settings.grpc.connections;
        check.field(
            &grpc,
            "max_connections",
            &mut limits.max_connections,
            |value| count(value, 1, MAX_MAX_CONNECTIONS),
        );
        check.field(
            &grpc,
            "max_concurrent_streams",
            &mut settings.grpc.max_concurrent_streams,
            |value| count(value, 1, MAX_CONCURRENT_STREAMS),
        );
        check.field(
            &grpc,
            "read_header_timeout",
            &mut limits.read_header_timeout,
            read_header_timeout,
        );
        check.field(
            &grpc,
            "request_timeout",
            &mut settings.grpc.request_timeout,
            request_timeout,
        );
        check.field(
            &grpc,
            "idle_timeout",
            &mut limits.idle_timeout,
            idle_timeout,
        );
        check.field(
            &grpc,
            "keepalive_interval",
            &mut settings.grpc.keepalive_interval,
            |value| {
                at_most(
                    at_least(duration(value)?, MIN_KEEPALIVE_INTERVAL)?,
                    MAX_IDLE_TIMEOUT,
                )
            },
        );
        check.field(
            &grpc,
            "keepalive_timeout",
            &mut settings.grpc.keepalive_timeout,
            |value| at_most(positive(duration(value)?)?, MAX_KEEPALIVE_TIMEOUT),
        );
        check_tls(&mut check, &grpc, &mut settings.grpc.tls);
        check_auth(&mut check, &grpc, AUTH_KEYS, &mut settings.grpc.auth);
        let http = check.section(&otlp, "http", HTTP_KEYS);
        check.field(&http, "endpoint", &mut settings.http.endpoint, |value| {
            endpoint(value, HTTP_PORT)
        });
        let body_ok = check.field(
            &http,
            "max_request_body_size_mib",
            &mut settings.http.max_request_body_size,
            size_mib,
        );
        let buffered_ok = check.field(
            &http,
            "max_buffered_mib",
            &mut settings.http.max_buffered,
            size_mib,
        );
        if body_ok && buffered_ok {
            fit_largest(
                &mut check,
                &http,
                ("max_buffered_mib", &mut settings.http.max_buffered),
                (
                    "max_request_body_size_mib",
                    settings.http.max_request_body_size,
                ),
            );
        }
        check_http_limits(
            &mut check,
            &http,
            &mut settings.http.connections,
            &mut settings.http.read_timeout,
        );
        check_tls(&mut check, &http, &mut settings.http.tls);
        check_auth(&mut check, &http, AUTH_KEYS, &mut settings.http.auth);

        let admin = check.section(&top, "admin", ADMIN_KEYS);
        check.field(&admin, "endpoint", &mut settings.admin.endpoint, |value| {
            endpoint(value, ADMIN_PORT)
        });
        check_http_limits(
            &mut check,
            &admin,
            &mut settings.admin.connections,
            &mut settings.admin.read_timeout,
        );
        check_tls(&mut check, &admin, &mut settings.admin.tls);
        check_auth(&mut check, &admin, AUTH_KEYS, &mut settings.admin.auth);

        query::config::check(&mut check, &top, &mut settings.api);
        store::config::check(&mut check, &top, &mut settings.store);
        detect::config::check(&mut check, &top, &mut settings.detect);
        alert::config::check(&mut check, &top, &mut settings.alerting);
        changes::config::check(&mut check, &top, &mut settings.changes);
        history::config::check(&mut check, &top, &mut settings.storage);
        spans::config::check(&mut check, &top, &mut settings.analyze);
        crate::forward::config::check(&mut check, &top, &mut settings.forward);
        agent::config::check(&mut check, &top, &mut settings.agent);
        if settings.agent.enabled && settings.alerting.enabled() {
            check.report(
                "alerting",
                "mode is agent: the gateway detects and alerts, so agents list no \
                 alerting targets (their own view is one node's traffic)",
            );
        }

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
        let grpc = format!("{EXAMPLE_HEAD}{}", security::config::example(6, ""));
        let http = format!("{EXAMPLE_HTTP}{}", security::config::example(6, ""));
        let admin = format!(
            "{EXAMPLE_ADMIN}{}",
            security::config::example(2, ADMIN_AUTH_NOTE)
        );
        let receivers = format!("{grpc}{http}");
        let api = query::config::example();
        [
            receivers.as_str(),
            admin.as_str(),
            api.as_str(),
            store::config::EXAMPLE,
            spans::config::EXAMPLE,
            detect::config::EXAMPLE,
            changes::config::EXAMPLE,
            history::config::EXAMPLE,
            alert::config::EXAMPLE,
            crate::forward::config::EXAMPLE,
            agent::config::EXAMPLE,
            EXAMPLE_TAIL,
        ]
        .join("\n")
    })
}

/// The top of the example config: how to read it, then `receivers.otlp`
/// up to the end of its `grpc` part; the receivers and `admin:` are here
/// because their types are, each followed by its `tls:` and `auth:`.
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
    # Most items (spans, metric data points, log records) in one export
    # request; a request with more is refused as INVALID_ARGUMENT / 400
    # before it is decoded (exporters send a few thousand).
    max_items_per_request: 100000
    # Most memory decoding one request may take, in MiB, estimated from its
    # bytes before decoding; over it, refused like the above. One request
    # per core decodes at a time.
    max_decoded_mib: 64
    # Memory limit, like the OTel Collector's memory_limiter: the resident
    # memory is sampled every memory_check_interval, and while it is above
    # the soft limit (memory_limit_mib - memory_spike_limit_mib) export
    # requests are refused before they are read, with gRPC UNAVAILABLE +
    # RetryInfo / HTTP 503 + Retry-After, which exporters retry. 0: no
    # limit. Set it below the container's memory limit (the manifests in
    # deploy/ use 200 for a 256Mi container).
    memory_limit_mib: 0
    # Growth expected between two samples, in MiB; 0: a fifth of
    # memory_limit_mib (the Collector's default).
    memory_spike_limit_mib: 0
    memory_check_interval: 1s
    # Requests waiting for a decoder (one decodes per core) are bounded by
    # count, by the MiB their bodies hold, and by how long each waits; past
    # any bound a request is refused like above instead of queueing.
    max_queued_requests: 128
    max_queued_mib: 32
    max_queue_wait: 2s
    grpc:
      # Where the OTLP/gRPC receiver listens. Use "0.0.0.0:4317" to accept
      # traffic from other hosts. Flag --grpc-endpoint, env TRIAGE_GRPC_ENDPOINT.
      endpoint: "127.0.0.1:4317"
      # Largest gRPC message accepted, in MiB (fractions allowed; at most 1024).
      max_recv_msg_size_mib: 4
      # Request bytes held at once across all calls, in MiB; a call whose
      # next bytes do not fit waits for room. At least max_recv_msg_size_mib
      # (left out, it grows to it).
      max_buffered_mib: 128
      # Connections kept open at once. One more is closed as soon as it is
      # accepted and counted in triage_listener_refused_connections_total.
      max_connections: 1024
      # Calls in flight on one connection (HTTP/2 max concurrent streams,
      # also enforced by the server).
      max_concurrent_streams: 100
      # How long a new connection may take to send the HTTP/2 preface.
      read_header_timeout: 10s
      # Longest call, body included (a client's shorter grpc-timeout wins).
      request_timeout: 30s
      # A connection with no call in flight for this long is closed.
      idle_timeout: 5m
      # Each connection is pinged this often, and closed when a ping is not
      # answered within keepalive_timeout.
      keepalive_interval: 1m
      keepalive_timeout: 20s
"#;

/// The `receivers.otlp.http` part of the example config.
const EXAMPLE_HTTP: &str = r#"    http:
      # Where the OTLP/HTTP receiver listens.
      # Flag --http-endpoint, env TRIAGE_HTTP_ENDPOINT.
      endpoint: "127.0.0.1:4318"
      # Largest request body accepted after decompression, in MiB (at most 1024).
      max_request_body_size_mib: 20
      # Request-body bytes held at once across all requests, in MiB; a
      # request whose next bytes do not fit waits for room (TCP slows its
      # sender). At least max_request_body_size_mib (left out, it grows to it).
      max_buffered_mib: 128
      # Connections kept open at once; more are closed as soon as accepted.
      max_connections: 1024
      # How long a request's headers may take to arrive; a new connection
      # must start its first request within it too. On HTTP/1.1 the clock
      # starts when the connection is ready for the next request, so a
      # keep-alive connection idle this long is closed as well.
      read_header_timeout: 10s
      # How long a request body may take to arrive once its headers have;
      # a slower upload is answered 408 and dropped.
      read_timeout: 30s
      # A connection with no request in flight for this long is closed.
      idle_timeout: 2m
"#;

/// The `admin:` part of the example config.
const EXAMPLE_ADMIN: &str = r#"admin:
  # Where /metrics, /healthz and /readyz are served.
  # Flag --admin-endpoint, env TRIAGE_ADMIN_ENDPOINT.
  endpoint: "127.0.0.1:8888"
  # The admin port's own limits, apart from the OTLP listeners' so that
  # /healthz keeps answering while those are flooded. Same meanings as
  # under receivers.otlp.http.
  max_connections: 64
  read_header_timeout: 10s
  read_timeout: 30s
  idle_timeout: 2m
"#;

/// What `admin.auth` covers, shown above its keys in the example.
const ADMIN_AUTH_NOTE: &str =
    "# Every admin route but GET /healthz and /readyz (probes send no token)
# needs a token, /metrics included. POST /api/v1/changes also accepts
# changes.api_token.";

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

/// Reads the memory limit and the decode queue's bounds of
/// `receivers.otlp`. The spike allowance defaults to a fifth of the limit,
/// as the OTel Collector's `memory_limiter` does.
fn check_admission(
    check: &mut Checker,
    otlp: &Section<'_>,
    admission: &mut crate::receiver::admission::AdmissionSettings,
) {
    use crate::receiver::admission::{MemoryLimit, DEFAULT_CHECK_INTERVAL};
    let mut limit_mib = 0;
    check.field(otlp, "memory_limit_mib", &mut limit_mib, memory_mib);
    // 0: a fifth of the limit.
    let mut spike_mib = 0;
    check.field(otlp, "memory_spike_limit_mib", &mut spike_mib, memory_mib);
    let mut check_interval = DEFAULT_CHECK_INTERVAL;
    check.field(
        otlp,
        "memory_check_interval",
        &mut check_interval,
        |value| {
            at_most(
                at_least(duration(value)?, MIN_CHECK_INTERVAL)?,
                MAX_CHECK_INTERVAL,
            )
        },
    );
    let limit = limit_mib * MIB as u64;
    admission.memory = if limit_mib == 0 {
        if spike_mib > 0 {
            check.report(
                otlp.key_path("memory_spike_limit_mib"),
                "needs memory_limit_mib (0 or left out: no memory limit)",
            );
        }
        None
    } else if spike_mib >= limit_mib {
        check.report(
            otlp.key_path("memory_spike_limit_mib"),
            format!(
                "{spike_mib} must be less than {} ({limit_mib}); the soft limit is their difference",
                otlp.key_path("memory_limit_mib")
            ),
        );
        None
    } else {
        Some(MemoryLimit {
            limit,
            spike: match spike_mib {
                0 => limit / 5,
                spike => spike * MIB as u64,
            },
            check_interval,
        })
    };
    let queue = &mut admission.queue;
    check.field(
        otlp,
        "max_queued_requests",
        &mut queue.max_requests,
        |value| count(value, 1, MAX_QUEUED_REQUESTS).map(NonZeroUsize::get),
    );
    check.field(otlp, "max_queued_mib", &mut queue.max_bytes, size_mib);
    check.field(otlp, "max_queue_wait", &mut queue.max_wait, |value| {
        at_most(positive(duration(value)?)?, MAX_QUEUE_WAIT)
    });
}

/// A whole number of MiB for the memory limit, 0 (off) to 1 TiB.
fn memory_mib(value: &Value) -> Result<u64, String> {
    match value.as_u64() {
        Some(mib) if mib <= MAX_MEMORY_LIMIT_MIB => Ok(mib),
        _ => Err(format!(
            "expected a whole number of MiB from 0 to {MAX_MEMORY_LIMIT_MIB}, got {}",
            serde_yaml::to_string(value).unwrap_or_default().trim_end()
        )),
    }
}

/// Reads the connection limits of an HTTP listener (`receivers.otlp.http`
/// or `admin`), in the order the example lists them.
fn check_http_limits(
    check: &mut Checker,
    section: &Section<'_>,
    limits: &mut ConnectionLimits,
    read_timeout: &mut Duration,
) {
    check.field(
        section,
        "max_connections",
        &mut limits.max_connections,
        |value| count(value, 1, MAX_MAX_CONNECTIONS),
    );
    check.field(
        section,
        "read_header_timeout",
        &mut limits.read_header_timeout,
        read_header_timeout,
    );
    check.field(section, "read_timeout", read_timeout, request_timeout);
    check.field(
        section,
        "idle_timeout",
        &mut limits.idle_timeout,
        idle_timeout,
    );
}

/// Makes a listener's byte budget (`buffered`) hold one largest request
/// (`largest`), which otherwise could never be read: the default grows to
/// it, so that raising only the size limit stays valid; a value written in
/// the file that is smaller is a problem.
fn fit_largest(
    check: &mut Checker,
    section: &Section<'_>,
    (buffered_key, buffered): (&str, &mut usize),
    (largest_key, largest): (&str, usize),
) {
    if *buffered >= largest {
        return;
    }
    if section.get(buffered_key).is_none() {
        *buffered = largest;
        return;
    }
    let mib = |bytes: usize| bytes as f64 / MIB as f64;
    check.report(
        section.key_path(buffered_key),
        format!(
            "{} is less than {} ({}{}); the largest request would never fit",
            mib(*buffered),
            section.key_path(largest_key),
            mib(largest),
            default_note(section, largest_key),
        ),
    );
}

/// A `read_header_timeout`: more than zero, at most 5m.
fn read_header_timeout(value: &Value) -> Result<Duration, String> {
    at_most(positive(duration(value)?)?, MAX_READ_HEADER_TIMEOUT)
}

/// A `read_timeout` or `request_timeout`: more than zero, at most 1h.
fn request_timeout(value: &Value) -> Result<Duration, String> {
    at_most(positive(duration(value)?)?, MAX_REQUEST_TIMEOUT)
}

/// An `idle_timeout`: more than zero, at most 1d.
fn idle_timeout(value: &Value) -> Result<Duration, String> {
    at_most(positive(duration(value)?)?, MAX_IDLE_TIMEOUT)
}

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
