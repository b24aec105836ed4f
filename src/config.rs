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
/// Longest shutdown drain. Orchestrators kill a process that takes longer
/// than a few minutes to stop anyway.
const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Keys of the document's top level.
const TOP_KEYS: &[&str] = &["receivers", "admin", "store", "log", "shutdown_timeout"];
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
    /// Windowing, cardinality bounds and span pairing of the store.
    pub store: StoreConfig,
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

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

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
            store: StoreConfig::default(),
            log: LogSettings {
                level: "info".to_owned(),
                format: LogFormat::Text,
            },
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl Settings {
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

        check.store(&top, &mut settings.store);

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

    /// Reads `metric_attributes`, reporting each bad entry at its own index.
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
fn parse_duration(text: &str) -> Result<Duration, String> {
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
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The problems `yaml` has, with no overrides.
    fn problems(yaml: &str) -> Vec<Problem> {
        problems_with(yaml, &Overrides::default())
    }

    /// The problems `yaml` has under `overrides`.
    fn problems_with(yaml: &str, overrides: &Overrides) -> Vec<Problem> {
        match Settings::from_yaml(yaml, overrides) {
            Err(ConfigError::Invalid(problems)) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    /// The paths of the problems `yaml` has.
    fn paths(yaml: &str) -> BTreeSet<String> {
        problems(yaml)
            .into_iter()
            .map(|problem| problem.path)
            .collect()
    }

    /// The one problem `yaml` has.
    fn only_problem(yaml: &str) -> Problem {
        let mut found = problems(yaml);
        assert_eq!(found.len(), 1, "{found:#?}");
        found.remove(0)
    }

    /// Settings from `yaml`, which must be valid.
    fn settings(yaml: &str) -> Settings {
        Settings::from_yaml(yaml, &Overrides::default()).expect("valid config")
    }

    fn set(paths: &[&str]) -> BTreeSet<String> {
        paths.iter().map(|path| path.to_string()).collect()
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/config")
            .join(name)
    }

    #[test]
    fn no_file_gives_the_defaults() {
        let loaded = Settings::load(None, &Overrides::default()).expect("defaults are valid");
        assert_eq!(loaded, Settings::default());
        assert_eq!(
            loaded.grpc.endpoint,
            "127.0.0.1:4317".parse().expect("addr")
        );
        assert_eq!(loaded.grpc.max_recv_msg_size, 4 * 1024 * 1024);
        assert_eq!(
            loaded.http.endpoint,
            "127.0.0.1:4318".parse().expect("addr")
        );
        assert_eq!(loaded.http.max_request_body_size, 20 * 1024 * 1024);
        assert_eq!(
            loaded.admin.endpoint,
            "127.0.0.1:8888".parse().expect("addr")
        );
        assert_eq!(loaded.log.level, "info");
        assert_eq!(loaded.log.format, LogFormat::Text);
        assert_eq!(loaded.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(loaded.store, StoreConfig::default());
    }

    #[test]
    fn empty_and_comment_only_files_give_the_defaults() {
        for yaml in [
            "",
            "\n\n",
            "# nothing here\n  # at all\n",
            "---\n",
            "receivers:\nstore:\n",
        ] {
            assert_eq!(settings(yaml), Settings::default(), "{yaml:?}");
        }
    }

    #[test]
    fn full_valid_file() {
        let loaded = settings(
            r#"
receivers:
  otlp:
    grpc:
      endpoint: "0.0.0.0:14317"
      max_recv_msg_size_mib: 0.5
    http:
      endpoint: "[::]:14318"
      max_request_body_size_mib: 64
admin:
  endpoint: localhost:0
store:
  window: 1m30s
  windows: 2
  max_series: 500
  max_series_per_service: 500
  series_ttl: 1h
  pairing_timeout: 250ms
  pairing_capacity: 7
  metric_attributes: [http.route, state]
log:
  level: "triage=debug,info"
  format: json
shutdown_timeout: 5m
"#,
        );
        let expected = Settings {
            grpc: GrpcSettings {
                endpoint: "0.0.0.0:14317".parse().expect("addr"),
                max_recv_msg_size: 512 * 1024,
            },
            http: HttpSettings {
                endpoint: "[::]:14318".parse().expect("addr"),
                max_request_body_size: 64 * 1024 * 1024,
            },
            admin: AdminSettings {
                endpoint: "127.0.0.1:0".parse().expect("addr"),
            },
            store: StoreConfig {
                window: Duration::from_secs(90),
                windows: NonZeroUsize::new(2).expect("non-zero"),
                max_series: NonZeroUsize::new(500).expect("non-zero"),
                max_series_per_service: NonZeroUsize::new(500).expect("non-zero"),
                series_ttl: Duration::from_secs(3600),
                pairing_timeout: Duration::from_millis(250),
                pairing_capacity: NonZeroUsize::new(7).expect("non-zero"),
                metric_attributes: vec!["http.route".to_owned(), "state".to_owned()],
            },
            log: LogSettings {
                level: "triage=debug,info".to_owned(),
                format: LogFormat::Json,
            },
            shutdown_timeout: Duration::from_secs(300),
        };
        assert_eq!(loaded, expected);
    }

    #[test]
    fn every_field_wrong_reports_one_problem_per_field() {
        let yaml = r#"
receivers:
  otlp:
    grpc:
      endpoint: "somewhere"
      max_recv_msg_size_mib: 0
    http:
      endpoint: 4318
      max_request_body_size_mib: "20MiB"
admin:
  endpoint: "127.0.0.1"
store:
  window: 10
  windows: 1
  max_series: 0
  max_series_per_service: -3
  series_ttl: soon
  pairing_timeout: 0s
  pairing_capacity: 1.5
  metric_attributes: http.route
log:
  level: "info debug"
  format: xml
shutdown_timeout: 1h
"#;
        let found = problems(yaml);
        let expected = set(&[
            "receivers.otlp.grpc.endpoint",
            "receivers.otlp.grpc.max_recv_msg_size_mib",
            "receivers.otlp.http.endpoint",
            "receivers.otlp.http.max_request_body_size_mib",
            "admin.endpoint",
            "store.window",
            "store.windows",
            "store.max_series",
            "store.max_series_per_service",
            "store.series_ttl",
            "store.pairing_timeout",
            "store.pairing_capacity",
            "store.metric_attributes",
            "log.level",
            "log.format",
            "shutdown_timeout",
        ]);
        let found_paths: BTreeSet<String> =
            found.iter().map(|problem| problem.path.clone()).collect();
        assert_eq!(found_paths, expected);
        // One problem per field: cross-field rules stay quiet when a side
        // is already wrong.
        assert_eq!(found.len(), expected.len(), "{found:#?}");

        let message = |path: &str| {
            found
                .iter()
                .find(|problem| problem.path == path)
                .map(|problem| problem.message.clone())
                .expect("problem at path")
        };
        assert_eq!(
            message("store.window"),
            "\"10\" is not a duration; write it with a unit, e.g. \"10s\""
        );
        assert!(message("admin.endpoint").contains("\"0.0.0.0:8888\""));
        assert!(message("receivers.otlp.http.endpoint").contains("got 4318"));
        assert!(message("store.windows").contains("from 2 to 10000"));
        assert!(message("log.format").contains("`text` or `json`"));
        assert!(message("shutdown_timeout").contains("at most 5m"));
    }

    #[test]
    fn unknown_keys_are_reported_with_their_full_path() {
        let found = problems(
            r#"
foo: 1
receivers:
  otlp:
    grpc:
      endpoint: "0.0.0.0:4317"
      max_msg: 3
    zipkin: {}
store:
  windos: 3
  window: 5s
log:
  colour: true
"#,
        );
        let found_paths: BTreeSet<String> =
            found.iter().map(|problem| problem.path.clone()).collect();
        assert_eq!(
            found_paths,
            set(&[
                "foo",
                "receivers.otlp.grpc.max_msg",
                "receivers.otlp.zipkin",
                "store.windos",
                "log.colour",
            ])
        );
        let windos = found
            .iter()
            .find(|problem| problem.path == "store.windos")
            .expect("store.windos reported");
        assert!(
            windos
                .message
                .starts_with("unknown field `windos`, expected one of `window`, `windows`,"),
            "{}",
            windos.message
        );
    }

    #[test]
    fn a_non_mapping_section_is_a_problem_at_its_path() {
        assert_eq!(
            paths("receivers:\n  otlp: [grpc]\nadmin: 8888\nstore: 10s\n"),
            set(&["receivers.otlp", "admin", "store"])
        );
        let problem = only_problem("- receivers\n");
        assert_eq!(problem.path, "(top level)");
        assert!(
            problem.message.contains("got a list"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn a_key_without_a_value_is_a_problem() {
        assert_eq!(only_problem("store:\n  window:\n").path, "store.window");
    }

    #[test]
    fn cross_field_rules() {
        let problem = only_problem("store:\n  max_series: 100\n");
        assert_eq!(problem.path, "store.max_series_per_service");
        assert_eq!(
            problem.message,
            "2000 (the default) is more than store.max_series (100); \
             lower it or raise store.max_series"
        );

        let problem = only_problem("store:\n  window: 10m\n  series_ttl: 5m\n");
        assert_eq!(problem.path, "store.series_ttl");
        assert!(
            problem
                .message
                .starts_with("5m is shorter than store.window (10m)"),
            "{}",
            problem.message
        );

        // Equal is allowed on both.
        settings("store:\n  max_series: 10\n  max_series_per_service: 10\n");
        settings("store:\n  window: 1m\n  series_ttl: 1m\n");
    }

    #[test]
    fn durations() {
        let ok: &[(&str, Duration)] = &[
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86_400)),
            ("1m30s", Duration::from_secs(90)),
            ("1h2m3s4ms", Duration::from_millis(3_723_004)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.5m", Duration::from_secs(30)),
            (".25s", Duration::from_millis(250)),
            ("2.s", Duration::from_secs(2)),
            ("0.0001ms", Duration::from_nanos(100)),
            ("0s", Duration::ZERO),
            (" 10s ", Duration::from_secs(10)),
        ];
        for (text, expected) in ok {
            assert_eq!(parse_duration(text), Ok(*expected), "{text:?}");
        }

        let bad: &[(&str, &str)] = &[
            ("10", "write it with a unit, e.g. \"10s\""),
            ("1.5", "write it with a unit, e.g. \"1.5s\""),
            ("", "is not a duration"),
            ("s", "is not a duration"),
            ("10 s", "is not a duration"),
            ("1m 30s", "is not a duration"),
            ("10sec", "is not a duration"),
            ("10S", "is not a duration"),
            ("-5s", "is not a duration"),
            ("1m30", "is not a duration"),
            ("1..5s", "is not a duration"),
            (".s", "is not a duration"),
            ("1e3s", "is not a duration"),
            ("99999999999999999999999d", "too long"),
            ("999999999999999999999999999999999999999999s", "too long"),
        ];
        for (text, expected) in bad {
            let message = parse_duration(text).expect_err(text);
            assert!(message.contains(expected), "{text:?}: {message}");
        }
    }

    #[test]
    fn duration_limits() {
        assert!(only_problem("store:\n  window: 50ms\n")
            .message
            .contains("at least 100ms, got 50ms"));
        settings("store:\n  window: 100ms\n  series_ttl: 100ms\n");
        assert_eq!(
            only_problem("shutdown_timeout: 0s\n").path,
            "shutdown_timeout"
        );
        settings("shutdown_timeout: 5m\n");
        assert_eq!(
            only_problem("store:\n  pairing_timeout: 0ms\n").path,
            "store.pairing_timeout"
        );
    }

    #[test]
    fn socket_addresses() {
        let loaded = settings(
            r#"
receivers:
  otlp:
    grpc: { endpoint: "localhost:0" }
    http: { endpoint: "[::1]:4318" }
admin: { endpoint: 10.1.2.3:9 }
"#,
        );
        assert_eq!(loaded.grpc.endpoint, "127.0.0.1:0".parse().expect("addr"));
        assert_eq!(loaded.http.endpoint, "[::1]:4318".parse().expect("addr"));
        assert_eq!(loaded.admin.endpoint, "10.1.2.3:9".parse().expect("addr"));

        for bad in [
            "example.com:80",
            "localhost",
            "localhost:99999",
            "1.2.3.4:",
            "::1:80",
        ] {
            let yaml = format!("admin:\n  endpoint: \"{bad}\"\n");
            let problem = only_problem(&yaml);
            assert_eq!(problem.path, "admin.endpoint");
            assert!(
                problem.message.contains("is not a socket address"),
                "{bad}: {}",
                problem.message
            );
        }
    }

    #[test]
    fn sizes() {
        let loaded = settings(
            "receivers:\n  otlp:\n    grpc:\n      max_recv_msg_size_mib: 1024\n    \
             http:\n      max_request_body_size_mib: 0.25\n",
        );
        assert_eq!(loaded.grpc.max_recv_msg_size, 1024 * 1024 * 1024);
        assert_eq!(loaded.http.max_request_body_size, 256 * 1024);

        for bad in ["0", "-1", "1024.5", ".nan", ".inf", "0.0000000001"] {
            let yaml =
                format!("receivers:\n  otlp:\n    grpc:\n      max_recv_msg_size_mib: {bad}\n");
            assert_eq!(
                only_problem(&yaml).path,
                "receivers.otlp.grpc.max_recv_msg_size_mib",
                "{bad}"
            );
        }
    }

    #[test]
    fn metric_attributes_report_each_bad_entry() {
        assert_eq!(
            paths("store:\n  metric_attributes: [ok, 3, \"\", [x]]\n"),
            set(&[
                "store.metric_attributes[1]",
                "store.metric_attributes[2]",
                "store.metric_attributes[3]",
            ])
        );
        // An empty list is a choice: keep no metric attributes at all.
        assert!(settings("store:\n  metric_attributes: []\n")
            .store
            .metric_attributes
            .is_empty());
    }

    #[test]
    fn log_levels() {
        for good in [
            "trace",
            "debug",
            "info",
            "warn",
            "error",
            "off",
            "WARN",
            "triage=debug,info",
            "triage::store=trace",
            "info,h2=warn,tower.http=off",
        ] {
            assert_eq!(
                settings(&format!("log:\n  level: \"{good}\"\n")).log.level,
                good
            );
        }
        for bad in [
            "",
            "info debug",
            "triage=verbose",
            "info;rm",
            "[span]",
            "warning",
            "triage=debug,verbose",
        ] {
            let yaml = format!("log:\n  level: \"{bad}\"\n");
            assert_eq!(only_problem(&yaml).path, "log.level", "{bad:?}");
        }
    }

    #[test]
    fn overrides_beat_the_file() {
        let yaml = r#"
receivers:
  otlp:
    grpc: { endpoint: "0.0.0.0:4317" }
    http: { endpoint: "0.0.0.0:4318" }
admin: { endpoint: "0.0.0.0:8888" }
log: { level: info, format: text }
"#;
        let overrides = Overrides {
            grpc_endpoint: Some("127.0.0.1:1".to_owned()),
            http_endpoint: Some("localhost:2".to_owned()),
            admin_endpoint: Some("[::1]:3".to_owned()),
            log_level: Some("debug".to_owned()),
            log_format: Some(LogFormat::Json),
        };
        let loaded = Settings::from_yaml(yaml, &overrides).expect("valid");
        assert_eq!(loaded.grpc.endpoint, "127.0.0.1:1".parse().expect("addr"));
        assert_eq!(loaded.http.endpoint, "127.0.0.1:2".parse().expect("addr"));
        assert_eq!(loaded.admin.endpoint, "[::1]:3".parse().expect("addr"));
        assert_eq!(loaded.log.level, "debug");
        assert_eq!(loaded.log.format, LogFormat::Json);

        // Unset overrides leave the file's values alone.
        let loaded = Settings::from_yaml(yaml, &Overrides::default()).expect("valid");
        assert_eq!(loaded.grpc.endpoint, "0.0.0.0:4317".parse().expect("addr"));
        assert_eq!(loaded.log.format, LogFormat::Text);
    }

    #[test]
    fn overrides_beat_the_defaults() {
        let overrides = Overrides {
            grpc_endpoint: Some("0.0.0.0:0".to_owned()),
            ..Overrides::default()
        };
        let loaded = Settings::load(None, &overrides).expect("valid");
        assert_eq!(loaded.grpc.endpoint, "0.0.0.0:0".parse().expect("addr"));
        assert_eq!(loaded.http, Settings::default().http);
    }

    #[test]
    fn bad_overrides_are_problems_named_by_the_override() {
        let overrides = Overrides {
            grpc_endpoint: Some("nowhere".to_owned()),
            log_level: Some("loud".to_owned()),
            ..Overrides::default()
        };
        // A bad file value is still reported even though an override
        // replaces it: the file is wrong and will bite once the flag goes.
        let found = problems_with("admin:\n  endpoint: bad\n", &overrides);
        let found_paths: BTreeSet<String> =
            found.iter().map(|problem| problem.path.clone()).collect();
        assert_eq!(
            found_paths,
            set(&["admin.endpoint", GRPC_ENDPOINT_OVERRIDE, LOG_LEVEL_OVERRIDE])
        );
    }

    #[test]
    fn syntax_errors_give_the_position() {
        match Settings::from_yaml("store:\n  window: [10s\n", &Overrides::default()) {
            Err(ConfigError::Syntax { message }) => {
                assert!(message.starts_with("config text: "), "{message}");
                assert!(message.contains("line"), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn merge_keys_are_applied() {
        let loaded = settings(
            r#"
receivers:
  otlp:
    grpc: &listen
      endpoint: "0.0.0.0:4317"
    http:
      <<: *listen
      endpoint: "0.0.0.0:4318"
"#,
        );
        assert_eq!(loaded.http.endpoint, "0.0.0.0:4318".parse().expect("addr"));
    }

    #[test]
    fn invalid_displays_one_line_per_problem() {
        let error = Settings::from_yaml(
            "store:\n  windos: 1\nshutdown_timeout: 0s\n",
            &Overrides::default(),
        )
        .expect_err("invalid");
        let text = error.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with("store.windos: unknown field `windos`"),
            "{text}"
        );
        assert_eq!(lines[1], "shutdown_timeout: must be more than 0s");
    }

    #[test]
    fn the_example_parses_to_the_defaults() {
        assert_eq!(settings(example_yaml()), Settings::default());
    }

    #[test]
    fn the_example_lists_every_key() {
        let document: Value = serde_yaml::from_str(example_yaml()).expect("example is YAML");
        let sections: &[(&[&str], &[&str])] = &[
            (&[], TOP_KEYS),
            (&["receivers"], RECEIVERS_KEYS),
            (&["receivers", "otlp"], OTLP_KEYS),
            (&["receivers", "otlp", "grpc"], GRPC_KEYS),
            (&["receivers", "otlp", "http"], HTTP_KEYS),
            (&["admin"], ADMIN_KEYS),
            (&["store"], STORE_KEYS),
            (&["log"], LOG_KEYS),
        ];
        for (path, keys) in sections {
            let section = path
                .iter()
                .try_fold(&document, |value, key| value.get(key))
                .expect("section in example");
            for key in *keys {
                assert!(section.get(key).is_some(), "{path:?} lacks {key}");
            }
        }
    }

    #[test]
    fn fixtures_load() {
        let loaded = Settings::load(Some(&fixture("valid.yaml")), &Overrides::default())
            .expect("valid.yaml is valid");
        assert_eq!(loaded.grpc.endpoint, "0.0.0.0:4317".parse().expect("addr"));
        assert_eq!(loaded.http.endpoint, "0.0.0.0:4318".parse().expect("addr"));
        assert_eq!(loaded.admin.endpoint, "0.0.0.0:8888".parse().expect("addr"));
        assert_eq!(loaded.log.format, LogFormat::Json);

        match Settings::load(Some(&fixture("invalid.yaml")), &Overrides::default()) {
            Err(ConfigError::Invalid(found)) => {
                let found_paths: BTreeSet<String> =
                    found.into_iter().map(|problem| problem.path).collect();
                assert_eq!(
                    found_paths,
                    set(&[
                        "receivers.otlp.grpc.endpoint",
                        "receivers.otlp.http.max_request_body_size_mib",
                        "store.window",
                        "store.windos",
                        "store.max_series_per_service",
                        "log.format",
                    ])
                );
            }
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_file_is_a_read_error() {
        let path = fixture("does-not-exist.yaml");
        match Settings::load(Some(&path), &Overrides::default()) {
            Err(error @ ConfigError::Read { .. }) => {
                assert!(error.to_string().starts_with("cannot read config file "));
            }
            other => panic!("expected a read error, got {other:?}"),
        }
    }
}
