//! The `forward:` section: the upstream OTLP endpoints everything received
//! is forwarded to ([`ForwardConfig`]), the keys and rules that validate it,
//! and its part of the example config.
//!
//! The keys follow the OTel Collector's `otlp` and `otlphttp` exporters
//! (`endpoint`, `compression`, `headers`, `tls`, `timeout`, `sending_queue`
//! with its `batch`, `retry_on_failure`), with `protocol` choosing between
//! the two.
//!
//! Invariant: an [`ExporterConfig`] holds only checked values: a URL with a
//! host and an `http`/`https` scheme, header names and values HTTP and gRPC
//! accept, non-zero queue bounds, retry intervals in order, batch sizes in
//! order and a batch never allowed past [`MAX_BATCH_BYTES`] unless
//! `max_size` in bytes says so. Files (the TLS
//! certificates, the queue directory) are only named here; they are read
//! or created when forwarding starts, so that a missing file fails start-up
//! naming its field.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde_yaml::Value;

use crate::validate::{
    at_most, client_tls, count, describe, duration, flag, key_name, positive, size_mib, text,
    Checker, Section,
};

/// Where accepted telemetry is forwarded. Empty (the default): nowhere, and
/// nothing of forwarding runs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ForwardConfig {
    /// The upstream endpoints, in the order given; every accepted request
    /// goes to each of them.
    pub exporters: Vec<ExporterConfig>,
}

/// One upstream OTLP endpoint, like one of the Collector's `otlp` or
/// `otlphttp` exporters.
#[derive(Debug, Clone, PartialEq)]
pub struct ExporterConfig {
    /// The exporter's name (its key under `forward.exporters`): the
    /// `exporter` label of its self-metrics and the name in its logs.
    pub name: String,
    /// `grpc`: OTLP/gRPC (`otlp`); `http`: OTLP/HTTP (`otlphttp`).
    pub protocol: Protocol,
    /// gRPC: the server, as `http://host:port` (plaintext) or
    /// `https://host:port`. HTTP: the base URL; `/v1/traces`, `/v1/metrics`
    /// and `/v1/logs` are appended to its path.
    pub endpoint: Url,
    /// Whether request bodies are gzip-compressed.
    pub gzip: bool,
    /// Headers (gRPC metadata) sent with every request, such as a vendor's
    /// API key.
    pub headers: Vec<Header>,
    /// TLS options for `https` endpoints.
    pub tls: ClientTls,
    /// Longest wait for one request, connecting included.
    pub timeout: Duration,
    /// The queue between the receivers and the senders.
    pub queue: QueueConfig,
    /// Retries of requests that failed with a retryable error.
    pub retry: RetryConfig,
}

/// The two OTLP transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

/// One header sent with every request. The value may be a secret, so it
/// is never printed.
#[derive(Clone, PartialEq)]
pub struct Header {
    /// Lower-case, as gRPC metadata requires and HTTP does not mind.
    pub name: String,
    pub value: String,
}

/// TLS options of an exporter, with the Collector's key names.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClientTls {
    /// PEM CA certificates trusted instead of the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; set with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. For testing only.
    pub insecure_skip_verify: bool,
}

/// The sending queue (the Collector's `sending_queue`). It is always on:
/// the receivers only ever try to put a request into it and never wait, so
/// it is what keeps forwarding from slowing ingestion down.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// Requests (batches) sent at once.
    pub num_consumers: NonZeroUsize,
    /// Most items (spans, data points, log records) waiting.
    pub queue_size: NonZeroUsize,
    /// Most request bytes waiting (decompressed, as received).
    pub queue_size_bytes: NonZeroUsize,
    /// A directory for the persistent queue: every queued request is
    /// written there first and removed once the upstream has accepted it,
    /// so a restart resumes sending. `None`: in memory only.
    pub storage: Option<PathBuf>,
    /// How queued requests are merged into larger ones; `None`: each is
    /// sent as it was received.
    pub batch: Option<BatchConfig>,
}

/// Merging queued requests of one signal into one export request (the
/// Collector's `sending_queue.batch`). On by default, where the Collector
/// is heading (exporter-level batching on by default from its v0.171).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchConfig {
    /// Longest a request waits in the queue for others to be merged with;
    /// then what is there is sent, however small.
    pub flush_timeout: Duration,
    /// What `min_size` and `max_size` count.
    pub sizer: Sizer,
    /// A batch is sent as soon as it holds this much. Zero: merge only
    /// what is already waiting, never wait for more.
    pub min_size: u64,
    /// Most a batch holds; zero: no limit but [`MAX_BATCH_BYTES`]. A
    /// single request over it is sent alone, not split or dropped.
    pub max_size: u64,
}

/// What batch sizes count, as the Collector's `sizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizer {
    /// Spans, data points, log records.
    Items,
    /// Request bytes (protobuf, decompressed).
    Bytes,
}

/// The largest merged request unless `sizer: bytes` with a `max_size`
/// says otherwise: 4 MiB, the default message limit of gRPC servers (the
/// Collector's OTLP receiver included), so that batching never makes a
/// request the upstream refuses. Requests are merged only while the sum
/// stays at or under it.
pub const MAX_BATCH_BYTES: u64 = 4 * 1024 * 1024;

/// Retries (the Collector's `retry_on_failure`): exponential backoff with
/// jitter, on retryable OTLP errors only.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Whether failed requests are retried at all.
    pub enabled: bool,
    /// Wait after the first failure.
    pub initial_interval: Duration,
    /// Longest wait between two attempts.
    pub max_interval: Duration,
    /// How long a request is retried before it is given up (dropped and
    /// counted); zero: never given up.
    pub max_elapsed_time: Duration,
}

// === impl ExporterConfig ===

impl ExporterConfig {
    /// Default request timeout (the Collector's).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// An exporter to `endpoint` with the defaults.
    pub fn new(name: &str, protocol: Protocol, endpoint: Url) -> ExporterConfig {
        ExporterConfig {
            name: name.to_owned(),
            protocol,
            endpoint,
            gzip: true,
            headers: Vec::new(),
            tls: ClientTls::default(),
            timeout: Self::DEFAULT_TIMEOUT,
            queue: QueueConfig::default(),
            retry: RetryConfig::default(),
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            num_consumers: NonZeroUsize::new(10).unwrap_or(NonZeroUsize::MIN),
            // The Collector's default is 1,000 batches; with a few hundred
            // items per batch that is a few hundred thousand items.
            queue_size: NonZeroUsize::new(200_000).unwrap_or(NonZeroUsize::MIN),
            queue_size_bytes: NonZeroUsize::new(256 * crate::validate::MIB)
                .unwrap_or(NonZeroUsize::MIN),
            storage: None,
            batch: Some(BatchConfig::default()),
        }
    }
}

impl Default for BatchConfig {
    /// The Collector's defaults (`flush_timeout: 200ms`, `min_size: 8192`
    /// items, `max_size: 0`).
    fn default() -> Self {
        BatchConfig {
            flush_timeout: Duration::from_millis(200),
            sizer: Sizer::Items,
            min_size: 8192,
            max_size: 0,
        }
    }
}

// === impl BatchConfig ===

impl BatchConfig {
    /// Most items in a batch (no limit unless `max_size` counts items).
    pub fn max_items(&self) -> u64 {
        match self.sizer {
            Sizer::Items if self.max_size > 0 => self.max_size,
            _ => u64::MAX,
        }
    }

    /// Most bytes in a batch: `max_size` when it counts bytes, else
    /// [`MAX_BATCH_BYTES`].
    pub fn max_bytes(&self) -> u64 {
        match self.sizer {
            Sizer::Bytes if self.max_size > 0 => self.max_size,
            _ => MAX_BATCH_BYTES,
        }
    }
}

impl Sizer {
    pub fn as_str(self) -> &'static str {
        match self {
            Sizer::Items => "items",
            Sizer::Bytes => "bytes",
        }
    }
}

impl Default for RetryConfig {
    /// The Collector's defaults.
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

impl fmt::Debug for Header {
    // Settings are logged and printed in test failures; an API key in a
    // header must not appear there.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: <redacted>", self.name)
    }
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        }
    }
}

// === the `forward:` section of the config file ===

/// Keys of `forward`.
pub(crate) const FORWARD_KEYS: &[&str] = &["exporters"];
/// Keys of each exporter.
pub(crate) const EXPORTER_KEYS: &[&str] = &[
    "endpoint",
    "protocol",
    "compression",
    "headers",
    "tls",
    "timeout",
    "sending_queue",
    "retry_on_failure",
];
/// Keys of an exporter's `tls`.
pub(crate) const TLS_KEYS: &[&str] = &[
    "insecure",
    "ca_file",
    "cert_file",
    "key_file",
    "insecure_skip_verify",
];
/// Keys of `sending_queue`.
pub(crate) const QUEUE_KEYS: &[&str] = &[
    "enabled",
    "num_consumers",
    "queue_size",
    "queue_size_mib",
    "storage",
    "batch",
];
/// Keys of `sending_queue.batch`.
pub(crate) const BATCH_KEYS: &[&str] =
    &["enabled", "flush_timeout", "sizer", "min_size", "max_size"];
/// Keys of `retry_on_failure`.
pub(crate) const RETRY_KEYS: &[&str] = &[
    "enabled",
    "initial_interval",
    "max_interval",
    "max_elapsed_time",
];
/// Most exporters: each has its own queue and senders.
const MAX_EXPORTERS: usize = 16;
/// Most requests in flight per exporter.
const MAX_CONSUMERS: usize = 1_000;
/// Most items one queue may hold.
const MAX_QUEUE_SIZE: usize = 100_000_000;
/// Largest batch size in bytes that may be configured: the persistent
/// queue's records and the receivers' bodies are far below it.
const MAX_BATCH_SIZE_BYTES: u64 = 1 << 30;
/// Longest `flush_timeout`: past it the setting is more likely a typo than
/// a wish to hold telemetry back that long.
const MAX_FLUSH_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Most headers per exporter.
const MAX_HEADERS: usize = 64;
/// Longest exporter name (it is a metric label).
const MAX_NAME: usize = 64;

/// The `forward:` part of the example config (`triage example-config`),
/// with the comment above it.
pub(crate) const EXAMPLE: &str = r#"# Forwarding: everything the receivers accept (traces, metrics, logs) is
# also sent, as received, to each upstream OTLP endpoint listed here, so
# triage can sit in front of an OTel Collector or a tracing backend. The
# receivers never wait for it: each request is put in a bounded queue per
# exporter, or dropped and counted when that is full. See docs/FORWARDING.md.
forward:
  # Exporters by name (the `exporter` label of their metrics). For example:
  #   collector:
  #     protocol: grpc                  # grpc (like otlp) or http (like otlphttp)
  #     # grpc: http://host:port is plaintext, https://host:port or host:port
  #     # TLS (unless tls.insecure). http: the base URL, /v1/<signal> appended.
  #     endpoint: "http://otel-collector:4317"
  #     compression: gzip               # gzip or none
  #     headers: {x-api-key: "..."}     # sent with every request
  #     tls:
  #       insecure: false               # plaintext for a host:port endpoint
  #       ca_file: /etc/triage/ca.pem   # trusted instead of the built-in roots
  #       cert_file: /etc/triage/client.pem   # client certificate, with key_file
  #       key_file: /etc/triage/client-key.pem
  #       insecure_skip_verify: false
  #     timeout: 5s                     # per request
  #     sending_queue:
  #       num_consumers: 10             # requests (batches) in flight
  #       queue_size: 200000            # items (spans, points, records) waiting
  #       queue_size_mib: 256           # request bytes waiting
  #       # A directory for the persistent queue: requests are written there
  #       # (fsynced) before they are sent and removed once the upstream has
  #       # accepted them, so a restart or a crash resumes sending.
  #       storage: /var/lib/triage/forward
  #       # Requests of one signal are merged into one export request, as
  #       # the Collector's sending_queue.batch does (OTLP/JSON ones go
  #       # alone). A merged request never passes 4 MiB (gRPC's default
  #       # limit) unless sizer is bytes and max_size is larger.
  #       batch:
  #         enabled: true               # false: each request as received
  #         flush_timeout: 200ms        # longest a request waits for others
  #         sizer: items                # what the sizes count: items or bytes
  #         min_size: 8192              # a batch is sent once this full
  #         max_size: 0                 # most per batch; 0: no limit but 4 MiB
  #     retry_on_failure:               # retryable OTLP errors only
  #       enabled: true
  #       initial_interval: 5s
  #       max_interval: 30s
  #       max_elapsed_time: 5m          # then dropped and counted; 0s: never
  exporters: {}
"#;

/// Reads the `forward` section into `forward`; each exporter's problems
/// are reported under its name (`forward.exporters.tempo.endpoint`).
pub(crate) fn check(checker: &mut Checker, top: &Section<'_>, forward: &mut ForwardConfig) {
    let section = checker.section(top, "forward", FORWARD_KEYS);
    let path = section.key_path("exporters");
    let entries = match section.get("exporters") {
        None | Some(Value::Null) => return,
        Some(Value::Mapping(entries)) => entries,
        Some(other) => {
            checker.report(
                path,
                format!(
                    "expected a mapping of exporter name to settings, such as \
                     {{collector: {{endpoint: \"http://otel-collector:4317\"}}}}, got {}",
                    describe(other)
                ),
            );
            return;
        }
    };
    if entries.len() > MAX_EXPORTERS {
        checker.report(
            path.clone(),
            format!("at most {MAX_EXPORTERS} exporters, got {}", entries.len()),
        );
    }
    let mut exporters = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let name = key_name(key);
        let entry_path = format!("{path}.{name}");
        if let Err(message) = exporter_name(key) {
            checker.report(entry_path, message);
            continue;
        }
        if !matches!(value, Value::Mapping(_)) {
            checker.report(
                entry_path,
                format!(
                    "expected a mapping with at least `endpoint`, got {}",
                    describe(value)
                ),
            );
            continue;
        }
        let entry = checker.open(entry_path, Some(value), EXPORTER_KEYS);
        if let Some(exporter) = exporter(checker, &name, &entry) {
            let shared = exporters.iter().find(|other: &&ExporterConfig| {
                other.queue.storage.is_some() && other.queue.storage == exporter.queue.storage
            });
            if let Some(other) = shared {
                checker.report(
                    format!("{path}.{name}.sending_queue.storage"),
                    format!(
                        "the same directory as exporter {}'s; each persistent queue needs its own",
                        other.name
                    ),
                );
                continue;
            }
            exporters.push(exporter);
        }
    }
    forward.exporters = exporters;
}

/// An exporter name: letters, digits and `_ - . /` (the Collector's
/// `otlp/tempo` style), at most [`MAX_NAME`] characters.
fn exporter_name(key: &Value) -> Result<(), String> {
    let Value::String(name) = key else {
        return Err("expected an exporter name such as `collector` as the key".to_owned());
    };
    let fine = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    if fine {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" is not an exporter name; use up to {MAX_NAME} letters, digits and _ - . /"
        ))
    }
}

/// Reads one exporter; `None` when its endpoint is missing or wrong.
fn exporter(checker: &mut Checker, name: &str, entry: &Section<'_>) -> Option<ExporterConfig> {
    let mut protocol = Protocol::Grpc;
    checker.field(entry, "protocol", &mut protocol, |value| {
        match text(value, "`grpc` or `http`")? {
            "grpc" => Ok(Protocol::Grpc),
            "http" | "http/protobuf" => Ok(Protocol::Http),
            other => Err(format!("expected `grpc` or `http`, got \"{other}\"")),
        }
    });
    let tls_section = checker.section(entry, "tls", TLS_KEYS);
    let mut insecure = false;
    checker.field(&tls_section, "insecure", &mut insecure, flag);
    let mut endpoint = None;
    checker.field(entry, "endpoint", &mut endpoint, |value| {
        let given = text(value, "a URL such as \"http://otel-collector:4317\"")?;
        endpoint_url(given, protocol, insecure).map(Some)
    });
    if entry.get("endpoint").is_none() {
        checker.report(
            entry.key_path("endpoint"),
            "missing; every exporter needs an endpoint",
        );
    }
    let mut gzip = true;
    checker.field(entry, "compression", &mut gzip, |value| {
        match text(value, "`gzip` or `none`")? {
            "gzip" => Ok(true),
            "none" | "" => Ok(false),
            other => Err(format!("expected `gzip` or `none`, got \"{other}\"")),
        }
    });
    let headers = headers(checker, entry);
    let fields = client_tls(checker, &tls_section);
    let tls = ClientTls {
        ca_file: fields.ca_file,
        cert_file: fields.cert_file,
        key_file: fields.key_file,
        insecure_skip_verify: fields.insecure_skip_verify,
    };
    let mut timeout = ExporterConfig::DEFAULT_TIMEOUT;
    checker.field(entry, "timeout", &mut timeout, |value| {
        positive(duration(value)?)
    });
    let queue = queue(checker, entry);
    let retry = retry(checker, entry);
    endpoint.map(|endpoint| ExporterConfig {
        name: name.to_owned(),
        protocol,
        endpoint,
        gzip,
        headers,
        tls,
        timeout,
        queue,
        retry,
    })
}

/// The endpoint as a URL. gRPC takes `host:port` as the Collector does:
/// TLS unless `tls.insecure`. HTTP needs the scheme.
pub fn endpoint_url(given: &str, protocol: Protocol, insecure: bool) -> Result<Url, String> {
    let with_scheme = if given.contains("://") {
        given.to_owned()
    } else if protocol == Protocol::Grpc {
        let scheme = if insecure { "http" } else { "https" };
        format!("{scheme}://{given}")
    } else {
        return Err(format!(
            "\"{given}\" has no scheme; an http exporter's endpoint is a URL \
             such as \"https://otlp.example:4318\""
        ));
    };
    let url = Url::parse(&with_scheme).map_err(|error| {
        format!("\"{given}\" is not a URL ({error}); write e.g. \"http://otel-collector:4317\"")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "\"{given}\" must be an http:// or https:// URL, not {}://",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("\"{given}\" has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("\"{given}\" has a ?query or #fragment"));
    }
    if protocol == Protocol::Grpc && url.path() != "/" && !url.path().is_empty() {
        return Err(format!(
            "\"{given}\" has a path; a gRPC endpoint is only a host and port"
        ));
    }
    Ok(url)
}

/// Reads `headers` (name -> value), each problem at its own key.
fn headers(checker: &mut Checker, entry: &Section<'_>) -> Vec<Header> {
    let path = entry.key_path("headers");
    let entries = match entry.get("headers") {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Mapping(entries)) => entries,
        Some(other) => {
            checker.report(
                path,
                format!(
                    "expected a mapping of header name to value, such as \
                     {{x-api-key: \"...\"}}, got {}",
                    describe(other)
                ),
            );
            return Vec::new();
        }
    };
    if entries.len() > MAX_HEADERS {
        checker.report(
            path.clone(),
            format!("at most {MAX_HEADERS} headers, got {}", entries.len()),
        );
        return Vec::new();
    }
    let mut headers = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let name = key_name(key).to_ascii_lowercase();
        let header_path = format!("{path}.{}", key_name(key));
        let name_ok = http::HeaderName::from_bytes(name.as_bytes()).is_ok()
            && tonic::metadata::MetadataKey::<tonic::metadata::Ascii>::from_bytes(name.as_bytes())
                .is_ok();
        if !name_ok || name.ends_with("-bin") || name.starts_with("grpc-") {
            checker.report(
                header_path,
                format!(
                    "\"{name}\" is not a header name that can be sent \
                     (letters, digits and -; not grpc-* or *-bin)"
                ),
            );
            continue;
        }
        let Value::String(value) = value else {
            checker.report(
                header_path,
                format!("expected a string, got {}", describe(value)),
            );
            continue;
        };
        if http::HeaderValue::from_str(value).is_err()
            || value.chars().any(|c| !c.is_ascii() || c.is_ascii_control())
        {
            checker.report(
                header_path,
                "the value must be printable ASCII (no line breaks)",
            );
            continue;
        }
        headers.push(Header {
            name,
            value: value.clone(),
        });
    }
    headers
}

fn queue(checker: &mut Checker, entry: &Section<'_>) -> QueueConfig {
    let section = checker.section(entry, "sending_queue", QUEUE_KEYS);
    let mut queue = QueueConfig::default();
    let mut enabled = true;
    checker.field(&section, "enabled", &mut enabled, |value| {
        if flag(value)? {
            Ok(true)
        } else {
            Err(
                "the queue cannot be turned off: it is what keeps forwarding from \
                 making the receivers wait; give it a small queue_size instead"
                    .to_owned(),
            )
        }
    });
    checker.field(
        &section,
        "num_consumers",
        &mut queue.num_consumers,
        |value| count(value, 1, MAX_CONSUMERS),
    );
    checker.field(&section, "queue_size", &mut queue.queue_size, |value| {
        count(value, 1, MAX_QUEUE_SIZE)
    });
    checker.field(
        &section,
        "queue_size_mib",
        &mut queue.queue_size_bytes,
        |value| size_mib(value).map(|bytes| NonZeroUsize::new(bytes).unwrap_or(NonZeroUsize::MIN)),
    );
    checker.field(&section, "storage", &mut queue.storage, |value| {
        let name = text(value, "a directory path")?;
        if name.trim().is_empty() {
            return Err("expected a directory path, got an empty string".to_owned());
        }
        Ok(Some(PathBuf::from(name)))
    });
    queue.batch = batch(checker, &section);
    queue
}

/// Reads `sending_queue.batch`; `None` when it is turned off.
fn batch(checker: &mut Checker, queue: &Section<'_>) -> Option<BatchConfig> {
    let section = checker.section(queue, "batch", BATCH_KEYS);
    let mut batch = BatchConfig::default();
    let mut enabled = true;
    checker.field(&section, "enabled", &mut enabled, flag);
    checker.field(
        &section,
        "flush_timeout",
        &mut batch.flush_timeout,
        |value| at_most(positive(duration(value)?)?, MAX_FLUSH_TIMEOUT),
    );
    let sizer_ok = checker.field(&section, "sizer", &mut batch.sizer, |value| {
        match text(value, "`items` or `bytes`")? {
            "items" => Ok(Sizer::Items),
            "bytes" => Ok(Sizer::Bytes),
            "requests" => Err(
                "batches are sized in `items` or `bytes` (the Collector refuses \
                 `requests` here too)"
                    .to_owned(),
            ),
            other => Err(format!("expected `items` or `bytes`, got \"{other}\"")),
        }
    });
    let most = match batch.sizer {
        Sizer::Items => MAX_QUEUE_SIZE as u64,
        Sizer::Bytes => MAX_BATCH_SIZE_BYTES,
    };
    let min_ok = checker.field(&section, "min_size", &mut batch.min_size, |value| {
        batch_size(value, most)
    });
    let max_ok = checker.field(&section, "max_size", &mut batch.max_size, |value| {
        batch_size(value, most)
    });
    if sizer_ok && min_ok && max_ok {
        if batch.max_size > 0 && batch.max_size < batch.min_size {
            checker.report(
                section.key_path("max_size"),
                format!(
                    "{} is less than min_size ({}); 0 means no limit",
                    batch.max_size, batch.min_size
                ),
            );
        } else if batch.sizer == Sizer::Bytes
            && batch.max_size == 0
            && batch.min_size > MAX_BATCH_BYTES
        {
            checker.report(
                section.key_path("min_size"),
                format!(
                    "{} bytes is more than a batch holds without a max_size \
                     ({MAX_BATCH_BYTES}, gRPC's default message limit); set max_size \
                     if the upstream takes larger requests",
                    batch.min_size
                ),
            );
        }
    }
    enabled.then_some(batch)
}

/// A batch size: a whole number from 0 to `most`.
fn batch_size(value: &Value, most: u64) -> Result<u64, String> {
    let Value::Number(number) = value else {
        return Err(format!("expected a whole number, got {}", describe(value)));
    };
    match number.as_u64() {
        Some(size) if size <= most => Ok(size),
        _ => Err(format!("must be from 0 to {most}, got {number}")),
    }
}

fn retry(checker: &mut Checker, entry: &Section<'_>) -> RetryConfig {
    let section = checker.section(entry, "retry_on_failure", RETRY_KEYS);
    let mut retry = RetryConfig::default();
    checker.field(&section, "enabled", &mut retry.enabled, flag);
    let initial_ok = checker.field(
        &section,
        "initial_interval",
        &mut retry.initial_interval,
        |value| positive(duration(value)?),
    );
    let max_ok = checker.field(&section, "max_interval", &mut retry.max_interval, |value| {
        positive(duration(value)?)
    });
    checker.field(
        &section,
        "max_elapsed_time",
        &mut retry.max_elapsed_time,
        duration,
    );
    if initial_ok && max_ok && retry.max_interval < retry.initial_interval {
        checker.report(
            section.key_path("max_interval"),
            format!(
                "{} is shorter than initial_interval ({})",
                crate::validate::format_duration(retry.max_interval),
                crate::validate::format_duration(retry.initial_interval)
            ),
        );
    }
    retry
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `yaml` (a document with a `forward:` section).
    fn read(yaml: &str) -> Result<ForwardConfig, Vec<String>> {
        let document: Value = serde_yaml::from_str(yaml).unwrap();
        let mut checker = Checker::default();
        let top = checker.open(String::new(), Some(&document), &["forward"]);
        let mut forward = ForwardConfig::default();
        check(&mut checker, &top, &mut forward);
        checker
            .finish(forward)
            .map_err(|problems| problems.iter().map(ToString::to_string).collect())
    }

    fn problems(yaml: &str) -> Vec<String> {
        read(yaml).err().unwrap_or_default()
    }

    #[test]
    fn an_exporter_reads_with_the_collectors_keys() {
        let forward = read(
            r#"
forward:
  exporters:
    otlp/tempo:
      endpoint: "tempo:4317"
      tls: {insecure: true}
      compression: none
      headers: {X-Scope-OrgID: team-a}
      timeout: 2s
      sending_queue:
        num_consumers: 2
        queue_size: 1000
        queue_size_mib: 8
        storage: /tmp/q
        batch: {flush_timeout: 1s, sizer: bytes, min_size: 0, max_size: 1048576}
      retry_on_failure: {initial_interval: 100ms, max_interval: 1s, max_elapsed_time: 0s}
    vendor:
      protocol: http
      endpoint: "https://otlp.example/base"
    unbatched:
      endpoint: "http://collector:4317"
      sending_queue: {batch: {enabled: false}}
"#,
        )
        .unwrap();
        let exporters = &forward.exporters;
        assert_eq!(exporters.len(), 3);
        let tempo = &exporters[0];
        assert_eq!(tempo.name, "otlp/tempo");
        assert_eq!(tempo.endpoint.as_str(), "http://tempo:4317/");
        assert!(!tempo.gzip);
        assert_eq!(tempo.headers[0].name, "x-scope-orgid");
        assert_eq!(tempo.headers[0].value, "team-a");
        assert_eq!(tempo.queue.num_consumers.get(), 2);
        assert_eq!(tempo.queue.queue_size_bytes.get(), 8 << 20);
        assert_eq!(tempo.queue.storage, Some(PathBuf::from("/tmp/q")));
        assert_eq!(tempo.retry.max_elapsed_time, Duration::ZERO);
        let batch = tempo.queue.batch.as_ref().unwrap();
        assert_eq!(
            (batch.flush_timeout, batch.sizer, batch.min_size),
            (Duration::from_secs(1), Sizer::Bytes, 0)
        );
        assert_eq!((batch.max_bytes(), batch.max_items()), (1 << 20, u64::MAX));
        let vendor = &exporters[1];
        assert_eq!(vendor.protocol, Protocol::Http);
        assert_eq!(vendor.endpoint.as_str(), "https://otlp.example/base");
        assert!(vendor.gzip);
        // Batching is on by default, with the Collector's sizes, and never
        // past 4 MiB.
        let defaults = vendor.queue.batch.as_ref().unwrap();
        assert_eq!(defaults, &BatchConfig::default());
        assert_eq!(defaults.flush_timeout, Duration::from_millis(200));
        assert_eq!((defaults.sizer, defaults.min_size), (Sizer::Items, 8192));
        assert_eq!(
            (defaults.max_items(), defaults.max_bytes()),
            (u64::MAX, 4 << 20)
        );
        assert_eq!(exporters[2].queue.batch, None);
        // A bare host:port over gRPC is TLS, as in the Collector.
        assert_eq!(
            endpoint_url("tempo:4317", Protocol::Grpc, false)
                .unwrap()
                .scheme(),
            "https"
        );
        assert!(!format!("{:?}", tempo.headers).contains("team-a"));
    }

    #[test]
    fn problems_name_the_field() {
        let found = problems(
            r#"
forward:
  exporters:
    up:
      protocol: smtp
      endpoint: "ftp://x"
      compression: zstd
      headers: {"bad header": x, grpc-timeout: "1"}
      tls: {cert_file: /a.pem}
      sending_queue: {enabled: false, num_consumers: 0, queue_size_mib: -1}
      retry_on_failure: {initial_interval: 10s, max_interval: 1s}
      colour: blue
    "has space": {endpoint: "http://x:1"}
    nothing: {}
    first: {endpoint: "http://x:1", sending_queue: {storage: /q}}
    second: {endpoint: "http://x:2", sending_queue: {storage: /q}}
    batches:
      endpoint: "http://x:3"
      sending_queue:
        batch: {flush_timeout: 0s, sizer: requests, min_size: -1, max_size: 1.5, size: 3}
    inverted:
      endpoint: "http://x:4"
      sending_queue: {batch: {min_size: 100, max_size: 10, flush_timeout: 1h}}
    too_big:
      endpoint: "http://x:5"
      sending_queue: {batch: {sizer: bytes, min_size: 8388608, enabled: maybe}}
"#,
        );
        let expect = [
            "forward.exporters.up.colour: unknown field",
            "forward.exporters.up.protocol: expected `grpc` or `http`",
            "forward.exporters.up.endpoint: \"ftp://x\" must be an http",
            "forward.exporters.up.compression: expected `gzip` or `none`",
            "forward.exporters.up.headers.bad header:",
            "forward.exporters.up.headers.grpc-timeout:",
            "forward.exporters.up.tls.key_file: missing; required with cert_file",
            "forward.exporters.up.sending_queue.enabled: the queue cannot be turned off",
            "forward.exporters.up.sending_queue.num_consumers: must be from 1",
            "forward.exporters.up.sending_queue.queue_size_mib:",
            "forward.exporters.up.retry_on_failure.max_interval: 1s is shorter",
            "forward.exporters.has space: \"has space\" is not an exporter name",
            "forward.exporters.nothing.endpoint: missing",
            "forward.exporters.second.sending_queue.storage: the same directory as exporter first's",
            "forward.exporters.batches.sending_queue.batch.size: unknown field",
            "forward.exporters.batches.sending_queue.batch.flush_timeout:",
            "forward.exporters.batches.sending_queue.batch.sizer: batches are sized in `items` or `bytes`",
            "forward.exporters.batches.sending_queue.batch.min_size: must be from 0",
            "forward.exporters.batches.sending_queue.batch.max_size: must be from 0",
            "forward.exporters.inverted.sending_queue.batch.flush_timeout: must be at most 10m",
            "forward.exporters.inverted.sending_queue.batch.max_size: 10 is less than min_size (100)",
            "forward.exporters.too_big.sending_queue.batch.enabled: expected `true` or `false`",
            "forward.exporters.too_big.sending_queue.batch.min_size: 8388608 bytes is more than a batch holds",
        ];
        for wanted in expect {
            assert!(
                found.iter().any(|problem| problem.starts_with(wanted)),
                "no problem starting {wanted:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), expect.len(), "{found:#?}");
        assert!(problems(
            "forward:\n  exporters:\n    h: {protocol: http, endpoint: \"host:4318\"}\n"
        )
        .iter()
        .any(|problem| problem.contains("has no scheme")));
        assert!(
            problems("forward:\n  exporters:\n    g: {endpoint: \"http://host:4317/v1\"}\n")
                .iter()
                .any(|problem| problem.contains("has a path"))
        );
    }

    #[test]
    fn the_example_shows_every_exporter_key() {
        for key in EXPORTER_KEYS
            .iter()
            .chain(TLS_KEYS)
            .chain(QUEUE_KEYS)
            .chain(BATCH_KEYS)
            .chain(RETRY_KEYS)
        {
            // `enabled` of the queue is accepted (as true) but not shown:
            // the queue cannot be turned off. The batch's is shown.
            if *key == "enabled" {
                assert!(EXAMPLE.contains("#         enabled: true"));
                continue;
            }
            assert!(
                EXAMPLE.lines().any(
                    |line| line.trim_start().starts_with(&format!("#     {key}:"))
                        || line.trim_start().starts_with(&format!("# {key}:"))
                        || line.contains(&format!(" {key}:"))
                ),
                "{key} not in the example"
            );
        }
    }
}
