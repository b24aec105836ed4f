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

// === tools the tests drive ===
//
// The test harness has no way to skip a test at run time, and a test that
// returns early reads as passed. So a test whose outside tool is missing
// fails, and its message says how to install it: `scripts/test-deps.sh`,
// which is part of the README's test command and of `.ci/run`.

/// How to install every outside tool the tests drive.
pub const INSTALL_HINT: &str =
    "run `scripts/test-deps.sh` (the README's test command: `scripts/test-deps.sh && cargo test --all-targets`)";

/// The path of `command` on `PATH`; fails the test naming the Debian
/// `package` that provides it when it is missing.
pub fn require_command(command: &str, package: &str) -> std::path::PathBuf {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(command))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{command}` is not installed, so this test cannot run: {INSTALL_HINT}; \
             it installs the Debian package {package}"
        )
    })
}

/// The Python interpreter with the OpenTelemetry SDK and grpcio:
/// `TRIAGE_TEST_PYTHON`, else the project's `.venv`. Fails the test when
/// there is none.
pub fn require_python() -> std::path::PathBuf {
    let python = std::env::var_os("TRIAGE_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
        });
    assert!(
        python.exists(),
        "no Python interpreter at {}, so this test cannot run: {INSTALL_HINT}; \
         it creates .venv with .ci/requirements.txt (or set TRIAGE_TEST_PYTHON)",
        python.display()
    );
    python
}
