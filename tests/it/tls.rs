//! TLS and bearer tokens on every listener, with real clients: the Rust
//! OpenTelemetry SDK over TLS gRPC and OTLP/HTTP, the Python SDK over TLS
//! HTTP and gRPC, tonic's and reqwest's TLS clients for the admin port and
//! the query API. A throwaway CA, server and client certificates are made
//! for each test (rcgen); everything is on 127.0.0.1.
//!
//! What must hold: data sent with the certificate and a token arrives; a
//! client without a client certificate is refused under mTLS; a wrong or
//! missing token is answered UNAUTHENTICATED / 401 and nothing is recorded;
//! a certificate replaced on disk is served to new connections after the
//! reload interval; the probes stay open while everything else on the
//! admin port needs a token.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::trace::{Span as _, SpanKind, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{RetryPolicy, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::common::{test_settings, TestServer};
use triage::config::Settings;
use triage::model::SeriesKind;
use triage::security::{AuthConfig, TlsConfig};

/// The token the tests' clients send.
const TOKEN: &str = "s3cret-otlp-token";
/// Bound on anything a test waits for.
const WAIT: Duration = Duration::from_secs(10);

/// A CA, a server certificate for 127.0.0.1 and a client certificate it
/// signed, written as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// Signs more certificates (a replacement server certificate).
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // What OpenSSL's strict verification (Python 3.13's default)
        // requires of a CA: key usage with certificate signing.
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "triage test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        let ca_path = write("ca.crt", ca.pem());
        let (server_cert, server_key) =
            signed(&issuer, "server", ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) =
            signed(&issuer, "client", ExtendedKeyUsagePurpose::ClientAuth);
        Pki {
            ca: ca_path,
            server_cert: write("server.crt", server_cert),
            server_key: write("server.key", server_key),
            client_cert: write("client.crt", client_cert),
            client_key: write("client.key", client_key),
            dir,
            issuer,
        }
    }

    /// Server TLS with these files; mTLS when `mtls`. Reloaded often, so
    /// the reload test does not wait long.
    fn server_tls(&self, mtls: bool) -> TlsConfig {
        let mut tls = TlsConfig::new(&self.server_cert, &self.server_key);
        tls.client_ca_file = mtls.then(|| self.ca.clone());
        tls.reload_interval = Duration::from_millis(100);
        tls
    }

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).expect("read PEM")
    }

    /// tonic's client TLS trusting the CA, with the client certificate
    /// when `identity`.
    fn tonic_tls(&self, identity: bool) -> ClientTlsConfig {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(Pki::read(&self.ca)))
            .domain_name("127.0.0.1");
        if identity {
            tls.identity(Identity::from_pem(
                Pki::read(&self.client_cert),
                Pki::read(&self.client_key),
            ))
        } else {
            tls
        }
    }

    /// reqwest with the CA trusted (and the client certificate, if asked).
    fn reqwest(&self, identity: bool) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&Pki::read(&self.ca)).expect("CA"))
            .timeout(WAIT);
        if identity {
            let mut pem = Pki::read(&self.client_cert);
            pem.extend(Pki::read(&self.client_key));
            builder = builder.identity(reqwest::Identity::from_pem(&pem).expect("identity"));
        }
        builder.build().expect("client")
    }
}

/// A certificate for `127.0.0.1` and `localhost` signed by `issuer`, as
/// (certificate PEM, key PEM).
fn signed(
    issuer: &Issuer<'_, KeyPair>,
    name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    // OpenSSL's strict verification wants the issuer's key named.
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = params.signed_by(&key, issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

/// Test settings with TLS (mTLS when `mtls`) and the token on both OTLP
/// listeners, the admin port and the query API.
fn secured(pki: &Pki, mtls: bool) -> Settings {
    let mut settings = test_settings();
    let auth = AuthConfig::tokens([TOKEN]);
    settings.grpc.tls = Some(pki.server_tls(mtls));
    settings.grpc.auth = auth.clone();
    settings.http.tls = Some(pki.server_tls(mtls));
    settings.http.auth = auth.clone();
    settings.admin.tls = Some(pki.server_tls(false));
    settings.admin.auth = auth.clone();
    settings.api.tls = Some(pki.server_tls(mtls));
    settings.api.auth = auth;
    settings
}

/// An SDK tracer provider exporting to `server` over TLS gRPC (a tonic
/// channel trusting the CA, with the client certificate if `identity`),
/// sending `token` as the bearer token.
fn provider(
    pki: &Pki,
    server: &TestServer,
    identity: bool,
    token: Option<&str>,
    service: &str,
    errors: &Arc<Mutex<Vec<String>>>,
) -> SdkTracerProvider {
    let channel = Channel::from_shared(format!("https://{}", server.addresses.grpc))
        .expect("URI")
        .tls_config(pki.tonic_tls(identity))
        .expect("TLS config")
        .connect_timeout(Duration::from_secs(3))
        .connect_lazy();
    let mut metadata = tonic::metadata::MetadataMap::new();
    if let Some(token) = token {
        metadata.insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_channel(channel)
        .with_metadata(metadata)
        .with_timeout(Duration::from_secs(3))
        .with_retry_policy(RetryPolicy::disabled())
        .build()
        .expect("exporter");
    let errors = Arc::clone(errors);
    SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .with_simple_exporter(Checked {
            inner: exporter,
            errors,
        })
        .build()
}

/// An OTLP/HTTP protobuf export of one SERVER span `GET /secure` from
/// `service`, as the SDKs send it. (The Rust SDK's HTTP exporter is built
/// on another reqwest than this crate's, without TLS; the Python SDK test
/// below drives a real SDK over TLS HTTP.)
fn http_export(service: &str) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".to_owned(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.to_owned())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![7; 16],
                    span_id: vec![9; 8],
                    name: "GET /secure".to_owned(),
                    kind: span::SpanKind::Server as i32,
                    start_time_unix_nano: now - 5_000_000,
                    end_time_unix_nano: now,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    prost::Message::encode_to_vec(&request)
}

/// Keeps the exporter's errors, so that a refusal can be asserted on.
#[derive(Debug)]
struct Checked {
    inner: opentelemetry_otlp::SpanExporter,
    errors: Arc<Mutex<Vec<String>>>,
}

impl opentelemetry_sdk::trace::SpanExporter for Checked {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        let result = self.inner.export(batch).await;
        if let Err(error) = &result {
            self.errors.lock().expect("lock").push(error.to_string());
        }
        result
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Sends `n` SERVER spans `GET /secure` as `service`; returns the export
/// errors.
async fn send(
    provider: SdkTracerProvider,
    n: usize,
    errors: &Arc<Mutex<Vec<String>>>,
) -> Vec<String> {
    let tracer = provider.tracer("tls-test");
    for _ in 0..n {
        let mut span = tracer
            .span_builder("GET /secure")
            .with_kind(SpanKind::Server)
            .start(&tracer);
        span.end();
    }
    // The simple processor exports on `end`, on a blocking call.
    tokio::task::spawn_blocking(move || {
        let _ = provider.shutdown();
    })
    .await
    .expect("shutdown");
    std::mem::take(&mut *errors.lock().expect("lock"))
}

fn recorded(server: &TestServer, service: &str) -> u64 {
    server
        .stats(SeriesKind::Operation, service, "GET /secure")
        .map_or(0, |stats| stats.requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_exports_over_mtls_with_a_token_and_the_wrong_ones_are_refused() {
    let pki = Pki::new();
    let server = TestServer::start_with(secured(&pki, true)).await;

    // Certificate and token: the spans arrive.
    let errors = Arc::new(Mutex::new(Vec::new()));
    let sent = send(
        provider(&pki, &server, true, Some(TOKEN), "tls-ok", &errors),
        3,
        &errors,
    )
    .await;
    assert!(sent.is_empty(), "{sent:?}");
    server
        .wait_for(WAIT, |_| (recorded(&server, "tls-ok") == 3).then_some(()))
        .await;

    // A wrong token, or none: UNAUTHENTICATED, nothing kept.
    for (token, case) in [(Some("wrong"), "wrong"), (None, "none")] {
        let service = format!("tls-token-{case}");
        let errors = Arc::new(Mutex::new(Vec::new()));
        let failed = send(
            provider(&pki, &server, true, token, &service, &errors),
            2,
            &errors,
        )
        .await;
        assert_eq!(failed.len(), 2, "{case}: {failed:?}");
        assert!(
            failed.iter().all(|error| error.contains("Unauthenticated")),
            "{case}: {failed:?}"
        );
        assert_eq!(recorded(&server, &service), 0, "{case}");
    }

    // No client certificate: the handshake is refused under mTLS.
    let errors = Arc::new(Mutex::new(Vec::new()));
    let failed = send(
        provider(&pki, &server, false, Some(TOKEN), "tls-no-cert", &errors),
        1,
        &errors,
    )
    .await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(recorded(&server, "tls-no-cert"), 0);

    // OTLP/HTTP: 401 with a google.rpc.Status for a wrong or missing
    // token; a client without a certificate does not get through.
    let url = format!("https://{}/v1/traces", server.addresses.http);
    let post = |client: reqwest::Client, token: Option<&'static str>, service: &'static str| {
        let mut request = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(http_export(service));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    for (token, service) in [(Some("wrong"), "http-wrong"), (None, "http-none")] {
        let response = post(pki.reqwest(true), token, service)
            .await
            .expect("answered");
        assert_eq!(response.status(), 401, "{service}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let status = response.bytes().await.expect("body");
        assert!(!status.is_empty(), "a google.rpc.Status");
        assert_eq!(recorded(&server, service), 0, "{service}");
    }
    let no_cert = post(pki.reqwest(false), Some(TOKEN), "http-no-cert").await;
    assert!(no_cert.is_err(), "{no_cert:?}");
    let response = post(pki.reqwest(true), Some(TOKEN), "http-ok")
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    server
        .wait_for(WAIT, |_| (recorded(&server, "http-ok") == 1).then_some(()))
        .await;

    // The refusals were counted.
    let admin = pki.reqwest(false);
    let metrics = admin
        .get(format!("https://{}/metrics", server.addresses.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    // At least: the recorder is shared by every server in this process.
    for (series, least) in [
        (
            "triage_auth_refused_total{listener=\"otlp_grpc\",reason=\"invalid\"}",
            2.0,
        ),
        (
            "triage_auth_refused_total{listener=\"otlp_grpc\",reason=\"missing\"}",
            2.0,
        ),
        (
            "triage_auth_refused_total{listener=\"otlp_http\",reason=\"invalid\"}",
            1.0,
        ),
        (
            "triage_auth_refused_total{listener=\"otlp_http\",reason=\"missing\"}",
            1.0,
        ),
        (
            "triage_tls_handshake_failures_total{listener=\"otlp_grpc\",reason=\"error\"}",
            1.0,
        ),
        (
            "triage_tls_handshake_failures_total{listener=\"otlp_http\",reason=\"error\"}",
            1.0,
        ),
    ] {
        let value = metrics
            .lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|value| value.trim().parse::<f64>().ok());
        assert!(
            value.is_some_and(|value| value >= least),
            "{series} >= {least} in\n{metrics}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_probes_stay_open_and_everything_else_needs_a_token() {
    let pki = Pki::new();
    let mut settings = secured(&pki, false);
    settings.changes.api_token = triage::ingest::changes::ApiToken::new("change-token");
    let server = TestServer::start_with(settings).await;
    let client = pki.reqwest(false);
    let url = |path: &str| format!("https://{}{path}", server.addresses.admin);

    // The server turns ready once its tasks run, a moment after binding:
    // a probe without a token must see that within a few seconds.
    for path in ["/healthz", "/readyz"] {
        let mut status = client.get(url(path)).send().await.expect("probe").status();
        for _ in 0..50 {
            if status == 200 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            status = client.get(url(path)).send().await.expect("probe").status();
        }
        assert_eq!(status, 200, "{path}");
    }
    for path in ["/metrics", "/api/v1/changes", "/api/v1/incidents/x@1"] {
        let response = client.get(url(path)).send().await.expect("GET");
        assert_eq!(response.status(), 401, "{path}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{path}");
        let with = client
            .get(url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("GET");
        assert_ne!(with.status(), 401, "{path}");
    }

    // Writes: the admin token or changes.api_token; nothing else.
    let change = r#"{"service":"cart","kind":"deploy","version":"v2"}"#;
    let post = |token: Option<&'static str>| {
        let mut request = client
            .post(url("/api/v1/changes"))
            .header("content-type", "application/json")
            .body(change);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(post(None).await.expect("post").status(), 401);
    assert_eq!(post(Some("wrong")).await.expect("post").status(), 401);
    assert!(server.changes.is_empty(), "nothing recorded");
    assert_eq!(post(Some(TOKEN)).await.expect("post").status(), 201);
    assert_eq!(
        post(Some("change-token")).await.expect("post").status(),
        201
    );
    assert_eq!(server.changes.len(), 2);

    // Plaintext HTTP on the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", server.addresses.admin))
        .timeout(WAIT)
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_api_takes_several_tokens_and_record_change_needs_one() {
    use triage::query::client::{Client, ClientConfig};
    let pki = Pki::new();
    let mut settings = test_settings();
    settings.api.tls = Some(pki.server_tls(false));
    settings.admin.auth = AuthConfig::tokens([TOKEN]);
    let server = TestServer::start_with(settings).await;

    // The API has no tokens of its own, but auth is configured on the
    // admin port: RecordChange, a write, needs one of its tokens.
    let config = |token: Option<&str>| ClientConfig {
        address: format!("https://{}", server.addresses.api),
        token: token.map(str::to_owned),
        ca_cert: Some(pki.ca.clone()),
        client_cert: None,
    };
    let mut anonymous = Client::connect(&config(None))
        .await
        .expect("TLS connection");
    assert!(anonymous.services().await.is_ok(), "reads stay open");
    let request = triage::query::pb::RecordChangeRequest {
        service: "cart".to_owned(),
        kind: "deploy".to_owned(),
        ..Default::default()
    };
    let refused = anonymous
        .record_change(request.clone())
        .await
        .expect_err("refused");
    assert!(
        refused.to_string().contains("RecordChange requires"),
        "{refused}"
    );
    assert!(server.changes.is_empty());
    let mut writer = Client::connect(&config(Some(TOKEN)))
        .await
        .expect("TLS connection");
    writer
        .record_change(request)
        .await
        .expect("recorded with the admin token");
    assert_eq!(server.changes.len(), 1);
    server.stop().await;

    // Several tokens, one of them from a file.
    let token_file = pki.dir.path().join("api-token");
    std::fs::write(&token_file, "from-a-file\n").expect("write token");
    let mut settings = test_settings();
    settings.api.tls = Some(pki.server_tls(true));
    settings.api.auth = AuthConfig {
        bearer_token_files: vec![token_file],
        ..AuthConfig::tokens(["inline"])
    };
    let server = TestServer::start_with(settings).await;
    let endpoint = |identity: bool| {
        Channel::from_shared(format!("https://{}", server.addresses.api))
            .expect("URI")
            .tls_config(pki.tonic_tls(identity))
            .expect("TLS")
            .connect_timeout(Duration::from_secs(3))
    };
    let channel = |identity: bool| {
        let endpoint = endpoint(identity);
        async move { endpoint.connect().await }
    };
    let call = |channel: Channel, token: Option<&'static str>| async move {
        let mut client = triage::query::pb::triage_query_client::TriageQueryClient::new(channel);
        let mut request = tonic::Request::new(triage::query::pb::ListServicesRequest::default());
        if let Some(token) = token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("ascii"),
            );
        }
        client.list_services(request).await.map(|_| ())
    };
    for token in ["inline", "from-a-file"] {
        call(channel(true).await.expect("mTLS"), Some(token))
            .await
            .expect(token);
    }
    let denied = call(channel(true).await.expect("mTLS"), Some("other"))
        .await
        .expect_err("wrong");
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);
    // `triage query`'s client presents its certificate too.
    let mut client = Client::connect(&ClientConfig {
        address: format!("https://{}", server.addresses.api),
        token: Some("from-a-file".to_owned()),
        ca_cert: Some(pki.ca.clone()),
        client_cert: Some((pki.client_cert.clone(), pki.client_key.clone())),
    })
    .await
    .expect("mTLS connection");
    assert!(client.services().await.expect("services").is_empty());
    // Without a client certificate the connection fails.
    let no_cert = match channel(false).await {
        Err(error) => Err(error.to_string()),
        Ok(channel) => call(channel, Some("inline"))
            .await
            .map_err(|status| status.to_string()),
    };
    assert!(no_cert.is_err(), "{no_cert:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_on_disk_is_served_after_the_reload() {
    let pki = Pki::new();
    let mut settings = test_settings();
    settings.http.tls = Some(pki.server_tls(false));
    let server = TestServer::start_with(settings).await;

    let served = |address| async move { served_certificate(address).await };
    let first = served(server.addresses.http).await;
    let (cert, key) = signed(
        &pki.issuer,
        "replacement",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    // Key first, then the certificate: in between, the pair does not
    // match, which must keep the old one rather than break the listener.
    std::fs::write(&pki.server_key, key).expect("write key");
    std::fs::write(&pki.server_cert, &cert).expect("write cert");
    let expected = rustls_pki_types::pem::PemObject::from_pem_slice(cert.as_bytes())
        .map(|der: rustls_pki_types::CertificateDer<'_>| der.to_vec())
        .expect("PEM");
    let deadline = Instant::now() + WAIT;
    loop {
        let now_served = served(server.addresses.http).await;
        if now_served == expected {
            break;
        }
        assert_eq!(
            now_served, first,
            "only the old or the new certificate is served"
        );
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the data path still works with it.
    let response = pki
        .reqwest(false)
        .post(format!("https://{}/v1/traces", server.addresses.http))
        .header("content-type", "application/x-protobuf")
        .body(Vec::new())
        .send()
        .await
        .expect("export over the new certificate");
    assert_eq!(response.status(), 200);
    server.stop().await;
}

/// The leaf certificate (DER) `address` serves, read with a rustls client
/// that accepts any certificate (this only looks at it).
async fn served_certificate(address: std::net::SocketAddr) -> Vec<u8> {
    #[derive(Debug)]
    struct LookOnly(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for LookOnly {
        fn verify_server_cert(
            &self,
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &[rustls_pki_types::CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(LookOnly(provider)))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let tls = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(
            rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name"),
            tcp,
        ),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.to_vec())
        .expect("a certificate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tls_handshake_is_closed_at_the_handshake_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let mut settings = test_settings();
    settings.grpc.tls = Some(pki.server_tls(false));
    settings.grpc.connections.read_header_timeout = Duration::from_millis(300);
    let server = TestServer::start_with(settings).await;
    // A TLS record header promising a ClientHello that never comes: more
    // than the 24 bytes that count as "started speaking" in plaintext.
    let mut stream = tokio::net::TcpStream::connect(server.addresses.grpc)
        .await
        .expect("connect");
    stream
        .write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .await
        .expect("write");
    stream.write_all(&[0u8; 32]).await.expect("write");
    let started = Instant::now();
    let mut buffer = [0u8; 64];
    let closed = tokio::time::timeout(WAIT, stream.read(&mut buffer))
        .await
        .expect("closed in time");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    server.stop().await;
}

// === the Python SDK ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_exports_over_tls_http_and_grpc_with_a_token() {
    let python = crate::common::require_python();
    let pki = Pki::new();
    let server = TestServer::start_with(secured(&pki, true)).await;
    let tls = crate::python_sdk::Tls {
        ca: pki.ca.clone(),
        client_cert: pki.client_cert.clone(),
        client_key: pki.client_key.clone(),
        token: TOKEN.to_owned(),
    };
    let http = crate::python_sdk::send_spans_with(
        &python,
        "http/protobuf",
        server.addresses.http,
        "tls-http",
        Some(&tls),
    )
    .await;
    crate::python_sdk::check_recorded(&server, &http).await;
    let grpc = crate::python_sdk::send_spans_with(
        &python,
        "grpc",
        server.addresses.grpc,
        "tls-grpc",
        Some(&tls),
    )
    .await;
    crate::python_sdk::check_recorded(&server, &grpc).await;
    server.stop().await;
}

/// Forwarding to an upstream that requires mTLS and a bearer token, over
/// gRPC and over HTTP: the exporter's `tls` files and `headers` get the
/// spans through, and so does `insecure_skip_verify` without the CA;
/// without the client certificate nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_reaches_an_mtls_upstream_with_a_token() {
    use triage::forward::config::{ClientTls, ExporterConfig, Header, Protocol};
    let pki = Pki::new();
    let upstream = TestServer::start_with(secured(&pki, true)).await;
    let exporter = |name: &str, protocol, address: std::net::SocketAddr, identity: bool| {
        let mut exporter = ExporterConfig::new(
            name,
            protocol,
            format!("https://{address}").parse().expect("URL"),
        );
        exporter.tls = ClientTls {
            ca_file: Some(pki.ca.clone()),
            cert_file: identity.then(|| pki.client_cert.clone()),
            key_file: identity.then(|| pki.client_key.clone()),
            insecure_skip_verify: false,
        };
        exporter.headers = vec![Header {
            name: "authorization".into(),
            value: format!("Bearer {TOKEN}"),
        }];
        exporter.retry.initial_interval = Duration::from_millis(100);
        exporter
    };
    let mut settings = test_settings();
    settings.forward.exporters = vec![
        exporter("mtls-grpc", Protocol::Grpc, upstream.addresses.grpc, true),
        exporter("mtls-http", Protocol::Http, upstream.addresses.http, true),
        exporter("no-cert", Protocol::Grpc, upstream.addresses.grpc, false),
        {
            let mut unverified =
                exporter("skip-verify", Protocol::Http, upstream.addresses.http, true);
            unverified.tls.ca_file = None;
            unverified.tls.insecure_skip_verify = true;
            unverified
        },
    ];
    let front = TestServer::start_with(settings).await;
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/traces", front.http_url()))
        .header("content-type", "application/x-protobuf")
        .body(http_export("forwarded-over-mtls"))
        .send()
        .await
        .expect("POST to the front");
    assert_eq!(answer.status(), 200);
    // One span from the front, through each of the three exporters with a
    // certificate.
    upstream
        .wait_for(WAIT, |_| {
            (recorded(&upstream, "forwarded-over-mtls") == 3).then_some(())
        })
        .await;
    let metrics = reqwest::get(format!("{}/metrics", front.admin_url()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    let sent = |exporter: &str| {
        metrics
            .lines()
            .find(|line| {
                line.starts_with("triage_exporter_sent_items_total{")
                    && line.contains(&format!("exporter=\"{exporter}\""))
                    && line.contains("signal=\"traces\"")
            })
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse::<f64>().ok())
    };
    assert_eq!(sent("no-cert"), Some(0.0), "{metrics}");
    assert_eq!(recorded(&upstream, "forwarded-over-mtls"), 3);
    front.stop().await;
    upstream.stop().await;
}
