//! The `api:` section: settings of the query API listener ([`ApiConfig`]),
//! the keys and rules that validate them, and their part of the example
//! config.
//!
//! The `tls:` and `auth:` keys are every listener's (`crate::security`);
//! `auth` also reads the single-token keys it had first. Files named here
//! (tokens, certificate, key, CA) are read when the server binds, not when
//! the config is validated, so that `triage validate` on a laptop does not
//! need the production secrets.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::num::NonZeroUsize;
use std::time::Duration;

use crate::security::config::{check_auth, check_tls, example as security_example, token};
use crate::security::{AuthConfig, TlsConfig};
use crate::validate::listener_bounds::{
    MAX_CONCURRENT_STREAMS, MAX_IDLE_TIMEOUT, MAX_KEEPALIVE_TIMEOUT, MAX_MAX_CONNECTIONS,
    MAX_READ_HEADER_TIMEOUT, MAX_REQUEST_TIMEOUT, MIN_KEEPALIVE_INTERVAL,
};
use crate::validate::{at_least, at_most, count, duration, positive};
use crate::validate::{endpoint, file_path, Checker, Section};

/// Default port of the query API.
pub const API_PORT: u16 = 4320;

/// How the query API listens and whom it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Address the gRPC API listens on; port 0 picks a free port.
    pub endpoint: SocketAddr,
    /// Bearer tokens every query and reflection call must carry (health
    /// stays open); empty: no authentication.
    pub auth: AuthConfig,
    /// Server TLS (and mTLS with a client CA); `None`: plaintext.
    pub tls: Option<TlsConfig>,
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

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            endpoint: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, API_PORT)),
            auth: AuthConfig::default(),
            tls: None,
            limits: ApiLimits::default(),
        }
    }
}

// === the `api:` section of the config file ===

/// Keys of `api`.
pub(crate) const API_KEYS: &[&str] = &[
    "endpoint",
    "max_connections",
    "max_concurrent_streams",
    "read_header_timeout",
    "request_timeout",
    "idle_timeout",
    "keepalive_interval",
    "keepalive_timeout",
    "auth",
    "tls",
];
/// Keys of `api.auth`: every listener's, and the single-token keys it had
/// before listeners took several (still read, added to the lists).
pub(crate) const API_AUTH_KEYS: &[&str] = &[
    "bearer_tokens",
    "bearer_token_files",
    "bearer_token_env",
    "reload_interval",
    "bearer_token",
    "bearer_token_file",
];

/// The top of the `api:` part of the example config.
const EXAMPLE_HEAD: &str = r#"api:
  # Where the gRPC query API (triage.v1.TriageQuery, grpc.health.v1 health and
  # server reflection) listens; `triage query` connects here.
  # Flag --api-endpoint, env TRIAGE_API_ENDPOINT.
  endpoint: "127.0.0.1:4320"
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

/// What `api.auth` covers, shown above its keys in the example.
const AUTH_NOTE: &str = "# Every query and reflection call needs a token; health stays open.
# bearer_token and bearer_token_file (one token each) are still read.";

/// The `api:` part of the example config (`triage example-config`).
pub(crate) fn example() -> String {
    format!("{EXAMPLE_HEAD}{}", security_example(2, AUTH_NOTE))
}

/// Reads the `api` section into `api`: the endpoint, the tokens and TLS.
/// Files are only named here; they are read when the server starts.
pub(crate) fn check(checker: &mut Checker, top: &Section<'_>, api: &mut ApiConfig) {
    let section = checker.section(top, "api", API_KEYS);
    checker.field(&section, "endpoint", &mut api.endpoint, |value| {
        endpoint(value, API_PORT)
    });
    check_limits(checker, &section, &mut api.limits);
    check_tls(checker, &section, &mut api.tls);
    let auth = check_auth(checker, &section, API_AUTH_KEYS, &mut api.auth);
    let mut inline = None;
    checker.field(&auth, "bearer_token", &mut inline, |value| {
        token(value).map(Some)
    });
    api.auth.bearer_tokens.extend(inline);
    let mut file = None;
    checker.field(&auth, "bearer_token_file", &mut file, |value| {
        file_path(value).map(Some)
    });
    api.auth.bearer_token_files.extend(file);
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
        let config = ApiConfig {
            auth: AuthConfig::tokens(["s3cret"]),
            ..ApiConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
