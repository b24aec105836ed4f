//! The query API's listener has the OTLP/gRPC listener's limits (issue
//! #14, item 5): a connection cap, a handshake deadline, an idle deadline
//! that a watch stream does not trip. Loopback only; every wait bounded.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::common::{test_settings, TestServer};
use triage::query::client::{Client, ClientConfig};

/// Reads until the server closes the connection (end of file or reset);
/// `None` when it is still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0; 64];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

async fn client(server: &TestServer) -> Client {
    Client::connect(&ClientConfig {
        address: server.api_url(),
        token: None,
        ca_cert: None,
        client_cert: None,
    })
    .await
    .expect("connects")
}

#[tokio::test]
async fn api_connections_over_the_cap_and_silent_ones_are_closed() {
    let mut settings = test_settings();
    settings.api.limits.max_connections = 2.try_into().unwrap();
    settings.api.limits.read_header_timeout = Duration::from_millis(400);
    let server = TestServer::start_with(settings).await;
    let address = server.addresses.api;
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(address).await.unwrap());
    }
    // Let the listener accept both before the third arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = TcpStream::connect(address).await.unwrap();
    let refused = closed_within(&mut over, Duration::from_secs(5)).await;
    assert!(refused.is_some(), "the third connection is closed at once");
    for stream in &mut silent {
        let closed = closed_within(stream, Duration::from_secs(10)).await;
        assert!(closed.is_some(), "a silent connection is closed");
    }
    // Their permits are free again: a real client is served.
    let services = client(&server).await.services().await.unwrap();
    assert!(services.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_watch_stream_outlives_the_idle_timeout() {
    let mut settings = test_settings();
    settings.api.limits.idle_timeout = Duration::from_millis(200);
    let server = TestServer::start_with(settings).await;
    let mut watcher = client(&server).await;
    let watching =
        tokio::time::timeout(Duration::from_millis(1500), watcher.watch(None, |_| true)).await;
    assert!(
        watching.is_err(),
        "the watch ended within 1.5 s: {watching:?}"
    );
    server.stop().await;
}
