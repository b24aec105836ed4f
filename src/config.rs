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
//! in one go. The `*_KEYS` lists below are the schema, and [`example_yaml`]
//! documents it; a test checks that the two agree.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;
use serde_yaml::{Mapping, Value};

use crate::alert::config::{
    self as alert_config, AlertConfig, Auth, Secret, TargetConfig, TlsConfig,
};
use crate::detect::DetectConfig;
use crate::history::StorageConfig;
use crate::ingest::changes::{ApiToken, ChangesConfig, RARE_SHARE};
use crate::ingest::spans::SpanConfig;
use crate::model::{SpanAttributes, MAX_EXTRA_KEYS};
use crate::query::{ApiConfig, TlsFiles, TokenSource};
use crate::store::StoreConfig;

/// Default port of the OTLP/gRPC receiver (the OTLP standard port).
const GRPC_PORT: u16 = 4317;
/// Default port of the OTLP/HTTP receiver (the OTLP standard port).
const HTTP_PORT: u16 = 4318;
/// Default port of the admin server.
const ADMIN_PORT: u16 = 8888;

/// Bytes in one MiB, the unit the file uses for message sizes.
const MIB: usize = 1024 * 1024;
/// Largest message size accepted, in MiB. Receivers buffer a whole message,
/// so a bigger limit is more likely a typo than a need.
const MAX_SIZE_MIB: f64 = 1024.0;
/// Shortest store window: below it, per-window bookkeeping would cost more
/// than the statistics are worth.
const MIN_WINDOW: Duration = Duration::from_millis(100);
/// Fewest windows a series keeps: detection compares a window with those
/// before it, so it needs at least two.
const MIN_WINDOWS: usize = 2;
/// Most windows a series keeps, bounding the memory of one series.
const MAX_WINDOWS: usize = 10_000;
/// Fewest windows of detection history: a median of fewer is one outlier
/// away from wrong.
const MIN_HISTORY_WINDOWS: usize = 10;
/// Most windows of detection history. A window costs 32 bytes per series,
/// so this bounds a series' history at 320 KB (28 hours at 10 s).
const MAX_HISTORY_WINDOWS: usize = 10_000;
/// Most consecutive windows the hysteresis counts: beyond this an incident
/// would open or resolve too late to be useful.
const MAX_HYSTERESIS_WINDOWS: usize = 1_000;
/// Longest shutdown drain. Orchestrators kill a process that takes longer
/// than a few minutes to stop anyway.
const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Most counters per heavy-hitter sketch: each costs about 100 bytes per
/// attribute key, service and window.
const MAX_SKETCH_SIZE: usize = 1_024;

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
/// Keys of `api`.
const API_KEYS: &[&str] = &["endpoint", "auth", "tls"];
/// Keys of `api.auth`.
const API_AUTH_KEYS: &[&str] = &["bearer_token", "bearer_token_file"];
/// Keys of `api.tls`.
const API_TLS_KEYS: &[&str] = &["cert_file", "key_file"];
/// Keys of `store`.
const STORE_KEYS: &[&str] = &[
    "window",
    "windows",
    "max_series",
    "max_series_per_service",
    "series_ttl",
    "pairing_timeout",
    "pairing_capacity",
    "metric_attributes",
];
/// Keys of `analyze`.
const ANALYZE_KEYS: &[&str] = &[
    "attributes",
    "trace_buffer",
    "sketch_size",
    "min_bad_spans",
    "min_bad_share",
];
/// Keys of `analyze.trace_buffer`.
const TRACE_BUFFER_KEYS: &[&str] = &["capacity", "ttl"];
/// Keys of `detect`.
const DETECT_KEYS: &[&str] = &[
    "warmup_windows",
    "history_windows",
    "relearn_after",
    "lateness",
    "seasonality",
    "hysteresis",
    "latency",
    "errors",
    "traffic",
    "metrics",
    "trend",
    "saturation",
    "severe_significance",
];
/// Keys of `detect.hysteresis`.
const HYSTERESIS_KEYS: &[&str] = &["open_after", "open_after_severe", "resolve_after"];
/// Keys of `detect.latency`.
const LATENCY_KEYS: &[&str] = &[
    "ratio",
    "p50_min_ms",
    "p95_min_ms",
    "p99_min_ms",
    "min_requests",
    "p99_min_requests",
    "min_z",
    "severe_ratio",
];
/// Keys of `detect.errors`.
const ERRORS_KEYS: &[&str] = &[
    "significance",
    "min_increase",
    "min_requests",
    "rate_floor",
    "min_z",
    "severe_ratio",
];
/// Keys of `detect.traffic`.
const TRAFFIC_KEYS: &[&str] = &[
    "significance",
    "min_rate",
    "drop_ratio",
    "spike_ratio",
    "min_z",
    "severe_drop_ratio",
    "severe_spike_ratio",
];
/// Keys of `detect.metrics`.
const METRICS_KEYS: &[&str] = &["watch", "min_z", "min_change"];
/// Keys of `detect.trend`.
const TREND_KEYS: &[&str] = &[
    "watch",
    "min_duration",
    "min_r2",
    "min_rise",
    "horizon",
    "limits",
];
/// Keys of `detect.saturation`.
const SATURATION_KEYS: &[&str] = &["pool_usage", "cpu_throttled"];
/// Keys of `changes`.
const CHANGES_KEYS: &[&str] = &[
    "lookback",
    "capacity",
    "api_token",
    "api_token_file",
    "detect_from_telemetry",
    "rollout_debounce",
    "instance_timeout",
    "flag_window",
    "flag_shift",
];
/// Longest change look-back: an incident is rarely caused by a change a
/// day old, and listing a day of changes on it would bury the likely ones.
const MAX_CHANGES_LOOKBACK: Duration = Duration::from_secs(24 * 3600);
/// Most changes kept in memory (about a kilobyte each).
const MAX_CHANGES_CAPACITY: usize = 1_000_000;
/// Shortest instance timeout and flag window: SDKs export every few
/// seconds, so shorter ones would see changes in every pause.
const MIN_CHANGES_PERIOD: Duration = Duration::from_secs(1);
/// Keys of `storage`.
const STORAGE_KEYS: &[&str] = &["enabled", "data_dir", "retention", "snapshot_interval"];
/// Shortest history retention: keeping less than an hour of incidents is
/// more likely a typo than a wish.
const MIN_RETENTION: Duration = Duration::from_secs(3600);
/// Shortest snapshot interval: a snapshot of thousands of series takes tens
/// of milliseconds to write, so more often than every second is churn.
const MIN_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);
/// Keys of `log`.
const LOG_KEYS: &[&str] = &["level", "format"];
/// Keys of `alerting`.
const ALERTING_KEYS: &[&str] = &[
    "alertmanagers",
    "webhooks",
    "resend_interval",
    "resolved_resend_for",
    "queue_capacity",
    "labels",
    "runbook_url",
    "external_url",
];
/// Keys of each entry of `alerting.alertmanagers` and `alerting.webhooks`.
const ALERT_TARGET_KEYS: &[&str] = &[
    "url",
    "timeout",
    "basic_auth",
    "bearer_token",
    "bearer_token_file",
    "tls",
];
/// Keys of a target's `basic_auth`.
const BASIC_AUTH_KEYS: &[&str] = &["username", "password", "password_file"];
/// Keys of a target's `tls`.
const ALERT_TLS_KEYS: &[&str] = &["ca_file", "cert_file", "key_file", "insecure_skip_verify"];
/// Shortest alert resend interval: Alertmanager is not meant to be polled.
const MIN_RESEND_INTERVAL: Duration = Duration::from_millis(100);
/// Largest alert queue per target; an alert takes about a kilobyte.
const MAX_ALERT_QUEUE: usize = 1_000_000;

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
struct Checker {
    /// Problems found so far, in the order found (document order).
    problems: Vec<Problem>,
}

/// One mapping of the document being read, and where it sits in it.
#[derive(Debug)]
struct Section<'a> {
    /// Dotted path of this mapping; empty for the document itself.
    path: String,
    /// Its entries; `None` when the section is absent, null, or not a
    /// mapping (the last one already reported), so every key reads as unset.
    entries: Option<&'a Mapping>,
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

        check.api(&top, &mut settings.api);
        check.store(&top, &mut settings.store);
        check.detect(&top, &mut settings.detect);
        check.alerting(&top, &mut settings.alerting);
        check.changes(&top, &mut settings.changes);
        check.storage(&top, &mut settings.storage);
        check.analyze(&top, &mut settings.analyze);

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
            |text| socket_addr(text, crate::query::config::API_PORT),
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

        if check.problems.is_empty() {
            Ok(settings)
        } else {
            Err(check.problems)
        }
    }
}

/// A fully commented config file listing every key with its default value
/// (printed by `triage example-config`). It parses to [`Settings::default`].
pub fn example_yaml() -> &'static str {
    EXAMPLE_YAML
}

/// The text behind [`example_yaml`]; the tests check that it parses to the
/// defaults and names every key.
const EXAMPLE_YAML: &str = r#"# triage configuration.
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

api:
  # Where the gRPC query API (triage.v1.TriageQuery, grpc.health.v1 health and
  # server reflection) listens; `triage query` connects here.
  # Flag --api-endpoint, env TRIAGE_API_ENDPOINT.
  endpoint: "127.0.0.1:4320"
  # Require `authorization: Bearer <token>` on every query and reflection
  # call (health stays open). Give the token or a file holding it, not both.
  auth:
    # bearer_token: "change-me"
    # bearer_token_file: /etc/triage/api-token
  # Serve TLS with this PEM certificate chain and key (both or neither).
  tls:
    # cert_file: /etc/triage/tls.crt
    # key_file: /etc/triage/tls.key

store:
  # Length of one event-time window (at least 100ms).
  window: 10s
  # How many windows each series keeps, from 2 to 10000. Together with
  # `window` this is how far back detection can look (here 5 minutes).
  windows: 30
  # Cap on series across all services. Beyond it, samples fold into each
  # service's overflow series instead of using more memory.
  max_series: 20000
  # Cap on series of one service (operations, edges, metrics and logs);
  # at most `max_series`.
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

# Span analysis, for root cause: each span's own (exclusive) time and
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

# Anomaly detection. Each closed window of each series is compared with the
# series' own robust baseline (median and MAD of its trailing windows, log
# space for latency) and, once a day of history exists, with the same time
# of day on previous days. Window counts below assume store.window = 10s.
detect:
  # Windows a series must be seen for before it may alert (reported as
  # warming up): a median of 30 windows is stable, and a restarted collector
  # is useful again within 5 minutes.
  warmup_windows: 30
  # Windows of history each series keeps as its baseline (32 bytes each), from
  # 10 to 10000. One hour: a half-hour incident cannot drag the median, and a
  # 30-minute trend fits in it.
  history_windows: 360
  # Anomalous windows stay out of the baseline so an incident cannot hide
  # itself; a change that persists this long is taken as intended and learned.
  relearn_after: 30m
  # A window is judged this long after it ends (wall clock). SDK batch
  # exporters flush every 5 s and pipelines add a few more; spans arriving
  # later still count in the totals, as late.
  lateness: 10s
  # Also compare with the same time of day on the last 3 days, so a daily
  # peak is not an incident.
  seasonality: true
  hysteresis:
    # Consecutive anomalous windows before an incident opens: one odd window
    # is common, two in a row rarely are.
    open_after: 2
    # The same for severe deviations (at most open_after): waiting costs time.
    open_after_severe: 1
    # Consecutive normal windows before an incident resolves; more than
    # open_after, so a flapping series keeps one incident.
    resolve_after: 3
  latency:
    # Alert only at this multiple of the baseline quantile (above 1) AND a
    # rise of at least the absolute amounts below: 1.5x of 2 ms hurts nobody.
    ratio: 1.5
    p50_min_ms: 10
    p95_min_ms: 20
    # The p99 of a window is noisy, so it needs a larger move.
    p99_min_ms: 50
    # Fewer requests than this in a window: p50/p95 are not judged or learned
    # (the p95 of 19 requests is the second-largest one).
    min_requests: 20
    # The same for p99, which needs 100 samples to be more than the maximum.
    p99_min_requests: 100
    # The shift must also stand out from the series' own noise (robust z in
    # log space); this only bites on series noisy enough that 1.5x is normal.
    min_z: 3.5
    # This multiple of the baseline or more is severe (opens after
    # open_after_severe windows); at least `ratio`.
    severe_ratio: 3
  errors:
    # Binomial p-value below which errors are more than the baseline rate
    # explains; thousands of series judged every 10s need a strict value.
    significance: 1.0e-4
    # And the error rate must rise by at least 2 percentage points.
    min_increase: 0.02
    # Fewer requests than this in a window are not judged: "3 of 4 failed"
    # is not an incident, "10 of 10 failed" is.
    min_requests: 10
    # Smallest baseline rate assumed, so a series that never failed does not
    # alert on its first error (1 of 3 failing then has p = 0.003).
    rate_floor: 0.001
    # Robust z against the per-window rates, for naturally bursty errors.
    min_z: 3
    # This multiple of the baseline rate, with p below severe_significance,
    # is severe.
    severe_ratio: 10
  traffic:
    # Poisson p-value below which a request count is a drop or a spike.
    significance: 1.0e-4
    # Requests per second a series' baseline needs to be judged at all:
    # below it a series is idle and its silences and bursts mean nothing.
    min_rate: 1
    # A drop is this fraction of the baseline or less (0 to 1); traffic
    # wobbles by tens of percent, losing half is an outage of something.
    drop_ratio: 0.5
    # A spike is this multiple of the baseline or more (above 1).
    spike_ratio: 2
    # Robust z against the per-window counts: traffic is burstier than Poisson.
    min_z: 3
    # Severe: at most this fraction of the baseline (service down)...
    severe_drop_ratio: 0.1
    # ...or at least this multiple (at least spike_ratio).
    severe_spike_ratio: 5
  metrics:
    # Metric names watched for level shifts; `*` matches any characters, and
    # {attr=value} suffixes are ignored. Defaults: semantic-convention memory,
    # CPU, connection pools, runtime/GC and request duration. (CPU throttling
    # is judged by its saturation rule, which needs no watching.)
    watch:
      - process.memory.usage
      - container.memory.usage
      - container.memory.working_set
      - process.cpu.time
      - process.cpu.utilization
      - container.cpu.time
      - container.cpu.usage
      - container.cpu.utilization
      - db.client.connection.*
      - db.client.connections.*
      - jvm.gc.duration
      - jvm.memory.used
      - process.runtime.*
      - http.server.request.duration
      - http.client.request.duration
      - rpc.server.duration
      - rpc.client.duration
    # A level shift must be this many robust standard deviations out
    # (metrics have heavy tails)...
    min_z: 6
    # ...and move by at least this fraction of the baseline level.
    min_change: 0.5
  trend:
    # Metric names checked for sustained rises (memory leaks).
    watch:
      - process.memory.usage
      - container.memory.usage
      - container.memory.working_set
      - jvm.memory.used
      - process.runtime.*.memory.usage
    # A rise shorter than this is warm-up or a batch job, not a trend.
    min_duration: 30m
    # The linear fit must be this good (0 to 1): steady, not one jump.
    min_r2: 0.8
    # And rise by at least this fraction of its starting level.
    min_rise: 0.1
    # A trend projected to reach its limit within this time is a saturation.
    horizon: 6h
    # Limits for metrics without a limit metric, by name pattern, in the
    # metric's unit; the longest matching pattern wins. For example:
    #   limits:
    #     process.memory.usage: 2147483648
    limits: {}
  saturation:
    # Connection-pool usage (used / max, 0 to 1) that, with requests waiting,
    # is saturation.
    pool_usage: 0.9
    # Share of CPU periods throttled (0 to 1) that is saturation.
    cpu_throttled: 0.25
  # p-value below which a large deviation is severe: chance alone gives one
  # such window per thousands of series-years.
  severe_significance: 1.0e-9

# Change events (deploys, config changes, feature flags, scaling and
# infrastructure events), posted by tools to POST /api/v1/changes on the
# admin port or seen in the telemetry, and correlated with incidents.
# See docs/CHANGES.md.
changes:
  # How far before an incident's onset changes are considered (at most 1d).
  lookback: 30m
  # Changes kept in memory; the oldest are dropped first.
  capacity: 10000
  # Require `Authorization: Bearer <token>` on POST /api/v1/changes. Give the
  # token or a file holding it, not both. Without one, anything that can
  # reach the admin port may post changes.
  # api_token: "change-me"
  # api_token_file: /etc/triage/changes-token
  # Infer changes from the telemetry: a new service.version, instances
  # (k8s.pod.name, else service.instance.id) turning over, feature-flag
  # variants on spans, Kubernetes events received as logs.
  detect_from_telemetry: true
  # A rollout or scaling is reported as one change once no instance has come
  # or gone for this long.
  rollout_debounce: 2m
  # An instance that sends nothing for this long has gone (at least 1s).
  # Versions and instances seen within this time of a service's first span
  # were already there: they are its baseline, not changes.
  instance_timeout: 1m
  # Flag-variant shares are compared between consecutive periods this long
  # (at least 1s); variants seen in a flag's first period are its baseline.
  flag_window: 5m
  # A variant under 5% of a flag's evaluations in one period that reaches at
  # least this share (above 0.05, at most 1) in the next is a flag change.
  flag_shift: 0.2

# The incident history (incidents, their events, change events) and
# snapshots of the detection baselines, in SQLite at <data_dir>/triage.db, so
# they survive restarts. See docs/HISTORY.md.
storage:
  # false keeps the history in memory only (nothing is written to disk) and
  # a restarted collector warms up again.
  enabled: true
  # Created if missing; must be writable. Mount a volume here in containers.
  data_dir: ./data
  # Resolved incidents, changes and snapshots older than this are pruned
  # (at least 1h; 14d is 336h).
  retention: 14d
  # How often the detection baselines and open incidents are snapshotted
  # (also at a graceful shutdown); a restart loses at most this much
  # learning. At least 1s.
  snapshot_interval: 60s

# Alert delivery. Nothing is sent until a target is listed. Every alert goes
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
  # Base URL of the generatorURL link to each incident
  # (<base>/api/v1/incidents/<id>); "" links to the admin address.
  external_url: ""

log:
  # A tracing filter: trace, debug, info, warn or error, or directives such
  # as "triage=debug,info". Flag --log-level, env TRIAGE_LOG_LEVEL.
  level: info
  # text or json. Flag --log-format, env TRIAGE_LOG_FORMAT.
  format: text

# How long shutdown waits for in-flight work to drain (at most 5m).
shutdown_timeout: 10s
"#;

// === impl Checker ===

impl Checker {
    /// Records a problem.
    fn report(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Opens the mapping at `path` (the document itself when `path` is
    /// empty), reporting each key not in `known` and a value that is not a
    /// mapping at all.
    fn open<'a>(&mut self, path: String, value: Option<&'a Value>, known: &[&str]) -> Section<'a> {
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
    fn section<'a>(&mut self, parent: &Section<'a>, key: &str, known: &[&str]) -> Section<'a> {
        self.open(parent.key_path(key), parent.get(key), known)
    }

    /// Reads the value under `key` of `section` into `target`, which keeps
    /// its default when the key is absent. Returns whether `target` now holds
    /// a value from the file or the default, that is, whether rules between
    /// fields may use it.
    fn field<T>(
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
    fn apply<T>(
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

    /// Reads the `api` section into `api`: the endpoint, then token and TLS
    /// files, whose pairs must be consistent. Files are only named here;
    /// they are read when the server starts.
    fn api(&mut self, top: &Section<'_>, api: &mut ApiConfig) {
        let section = self.section(top, "api", API_KEYS);
        self.field(&section, "endpoint", &mut api.endpoint, |value| {
            endpoint(value, crate::query::config::API_PORT)
        });

        let auth = self.section(&section, "auth", API_AUTH_KEYS);
        let mut token = None;
        self.field(&auth, "bearer_token", &mut token, |value| {
            let token = text(value, "a token string")?;
            // It travels in an HTTP/2 header, so it must be visible ASCII.
            if token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()) {
                return Err("must be non-empty printable ASCII without spaces".to_owned());
            }
            Ok(Some(TokenSource::Inline(token.to_owned())))
        });
        let mut token_file = None;
        self.field(&auth, "bearer_token_file", &mut token_file, |value| {
            Ok(Some(TokenSource::File(file_path(value)?)))
        });
        api.bearer_token = match (token, token_file) {
            (Some(_), Some(_)) => {
                self.report(
                    auth.key_path("bearer_token_file"),
                    "give api.auth.bearer_token or bearer_token_file, not both",
                );
                None
            }
            (inline, file) => inline.or(file),
        };

        let tls = self.section(&section, "tls", API_TLS_KEYS);
        let mut cert_file = None;
        self.field(&tls, "cert_file", &mut cert_file, |value| {
            file_path(value).map(Some)
        });
        let mut key_file = None;
        self.field(&tls, "key_file", &mut key_file, |value| {
            file_path(value).map(Some)
        });
        api.tls = match (cert_file, key_file) {
            (Some(cert_file), Some(key_file)) => Some(TlsFiles {
                cert_file,
                key_file,
            }),
            (None, None) => None,
            (Some(_), None) => {
                if tls.get("key_file").is_none() {
                    self.report(tls.key_path("key_file"), "required with cert_file");
                }
                None
            }
            (None, Some(_)) => {
                if tls.get("cert_file").is_none() {
                    self.report(tls.key_path("cert_file"), "required with key_file");
                }
                None
            }
        };
    }

    /// Reads the `store` section into `store`, including the rules between
    /// its fields.
    fn store(&mut self, top: &Section<'_>, store: &mut StoreConfig) {
        let section = self.section(top, "store", STORE_KEYS);
        let window_ok = self.field(&section, "window", &mut store.window, |value| {
            at_least(duration(value)?, MIN_WINDOW)
        });
        self.field(&section, "windows", &mut store.windows, |value| {
            count(value, MIN_WINDOWS, MAX_WINDOWS)
        });
        let max_series_ok = self.field(&section, "max_series", &mut store.max_series, |value| {
            count(value, 1, usize::MAX)
        });
        let per_service_ok = self.field(
            &section,
            "max_series_per_service",
            &mut store.max_series_per_service,
            |value| count(value, 1, usize::MAX),
        );
        let ttl_ok = self.field(&section, "series_ttl", &mut store.series_ttl, duration);
        self.field(
            &section,
            "pairing_timeout",
            &mut store.pairing_timeout,
            |value| positive(duration(value)?),
        );
        self.field(
            &section,
            "pairing_capacity",
            &mut store.pairing_capacity,
            |value| count(value, 1, usize::MAX),
        );
        self.metric_attributes(&section, &mut store.metric_attributes);

        // The rules between fields are only checked when both sides are
        // known good; otherwise they would repeat a problem already reported.
        if max_series_ok && per_service_ok && store.max_series_per_service > store.max_series {
            self.report(
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
            self.report(
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

    /// Reads the `detect` section into `detect`, including the rules between
    /// its fields.
    fn detect(&mut self, top: &Section<'_>, detect: &mut DetectConfig) {
        let section = self.section(top, "detect", DETECT_KEYS);
        let warmup_ok = self.field(
            &section,
            "warmup_windows",
            &mut detect.warmup_windows,
            |value| Ok(count(value, 1, MAX_HISTORY_WINDOWS)?.get()),
        );
        let history_ok = self.field(
            &section,
            "history_windows",
            &mut detect.history_windows,
            |value| Ok(count(value, MIN_HISTORY_WINDOWS, MAX_HISTORY_WINDOWS)?.get()),
        );
        self.field(
            &section,
            "relearn_after",
            &mut detect.relearn_after,
            |value| positive(duration(value)?),
        );
        self.field(&section, "lateness", &mut detect.lateness, duration);
        self.field(&section, "seasonality", &mut detect.seasonality, flag);
        self.field(
            &section,
            "severe_significance",
            &mut detect.severe_significance,
            probability,
        );
        if warmup_ok && history_ok && detect.warmup_windows > detect.history_windows {
            self.report(
                section.key_path("warmup_windows"),
                format!(
                    "{}{} is more than detect.history_windows ({}); \
                     a series would warm up for longer than the history it keeps",
                    detect.warmup_windows,
                    default_note(&section, "warmup_windows"),
                    detect.history_windows,
                ),
            );
        }

        let hysteresis = self.section(&section, "hysteresis", HYSTERESIS_KEYS);
        let windows = |value: &Value| Ok(count(value, 1, MAX_HYSTERESIS_WINDOWS)?.get());
        let open_ok = self.field(&hysteresis, "open_after", &mut detect.open_after, windows);
        let severe_ok = self.field(
            &hysteresis,
            "open_after_severe",
            &mut detect.open_after_severe,
            windows,
        );
        self.field(
            &hysteresis,
            "resolve_after",
            &mut detect.resolve_after,
            windows,
        );
        if open_ok && severe_ok && detect.open_after_severe > detect.open_after {
            self.report(
                hysteresis.key_path("open_after_severe"),
                format!(
                    "{}{} is more than detect.hysteresis.open_after ({}); \
                     severe deviations should open incidents sooner, not later",
                    detect.open_after_severe,
                    default_note(&hysteresis, "open_after_severe"),
                    detect.open_after,
                ),
            );
        }

        let latency = self.section(&section, "latency", LATENCY_KEYS);
        let ratio_ok = self.field(&latency, "ratio", &mut detect.latency_ratio, above_one);
        self.field(
            &latency,
            "p50_min_ms",
            &mut detect.latency_p50_min_ms,
            non_negative,
        );
        self.field(
            &latency,
            "p95_min_ms",
            &mut detect.latency_p95_min_ms,
            non_negative,
        );
        self.field(
            &latency,
            "p99_min_ms",
            &mut detect.latency_p99_min_ms,
            non_negative,
        );
        self.field(
            &latency,
            "min_requests",
            &mut detect.latency_min_requests,
            whole,
        );
        self.field(
            &latency,
            "p99_min_requests",
            &mut detect.latency_p99_min_requests,
            whole,
        );
        self.field(&latency, "min_z", &mut detect.latency_min_z, non_negative);
        let severe_ok = self.field(
            &latency,
            "severe_ratio",
            &mut detect.severe_latency_ratio,
            above_one,
        );
        if ratio_ok && severe_ok && detect.severe_latency_ratio < detect.latency_ratio {
            self.report_below(
                &latency,
                "severe_ratio",
                detect.severe_latency_ratio,
                "ratio",
                detect.latency_ratio,
            );
        }

        let errors = self.section(&section, "errors", ERRORS_KEYS);
        self.field(
            &errors,
            "significance",
            &mut detect.error_significance,
            probability,
        );
        self.field(
            &errors,
            "min_increase",
            &mut detect.error_min_increase,
            |value| real(value, Bound::Closed(0.0), Bound::Open(1.0)),
        );
        self.field(
            &errors,
            "min_requests",
            &mut detect.error_min_requests,
            whole,
        );
        self.field(
            &errors,
            "rate_floor",
            &mut detect.error_rate_floor,
            probability,
        );
        self.field(&errors, "min_z", &mut detect.error_min_z, non_negative);
        self.field(
            &errors,
            "severe_ratio",
            &mut detect.severe_error_ratio,
            above_one,
        );

        let traffic = self.section(&section, "traffic", TRAFFIC_KEYS);
        self.field(
            &traffic,
            "significance",
            &mut detect.traffic_significance,
            probability,
        );
        self.field(
            &traffic,
            "min_rate",
            &mut detect.traffic_min_rate,
            non_negative,
        );
        let drop_ok = self.field(
            &traffic,
            "drop_ratio",
            &mut detect.traffic_drop_ratio,
            probability,
        );
        let spike_ok = self.field(
            &traffic,
            "spike_ratio",
            &mut detect.traffic_spike_ratio,
            above_one,
        );
        self.field(&traffic, "min_z", &mut detect.traffic_min_z, non_negative);
        let severe_drop_ok = self.field(
            &traffic,
            "severe_drop_ratio",
            &mut detect.severe_traffic_drop_ratio,
            |value| real(value, Bound::Closed(0.0), Bound::Open(1.0)),
        );
        let severe_spike_ok = self.field(
            &traffic,
            "severe_spike_ratio",
            &mut detect.severe_traffic_spike_ratio,
            above_one,
        );
        if drop_ok && severe_drop_ok && detect.severe_traffic_drop_ratio > detect.traffic_drop_ratio
        {
            self.report(
                traffic.key_path("severe_drop_ratio"),
                format!(
                    "{}{} is more than detect.traffic.drop_ratio ({}); \
                     a severe drop must lose at least as much traffic as a drop",
                    detect.severe_traffic_drop_ratio,
                    default_note(&traffic, "severe_drop_ratio"),
                    detect.traffic_drop_ratio,
                ),
            );
        }
        if spike_ok
            && severe_spike_ok
            && detect.severe_traffic_spike_ratio < detect.traffic_spike_ratio
        {
            self.report_below(
                &traffic,
                "severe_spike_ratio",
                detect.severe_traffic_spike_ratio,
                "spike_ratio",
                detect.traffic_spike_ratio,
            );
        }

        let metrics = self.section(&section, "metrics", METRICS_KEYS);
        self.patterns(&metrics, "watch", &mut detect.metric_patterns);
        self.field(&metrics, "min_z", &mut detect.metric_min_z, non_negative);
        self.field(
            &metrics,
            "min_change",
            &mut detect.metric_min_change,
            non_negative,
        );

        let trend = self.section(&section, "trend", TREND_KEYS);
        self.patterns(&trend, "watch", &mut detect.trend_patterns);
        self.field(
            &trend,
            "min_duration",
            &mut detect.trend_min_duration,
            |value| positive(duration(value)?),
        );
        self.field(&trend, "min_r2", &mut detect.trend_min_r2, |value| {
            real(value, Bound::Closed(0.0), Bound::Closed(1.0))
        });
        self.field(&trend, "min_rise", &mut detect.trend_min_rise, non_negative);
        self.field(&trend, "horizon", &mut detect.trend_horizon, |value| {
            positive(duration(value)?)
        });
        self.limits(&trend, &mut detect.limits);

        let saturation = self.section(&section, "saturation", SATURATION_KEYS);
        self.field(
            &saturation,
            "pool_usage",
            &mut detect.pool_usage_ratio,
            share,
        );
        self.field(
            &saturation,
            "cpu_throttled",
            &mut detect.cpu_throttled_ratio,
            share,
        );
    }

    /// Reads the `changes` section into `changes`. A token file is read
    /// here, so a missing or empty one is reported before anything starts.
    fn changes(&mut self, top: &Section<'_>, changes: &mut ChangesConfig) {
        let section = self.section(top, "changes", CHANGES_KEYS);
        self.field(&section, "lookback", &mut changes.lookback, |value| {
            at_most(positive(duration(value)?)?, MAX_CHANGES_LOOKBACK)
        });
        self.field(&section, "capacity", &mut changes.capacity, |value| {
            count(value, 1, MAX_CHANGES_CAPACITY)
        });
        self.field(
            &section,
            "detect_from_telemetry",
            &mut changes.detect_from_telemetry,
            flag,
        );
        self.field(
            &section,
            "rollout_debounce",
            &mut changes.rollout_debounce,
            |value| positive(duration(value)?),
        );
        self.field(
            &section,
            "instance_timeout",
            &mut changes.instance_timeout,
            |value| at_least(duration(value)?, MIN_CHANGES_PERIOD),
        );
        self.field(&section, "flag_window", &mut changes.flag_window, |value| {
            at_least(duration(value)?, MIN_CHANGES_PERIOD)
        });
        self.field(&section, "flag_shift", &mut changes.flag_shift, |value| {
            real(value, Bound::Open(RARE_SHARE), Bound::Closed(1.0))
        });
        let mut inline = None;
        self.field(&section, "api_token", &mut inline, |value| {
            let token = text(value, "a token string")?;
            // It travels in an HTTP header, so it must be visible ASCII.
            if !token.chars().all(|c| c.is_ascii_graphic()) {
                return Err("must be printable ASCII without spaces".to_owned());
            }
            ApiToken::new(token).map(Some).ok_or_else(|| {
                "must not be empty; remove the key to accept changes without a token".to_owned()
            })
        });
        let mut from_file = None;
        self.field(&section, "api_token_file", &mut from_file, |value| {
            let path = text(value, "a file path")?;
            let contents = std::fs::read_to_string(path)
                .map_err(|error| format!("cannot read {path}: {error}"))?;
            ApiToken::new(&contents)
                .map(Some)
                .ok_or_else(|| format!("{path} holds no token"))
        });
        changes.api_token = match (inline, from_file) {
            (Some(_), Some(_)) => {
                self.report(
                    section.key_path("api_token_file"),
                    "give changes.api_token or api_token_file, not both",
                );
                None
            }
            (inline, from_file) => inline.or(from_file),
        };
    }

    /// Reads the `alerting` section into `alerting`: the targets (each
    /// problem at its list index), timings, queue size, static labels and
    /// link templates.
    fn alerting(&mut self, top: &Section<'_>, alerting: &mut AlertConfig) {
        let section = self.section(top, "alerting", ALERTING_KEYS);
        alerting.alertmanagers = self.alert_targets(&section, "alertmanagers");
        alerting.webhooks = self.alert_targets(&section, "webhooks");
        self.field(
            &section,
            "resend_interval",
            &mut alerting.resend_interval,
            |value| at_least(duration(value)?, MIN_RESEND_INTERVAL),
        );
        self.field(
            &section,
            "resolved_resend_for",
            &mut alerting.resolved_resend_for,
            duration,
        );
        self.field(
            &section,
            "queue_capacity",
            &mut alerting.queue_capacity,
            |value| count(value, 1, MAX_ALERT_QUEUE),
        );
        self.alert_labels(&section, &mut alerting.labels);
        self.field(
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
                alert_config::runbook_template(template).map(Some)
            },
        );
        self.field(
            &section,
            "external_url",
            &mut alerting.external_url,
            |value| {
                let url = text(value, "a URL such as \"https://triage.example\"")?;
                if url.is_empty() {
                    return Ok(None);
                }
                alert_config::http_url(url).map(Some)
            },
        );
    }

    /// Reads a list of alert targets; each entry's problems are reported
    /// under its index (`alerting.alertmanagers[1].url`).
    fn alert_targets(&mut self, section: &Section<'_>, key: &str) -> Vec<TargetConfig> {
        let path = section.key_path(key);
        let items = match section.get(key) {
            // `webhooks:` with nothing after it: none, like `[]`.
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Sequence(items)) => items,
            Some(other) => {
                self.report(
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
                self.report(
                    item_path,
                    format!(
                        "expected a mapping with at least `url`, got {}",
                        describe(item)
                    ),
                );
                continue;
            }
            let entry = self.open(item_path, Some(item), ALERT_TARGET_KEYS);
            if let Some(target) = self.alert_target(&entry) {
                targets.push(target);
            }
        }
        targets
    }

    /// Reads one alert target; `None` when its url is missing or wrong.
    fn alert_target(&mut self, entry: &Section<'_>) -> Option<TargetConfig> {
        let mut url = None;
        self.field(entry, "url", &mut url, |value| {
            alert_config::http_url(text(value, "an http:// or https:// URL")?).map(Some)
        });
        if entry.get("url").is_none() {
            self.report(entry.key_path("url"), "missing; every target needs a url");
        }
        let mut timeout = TargetConfig::DEFAULT_TIMEOUT;
        self.field(entry, "timeout", &mut timeout, |value| {
            positive(duration(value)?)
        });

        let mut auth = Auth::None;
        let basic = self.section(entry, "basic_auth", BASIC_AUTH_KEYS);
        if basic.entries.is_some() {
            let mut username = None;
            self.field(&basic, "username", &mut username, |value| {
                Ok(Some(text(value, "a user name")?.to_owned()))
            });
            if basic.get("username").is_none() {
                self.report(
                    basic.key_path("username"),
                    "missing; basic_auth needs a username",
                );
            }
            let password = self.secret(&basic, "password", "password_file");
            if basic.get("password").is_none() && basic.get("password_file").is_none() {
                self.report(
                    basic.key_path("password"),
                    "missing; give basic_auth a password or a password_file",
                );
            }
            if let (Some(username), Some(password)) = (username, password) {
                auth = Auth::Basic { username, password };
            }
        }
        if let Some(token) = self.secret(entry, "bearer_token", "bearer_token_file") {
            if basic.entries.is_some() {
                self.report(
                    entry.key_path("basic_auth"),
                    "give basic_auth or a bearer token, not both",
                );
            } else {
                auth = Auth::Bearer(token);
            }
        }

        let tls_section = self.section(entry, "tls", ALERT_TLS_KEYS);
        let mut tls = TlsConfig::default();
        for (key, target) in [
            ("ca_file", &mut tls.ca_file),
            ("cert_file", &mut tls.cert_file),
            ("key_file", &mut tls.key_file),
        ] {
            self.field(&tls_section, key, target, |value| {
                named_file(value).map(Some)
            });
        }
        self.field(
            &tls_section,
            "insecure_skip_verify",
            &mut tls.insecure_skip_verify,
            flag,
        );
        for (given, missing) in [("cert_file", "key_file"), ("key_file", "cert_file")] {
            if tls_section.get(given).is_some() && tls_section.get(missing).is_none() {
                self.report(
                    tls_section.key_path(missing),
                    format!("missing; required with {given}"),
                );
            }
        }
        url.map(|url| TargetConfig {
            url,
            timeout,
            auth,
            tls,
        })
    }

    /// Reads a secret given inline under `inline` or in a file under `file`
    /// (not both); `None` when neither is given or either is wrong.
    fn secret(&mut self, section: &Section<'_>, inline: &str, file: &str) -> Option<Secret> {
        let mut given = None;
        self.field(section, inline, &mut given, |value| {
            let secret = text(value, "a string")?;
            if secret.is_empty() {
                return Err("must not be empty".to_owned());
            }
            Ok(Some(Secret::Inline(secret.to_owned())))
        });
        let mut from_file = None;
        self.field(section, file, &mut from_file, |value| {
            named_file(value).map(|path| Some(Secret::File(path)))
        });
        match (given, from_file) {
            (Some(_), Some(_)) => {
                self.report(
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
        &mut self,
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
                    if let Err(message) = alert_config::label_name(&name) {
                        self.report(entry_path, message);
                        continue;
                    }
                    // Label values are text; numbers and flags read as written.
                    let text = match value {
                        Value::String(text) => text.clone(),
                        Value::Number(number) => number.to_string(),
                        Value::Bool(flag) => flag.to_string(),
                        other => {
                            self.report(
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
            Some(other) => self.report(
                path,
                format!(
                    "expected a mapping of label name to value, \
                     such as {{cluster: prod-eu}}, got {}",
                    describe(other)
                ),
            ),
        }
    }

    /// Reports that `key` of `section` (a severe threshold) is below `other`
    /// (the ordinary one), which would make severe easier than ordinary.
    fn report_below(
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
    fn patterns(&mut self, section: &Section<'_>, key: &str, target: &mut Vec<String>) {
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
    fn limits(
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

    /// Reads the `storage` section into `storage`. The directory is only
    /// named here; it is created and checked when the server starts.
    fn storage(&mut self, top: &Section<'_>, storage: &mut StorageConfig) {
        let section = self.section(top, "storage", STORAGE_KEYS);
        self.field(&section, "enabled", &mut storage.enabled, flag);
        self.field(&section, "data_dir", &mut storage.data_dir, |value| {
            let name = text(value, "a directory path such as ./data")?;
            if name.trim().is_empty() {
                return Err("expected a directory path, got an empty string".to_owned());
            }
            Ok(PathBuf::from(name))
        });
        self.field(&section, "retention", &mut storage.retention, |value| {
            at_least(duration(value)?, MIN_RETENTION)
        });
        self.field(
            &section,
            "snapshot_interval",
            &mut storage.snapshot_interval,
            |value| at_least(duration(value)?, MIN_SNAPSHOT_INTERVAL),
        );
    }

    /// Reads `metric_attributes`, reporting each bad entry at its own index.
    /// Reads the `analyze` section into `analyze`.
    fn analyze(&mut self, top: &Section<'_>, analyze: &mut SpanConfig) {
        let section = self.section(top, "analyze", ANALYZE_KEYS);
        self.analyze_attributes(&section, &mut analyze.attributes);
        let buffer = self.section(&section, "trace_buffer", TRACE_BUFFER_KEYS);
        self.field(
            &buffer,
            "capacity",
            &mut analyze.trace_buffer_capacity,
            |value| count(value, 1, usize::MAX),
        );
        self.field(&buffer, "ttl", &mut analyze.trace_buffer_ttl, |value| {
            positive(duration(value)?)
        });
        self.field(&section, "sketch_size", &mut analyze.sketch_size, |value| {
            count(value, 1, MAX_SKETCH_SIZE)
        });
        self.field(&section, "min_bad_spans", &mut analyze.min_bad_spans, whole);
        self.field(&section, "min_bad_share", &mut analyze.min_bad_share, share);
    }

    /// `analyze.attributes`: at most `MAX_EXTRA_KEYS` span attribute keys,
    /// exact or `*.suffix`, none of them one the drill-down reads anyway.
    fn analyze_attributes(&mut self, section: &Section<'_>, target: &mut Vec<String>) {
        let path = section.key_path("attributes");
        let items = match section.get("attributes") {
            None => return,
            Some(Value::Sequence(items)) => items,
            Some(other) => {
                self.report(
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
                Value::String(key) if keys.contains(key) => {
                    Some(format!("{key:?} is listed twice"))
                }
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
                self.report(format!("{path}[{index}]"), problem);
            }
        }
        if keys.len() > MAX_EXTRA_KEYS {
            all_ok = false;
            self.report(
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

    fn metric_attributes(&mut self, section: &Section<'_>, target: &mut Vec<String>) {
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
                            self.report(
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
            Some(other) => self.report(
                path,
                format!(
                    "expected a list of attribute keys such as [\"http.route\"], got {}",
                    describe(other)
                ),
            ),
        }
    }
}

// === impl Section ===

impl<'a> Section<'a> {
    /// The value under `key`, if the key is present.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.entries.and_then(|entries| entries.get(key))
    }

    /// The dotted path of `key` in this section.
    fn key_path(&self, key: &str) -> String {
        join(&self.path, key)
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
fn endpoint(value: &Value, port: u16) -> Result<SocketAddr, String> {
    let expected = format!("an address such as \"0.0.0.0:{port}\"");
    socket_addr(text(value, &expected)?, port)
}

/// `IP:port` (IPv6 in brackets) or `localhost:port`; `port` is the one the
/// examples in the message use.
fn socket_addr(text: &str, port: u16) -> Result<SocketAddr, String> {
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
fn file_path(value: &Value) -> Result<PathBuf, String> {
    let name = text(value, "a file path")?;
    if name.trim().is_empty() {
        return Err("expected a file path, got an empty string".to_owned());
    }
    Ok(PathBuf::from(name))
}

/// A file named in the config (read later, when it is used).
fn named_file(value: &Value) -> Result<PathBuf, String> {
    let name = text(value, "a file path")?;
    if name.trim().is_empty() {
        return Err("expected a file path, got an empty string".to_owned());
    }
    Ok(PathBuf::from(name))
}

/// A size in MiB (possibly fractional), returned in bytes.
fn size_mib(value: &Value) -> Result<usize, String> {
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
enum Bound {
    /// The end itself is allowed.
    Closed(f64),
    /// Only values strictly inside are allowed.
    Open(f64),
    /// No limit on this side.
    Unbounded,
}

/// A finite number between `low` and `high`.
fn real(value: &Value, low: Bound, high: Bound) -> Result<f64, String> {
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
fn probability(value: &Value) -> Result<f64, String> {
    real(value, Bound::Open(0.0), Bound::Open(1.0))
}

/// A share of a whole, more than 0 and at most 1.
fn share(value: &Value) -> Result<f64, String> {
    real(value, Bound::Open(0.0), Bound::Closed(1.0))
}

/// A multiple that means "more than usual": above 1.
fn above_one(value: &Value) -> Result<f64, String> {
    real(value, Bound::Open(1.0), Bound::Unbounded)
}

/// A threshold that may be 0 (off) but not negative.
fn non_negative(value: &Value) -> Result<f64, String> {
    real(value, Bound::Closed(0.0), Bound::Unbounded)
}

/// A whole number of at least 1, as a count of requests.
fn whole(value: &Value) -> Result<u64, String> {
    // usize is at most 64 bits on every target Rust supports.
    Ok(count(value, 1, usize::MAX)?.get() as u64)
}

/// `true` or `false`.
fn flag(value: &Value) -> Result<bool, String> {
    match value {
        Value::Bool(flag) => Ok(*flag),
        other => Err(format!(
            "expected `true` or `false`, got {}",
            describe(other)
        )),
    }
}

/// A whole number from `min` to `max`; `min` is at least 1.
fn count(value: &Value, min: usize, max: usize) -> Result<NonZeroUsize, String> {
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
fn duration(value: &Value) -> Result<Duration, String> {
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
fn positive(duration: Duration) -> Result<Duration, String> {
    if duration.is_zero() {
        Err("must be more than 0s".to_owned())
    } else {
        Ok(duration)
    }
}

/// `duration` if it is at least `min`.
fn at_least(duration: Duration, min: Duration) -> Result<Duration, String> {
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
fn at_most(duration: Duration, max: Duration) -> Result<Duration, String> {
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

/// The string in `value`, or a message saying `expected` was wanted.
fn text<'v>(value: &'v Value, expected: &str) -> Result<&'v str, String> {
    match value {
        Value::String(text) => Ok(text),
        other => Err(format!("expected {expected}, got {}", describe(other))),
    }
}

// === helpers ===

/// `127.0.0.1:port`.
fn localhost(port: u16) -> SocketAddr {
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
fn key_name(key: &Value) -> String {
    match key {
        Value::String(name) => name.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Null => "~".to_owned(),
        _ => "?".to_owned(),
    }
}

/// What a value is, for "expected X, got Y" messages.
fn describe(value: &Value) -> String {
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
fn default_note(section: &Section<'_>, key: &str) -> &'static str {
    if section.get(key).is_none() {
        " (the default)"
    } else {
        ""
    }
}

/// A duration in the largest unit that shows it exactly, as the file would
/// write it ("15m" rather than "900s").
fn format_duration(duration: Duration) -> String {
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

/// The problems of [`ConfigError::Invalid`], one per line.
fn display_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests;
