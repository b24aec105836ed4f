//! The `api:` section: settings of the query API listener ([`ApiConfig`]),
//! the keys and rules that validate them, and their part of the example
//! config.
//!
//! Files named here (token, certificate, key) are read when the server
//! binds, not when the config is validated, so that `triage validate` on a
//! laptop does not need the production secrets.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use crate::validate::{at_least, at_most, count, duration, positive};
use crate::validate::{endpoint, file_path, text, Checker, Section};

/// Default port of the query API.
pub const API_PORT: u16 = 4320;

/// How the query API listens and whom it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Address the gRPC API listens on; port 0 picks a free port.
    pub endpoint: SocketAddr,
    /// Bearer token every query call must carry; `None`: no authentication.
    pub bearer_token: Option<TokenSource>,
    /// Certificate and key to serve TLS with; `None`: plaintext.
    pub tls: Option<TlsFiles>,
    /// Connections, calls and their deadlines, as on the OTLP/gRPC
    /// listener (docs/RELIABILITY.md, "Listeners").
    pub limits: ApiLimits,
}

/// What the query API's listener bounds; the same keys and meanings as
/// `receivers.otlp.grpc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Most connections open at once; one more is closed when accepted.
    pub max_connections: NonZeroUsize,
    /// How long a new connection may take to send the HTTP/2 preface (or
    /// start its TLS handshake).
    pub read_header_timeout: Duration,
    /// How long a connection may stay open with no call in flight (a
    /// watch stream counts as a call until it ends).
    pub idle_timeout: Duration,
    /// Longest unary call; a client's shorter `grpc-timeout` wins. Watch
    /// streams are not cut: the bound ends when their first answer starts.
    pub request_timeout: Duration,
    /// Calls in flight on one connection (HTTP/2 max concurrent streams,
    /// also enforced by the server).
    pub max_concurrent_streams: NonZeroUsize,
    /// How often each connection is sent an HTTP/2 ping.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            // Watchers (at most MAX_WATCHERS = 256 streams) usually share
            // few connections; the CLI opens one per command.
            max_connections: NonZeroUsize::new(256).expect("non-zero"),
            read_header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5 * 60),
            request_timeout: Duration::from_secs(30),
            max_concurrent_streams: NonZeroUsize::new(100).expect("non-zero"),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// Where the bearer token comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Written in the config file.
    Inline(String),
    /// Read from this file at start-up (surrounding whitespace trimmed), so
    /// the secret can live in a Kubernetes secret volume.
    File(PathBuf),
}

/// PEM files of the server's TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// Private key of the leaf certificate.
    pub key_file: PathBuf,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            endpoint: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, API_PORT)),
            bearer_token: None,
            tls: None,
            limits: ApiLimits::default(),
        }
    }
}

// Written by hand so that a token never reaches a log line or a panic
// message through `{:?}` of the settings.
impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Inline(_) => f.write_str("Inline(<redacted>)"),
            TokenSource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

// === the `api:` section of the config file ===

/// Keys of `api`.
pub(crate) const API_KEYS: &[&str] = &[
    "endpoint",
    "auth",
    "tls",
    "max_connections",
    "max_concurrent_streams",
    "read_header_timeout",
    "request_timeout",
    "idle_timeout",
    "keepalive_interval",
    "keepalive_timeout",
];
// The bounds of `receivers.otlp.grpc`'s same keys (`crate::config`).
/// Most connections the listener may be allowed.
const MAX_MAX_CONNECTIONS: usize = 1 << 20;
/// Most concurrent streams per connection that may be configured.
const MAX_CONCURRENT_STREAMS: usize = 10_000;
/// Longest `read_header_timeout`.
const MAX_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Longest `request_timeout`.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Longest `idle_timeout` and `keepalive_interval`.
const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// Shortest `keepalive_interval`.
const MIN_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest `keepalive_timeout`.
const MAX_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Keys of `api.auth`.
pub(crate) const API_AUTH_KEYS: &[&str] = &["bearer_token", "bearer_token_file"];
/// Keys of `api.tls`.
pub(crate) const API_TLS_KEYS: &[&str] = &["cert_file", "key_file"];

/// The `api:` part of the example config (`triage example-config`).
pub(crate) const EXAMPLE: &str = r#"api:
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
  # The listener's limits, with the meanings they have under
  # receivers.otlp.grpc. A watch stream keeps its connection busy (never
  # idle) and is not cut by request_timeout.
  max_connections: 256
  max_concurrent_streams: 100
  read_header_timeout: 10s
  request_timeout: 30s
  idle_timeout: 5m
  keepalive_interval: 1m
  keepalive_timeout: 20s
"#;

/// Reads the `api` section into `api`: the endpoint, then token and TLS
/// files, whose pairs must be consistent. Files are only named here;
/// they are read when the server starts.
pub(crate) fn check(checker: &mut Checker, top: &Section<'_>, api: &mut ApiConfig) {
    let section = checker.section(top, "api", API_KEYS);
    checker.field(&section, "endpoint", &mut api.endpoint, |value| {
        endpoint(value, API_PORT)
    });

    let auth = checker.section(&section, "auth", API_AUTH_KEYS);
    let mut token = None;
    checker.field(&auth, "bearer_token", &mut token, |value| {
        let token = text(value, "a token string")?;
        // It travels in an HTTP/2 header, so it must be visible ASCII.
        if token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err("must be non-empty printable ASCII without spaces".to_owned());
        }
        Ok(Some(TokenSource::Inline(token.to_owned())))
    });
    let mut token_file = None;
    checker.field(&auth, "bearer_token_file", &mut token_file, |value| {
        Ok(Some(TokenSource::File(file_path(value)?)))
    });
    api.bearer_token = match (token, token_file) {
        (Some(_), Some(_)) => {
            checker.report(
                auth.key_path("bearer_token_file"),
                "give api.auth.bearer_token or bearer_token_file, not both",
            );
            None
        }
        (inline, file) => inline.or(file),
    };

    check_limits(checker, &section, &mut api.limits);

    let tls = checker.section(&section, "tls", API_TLS_KEYS);
    let mut cert_file = None;
    checker.field(&tls, "cert_file", &mut cert_file, |value| {
        file_path(value).map(Some)
    });
    let mut key_file = None;
    checker.field(&tls, "key_file", &mut key_file, |value| {
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
                checker.report(tls.key_path("key_file"), "required with cert_file");
            }
            None
        }
        (None, Some(_)) => {
            if tls.get("cert_file").is_none() {
                checker.report(tls.key_path("cert_file"), "required with key_file");
            }
            None
        }
    };
}

/// Reads the listener's limits, in the order the example lists them.
fn check_limits(checker: &mut Checker, section: &Section<'_>, limits: &mut ApiLimits) {
    checker.field(
        section,
        "max_connections",
        &mut limits.max_connections,
        |value| count(value, 1, MAX_MAX_CONNECTIONS),
    );
    checker.field(
        section,
        "max_concurrent_streams",
        &mut limits.max_concurrent_streams,
        |value| count(value, 1, MAX_CONCURRENT_STREAMS),
    );
    checker.field(
        section,
        "read_header_timeout",
        &mut limits.read_header_timeout,
        |value| at_most(positive(duration(value)?)?, MAX_READ_HEADER_TIMEOUT),
    );
    checker.field(
        section,
        "request_timeout",
        &mut limits.request_timeout,
        |value| at_most(positive(duration(value)?)?, MAX_REQUEST_TIMEOUT),
    );
    checker.field(section, "idle_timeout", &mut limits.idle_timeout, |value| {
        at_most(positive(duration(value)?)?, MAX_IDLE_TIMEOUT)
    });
    checker.field(
        section,
        "keepalive_interval",
        &mut limits.keepalive_interval,
        |value| {
            at_most(
                at_least(duration(value)?, MIN_KEEPALIVE_INTERVAL)?,
                MAX_IDLE_TIMEOUT,
            )
        },
    );
    checker.field(
        section,
        "keepalive_timeout",
        &mut limits.keepalive_timeout,
        |value| at_most(positive(duration(value)?)?, MAX_KEEPALIVE_TIMEOUT),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_does_not_show_the_token() {
        let shown = format!("{:?}", TokenSource::Inline("s3cret".into()));
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
