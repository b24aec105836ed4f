//! Server TLS for any listener: the rustls configuration loaded from a
//! listener's `tls:` files and swapped when they change ([`Acceptor`]), the
//! handshake under a deadline, and a stream adapter that handshakes the
//! connections of any accept loop concurrently ([`TlsIncoming`]).
//!
//! Reload: rather than a `ResolvesServerCert` that swaps only the
//! certificate, the whole `ServerConfig` is rebuilt and swapped, so that a
//! changed client CA (whose verifier lives in the config, not in a
//! resolver) takes effect the same way. Each new connection asks the
//! [`Acceptor`] for the current config; at most once per `reload_interval`
//! that looks at the files' modification times and sizes, and only when
//! one changed are they read and parsed again (a few kilobytes, on the
//! task that accepted the connection). A set of files that does not load
//! (half-written, a key that does not match, a CA that does not parse)
//! leaves the previous config in place, is logged with the reason and
//! counted in `triage_tls_reloads_total{result="error"}`, and is tried
//! again when the files change again. Connections already open keep the
//! certificate they were made with, as in Envoy and the Collector.
//!
//! Handshakes: a connection has the listener's handshake timeout (the
//! `read_header_timeout` that bounds how long a plaintext connection may
//! take to start speaking) to complete its TLS handshake; one that does
//! not is closed and counted as `triage_tls_handshake_failures_total
//! {reason="timeout"}`, so a slow client cannot hold a connection slot by
//! trickling its handshake. A failed handshake (no client certificate under
//! mTLS, an unknown CA, a plaintext client) is `reason="error"`, logged at
//! debug level: it is the client's problem, and a scanner must not be able
//! to fill the log.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use metrics::counter;
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tonic::transport::server::Connected;

use super::config::{TlsConfig, TlsVersion};
use super::LoadError;
use crate::telemetry;

/// Handshakes in progress at once on one [`TlsIncoming`]; past this, no
/// more connections are accepted until some finish. The OTLP and admin
/// listeners' connection caps are lower; this bounds the query API's.
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// The ALPN protocols a listener offers: gRPC needs HTTP/2, which clients
/// insist on negotiating; the HTTP listeners speak both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `h2` only (gRPC).
    Http2,
    /// `h2` and `http/1.1`.
    Http,
}

/// A listener's TLS configuration, reloaded when its files change.
pub struct Acceptor {
    /// The listener's name in logs and the `listener` metric label.
    listener: &'static str,
    /// Where the section is in the config file, e.g.
    /// `receivers.otlp.grpc.tls`, for messages.
    field: String,
    config: TlsConfig,
    alpn: Alpn,
    /// The config handed to new connections and what it was built from.
    /// Locked per connection for a pointer copy, and while a changed set of
    /// files is read (rare).
    state: Mutex<Loaded>,
}

struct Loaded {
    current: Arc<ServerConfig>,
    /// The files' modification times and sizes when last looked at.
    stamps: Stamps,
    /// When the files are next looked at.
    next_check: Instant,
}

/// Modification time and size of the certificate, key and client CA
/// files; `None` for one that could not be looked at (or is not set).
type Stamps = [Option<(SystemTime, u64)>; 3];

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client did not finish within the handshake timeout.
    #[error("TLS handshake not completed within {0:?}")]
    Timeout(Duration),
    /// The handshake failed (rustls's reason).
    #[error("TLS handshake failed: {0}")]
    Failed(io::Error),
}

/// A connection that is TLS or plaintext, as its listener is configured.
pub enum MaybeTls<IO> {
    Plain(IO),
    Tls(Box<TlsStream<IO>>),
}

/// A stream of accepted connections with the TLS handshake done: each
/// connection from `inner` is handshaken on its own task, and yielded once
/// its handshake completes, in whatever order they complete. Without TLS
/// it passes connections through as [`MaybeTls::Plain`].
pub struct TlsIncoming<S, IO> {
    inner: S,
    /// False once `inner` has ended.
    inner_open: bool,
    tls: Option<Arc<Acceptor>>,
    timeout: Duration,
    /// Handshakes in progress; dropped (aborted) with the stream.
    handshakes: JoinSet<Option<TlsStream<IO>>>,
}

// === impl Acceptor ===

impl Acceptor {
    /// Loads the files of `config` (a bad one fails here, naming `field`'s
    /// key and the file).
    pub fn load(
        listener: &'static str,
        field: &str,
        config: &TlsConfig,
        alpn: Alpn,
    ) -> Result<Arc<Acceptor>, LoadError> {
        let stamps = stamps(config);
        let current = Arc::new(build(field, config, alpn)?);
        Ok(Arc::new(Acceptor {
            listener,
            field: field.to_owned(),
            config: config.clone(),
            alpn,
            state: Mutex::new(Loaded {
                current,
                stamps,
                next_check: Instant::now() + config.reload_interval,
            }),
        }))
    }

    /// The configuration for a new connection, reloaded first if the files
    /// changed and the reload interval has passed.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server_config_at(Instant::now())
    }

    fn server_config_at(&self, now: Instant) -> Arc<ServerConfig> {
        let mut state = self.state.lock();
        if self.config.reload_interval.is_zero() || now < state.next_check {
            return Arc::clone(&state.current);
        }
        state.next_check = now + self.config.reload_interval;
        let stamps = stamps(&self.config);
        if stamps == state.stamps {
            return Arc::clone(&state.current);
        }
        // Remembered whether or not the new files load, so that a broken
        // set is tried again when it changes, not at every interval.
        state.stamps = stamps;
        match build(&self.field, &self.config, self.alpn) {
            Ok(config) => {
                state.current = Arc::new(config);
                counter!(telemetry::TLS_RELOADS, "listener" => self.listener, "result" => "ok")
                    .increment(1);
                tracing::info!(
                    listener = self.listener,
                    cert_file = %self.config.cert_file.display(),
                    "TLS certificate reloaded; new connections use it"
                );
            }
            Err(error) => {
                counter!(telemetry::TLS_RELOADS, "listener" => self.listener, "result" => "error")
                    .increment(1);
                tracing::error!(
                    listener = self.listener,
                    %error,
                    "TLS files changed but do not load; still serving the previous certificate"
                );
            }
        }
        Arc::clone(&state.current)
    }

    /// Performs the server side of a handshake on `io`, within `timeout`.
    /// Counts a failure; the caller drops the connection.
    pub async fn handshake<IO>(
        &self,
        io: IO,
        timeout: Duration,
    ) -> Result<TlsStream<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server_config());
        let result = match tokio::time::timeout(timeout, acceptor.accept(io)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(error)) => HandshakeError::Failed(error),
            Err(_) => HandshakeError::Timeout(timeout),
        };
        let reason = match result {
            HandshakeError::Timeout(_) => "timeout",
            HandshakeError::Failed(_) => "error",
        };
        counter!(telemetry::TLS_HANDSHAKE_FAILURES, "listener" => self.listener, "reason" => reason)
            .increment(1);
        tracing::debug!(listener = self.listener, error = %result, "TLS handshake refused");
        Err(result)
    }
}

/// The files' modification times and sizes, to tell when they change.
fn stamps(config: &TlsConfig) -> Stamps {
    let stamp = |path: Option<&Path>| {
        let metadata = std::fs::metadata(path?).ok()?;
        Some((metadata.modified().ok()?, metadata.len()))
    };
    [
        stamp(Some(&config.cert_file)),
        stamp(Some(&config.key_file)),
        stamp(config.client_ca_file.as_deref()),
    ]
}

/// Reads the files of `config` and builds a server configuration from them;
/// an error names the key under `section` and the file.
fn build(section: &str, config: &TlsConfig, alpn: Alpn) -> Result<ServerConfig, LoadError> {
    let field = |key: &str| format!("{section}.{key}");
    let read = |key: &str, path: &Path| {
        std::fs::read(path).map_err(|error| {
            LoadError::new(
                field(key),
                format!("cannot read {}: {error}", path.display()),
            )
        })
    };
    let pem = read("cert_file", &config.cert_file)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            LoadError::new(
                field("cert_file"),
                format!(
                    "{} is not a PEM certificate: {error}",
                    config.cert_file.display()
                ),
            )
        })?;
    if chain.is_empty() {
        return Err(LoadError::new(
            field("cert_file"),
            format!("{} holds no PEM certificate", config.cert_file.display()),
        ));
    }
    let key =
        PrivateKeyDer::from_pem_slice(&read("key_file", &config.key_file)?).map_err(|error| {
            LoadError::new(
                field("key_file"),
                format!(
                    "{} holds no usable PEM private key: {error}",
                    config.key_file.display()
                ),
            )
        })?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match config.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|error| LoadError::new(field("min_version"), error.to_string()))?;
    let builder = match &config.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let pem = read("client_ca_file", path)?;
            let mut roots = RootCertStore::empty();
            for certificate in CertificateDer::pem_slice_iter(&pem) {
                let added =
                    certificate
                        .map_err(|error| error.to_string())
                        .and_then(|certificate| {
                            roots.add(certificate).map_err(|error| error.to_string())
                        });
                if let Err(error) = added {
                    return Err(LoadError::new(
                        field("client_ca_file"),
                        format!(
                            "{} holds an unusable CA certificate: {error}",
                            path.display()
                        ),
                    ));
                }
            }
            if roots.is_empty() {
                return Err(LoadError::new(
                    field("client_ca_file"),
                    format!("{} holds no PEM certificate", path.display()),
                ));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| LoadError::new(field("client_ca_file"), error.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder.with_single_cert(chain, key).map_err(|error| {
        LoadError::new(
            field("key_file"),
            format!(
                "{} and {} do not make a usable certificate: {error}",
                config.cert_file.display(),
                config.key_file.display()
            ),
        )
    })?;
    server.alpn_protocols = match alpn {
        Alpn::Http2 => vec![b"h2".to_vec()],
        Alpn::Http => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    Ok(server)
}

// === impl TlsIncoming ===

impl<S, IO, E> TlsIncoming<S, IO>
where
    S: Stream<Item = Result<IO, E>> + Unpin,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Handshakes each connection of `inner` with `tls` (when set) within
    /// `timeout`.
    pub fn new(inner: S, tls: Option<Arc<Acceptor>>, timeout: Duration) -> TlsIncoming<S, IO> {
        TlsIncoming {
            inner,
            inner_open: true,
            tls,
            timeout,
            handshakes: JoinSet::new(),
        }
    }
}

impl<S, IO, E> Stream for TlsIncoming<S, IO>
where
    S: Stream<Item = Result<IO, E>> + Unpin,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Item = Result<MaybeTls<IO>, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(tls) = this.tls.clone() else {
            return Pin::new(&mut this.inner)
                .poll_next(cx)
                .map(|next| next.map(|accepted| accepted.map(MaybeTls::Plain)));
        };
        loop {
            if this.inner_open && this.handshakes.len() < MAX_PENDING_HANDSHAKES {
                match Pin::new(&mut this.inner).poll_next(cx) {
                    Poll::Ready(Some(Ok(io))) => {
                        let (tls, timeout) = (Arc::clone(&tls), this.timeout);
                        this.handshakes
                            .spawn(async move { tls.handshake(io, timeout).await.ok() });
                        continue;
                    }
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                    Poll::Ready(None) => this.inner_open = false,
                    Poll::Pending => {}
                }
            }
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(stream)))) => {
                    return Poll::Ready(Some(Ok(MaybeTls::Tls(Box::new(stream)))))
                }
                // Failed (already counted) or aborted: next.
                Poll::Ready(Some(_)) => continue,
                Poll::Ready(None) if !this.inner_open => return Poll::Ready(None),
                // Nothing in progress: `inner` has registered the waker.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

// === impl MaybeTls ===

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_read(cx, buf),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_write(cx, buf),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(io) => io.is_write_vectored(),
            MaybeTls::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_flush(cx),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_shutdown(cx),
            MaybeTls::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The underlying connection's info, so that whatever reads it from a
/// request (the in-flight tracking, `Request::remote_addr`) works the same
/// with and without TLS.
impl<IO: Connected> Connected for MaybeTls<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            MaybeTls::Plain(io) => io.connect_info(),
            MaybeTls::Tls(io) => io.get_ref().0.connect_info(),
        }
    }
}

#[cfg(test)]
mod tests;
