//! Shared helpers for integration tests: a real collector on 127.0.0.1:0.
#![allow(dead_code)]

pub mod collector;
pub mod raw_codec;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use triage::config::Settings;
use triage::history::History;
use triage::model::{SeriesKey, SeriesKind};
use triage::server::{Addresses, Server};
use triage::store::changes::ChangeLog;
use triage::store::{SeriesStats, Store};

/// A collector serving on loopback ports chosen by the OS.
pub struct TestServer {
    pub addresses: Addresses,
    pub store: Arc<Store>,
    /// The incident and change history the server records into.
    pub history: Arc<History>,
    /// The change log the server correlates incidents with.
    pub changes: Arc<ChangeLog>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), triage::server::ServerError>>,
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("loopback address")
}

/// Default settings, every listener on 127.0.0.1:0.
pub fn test_settings() -> Settings {
    let mut settings = Settings::default();
    settings.grpc.endpoint = loopback();
    settings.http.endpoint = loopback();
    settings.admin.endpoint = loopback();
    settings.api.endpoint = loopback();
    settings.shutdown_timeout = Duration::from_secs(5);
    // Tests that want the history on disk give it a temporary directory;
    // the others must not leave a `./data` behind.
    settings.storage.enabled = false;
    settings
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(test_settings()).await
    }

    pub async fn start_with(settings: Settings) -> TestServer {
        let server = Server::bind(settings).await.expect("bind test server");
        let addresses = server.addresses();
        let store = server.store();
        let history = server.history();
        let changes = server.changes();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        TestServer {
            addresses,
            store,
            history,
            changes,
            shutdown,
            task,
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.addresses.grpc)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addresses.http)
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.addresses.admin)
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.addresses.api)
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops within 10 s")
            .expect("server task does not panic");
        result.expect("server exits cleanly");
    }

    /// Stats of a series over every window the store holds.
    pub fn stats(&self, kind: SeriesKind, service: &str, name: &str) -> Option<SeriesStats> {
        let key = SeriesKey::new(kind, service, name);
        self.store.stats(&key, 0, u64::MAX)
    }

    /// Polls `check` until it returns `Some`, or panics after `timeout`.
    /// Exporters deliver asynchronously; this waits for the data, not for time.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&Store) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check(&self.store) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "condition not met within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
