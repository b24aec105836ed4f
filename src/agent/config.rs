//! The `mode:` key and the `agent:` section: whether this collector is an
//! agent that sends window summaries to a gateway ([`AgentConfig`]), the
//! keys and rules that validate it, and its part of the example config.
//! Key names follow the OTel Collector's OTLP exporter (`endpoint`,
//! `headers`, `compression`, `timeout`, `tls`, `sending_queue`).

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::Value;

use crate::validate::{at_most, count, describe, duration, flag, key_name, named_file, positive};
use crate::validate::{text, Checker, Section};

/// How summaries travel to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// OTLP/gRPC (`MetricsService/Export`, `LogsService/Export`).
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`/v1/metrics`, `/v1/logs`).
    Http,
}

/// TLS towards the gateway (used with an `https://` endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientTls {
    /// CA certificates the gateway's certificate must chain to, besides the
    /// built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, for a gateway that requires mTLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// Where and how summaries go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// `http://host:4317` (gRPC) or `http://host:4318` (HTTP); `https://`
    /// for TLS. Required in agent mode.
    pub endpoint: String,
    pub protocol: Protocol,
    /// Sent with every request (e.g. `authorization: Bearer ...`).
    pub headers: BTreeMap<String, String>,
    /// A file holding the gateway's bearer token (a mounted Secret), sent
    /// as `authorization: Bearer <token>`; read at start-up.
    pub bearer_token_file: Option<PathBuf>,
    /// Whether requests are gzip-compressed.
    pub gzip: bool,
    /// Per request.
    pub timeout: Duration,
    pub tls: ClientTls,
}

/// Settings of agent mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// `mode: agent`. Off (`mode: standalone`), nothing below is used.
    pub enabled: bool,
    pub gateway: GatewayConfig,
    /// Export requests waiting to be sent, at most; a full queue drops the
    /// newest request and counts its items.
    pub queue_size: NonZeroUsize,
    /// How long a request that failed with a retryable error is retried
    /// (exponential backoff from 1 s) before it is given up.
    pub max_elapsed_time: Duration,
    /// Whether received metrics and logs go to the gateway as they are
    /// (the gateway's saturation rules and log series need them).
    pub forward_metrics: bool,
    pub forward_logs: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            enabled: false,
            gateway: GatewayConfig {
                endpoint: String::new(),
                protocol: Protocol::Grpc,
                headers: BTreeMap::new(),
                bearer_token_file: None,
                gzip: true,
                timeout: Duration::from_secs(10),
                tls: ClientTls::default(),
            },
            queue_size: NonZeroUsize::new(1000).expect("non-zero"),
            max_elapsed_time: Duration::from_secs(60),
            forward_metrics: true,
            forward_logs: true,
        }
    }
}

// === the `mode:` key and `agent:` section of the config file ===

/// Keys of `agent`.
pub(crate) const AGENT_KEYS: &[&str] = &[
    "gateway",
    "sending_queue",
    "retry_on_failure",
    "forward_metrics",
    "forward_logs",
];
const GATEWAY_KEYS: &[&str] = &[
    "endpoint",
    "protocol",
    "headers",
    "bearer_token_file",
    "compression",
    "timeout",
    "tls",
];
const TLS_KEYS: &[&str] = &["ca_file", "cert_file", "key_file"];
const QUEUE_KEYS: &[&str] = &["queue_size"];
const RETRY_KEYS: &[&str] = &["max_elapsed_time"];
/// Most queued requests: each holds up to a few MiB.
const MAX_QUEUE_SIZE: usize = 100_000;
const MAX_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const MAX_ELAPSED: Duration = Duration::from_secs(60 * 60);

/// The `mode:` key and `agent:` part of the example config.
pub(crate) const EXAMPLE: &str = r#"# standalone: spans are recorded, judged and alerted on here. agent: spans
# are recorded here and, as each window closes, summarised (RED per
# operation, edge and own time, latency as exponential histograms,
# exemplars, the drill-down and repeated-call counts) and sent as OTLP
# metrics to a gateway triage, which detects across all services.
# See docs/SCALING.md.
mode: standalone

# Only read in agent mode.
agent:
  gateway:
    # The gateway's OTLP endpoint: "http://triage-gateway:4317" for gRPC,
    # "http://triage-gateway:4318" for HTTP; https:// for TLS. Required in
    # agent mode.
    endpoint: ""
    # grpc or http (protobuf).
    protocol: grpc
    # Sent with every request, e.g. {x-scope-orgid: team-a}.
    headers: {}
    # The gateway's bearer token, from a file (a mounted Secret); sent as
    # "authorization: Bearer <token>".
    bearer_token_file: ""
    # gzip or none.
    compression: gzip
    timeout: 10s
    tls:
      ca_file: ""     # trusted besides the built-in roots
      cert_file: ""   # client certificate and key, for mTLS
      key_file: ""
  sending_queue:
    # Requests waiting to be sent; when full the newest is dropped and its
    # items counted in triage_agent_enqueue_failed_items_total.
    queue_size: 1000
  retry_on_failure:
    # Retryable failures (UNAVAILABLE, 429, 503, ...) are retried with
    # exponential backoff from 1s for this long, then dropped and counted.
    max_elapsed_time: 60s
  # Received metrics and logs go to the gateway unchanged (its saturation
  # rules, log series and Kubernetes events need them).
  forward_metrics: true
  forward_logs: true
"#;

fn optional_file(value: &Value) -> Result<Option<PathBuf>, String> {
    match value {
        Value::String(text) if text.is_empty() => Ok(None),
        _ => named_file(value).map(Some),
    }
}

/// Reads `mode` (at the top level) and the `agent` section into `agent`.
pub(crate) fn check(checker: &mut Checker, top: &Section<'_>, agent: &mut AgentConfig) {
    checker.field(top, "mode", &mut agent.enabled, |value| {
        match text(value, "`standalone` or `agent`")? {
            "standalone" => Ok(false),
            "agent" => Ok(true),
            other => Err(format!("expected `standalone` or `agent`, got {other:?}")),
        }
    });
    let section = checker.section(top, "agent", AGENT_KEYS);
    let gateway = checker.section(&section, "gateway", GATEWAY_KEYS);
    let config = &mut agent.gateway;
    checker.field(&gateway, "endpoint", &mut config.endpoint, |value| {
        let endpoint = text(value, "a URL such as http://triage-gateway:4317")?;
        if endpoint.is_empty() {
            return Ok(String::new());
        }
        let url = reqwest::Url::parse(endpoint).map_err(|error| {
            format!("expected a URL such as http://triage-gateway:4317: {error}")
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "expected an http:// or https:// URL with a host, got {endpoint:?}"
            ));
        }
        Ok(endpoint.trim_end_matches('/').to_owned())
    });
    checker.field(
        &gateway,
        "protocol",
        &mut config.protocol,
        |value| match text(value, "`grpc` or `http`")? {
            "grpc" => Ok(Protocol::Grpc),
            "http" | "http/protobuf" => Ok(Protocol::Http),
            other => Err(format!("expected `grpc` or `http`, got {other:?}")),
        },
    );
    checker.field(
        &gateway,
        "compression",
        &mut config.gzip,
        |value| match text(value, "`gzip` or `none`")? {
            "gzip" => Ok(true),
            "none" | "" => Ok(false),
            other => Err(format!("expected `gzip` or `none`, got {other:?}")),
        },
    );
    checker.field(&gateway, "timeout", &mut config.timeout, |value| {
        at_most(positive(duration(value)?)?, MAX_TIMEOUT)
    });
    checker.field(&gateway, "headers", &mut config.headers, |value| {
        let Value::Mapping(entries) = value else {
            return Err(format!(
                "expected a mapping of header name to value, got {}",
                describe(value)
            ));
        };
        let mut headers = BTreeMap::new();
        for (key, value) in entries {
            let name = key_name(key).to_ascii_lowercase();
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(format!("{name:?} is not a valid header name"));
            }
            let Value::String(value) = value else {
                return Err(format!(
                    "header {name:?}: expected text, got {}",
                    describe(value)
                ));
            };
            if http::HeaderValue::from_str(value).is_err() {
                return Err(format!(
                    "header {name:?}: the value is not valid in a header"
                ));
            }
            headers.insert(name, value.clone());
        }
        Ok(headers)
    });
    checker.field(
        &gateway,
        "bearer_token_file",
        &mut config.bearer_token_file,
        optional_file,
    );
    let tls = checker.section(&gateway, "tls", TLS_KEYS);
    checker.field(&tls, "ca_file", &mut config.tls.ca_file, optional_file);
    checker.field(&tls, "cert_file", &mut config.tls.cert_file, optional_file);
    checker.field(&tls, "key_file", &mut config.tls.key_file, optional_file);
    if config.tls.cert_file.is_some() != config.tls.key_file.is_some() {
        checker.report(
            tls.key_path("cert_file"),
            "cert_file and key_file go together (a client certificate needs its key)",
        );
    }
    let queue = checker.section(&section, "sending_queue", QUEUE_KEYS);
    checker.field(&queue, "queue_size", &mut agent.queue_size, |value| {
        count(value, 1, MAX_QUEUE_SIZE)
    });
    let retry = checker.section(&section, "retry_on_failure", RETRY_KEYS);
    checker.field(
        &retry,
        "max_elapsed_time",
        &mut agent.max_elapsed_time,
        |value| at_most(duration(value)?, MAX_ELAPSED),
    );
    checker.field(
        &section,
        "forward_metrics",
        &mut agent.forward_metrics,
        flag,
    );
    checker.field(&section, "forward_logs", &mut agent.forward_logs, flag);
    if agent.enabled && agent.gateway.endpoint.is_empty() {
        checker.report(
            gateway.key_path("endpoint"),
            "mode is agent, so the gateway's endpoint is required (e.g. http://triage-gateway:4317)",
        );
    }
}
