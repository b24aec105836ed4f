//! Wires the collector together: binds the listeners, serves OTLP/gRPC,
//! OTLP/HTTP and admin HTTP, runs the store's background upkeep, and drains
//! on shutdown.
//!
//! [`Server::bind`] and [`Server::run`] are separate so that callers (the CLI,
//! tests) learn the bound addresses (port 0 in tests) before serving, and
//! pass their own shutdown signal.
//!
//! Shutdown: the token is cancelled -> `/readyz` turns 503 -> the OTLP
//! listeners stop accepting and in-flight requests finish (bounded by the
//! shutdown timeout) -> client spans still waiting for a pair are resolved ->
//! the admin listener closes last.
//!
//! Every listener, the query API's included (`api`), is a [`listen::Listener`]: its own
//! connection cap, accept errors that never end it, and connections that
//! close when silent; [`serve`] adds the per-request limits (HTTP header and
//! body timeouts, gRPC streams, concurrency and call timeout). See
//! docs/RELIABILITY.md, "Listeners".
//!
//! Each listener's TLS files and tokens are loaded at bind, so an unusable
//! one fails start-up naming its config field; with TLS the handshake runs
//! per connection under the listener's handshake timeout
//! (`crate::security::tls`), and [`auth`] checks tokens before a request
//! reaches a handler. docs/SECURITY.md has the whole picture.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Health};
use crate::config::Settings;
use crate::forward::{ForwardError, Forwarder};
use crate::history::tasks::{self as history_tasks, Snapshotter};
use crate::history::{History, HistoryError};
use crate::ingest::spans::SpanAnalyzer;
use crate::model::IncidentEvent;
use crate::pipeline::{Pipeline, WallClock};
use crate::query::service::{Api, ApiError, Sources as ApiSources};
use crate::receiver::admission::{self, MemoryLimiter};
use crate::receiver::decode::{DecodePool, Decoding};
use crate::receiver::grpc::{self, GrpcConfig, OtlpStatusLayer};
use crate::receiver::http::{self as otlp_http, HttpConfig};
use crate::receiver::Sink;
use crate::security::tls::{Acceptor, Alpn, TlsIncoming};
use crate::security::{AuthConfig, BearerAuth, LoadError, TlsConfig};
use crate::store::changes::ChangeLog;
use crate::store::Store;
use crate::telemetry;

mod api;
pub mod auth;
pub mod listen;
pub mod serve;
mod supervise;

/// How often the pipeline ticks: client spans waiting for a pair are
/// checked for expiry, and detection checks for windows to close.
const TICK: Duration = Duration::from_millis(500);

#[derive(Debug, Error)]
pub enum ServerError {
    // The cause is part of the message and deliberately not a `source()`:
    // printed as a chain (`{:#}`) it would otherwise appear twice.
    #[error("cannot listen on {address} for {what}: {error}")]
    Bind {
        what: &'static str,
        address: SocketAddr,
        error: std::io::Error,
    },
    #[error("{what} server failed: {message}")]
    Serve { what: &'static str, message: String },
    /// Alert delivery could not be set up (a configured file is unusable;
    /// the message names its `alerting.` field).
    #[error(transparent)]
    Alerting(#[from] crate::alert::AlertError),
    /// The query API cannot start (its address or a token/TLS file).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The history database cannot be opened (names the path).
    #[error(transparent)]
    History(#[from] HistoryError),
    /// A TLS or token file (or token variable) of a listener is unusable;
    /// names the config field.
    #[error(transparent)]
    Security(#[from] LoadError),
    /// Forwarding cannot start (a TLS file, header or queue directory of
    /// an exporter; names the config field).
    #[error(transparent)]
    Forward(#[from] ForwardError),
    /// Agent mode: the gateway exporter cannot be set up (a TLS file).
    #[error(transparent)]
    Agent(#[from] crate::agent::export::ExportError),
}

/// The addresses actually bound.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// The gRPC query API (with health and reflection).
    pub api: SocketAddr,
}

/// A collector with its listeners bound, not yet serving.
pub struct Server {
    settings: Settings,
    /// Every stage from ingest to analysis, built once; its shared parts
    /// (store, span analysis, change log) are handed to the APIs.
    pipeline: Pipeline,
    health: Arc<Health>,
    grpc: TcpListener,
    http: TcpListener,
    admin: TcpListener,
    /// The query API, bound with its token and TLS files read.
    api: Api,
    /// TLS and tokens of the other listeners, loaded at bind.
    guards: Guards,
    addresses: Addresses,
    /// Incident events (opened, updated, resolved) for whoever subscribes:
    /// alerting, the query API, storage. Slow subscribers lag and are told
    /// how many events they missed; detection never waits for them.
    events: broadcast::Sender<IncidentEvent>,
    /// Incidents, their events, changes and detection snapshots, on disk
    /// unless storage is disabled.
    history: Arc<History>,
    /// The receivers' memory gate; its sampling task starts in `run`.
    memory: Arc<MemoryLimiter>,
    /// Forwarding to upstream OTLP endpoints, when configured; its senders
    /// run from bind (resending what a persistent queue kept) and it is
    /// flushed after the receivers drain.
    forwarder: Option<Forwarder>,
}

/// What guards one listener: its TLS configuration (reloaded as its files
/// change) and the tokens it requires.
#[derive(Clone, Default)]
struct Guard {
    tls: Option<Arc<Acceptor>>,
    auth: Option<BearerAuth>,
}

/// The guards of the OTLP and admin listeners, and the tokens a change
/// write accepts.
struct Guards {
    grpc: Guard,
    http: Guard,
    admin: Guard,
    /// `POST /api/v1/changes` accepts `changes.api_token` and the admin
    /// tokens.
    admin_changes: Option<BearerAuth>,
    /// `RecordChange` accepts the same tokens, when the query API has none
    /// of its own.
    api_changes: Option<BearerAuth>,
}

/// Incident events buffered per subscriber before it lags.
const EVENT_BUFFER: usize = 1024;

/// The listeners' names in logs and in the `listener` metric label.
const LISTENER_GRPC: &str = "otlp_grpc";
const LISTENER_HTTP: &str = "otlp_http";
const LISTENER_ADMIN: &str = "admin";

async fn bind(what: &'static str, address: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(address)
        .await
        .map_err(|error| ServerError::Bind {
            what,
            address,
            error,
        })
}

impl Server {
    /// Binds the three listeners; fails naming the address that could not be bound.
    pub async fn bind(settings: Settings) -> Result<Server, ServerError> {
        let store = Arc::new(Store::with_clock(
            settings.store.clone(),
            Arc::new(WallClock),
        ));
        Self::bind_with_store(settings, store).await
    }

    /// As [`Server::bind`], recording into a store the caller made (tests use
    /// a store with a manual clock).
    pub async fn bind_with_store(
        settings: Settings,
        store: Arc<Store>,
    ) -> Result<Server, ServerError> {
        // Installed before any component creates its metric handles: a
        // handle made earlier records nowhere.
        let _ = telemetry::recorder();
        crate::history::describe_metrics();
        admission::describe_metrics();
        listen::raise_open_files_limit(&[
            (
                LISTENER_GRPC,
                settings.grpc.connections.max_connections.get(),
            ),
            (
                LISTENER_HTTP,
                settings.http.connections.max_connections.get(),
            ),
            (
                LISTENER_ADMIN,
                settings.admin.connections.max_connections.get(),
            ),
            (api::LISTENER_API, settings.api.limits.max_connections.get()),
        ]);
        let grpc = bind("OTLP/gRPC", settings.grpc.endpoint).await?;
        let http = bind("OTLP/HTTP", settings.http.endpoint).await?;
        let admin = bind("admin HTTP", settings.admin.endpoint).await?;
        let api = Api::bind(&settings.api).await?;
        let guards = Guards::load(&settings)?;
        let local = |listener: &TcpListener, what, address| {
            listener.local_addr().map_err(|error| ServerError::Bind {
                what,
                address,
                error,
            })
        };
        let addresses = Addresses {
            grpc: local(&grpc, "OTLP/gRPC", settings.grpc.endpoint)?,
            http: local(&http, "OTLP/HTTP", settings.http.endpoint)?,
            admin: local(&admin, "admin HTTP", settings.admin.endpoint)?,
            api: api.address(),
        };
        let pipeline = Pipeline::new(&settings.pipeline(), store);
        // Opened at bind so that an unusable data directory fails start-up
        // with its path, like an unusable address. Opening is brief file
        // I/O; the heavy restore (baselines) happens in `run`.
        let history = Arc::new(History::open(&settings.storage)?);
        let restored = history_tasks::restore_changes(
            &history,
            pipeline.changes(),
            pipeline.store().now_unix_nanos(),
        )?;
        if restored > 0 {
            tracing::info!(restored, "restored change events");
        }
        let health = Arc::new(Health::default());
        health.watch_history(Arc::clone(&history));
        let memory = MemoryLimiter::new(settings.admission.memory);
        health.watch_memory(Arc::clone(&memory));
        let forwarder = Forwarder::start(&settings.forward)?;
        Ok(Server {
            settings,
            pipeline,
            health,
            history,
            grpc,
            http,
            admin,
            api,
            guards,
            addresses,
            events: broadcast::channel(EVENT_BUFFER).0,
            memory,
            forwarder,
        })
    }

    /// The receivers' memory limiter (tests force its state).
    pub fn memory_limiter(&self) -> Arc<MemoryLimiter> {
        Arc::clone(&self.memory)
    }

    /// Subscribes to incident events.
    pub fn subscribe(&self) -> broadcast::Receiver<IncidentEvent> {
        self.events.subscribe()
    }

    pub fn addresses(&self) -> Addresses {
        self.addresses
    }

    pub fn store(&self) -> Arc<Store> {
        Arc::clone(self.pipeline.store())
    }

    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.health)
    }

    pub fn changes(&self) -> Arc<ChangeLog> {
        Arc::clone(self.pipeline.changes())
    }

    /// The incident and change history (for the query API and alerting).
    pub fn history(&self) -> Arc<History> {
        Arc::clone(&self.history)
    }

    /// The span analyzer (own time, local errors, retries, drill-down).
    pub fn spans(&self) -> Arc<SpanAnalyzer> {
        Arc::clone(self.pipeline.spans())
    }

    /// Serves until `shutdown` is cancelled, then drains. Returns once every
    /// listener is closed (or the shutdown timeout ran out).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServerError> {
        let Server {
            settings,
            mut pipeline,
            health,
            grpc,
            http,
            admin,
            api,
            guards,
            addresses,
            events,
            history,
            memory,
            forwarder,
        } = self;
        let store = Arc::clone(pipeline.store());
        let changes = Arc::clone(pipeline.changes());
        // Set up before serving, so an unusable alerting file fails start-up.
        let alerter = start_alerter(&settings.alerting, addresses.admin, &history)?;
        // Agent mode: summaries of closed windows (and received metrics
        // and logs) go to the gateway through a bounded queue, sent by a
        // task of its own that stops after detection has.
        let agent_stop = CancellationToken::new();
        let agent = match settings.agent.enabled {
            false => None,
            true => {
                let (queue, sender) =
                    crate::agent::export::start(&settings.agent, agent_stop.clone())?;
                let agent = Arc::new(crate::agent::Agent::new(
                    crate::agent::Agent::default_name(),
                    queue.clone(),
                ));
                tracing::info!(gateway = %settings.agent.gateway.endpoint, "agent mode: sending window summaries to the gateway");
                Some((agent, queue, sender))
            }
        };
        let sink: Arc<dyn Sink> = match &agent {
            Some((_, queue, _)) => Arc::new(crate::agent::AgentSink::new(
                pipeline.ingest().clone(),
                queue.clone(),
                &settings.agent,
            )),
            None => pipeline.ingest().clone(),
        };

        // One decode pool for both receivers, so decoding is bounded
        // across them (one request per core), and so are its queue and the
        // memory gate.
        let decoding = Decoding {
            limits: settings.decode,
            pool: DecodePool::with_admission(
                std::thread::available_parallelism().unwrap_or(std::num::NonZeroUsize::MIN),
                settings.admission.queue,
                Arc::clone(&memory),
            ),
        };
        // Samples the resident memory until shutdown (nothing without a limit).
        tokio::spawn(Arc::clone(&memory).run(shutdown.clone()));
        // Where answered requests go after the sink, when forwarding.
        let handoff = forwarder.as_ref().map(Forwarder::handoff);
        let (traces, metrics, logs) = grpc::services_with(
            Arc::clone(&sink),
            &GrpcConfig {
                max_recv_msg_size: settings.grpc.max_recv_msg_size,
            },
            decoding.clone(),
        );
        let (traces, metrics, logs) = (
            traces.with_handoff(handoff.clone()),
            metrics.with_handoff(handoff.clone()),
            logs.with_handoff(handoff.clone()),
        );
        let grpc_settings = &settings.grpc;
        let streams = grpc_settings.max_concurrent_streams.get();
        let grpc_task = tokio::spawn(
            tonic::transport::Server::builder()
                // h2 refuses streams over the advertised limit; the
                // concurrency limit also holds calls whose stream the client
                // reset but whose handler still runs (rapid reset).
                .max_concurrent_streams(u32::try_from(streams).unwrap_or(u32::MAX))
                .concurrency_limit_per_connection(streams)
                .timeout(grpc_settings.request_timeout)
                .http2_keepalive_interval(Some(grpc_settings.keepalive_interval))
                .http2_keepalive_timeout(Some(grpc_settings.keepalive_timeout))
                .layer(serve::TrackLayer::new(serve::BodyBudget::new(
                    LISTENER_GRPC,
                    grpc_settings.max_buffered,
                )))
                // Before decoding: a call without a token reads nothing.
                .layer(auth::GrpcAuthLayer::new(guards.grpc.auth.clone()))
                .layer(OtlpStatusLayer)
                .add_service(traces)
                .add_service(metrics)
                .add_service(logs)
                .serve_with_incoming_shutdown(
                    TlsIncoming::new(
                        listen::Listener::new(LISTENER_GRPC, grpc, grpc_settings.connections)
                            .incoming(),
                        guards.grpc.tls.clone(),
                        grpc_settings.connections.read_header_timeout,
                    ),
                    shutdown.clone().cancelled_owned(),
                ),
        );

        let mut http_router = otlp_http::router_with_handoff(
            Arc::clone(&sink),
            HttpConfig {
                max_request_body_size: settings.http.max_request_body_size,
            },
            decoding,
            handoff,
        );
        if let Some(tokens) = guards.http.auth.clone() {
            http_router = http_router.layer(axum::middleware::from_fn_with_state(
                tokens,
                auth::otlp_http,
            ));
        }
        let http_task = tokio::spawn(serve::serve_http(
            listen::Listener::new(LISTENER_HTTP, http, settings.http.connections),
            http_router,
            serve::HttpLimits {
                read_header_timeout: settings.http.connections.read_header_timeout,
                read_timeout: settings.http.read_timeout,
                errors: serve::ErrorBody::Otlp,
            },
            Some(serve::BodyBudget::new(
                LISTENER_HTTP,
                settings.http.max_buffered,
            )),
            guards.http.tls.clone(),
            shutdown.clone(),
        ));

        let admin_stop = CancellationToken::new();
        let mut admin_router = admin::router(
            telemetry::recorder(),
            Arc::clone(&store),
            Arc::clone(&health),
        )
        .merge(admin::changes_router(admin::ChangesApi {
            log: Arc::clone(&changes),
            auth: guards.admin_changes.clone(),
            store: Arc::clone(&store),
        }))
        .merge(admin::incidents_router(Arc::clone(&history)));
        if let Some(tokens) = guards.admin.auth.clone() {
            admin_router =
                admin_router.layer(axum::middleware::from_fn_with_state(tokens, auth::admin));
        }
        let admin_task = tokio::spawn(serve::serve_http(
            listen::Listener::new(LISTENER_ADMIN, admin, settings.admin.connections),
            admin_router,
            serve::HttpLimits {
                read_header_timeout: settings.admin.connections.read_header_timeout,
                read_timeout: settings.admin.read_timeout,
                errors: serve::ErrorBody::Text,
            },
            // A 16 KiB body limit and 64 connections bound the admin port.
            None,
            guards.admin.tls.clone(),
            admin_stop.clone(),
        ));

        // Recorders subscribe before restoring, which may publish catch-up
        // events; the incident recorder ends when detection drops `events`.
        // Each is supervised: after a panic it is started again, with a new
        // subscription (a weak sender, so that the channel still closes
        // when detection ends).
        let incident_recorder = tokio::spawn(supervise::supervise(
            "incident_recorder",
            Arc::clone(&health),
            {
                let (history, weak) = (Arc::clone(&history), events.downgrade());
                let mut first = Some(events.subscribe());
                move || {
                    let receiver = first
                        .take()
                        .or_else(|| weak.upgrade().map(|events| events.subscribe()))?;
                    Some(history_tasks::record_incidents(
                        Arc::clone(&history),
                        receiver,
                    ))
                }
            },
        ));
        let change_recorder = tokio::spawn(supervise::supervise(
            "change_recorder",
            Arc::clone(&health),
            {
                let (history, changes, shutdown) =
                    (Arc::clone(&history), Arc::clone(&changes), shutdown.clone());
                let mut first = Some(changes.subscribe());
                move || {
                    let receiver = first.take().unwrap_or_else(|| changes.subscribe());
                    Some(history_tasks::record_changes(
                        Arc::clone(&history),
                        receiver,
                        shutdown.clone(),
                    ))
                }
            },
        ));
        let history_upkeep = tokio::spawn(supervise::supervise(
            "history_upkeep",
            Arc::clone(&health),
            {
                let (history, shutdown) = (Arc::clone(&history), shutdown.clone());
                move || Some(history_tasks::prune(Arc::clone(&history), shutdown.clone()))
            },
        ));
        // Stopped only after detection has, so its last events are delivered.
        let alerting_stop = CancellationToken::new();
        let alerting = alerter.map(|alerter| {
            let (history, weak, stop) = (
                Arc::clone(&history),
                events.downgrade(),
                alerting_stop.clone(),
            );
            let config = settings.alerting.clone();
            let admin = addresses.admin;
            let mut first = Some((alerter, events.subscribe()));
            tokio::spawn(supervise::supervise(
                "alerting",
                Arc::clone(&health),
                move || {
                    let (alerter, receiver) = match first.take() {
                        Some(started) => started,
                        // Rebuilt as at start-up, with the open incidents.
                        None => {
                            let receiver = weak.upgrade()?.subscribe();
                            match start_alerter(&config, admin, &history) {
                                Ok(Some(alerter)) => (alerter, receiver),
                                Ok(None) => return None,
                                Err(error) => {
                                    tracing::error!(%error, "cannot restart alerting");
                                    return None;
                                }
                            }
                        }
                    };
                    Some(alerter.run(receiver, stop.clone()))
                },
            ))
        });
        // Baselines and open incidents from the last run, before detection
        // starts; events that bring the record up to date go to every
        // subscriber.
        match history.open_incidents() {
            Ok(open) => pipeline.restore_incidents(open),
            Err(error) => tracing::warn!(%error, "cannot read open incidents from the history"),
        }
        let caught_up =
            history_tasks::restore_engine(Arc::clone(&history), &store, pipeline.engine_mut())
                .await;
        for event in pipeline.analyze(caught_up) {
            let _ = events.send(event);
        }
        // Without storage a snapshot would only be lost at exit.
        let snapshots = settings.storage.enabled.then(|| {
            Snapshotter::new(
                Arc::clone(&history),
                settings.storage.snapshot_interval,
                settings.store.window,
            )
        });
        let (summaries, agent_sender) = match agent {
            Some((agent, _, sender)) => (Some(agent), Some(sender)),
            None => (None, None),
        };
        let detection = tokio::spawn(drive(
            pipeline,
            events,
            snapshots,
            summaries,
            Arc::clone(&health),
            shutdown.clone(),
        ));

        let api_limits = settings.api.limits;
        let api = api.spawn(
            ApiSources {
                store: Arc::clone(&store),
                changes: Arc::clone(&changes),
                history: Arc::clone(&history),
                change_auth: guards.api_changes.clone(),
            },
            |serving| crate::server::api::serve(serving, api_limits),
        )?;
        api.serving().await;
        health.set_ready();
        tracing::info!(
            grpc = %addresses.grpc,
            http = %addresses.http,
            admin = %addresses.admin,
            api = %addresses.api,
            "triage is ready"
        );

        shutdown.cancelled().await;
        health.set_draining();
        // Still answering queries, but health checkers see the drain.
        api.draining().await;
        tracing::info!(timeout = ?settings.shutdown_timeout, "shutting down: draining in-flight requests");
        let (grpc_abort, http_abort) = (grpc_task.abort_handle(), http_task.abort_handle());
        let drained = tokio::time::timeout(settings.shutdown_timeout, async {
            let grpc_result = grpc_task.await;
            let http_result = http_task.await;
            (grpc_result, http_result)
        })
        .await;
        if drained.is_err() {
            // Past the deadline: stop serving the stragglers so nothing is
            // recorded after the pairing buffer is flushed below.
            grpc_abort.abort();
            http_abort.abort();
        }
        // Nothing more is accepted, so nothing more is queued: what is
        // queued gets the shutdown timeout to reach the upstreams (a
        // persistent queue keeps the rest for the next start).
        if let Some(forwarder) = forwarder {
            forwarder.finish(settings.shutdown_timeout).await;
        }
        let pipeline = detection.await;
        agent_stop.cancel();
        if let Some(sender) = agent_sender {
            // What is queued gets one more try each, within a bound.
            let _ = tokio::time::timeout(Duration::from_secs(5), sender).await;
        }
        alerting_stop.cancel();
        if let Some(alerting) = alerting {
            // The alerter bounds its own flush; this only guards against a
            // stuck task holding up the exit.
            let _ = tokio::time::timeout(Duration::from_secs(10), alerting).await;
        }
        // Detection has stopped, so the incident recorder drains and ends.
        let _ = tokio::time::timeout(Duration::from_secs(5), incident_recorder).await;
        let _ = change_recorder.await;
        let _ = history_upkeep.await;
        if let Ok(Some(pipeline)) = pipeline {
            let resolved = pipeline.flush();
            tracing::debug!(resolved, "resolved waiting client spans");
        }
        // Closed after the receivers have drained and detection has stopped,
        // so watchers see the last incident events.
        if let Err(error) = api.stop().await {
            tracing::warn!(%error, "query API did not close cleanly");
        }
        admin_stop.cancel();
        let admin_abort = admin_task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(1), admin_task)
            .await
            .is_err()
        {
            // A scrape still running: dropping the serving task closes its
            // connections rather than leaving them to outlive the server.
            admin_abort.abort();
        }

        match drained {
            Err(_) => {
                tracing::warn!("shutdown timeout reached with requests still in flight");
                Ok(())
            }
            Ok((grpc_result, http_result)) => {
                if let Ok(Err(error)) = grpc_result {
                    return Err(ServerError::Serve {
                        what: "OTLP/gRPC",
                        message: error.to_string(),
                    });
                }
                if let Err(error) = http_result {
                    return Err(ServerError::Serve {
                        what: "OTLP/HTTP",
                        message: error.to_string(),
                    });
                }
                tracing::info!("shutdown complete");
                Ok(())
            }
        }
    }
}

// === impl Guards ===

impl Guards {
    /// Reads every listener's TLS files and tokens.
    fn load(settings: &Settings) -> Result<Guards, LoadError> {
        let guard = |listener: &'static str,
                     section: &str,
                     tls: &Option<TlsConfig>,
                     auth: &AuthConfig,
                     alpn: Alpn|
         -> Result<Guard, LoadError> {
            Ok(Guard {
                tls: match tls {
                    None => None,
                    Some(tls) => Some(Acceptor::load(
                        listener,
                        &format!("{section}.tls"),
                        tls,
                        alpn,
                    )?),
                },
                auth: BearerAuth::load(listener, &format!("{section}.auth"), auth)?,
            })
        };
        let grpc = guard(
            LISTENER_GRPC,
            "receivers.otlp.grpc",
            &settings.grpc.tls,
            &settings.grpc.auth,
            Alpn::Http2,
        )?;
        let http = guard(
            LISTENER_HTTP,
            "receivers.otlp.http",
            &settings.http.tls,
            &settings.http.auth,
            Alpn::Http,
        )?;
        let admin = guard(
            LISTENER_ADMIN,
            "admin",
            &settings.admin.tls,
            &settings.admin.auth,
            Alpn::Http,
        )?;
        let change_token = |listener| {
            BearerAuth::fixed(
                listener,
                "changes.api_token",
                settings.changes.api_token.iter().cloned().collect(),
            )
        };
        let admin_changes = BearerAuth::any_of(
            LISTENER_ADMIN,
            [admin.auth.clone(), change_token(LISTENER_ADMIN)],
        );
        let api_changes =
            BearerAuth::any_of("query_api", [admin.auth.clone(), change_token("query_api")]);
        Ok(Guards {
            grpc,
            http,
            admin,
            admin_changes,
            api_changes,
        })
    }
}

/// An alerter for `config` (`None` with no targets), given the incidents
/// the history records as open so that they keep firing from the start.
fn start_alerter(
    config: &crate::alert::AlertConfig,
    admin: SocketAddr,
    history: &History,
) -> Result<Option<crate::alert::Alerter>, crate::alert::AlertError> {
    let mut alerter = crate::alert::Alerter::new(config, admin)?;
    if let Some(alerter) = &mut alerter {
        match history_tasks::open_incident_events(history) {
            Ok(events) if events.is_empty() => {}
            Ok(events) => {
                let restored = events
                    .iter()
                    .filter(|event| matches!(event, IncidentEvent::Updated(_)))
                    .count();
                alerter.restore(events);
                tracing::info!(restored, "open incidents handed to alerting");
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read open incidents for alerting")
            }
        }
    }
    Ok(alerter)
}

/// Ticks the pipeline with the wall clock (through the store's clock) and
/// publishes incident events, until shutdown; then saves a last snapshot and
/// hands the pipeline back for the final flush. The tick runs on a blocking
/// thread: closing a window walks every series, which must not stall the
/// receivers' tasks. A tick that panics is caught: the pipeline carries on
/// from its state at the next tick, and `/readyz` reports detection down
/// until a tick succeeds. `None` only if the blocking thread was cancelled.
async fn drive(
    mut pipeline: Pipeline,
    events: broadcast::Sender<IncidentEvent>,
    mut snapshots: Option<Snapshotter>,
    agent: Option<Arc<crate::agent::Agent>>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Option<Pipeline> {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                // The state at shutdown, so a graceful restart loses nothing.
                if let Some(snapshots) = snapshots {
                    if let Some(snapshot) = snapshots.pack(pipeline.engine()) {
                        snapshots.finish(snapshot).await;
                    }
                }
                return Some(pipeline);
            }
            _ = tick.tick() => {}
        }
        // Encoded on the detection thread, series by series (see
        // `PackedSnapshot`), and written by the snapshotter.
        let packer = snapshots
            .as_ref()
            .filter(|snapshots| snapshots.due())
            .map(Snapshotter::packer);
        let health = Arc::clone(&health);
        let agent = agent.clone();
        let result = tokio::task::spawn_blocking(move || {
            let now = pipeline.store().now_unix_nanos();
            let ticked = supervise::catch_panic(
                "detection",
                &health,
                || format!("tick at {now} (Unix ns)"),
                &mut pipeline,
                |pipeline| {
                    let found = pipeline.tick(now);
                    if let Some(agent) = &agent {
                        agent.after_tick(pipeline);
                    }
                    // Copied here, off the runtime; written by the snapshotter.
                    let snapshot = packer.and_then(|packer| packer.pack(pipeline.engine()));
                    pipeline.report_metrics();
                    (found, snapshot)
                },
            );
            if ticked.is_none() {
                // Not again at every tick: the windows it was closing
                // are given up, and the next tick starts after them.
                let skipped = pipeline.skip_failed_windows(now);
                tracing::error!(
                    skipped,
                    "detection skipped the windows whose analysis panicked"
                );
            }
            (pipeline, ticked)
        })
        .await;
        let Ok((returned, ticked)) = result else {
            tracing::error!("detection thread was cancelled; detection stops");
            return None;
        };
        pipeline = returned;
        let (found, snapshot) = ticked.unwrap_or_default();
        if let (Some(snapshots), Some(snapshot)) = (snapshots.as_mut(), snapshot) {
            snapshots.save(snapshot);
        }
        for event in found {
            let incident = event.incident();
            match &event {
                IncidentEvent::Opened(_) => {
                    tracing::warn!(id = %incident.id, service = %incident.service, summary = %incident.summary, "incident opened")
                }
                IncidentEvent::Updated(_) => {
                    tracing::info!(id = %incident.id, summary = %incident.summary, "incident updated")
                }
                IncidentEvent::Resolved(_) => {
                    tracing::info!(id = %incident.id, "incident resolved")
                }
            }
            // No subscriber is fine: incidents are also logged.
            let _ = events.send(event);
        }
    }
}
