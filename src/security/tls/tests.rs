use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

/// A self-signed certificate for 127.0.0.1 written to `dir` as
/// `{name}.crt` and `{name}.key`.
fn certificate(dir: &Path, name: &str) -> TlsConfig {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    let (cert_file, key_file) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_file, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).expect("write key");
    TlsConfig::new(cert_file, key_file)
}

#[test]
fn unusable_files_are_named_with_their_field() {
    let dir = tempfile::tempdir().expect("dir");
    let good = certificate(dir.path(), "good");
    let other = certificate(dir.path(), "other");
    let load = |config: &TlsConfig| {
        Acceptor::load("test", "receivers.otlp.grpc.tls", config, Alpn::Http2).map(|_| ())
    };
    assert_eq!(load(&good), Ok(()));

    let missing = TlsConfig::new(dir.path().join("x.crt"), &good.key_file);
    let error = load(&missing).expect_err("missing");
    assert_eq!(error.field, "receivers.otlp.grpc.tls.cert_file");
    assert!(
        error.to_string().starts_with(&format!(
            "receivers.otlp.grpc.tls.cert_file: cannot read {}: ",
            dir.path().join("x.crt").display()
        )),
        "{error}"
    );

    let not_pem = TlsConfig::new(&good.cert_file, &good.cert_file);
    assert_eq!(
        load(&not_pem).expect_err("a cert as key").field,
        "receivers.otlp.grpc.tls.key_file"
    );

    let mismatched = TlsConfig::new(&good.cert_file, &other.key_file);
    let error = load(&mismatched).expect_err("key of another certificate");
    assert_eq!(error.field, "receivers.otlp.grpc.tls.key_file", "{error}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let bad_ca = TlsConfig {
        client_ca_file: Some(garbage),
        ..good.clone()
    };
    assert_eq!(
        load(&bad_ca).expect_err("bad CA").field,
        "receivers.otlp.grpc.tls.client_ca_file"
    );
}

#[test]
fn changed_files_are_reloaded_after_the_interval_and_broken_ones_keep_the_old() {
    let dir = tempfile::tempdir().expect("dir");
    let mut config = certificate(dir.path(), "server");
    config.reload_interval = Duration::from_secs(10);
    let acceptor = Acceptor::load("test", "admin.tls", &config, Alpn::Http).expect("loads");
    let start = Instant::now();
    let first = acceptor.server_config_at(start);

    // Unchanged files: the same config, even past the interval.
    let later = start + Duration::from_secs(11);
    assert!(Arc::ptr_eq(&first, &acceptor.server_config_at(later)));

    // A new certificate: served once the interval has passed, not before.
    let replaced = certificate(dir.path(), "replacement");
    std::fs::copy(&replaced.cert_file, &config.cert_file).expect("copy cert");
    std::fs::copy(&replaced.key_file, &config.key_file).expect("copy key");
    assert!(Arc::ptr_eq(&first, &acceptor.server_config_at(later)));
    let reloaded_at = later + Duration::from_secs(11);
    let second = acceptor.server_config_at(reloaded_at);
    assert!(!Arc::ptr_eq(&first, &second));
    assert_eq!(
        second.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );

    // A half-written key: the previous config stays.
    std::fs::write(&config.key_file, "-----BEGIN PRIVATE KEY-----\n").expect("truncate key");
    let broken_at = reloaded_at + Duration::from_secs(11);
    assert!(Arc::ptr_eq(&second, &acceptor.server_config_at(broken_at)));

    // Zero: never looked at again.
    let mut never = certificate(dir.path(), "never");
    never.reload_interval = Duration::ZERO;
    let fixed = Acceptor::load("test", "admin.tls", &never, Alpn::Http).expect("loads");
    std::fs::copy(&replaced.cert_file, &never.cert_file).expect("copy cert");
    std::fs::copy(&replaced.key_file, &never.key_file).expect("copy key");
    let before = fixed.server_config_at(start);
    assert!(Arc::ptr_eq(
        &before,
        &fixed.server_config_at(start + Duration::from_secs(3600))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_finishes_the_handshake_is_dropped_at_the_deadline() {
    let dir = tempfile::tempdir().expect("dir");
    let acceptor = Acceptor::load(
        "test",
        "admin.tls",
        &certificate(dir.path(), "s"),
        Alpn::Http,
    )
    .expect("loads");
    // The client end stays open and silent.
    let (server, _client) = tokio::io::duplex(4096);
    let started = tokio::time::Instant::now();
    let result = acceptor.handshake(server, Duration::from_secs(10)).await;
    assert!(
        matches!(result, Err(HandshakeError::Timeout(_))),
        "{:?}",
        result.err()
    );
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}
