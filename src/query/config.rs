//! Settings of the query API listener, already validated (see
//! `crate::config` for the YAML side).
//!
//! Files named here (token, certificate, key) are read when the server
//! binds, not when the config is validated, so that `triage validate` on a
//! laptop does not need the production secrets.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_does_not_show_the_token() {
        let shown = format!("{:?}", TokenSource::Inline("s3cret".into()));
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
