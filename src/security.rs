//! TLS and bearer-token authentication, the same for every listener (OTLP
//! gRPC and HTTP, admin, the query API). docs/SECURITY.md is the guide.
//!
//! - [`config`]: the `tls:` and `auth:` sections every listener has, with the
//!   OTel Collector's `configtls` key names, read and validated beside their
//!   types, and their part of the example config.
//! - [`tls`]: loads the certificate, key and client CA into a rustls server
//!   configuration ([`tls::Acceptor`]), swaps it when the files change on
//!   disk (a file that does not load keeps the old configuration, logged
//!   and counted), and performs handshakes concurrently and under a deadline
//!   for any stream of accepted connections ([`tls::TlsIncoming`]).
//! - [`auth`]: the tokens a listener accepts ([`auth::BearerAuth`]): inline,
//!   from environment variables, and from files re-read when they change;
//!   compared in constant time and never shown by `Debug`.
//!
//! Files and environment variables are read when a listener is bound, not
//! when the config is validated, so `triage validate` does not need the
//! production secrets; an unusable one fails start-up with a [`LoadError`]
//! naming the config field.
//!
//! Invariant: once bound, a listener never serves with less than it was
//! started with. A reload that fails keeps the previous certificate or
//! tokens; nothing here turns TLS or auth off at run time.

pub mod auth;
pub mod config;
pub mod tls;

pub use auth::BearerAuth;
pub use config::{AuthConfig, Secret, TlsConfig, TlsVersion};

/// A file or variable named in a `tls:` or `auth:` section that cannot be
/// used, with the field that names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct LoadError {
    /// The config field, e.g. `receivers.otlp.grpc.tls.cert_file`.
    pub field: String,
    /// What is wrong, naming the file: `cannot read /x: No such file or
    /// directory (os error 2)`.
    pub message: String,
}

impl LoadError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> LoadError {
        LoadError {
            field: field.into(),
            message: message.into(),
        }
    }
}
