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

use crate::security::config::{check_auth, check_tls, example as security_example, token};
use crate::security::{AuthConfig, TlsConfig};
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
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            endpoint: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, API_PORT)),
            auth: AuthConfig::default(),
            tls: None,
        }
    }
}

// === the `api:` section of the config file ===

/// Keys of `api`.
pub(crate) const API_KEYS: &[&str] = &["endpoint", "auth", "tls"];
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
