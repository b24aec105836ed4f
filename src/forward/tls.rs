//! The client side of TLS for the exporters: one rustls configuration from
//! an exporter's `tls:` files, used by both transports (the gRPC channel's
//! connector and reqwest), and the connector that dials TLS for tonic.
//!
//! Files are read once, at start-up; an unusable one fails start-up with a
//! [`LoadError`] naming its field, like the listeners' TLS files.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::config::ClientTls;
use crate::security::LoadError;

/// Builds the client configuration of an exporter whose config path is
/// `section` (for errors), offering `alpn` (`h2` for gRPC).
pub fn client_config(
    section: &str,
    tls: &ClientTls,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, LoadError> {
    let field = |key: &str| format!("{section}.tls.{key}");
    let read = |key: &str, path: &Path| {
        std::fs::read(path).map_err(|error| LoadError {
            field: field(key),
            message: format!("cannot read {}: {error}", path.display()),
        })
    };
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let pem = read("ca_file", path)?;
            for certificate in CertificateDer::pem_slice_iter(&pem) {
                let added =
                    certificate
                        .map_err(|error| error.to_string())
                        .and_then(|certificate| {
                            roots.add(certificate).map_err(|error| error.to_string())
                        });
                if let Err(error) = added {
                    return Err(LoadError {
                        field: field("ca_file"),
                        message: format!(
                            "{} holds an unusable CA certificate: {error}",
                            path.display()
                        ),
                    });
                }
            }
            if roots.is_empty() {
                return Err(LoadError {
                    field: field("ca_file"),
                    message: format!("{} holds no PEM certificate", path.display()),
                });
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| LoadError {
            field: format!("{section}.tls"),
            message: error.to_string(),
        })?
        .with_root_certificates(roots);
    let mut config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert_path), Some(key_path)) => {
            let pem = read("cert_file", cert_path)?;
            let chain = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| LoadError {
                    field: field("cert_file"),
                    message: format!("{} is not a PEM certificate: {error}", cert_path.display()),
                })?;
            if chain.is_empty() {
                return Err(LoadError {
                    field: field("cert_file"),
                    message: format!("{} holds no PEM certificate", cert_path.display()),
                });
            }
            let key =
                PrivateKeyDer::from_pem_slice(&read("key_file", key_path)?).map_err(|error| {
                    LoadError {
                        field: field("key_file"),
                        message: format!(
                            "{} holds no usable PEM private key: {error}",
                            key_path.display()
                        ),
                    }
                })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| LoadError {
                    field: field("key_file"),
                    message: format!(
                        "{} and {} do not make a usable certificate: {error}",
                        cert_path.display(),
                        key_path.display()
                    ),
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    if tls.insecure_skip_verify {
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(AnyCertificate(provider)));
    }
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

/// `insecure_skip_verify`: accepts any certificate, but still checks that
/// the handshake is signed by the key of the certificate presented. Also
/// what `triage healthcheck` uses against its own admin port.
#[derive(Debug)]
pub struct AnyCertificate(pub Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Dials TCP then TLS to the URI's host, for tonic's channel.
#[derive(Clone)]
pub struct TlsConnect {
    pub config: Arc<ClientConfig>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Uri> for TlsConnect {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = TlsConnector::from(Arc::clone(&self.config));
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(host)?;
            let tls = connector.connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}
