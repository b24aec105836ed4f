//! The query API server: the `triage.v1.TriageQuery` service over the store,
//! the change log and the incident history, next to `grpc.health.v1.Health`
//! and server reflection (v1 and v1alpha), with optional bearer-token
//! authentication and TLS.
//!
//! Life cycle: [`Api::bind`] reads the token and TLS files (through
//! `crate::security`, which reloads them when they change) and binds the
//! listener (so a bad file or a busy port fails start-up, naming it);
//! [`Api::spawn`] serves; [`ApiHandle::draining`] turns health to
//! NOT_SERVING while the rest of the collector drains; [`ApiHandle::stop`]
//! ends the long-lived streams (incident watches, health watches) and closes
//! the listener within a bound.
//!
//! Authentication covers the query service and reflection. Health stays
//! open, because probes and load balancers do not carry secrets.
//! `RecordChange` writes the change log, so on an API without tokens of its
//! own it still requires one: `changes.api_token` or an admin token, the
//! tokens `POST /api/v1/changes` accepts.
//!
//! TLS handshakes run on their own tasks, each within the listener's
//! `read_header_timeout`, so a slow client neither holds up the others nor
//! keeps its connection for long.
//!
//! Invariant for `WatchIncidents`: a watcher subscribes to the history's
//! live events *before* it reads the stored ones, and skips every live event
//! whose sequence number it has already sent; so replay and live meet with
//! no gap and no duplicate. A watcher that falls behind the live buffer
//! catches up from the history, which keeps every event.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Routes;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

use super::config::ApiConfig;
use super::pb::triage_query_server::{TriageQuery, TriageQueryServer};
use super::{pb, view, EventName, EventRecord};
use crate::history::{EventKind, History, HistoryError, IncidentFilter, StoredEvent};
use crate::model::rfc3339;
use crate::model::{Change, ChangeFilter, ChangeKind, ChangeSource};
use crate::security::tls::{Acceptor, Alpn};
use crate::security::{BearerAuth, LoadError};
use crate::store::changes::ChangeLog;
use crate::store::Store;

/// Incidents per page when the request does not say.
const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page served; bounds the response size.
const MAX_PAGE_SIZE: usize = 1000;
/// Topology nodes and edges per page when the request does not say. A
/// node or edge is about 100 bytes of protobuf, so a page is about 100 KB,
/// far from gRPC's 4 MiB default message limit.
const DEFAULT_TOPOLOGY_PAGE: usize = 1000;
/// Largest topology page served.
const MAX_TOPOLOGY_PAGE: usize = 5000;
/// Stored events read per history call while a watch replays or catches up.
const REPLAY_PAGE: usize = 500;
/// Events queued for one watcher before the sender waits for the client.
const WATCH_BUFFER: usize = 64;
/// Incident watch streams open at once; each holds a task and a buffer,
/// so their number is bounded rather than left to clients.
pub const MAX_WATCHERS: usize = 256;
/// Longest text accepted in a field of a recorded change. Changes are kept
/// in memory and in every correlated incident, so a pasted log must not be.
const MAX_CHANGE_FIELD_BYTES: usize = 4096;
/// How long closing the listener may take once streams have been ended.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// The listener's name in logs and metric labels.
const LISTENER: &str = "query_api";

/// Why the query API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A token or TLS file (or token variable) of the `api` section is
    /// unusable; names the field.
    #[error(transparent)]
    Security(#[from] LoadError),
    /// The listener could not be bound.
    #[error("cannot listen on {address} for the query API: {error}")]
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// The embedded descriptors could not be loaded (a build problem).
    #[error("server reflection: {0}")]
    Reflection(String),
}

/// The query API with its listener bound, not yet serving.
pub struct Api {
    listener: TcpListener,
    address: SocketAddr,
    /// The tokens every query and reflection call must carry.
    auth: Option<BearerAuth>,
    tls: Option<Arc<Acceptor>>,
}

/// A serving query API, for the server's shutdown sequence.
pub struct ApiHandle {
    reporter: HealthReporter,
    /// Cancelled by [`ApiHandle::stop`]: ends watch streams and the listener.
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Everything the query service reads from.
#[derive(Clone)]
pub struct Sources {
    /// RED statistics and topology.
    pub store: Arc<Store>,
    /// Change events (recorded and listed).
    pub changes: Arc<ChangeLog>,
    /// Incidents and their events.
    pub history: Arc<History>,
    /// The tokens `POST /api/v1/changes` accepts (`changes.api_token` and
    /// the admin tokens). `RecordChange` writes the same log, so it
    /// requires one of them too, unless the API has tokens of its own
    /// (one of which every call then carries).
    pub change_auth: Option<BearerAuth>,
}

/// The `triage.v1.TriageQuery` implementation.
pub struct QueryService {
    sources: Sources,
    /// One permit per open incident watch stream.
    watchers: Arc<tokio::sync::Semaphore>,
    /// Whether every call was checked against the API's own token.
    authenticated: bool,
    /// Ends every open watch stream when the API stops, so that closing the
    /// listener does not wait for clients that would never hang up.
    stop: CancellationToken,
}

/// Checks the bearer token of every request to a protected service.
#[derive(Clone)]
struct Auth {
    auth: Option<BearerAuth>,
}

/// `grpc.health.v1.Health` whose watch streams end when the API stops.
struct StoppableHealth {
    inner: HealthService,
    stop: CancellationToken,
}

/// A stream that ends when `stop` is cancelled, after passing on what its
/// inner stream already has ready (so a last NOT_SERVING still arrives).
struct UntilStopped<S> {
    inner: S,
    stopped: Pin<Box<WaitForCancellationFutureOwned>>,
}

// === impl Api ===

impl Api {
    /// Reads the token and TLS files named by `config` and binds its
    /// endpoint.
    pub async fn bind(config: &ApiConfig) -> Result<Api, ApiError> {
        let auth = BearerAuth::load(LISTENER, "api.auth", &config.auth)?;
        let tls = match &config.tls {
            None => None,
            Some(tls) => Some(Acceptor::load(LISTENER, "api.tls", tls, Alpn::Http2)?),
        };
        let listener =
            TcpListener::bind(config.endpoint)
                .await
                .map_err(|error| ApiError::Bind {
                    address: config.endpoint,
                    error,
                })?;
        let address = listener.local_addr().map_err(|error| ApiError::Bind {
            address: config.endpoint,
            error,
        })?;
        Ok(Api {
            listener,
            address,
            auth,
            tls,
        })
    }

    /// The address actually bound (the OS's choice for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Starts serving: `serve` spawns the task that serves [`Serving`].
    pub fn spawn(
        self,
        sources: Sources,
        serve: impl FnOnce(Serving) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    ) -> Result<ApiHandle, ApiError> {
        let stop = CancellationToken::new();
        let (reporter, health) = health(&stop);
        let authenticated = self.auth.is_some();
        let auth = Auth { auth: self.auth };
        let reflection =
            |error: tonic_reflection::server::Error| ApiError::Reflection(error.to_string());
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(reflection)?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(reflection)?;
        let query = TriageQueryServer::new(QueryService {
            sources,
            watchers: Arc::new(tokio::sync::Semaphore::new(MAX_WATCHERS)),
            authenticated,
            stop: stop.clone(),
        });

        let routes = Routes::new(health)
            .add_service(InterceptedService::new(query, auth.clone()))
            .add_service(InterceptedService::new(reflection_v1, auth.clone()))
            .add_service(InterceptedService::new(reflection_v1alpha, auth));
        let task = serve(Serving {
            builder: tonic::transport::Server::builder(),
            routes,
            listener: self.listener,
            tls: self.tls,
            stop: stop.clone(),
        });
        Ok(ApiHandle {
            reporter,
            stop,
            task,
        })
    }
}

/// What the server needs to serve the API on its listener with the
/// listener's limits (`server`, which owns the connection handling): the
/// tonic builder, the services, the bound socket, its TLS (handshaken on
/// the listener's accepted connections), and the token that stops serving.
pub struct Serving {
    pub builder: tonic::transport::Server,
    pub routes: Routes,
    pub listener: TcpListener,
    pub tls: Option<Arc<Acceptor>>,
    pub stop: CancellationToken,
}

/// What a topology page token carries: the range of the first page, so
/// that every page covers the same one, and the last item sent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TopologyCursor {
    range: view::Range,
    after: view::TopologyKey,
}

impl TopologyCursor {
    /// `t1.<since>.<until>.<hex service>.<hex callee, or "-" for a node>`.
    fn encode(&self) -> String {
        let callee = self
            .after
            .callee
            .as_ref()
            .map_or_else(|| "-".to_owned(), hex::encode);
        format!(
            "t1.{}.{}.{}.{callee}",
            self.range.since_unix_nanos,
            self.range.until_unix_nanos,
            hex::encode(&self.after.service)
        )
    }

    /// `None` for anything [`TopologyCursor::encode`] did not write.
    fn decode(token: &str) -> Option<TopologyCursor> {
        let mut parts = token.split('.');
        if parts.next()? != "t1" {
            return None;
        }
        let since_unix_nanos = parts.next()?.parse().ok()?;
        let until_unix_nanos = parts.next()?.parse().ok()?;
        let text = |part: &str| String::from_utf8(hex::decode(part).ok()?).ok();
        let service = text(parts.next()?)?;
        let callee = match parts.next()? {
            "-" => None,
            callee => Some(text(callee)?),
        };
        if parts.next().is_some() {
            return None;
        }
        Some(TopologyCursor {
            range: view::Range {
                since_unix_nanos,
                until_unix_nanos,
            },
            after: view::TopologyKey { service, callee },
        })
    }
}

/// The health service, with the overall status ("") and the query
/// service's both SERVING.
fn health(stop: &CancellationToken) -> (HealthReporter, HealthServer<StoppableHealth>) {
    let reporter = HealthReporter::new();
    let service = StoppableHealth {
        inner: HealthService::from_health_reporter(reporter.clone()),
        stop: stop.clone(),
    };
    (reporter, HealthServer::new(service))
}

// === impl ApiHandle ===

impl ApiHandle {
    /// Marks the API SERVING (overall and `triage.v1.TriageQuery`).
    pub async fn serving(&self) {
        self.set(ServingStatus::Serving).await;
    }

    /// Marks the API NOT_SERVING while the collector drains; queries are
    /// still answered.
    pub async fn draining(&self) {
        self.set(ServingStatus::NotServing).await;
    }

    async fn set(&self, status: ServingStatus) {
        for name in [
            "",
            <TriageQueryServer<QueryService> as tonic::server::NamedService>::NAME,
        ] {
            self.reporter.set_service_status(name, status).await;
        }
    }

    /// Ends the open streams and closes the listener, waiting at most a
    /// couple of seconds for in-flight calls.
    pub async fn stop(self) -> Result<(), tonic::transport::Error> {
        self.stop.cancel();
        let abort = self.task.abort_handle();
        match tokio::time::timeout(STOP_TIMEOUT, self.task).await {
            Ok(Ok(result)) => result,
            // The task panicked or was aborted: nothing left to close.
            Ok(Err(_)) => Ok(()),
            Err(_) => {
                tracing::warn!("query API calls still running at shutdown; closing them");
                abort.abort();
                Ok(())
            }
        }
    }
}

// === impl Auth ===

/// The `authorization` header of a call, if it is text.
fn authorization(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    metadata
        .get("authorization")
        .and_then(|value| value.to_str().ok())
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(auth) = &self.auth else {
            return Ok(request);
        };
        match auth.check(authorization(request.metadata())) {
            Ok(()) => Ok(request),
            Err(denied) => Err(Status::unauthenticated(format!(
                "{} (triage query --token, or TRIAGE_API_TOKEN)",
                denied.message()
            ))),
        }
    }
}

// === impl StoppableHealth ===

#[tonic::async_trait]
impl Health for StoppableHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = UntilStopped<<HealthService as Health>::WatchStream>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inner = self.inner.watch(request).await?.into_inner();
        Ok(Response::new(UntilStopped {
            inner,
            stopped: Box::pin(self.stop.clone().cancelled_owned()),
        }))
    }
}

impl<S: Stream + Unpin> Stream for UntilStopped<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if let Poll::Ready(Some(item)) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(Some(item));
        }
        match self.stopped.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

// === impl QueryService ===

/// INVALID_ARGUMENT naming the field, logged at debug (a client's mistake,
/// not the collector's).
fn invalid(field: &str, message: impl std::fmt::Display) -> Status {
    tracing::debug!(field, %message, "query API: invalid argument");
    Status::invalid_argument(format!("{field}: {message}"))
}

fn internal(what: &str, error: impl std::fmt::Display) -> Status {
    tracing::error!(%error, "query API: {what} failed");
    Status::internal(format!("{what} failed: {error}"))
}

/// Checks that `since` is before `until` when both are given.
fn check_range(since: u64, until: u64) -> Result<(), Status> {
    if since != 0 && until != 0 && since >= until {
        return Err(invalid(
            "since_unix_nanos",
            format!("{since} is not before until_unix_nanos ({until})"),
        ));
    }
    Ok(())
}

/// Runs a blocking read (store walk, SQLite) off the async threads.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| internal(what, error))?
}

fn record(event: StoredEvent) -> EventRecord {
    EventRecord {
        seq: event.seq,
        event: match event.kind {
            EventKind::Opened => EventName::Opened,
            EventKind::Updated => EventName::Updated,
            EventKind::Resolved => EventName::Resolved,
        },
        at_unix_nanos: event.at_unix_nanos,
        at: rfc3339(event.at_unix_nanos),
        incident: event.incident,
    }
}

/// An optional text field of a change: empty is absent; too long is an error.
fn change_field(field: &str, text: String) -> Result<Option<String>, Status> {
    if text.len() > MAX_CHANGE_FIELD_BYTES {
        return Err(invalid(
            field,
            format!(
                "{} bytes is longer than the {MAX_CHANGE_FIELD_BYTES} allowed",
                text.len()
            ),
        ));
    }
    Ok((!text.trim().is_empty()).then_some(text))
}

fn change_kind(field: &str, text: &str) -> Result<ChangeKind, Status> {
    ChangeKind::parse(text).ok_or_else(|| {
        let known: Vec<&str> = ChangeKind::ALL.iter().map(|kind| kind.as_str()).collect();
        invalid(
            field,
            format!("must be one of {}, got {text:?}", known.join(", ")),
        )
    })
}

/// Validates a RecordChange request into a change (id 0, source api).
pub fn change_from_request(
    request: pb::RecordChangeRequest,
    now_unix_nanos: u64,
) -> Result<Change, Status> {
    let service = request.service.trim().to_owned();
    if service.is_empty() {
        return Err(invalid("service", "required: the service that changed"));
    }
    if service.len() > MAX_CHANGE_FIELD_BYTES {
        return Err(invalid("service", "longer than a service name can be"));
    }
    if request.kind.trim().is_empty() {
        return Err(invalid(
            "kind",
            "required: one of deploy, config, feature_flag, scale, infra",
        ));
    }
    let kind = change_kind("kind", request.kind.trim())?;
    Ok(Change {
        id: 0,
        service,
        kind,
        version: change_field("version", request.version)?,
        key: change_field("key", request.key)?,
        value: change_field("value", request.value)?,
        description: change_field("description", request.description)?.unwrap_or_default(),
        time_unix_nanos: if request.time_unix_nanos == 0 {
            now_unix_nanos
        } else {
            request.time_unix_nanos
        },
        link: change_field("link", request.link)?,
        external_id: change_field("id", request.id)?,
        source: ChangeSource::Api,
    })
}

#[tonic::async_trait]
impl TriageQuery for QueryService {
    async fn list_services(
        &self,
        _request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let store = Arc::clone(&self.sources.store);
        let services = blocking("listing services", move || Ok(view::services(&store))).await?;
        Ok(Response::new(pb::ListServicesResponse {
            services: services.iter().map(Into::into).collect(),
        }))
    }

    async fn get_service_stats(
        &self,
        request: Request<pb::GetServiceStatsRequest>,
    ) -> Result<Response<pb::GetServiceStatsResponse>, Status> {
        let request = request.into_inner();
        if request.service.is_empty() {
            return Err(invalid("service", "required"));
        }
        check_range(request.since_unix_nanos, request.until_unix_nanos)?;
        let store = Arc::clone(&self.sources.store);
        let stats = blocking("reading service statistics", move || {
            let range =
                view::Range::resolve(&store, request.since_unix_nanos, request.until_unix_nanos);
            view::service_stats(&store, &request.service, range).ok_or_else(|| {
                Status::not_found(format!(
                    "service {:?} is not known (`triage query services` lists the known ones)",
                    request.service
                ))
            })
        })
        .await?;
        Ok(Response::new((&stats).into()))
    }

    async fn get_topology(
        &self,
        request: Request<pb::GetTopologyRequest>,
    ) -> Result<Response<pb::GetTopologyResponse>, Status> {
        let request = request.into_inner();
        let page_size = match request.page_size as usize {
            0 => DEFAULT_TOPOLOGY_PAGE,
            size if size > MAX_TOPOLOGY_PAGE => {
                return Err(invalid(
                    "page_size",
                    format!("at most {MAX_TOPOLOGY_PAGE}, got {size}"),
                ))
            }
            size => size,
        };
        let cursor = if request.page_token.is_empty() {
            check_range(request.since_unix_nanos, request.until_unix_nanos)?;
            None
        } else {
            Some(TopologyCursor::decode(&request.page_token).ok_or_else(|| {
                invalid(
                    "page_token",
                    "not a token this server handed out; start again without one",
                )
            })?)
        };
        let store = Arc::clone(&self.sources.store);
        let (page, next) = blocking("reading the topology", move || {
            let range = match &cursor {
                Some(cursor) => cursor.range,
                None => {
                    view::Range::resolve(&store, request.since_unix_nanos, request.until_unix_nanos)
                }
            };
            let topology = view::topology(&store, range);
            let after = cursor.as_ref().map(|cursor| &cursor.after);
            let (page, next) = view::topology_page(topology, page_size, after);
            let next = next.map(|after| TopologyCursor { range, after }.encode());
            Ok((page, next))
        })
        .await?;
        let mut response = pb::GetTopologyResponse::from(&page);
        response.next_page_token = next.unwrap_or_default();
        Ok(Response::new(response))
    }

    async fn list_incidents(
        &self,
        request: Request<pb::ListIncidentsRequest>,
    ) -> Result<Response<pb::ListIncidentsResponse>, Status> {
        let request = request.into_inner();
        let state = super::state_from_proto(request.state)
            .map_err(|_| invalid("state", format!("unknown value {}", request.state)))?;
        check_range(request.since_unix_nanos, request.until_unix_nanos)?;
        let page_size = match request.page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            size if size > MAX_PAGE_SIZE => {
                return Err(invalid(
                    "page_size",
                    format!("at most {MAX_PAGE_SIZE}, got {size}"),
                ))
            }
            size => size,
        };
        let filter = IncidentFilter {
            state,
            service: (!request.service.is_empty()).then_some(request.service),
            since_unix_nanos: (request.since_unix_nanos != 0).then_some(request.since_unix_nanos),
            until_unix_nanos: (request.until_unix_nanos != 0).then_some(request.until_unix_nanos),
        };
        let token = request.page_token;
        let history = Arc::clone(&self.sources.history);
        let (incidents, next) = blocking("listing incidents", move || {
            let token = (!token.is_empty()).then_some(token.as_str());
            history
                .list_incidents(&filter, page_size, token)
                .map_err(|error| match error {
                    HistoryError::BadPageToken => invalid(
                        "page_token",
                        "not a token this server handed out; start again without one",
                    ),
                    other => internal("listing incidents", other),
                })
        })
        .await?;
        Ok(Response::new(pb::ListIncidentsResponse {
            incidents: incidents.iter().map(Into::into).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn get_incident(
        &self,
        request: Request<pb::GetIncidentRequest>,
    ) -> Result<Response<pb::GetIncidentResponse>, Status> {
        let id = request.into_inner().id;
        if id.is_empty() {
            return Err(invalid("id", "required, e.g. \"payment@1733011390\""));
        }
        let history = Arc::clone(&self.sources.history);
        let lookup = id.clone();
        let found = blocking("reading an incident", move || {
            history
                .get_incident(&lookup)
                .map_err(|error| internal("reading an incident", error))
        })
        .await?;
        let Some((incident, events)) = found else {
            return Err(Status::not_found(format!("no incident {id:?}")));
        };
        Ok(Response::new(pb::GetIncidentResponse {
            incident: Some((&incident).into()),
            events: events
                .into_iter()
                .map(|event| (&record(event)).into())
                .collect(),
        }))
    }

    type WatchIncidentsStream = ReceiverStream<Result<pb::IncidentEvent, Status>>;

    async fn watch_incidents(
        &self,
        request: Request<pb::WatchIncidentsRequest>,
    ) -> Result<Response<Self::WatchIncidentsStream>, Status> {
        let permit = Arc::clone(&self.watchers)
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "{MAX_WATCHERS} incident watch streams are open, the most this collector \
                     serves at once; close one, or retry later"
                ))
            })?;
        let start = request.into_inner().start;
        let history = Arc::clone(&self.sources.history);
        // Subscribed here, before the replay reads anything: see the module
        // invariant.
        let live = history.subscribe();
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        let watcher = Watcher {
            history,
            sender,
            stop: self.stop.clone(),
            last_sent: None,
            _permit: permit,
        };
        tokio::spawn(watcher.run(start, live));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn record_change(
        &self,
        request: Request<pb::RecordChangeRequest>,
    ) -> Result<Response<pb::RecordChangeResponse>, Status> {
        if let Some(auth) = self.sources.change_auth.as_ref() {
            if !self.authenticated && auth.check(authorization(request.metadata())).is_err() {
                return Err(Status::unauthenticated(
                    "RecordChange requires `authorization: Bearer <token>` with changes.api_token \
                     or an admin.auth token (or an api.auth token when the API has them)",
                ));
            }
        }
        let now = self.sources.store.now_unix_nanos();
        let mut change = change_from_request(request.into_inner(), now)?;
        change.id = self.sources.changes.record(change.clone());
        tracing::info!(id = change.id, service = %change.service, kind = change.kind.as_str(), "change recorded through the query API");
        Ok(Response::new(pb::RecordChangeResponse {
            change: Some((&change).into()),
        }))
    }

    async fn list_changes(
        &self,
        request: Request<pb::ListChangesRequest>,
    ) -> Result<Response<pb::ListChangesResponse>, Status> {
        let request = request.into_inner();
        check_range(request.since_unix_nanos, request.until_unix_nanos)?;
        let kind = match request.kind.as_str() {
            "" => None,
            text => Some(change_kind("kind", text)?),
        };
        let filter = ChangeFilter {
            service: (!request.service.is_empty()).then_some(request.service),
            kind,
            since_unix_nanos: (request.since_unix_nanos != 0).then_some(request.since_unix_nanos),
            until_unix_nanos: (request.until_unix_nanos != 0).then_some(request.until_unix_nanos),
        };
        let mut changes = self.sources.changes.list(&filter);
        let limit = request.limit as usize;
        if limit > 0 && changes.len() > limit {
            changes.drain(..changes.len() - limit);
        }
        Ok(Response::new(pb::ListChangesResponse {
            changes: changes.iter().map(Into::into).collect(),
        }))
    }
}

// === WatchIncidents ===

/// One client's incident watch: replays stored events, then forwards live
/// ones, skipping what it already sent.
struct Watcher {
    history: Arc<History>,
    sender: mpsc::Sender<Result<pb::IncidentEvent, Status>>,
    stop: CancellationToken,
    /// Sequence number of the last event sent (or of the resume point).
    last_sent: Option<u64>,
    /// Released when the watch ends.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Why a watch ended early.
enum Ended {
    /// The client went away.
    Gone,
    /// The API is stopping.
    Stopping,
    /// The history failed; the client was told.
    Failed,
}

impl Watcher {
    async fn run(
        mut self,
        start: Option<pb::watch_incidents_request::Start>,
        mut live: broadcast::Receiver<StoredEvent>,
    ) {
        let ended = match self.replay(start).await {
            Ok(()) => self.follow(&mut live).await,
            Err(ended) => ended,
        };
        if let Ended::Stopping = ended {
            // UNAVAILABLE is what clients retry on; they resume after the
            // last seq they saw.
            let _ = self
                .sender
                .send(Err(Status::unavailable(
                    "triage is shutting down; resume with after_seq",
                )))
                .await;
        }
    }

    /// Sends the stored events the request asked for.
    async fn replay(
        &mut self,
        start: Option<pb::watch_incidents_request::Start>,
    ) -> Result<(), Ended> {
        use pb::watch_incidents_request::Start;
        match start {
            None => Ok(()),
            Some(Start::AfterSeq(seq)) => {
                self.last_sent = Some(seq);
                self.catch_up().await
            }
            Some(Start::SinceUnixNanos(since)) => {
                let history = Arc::clone(&self.history);
                let first = self
                    .read(move || history.events_since(since, REPLAY_PAGE))
                    .await?;
                let full = first.len() >= REPLAY_PAGE;
                for event in first {
                    self.send(event).await?;
                }
                if full || self.last_sent.is_some() {
                    self.catch_up().await
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Sends every stored event after `last_sent`, page by page.
    async fn catch_up(&mut self) -> Result<(), Ended> {
        let Some(mut after) = self.last_sent else {
            return Ok(());
        };
        loop {
            let history = Arc::clone(&self.history);
            let page = self
                .read(move || history.events_after(after, REPLAY_PAGE))
                .await?;
            let full = page.len() >= REPLAY_PAGE;
            for event in page {
                self.send(event).await?;
            }
            match self.last_sent {
                Some(last) if full && last > after => after = last,
                _ => return Ok(()),
            }
        }
    }

    /// Forwards live events until the client leaves or the API stops.
    async fn follow(&mut self, live: &mut broadcast::Receiver<StoredEvent>) -> Ended {
        loop {
            let received = tokio::select! {
                _ = self.stop.cancelled() => return Ended::Stopping,
                _ = self.sender.closed() => return Ended::Gone,
                received = live.recv() => received,
            };
            let outcome = match received {
                Ok(event) => self.send(event).await,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    if self.last_sent.is_none() {
                        // Nothing sent yet, so there is no point to catch up
                        // from; this needs more events than the live buffer
                        // holds before the first one is forwarded.
                        tracing::warn!(missed, "incident watch fell behind before its first event");
                        continue;
                    }
                    tracing::debug!(
                        missed,
                        "incident watch fell behind; catching up from history"
                    );
                    self.catch_up().await
                }
                Err(broadcast::error::RecvError::Closed) => return Ended::Stopping,
            };
            if let Err(ended) = outcome {
                return ended;
            }
        }
    }

    /// Sends one event unless it was already sent.
    async fn send(&mut self, event: StoredEvent) -> Result<(), Ended> {
        if self.last_sent.is_some_and(|last| event.seq <= last) {
            return Ok(());
        }
        let seq = event.seq;
        let message = pb::IncidentEvent::from(&record(event));
        tokio::select! {
            _ = self.stop.cancelled() => Err(Ended::Stopping),
            sent = self.sender.send(Ok(message)) => match sent {
                Ok(()) => {
                    self.last_sent = Some(seq);
                    Ok(())
                }
                Err(_) => Err(Ended::Gone),
            },
        }
    }

    /// Runs a history read off the async threads; a failure is sent to the
    /// client as INTERNAL and ends the watch.
    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, HistoryError> + Send + 'static,
    ) -> Result<T, Ended> {
        let result = blocking("reading incident events", move || {
            work().map_err(|error| internal("reading incident events", error))
        })
        .await;
        match result {
            Ok(value) => Ok(value),
            Err(status) => {
                let _ = self.sender.send(Err(status)).await;
                Err(Ended::Failed)
            }
        }
    }
}

#[cfg(test)]
mod tests;
