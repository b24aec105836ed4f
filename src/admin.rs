//! Admin HTTP: `/metrics` (Prometheus text format), `/healthz` (the process
//! is alive), `/readyz` (listeners are bound and the collector is not
//! draining). Load balancers and Kubernetes probes use the last two.
//!
//! Also the change-event webhook, `POST /api/v1/changes` (behind a bearer
//! token when `changes.api_token` or `admin.auth` is set), and its
//! listing, `GET /api/v1/changes`. With `admin.auth`, every route but the
//! probes needs a token (`server::auth::admin`). Bad requests
//! are answered with a JSON error naming the field, and counted.
//!
//! `GET /api/v1/incidents/{id}`: one incident with its events, as JSON —
//! where alerts' `generatorURL` points.

pub use crate::model::change_request as changes;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::Mutex;

use crate::admin::changes as changes_api;
use crate::history::History;
use crate::model::Change;
use crate::receiver::admission::MemoryLimiter;
use crate::security::BearerAuth;
use crate::store::changes::ChangeLog;
use crate::store::Store;
use crate::telemetry;

/// Readiness, shared by the server (which sets it) and `/readyz`.
#[derive(Debug, Default)]
pub struct Health {
    /// Set once every listener is bound and serving.
    ready: AtomicBool,
    /// Set when shutdown begins; the collector then reports not ready so
    /// load balancers stop sending while in-flight requests finish.
    draining: AtomicBool,
    /// Tasks down after a panic, with the panic message, until they run
    /// again; the collector is not ready meanwhile.
    down: Mutex<BTreeMap<&'static str, String>>,
    /// The history, whose trouble (a database moved aside, failing
    /// writes) `/readyz` reports without turning not ready: detection
    /// works without it.
    history: std::sync::OnceLock<Arc<History>>,
    /// The receivers' memory gate: while it refuses export requests
    /// `/readyz` says so, still 200. Being over the memory limit is
    /// backpressure the exporters handle by retrying; taking the collector
    /// out of a load balancer would only move the load to its peers, and
    /// a sidecar has none.
    memory: std::sync::OnceLock<Arc<MemoryLimiter>>,
}

impl Health {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.not_ready_reason().is_none()
    }

    /// Lets `/readyz` report the history's trouble.
    pub fn watch_history(&self, history: Arc<History>) {
        let _ = self.history.set(history);
    }

    /// Lets `/readyz` report that the memory limiter refuses requests.
    pub fn watch_memory(&self, memory: Arc<MemoryLimiter>) {
        let _ = self.memory.set(memory);
    }

    /// What is wrong that does not make the collector unready.
    pub fn warnings(&self) -> Vec<String> {
        let history = self
            .history
            .get()
            .and_then(|history| history.health().problem());
        let memory = self.memory.get().and_then(|memory| memory.warning());
        history.into_iter().chain(memory).collect()
    }

    /// Marks `task` down after a panic (`message`).
    pub fn task_down(&self, task: &'static str, message: &str) {
        self.down.lock().insert(task, message.to_string());
    }

    /// Marks `task` running again.
    pub fn task_up(&self, task: &'static str) {
        let mut down = self.down.lock();
        if !down.is_empty() {
            down.remove(task);
        }
    }

    /// Why the collector is not ready, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<String> {
        if !self.ready.load(Ordering::SeqCst) {
            return Some("starting".to_string());
        }
        if self.draining.load(Ordering::SeqCst) {
            return Some("shutting down".to_string());
        }
        let down = self.down.lock();
        let (task, message) = down.iter().next()?;
        Some(format!("task {task} panicked and is restarting: {message}"))
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: PrometheusHandle,
    store: Arc<Store>,
    health: Arc<Health>,
}

pub fn router(metrics: PrometheusHandle, store: Arc<Store>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AdminState {
            metrics,
            store,
            health,
        })
}

async fn render_metrics(State(state): State<AdminState>) -> impl IntoResponse {
    state.store.report_gauges();
    state.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry::render(&state.metrics),
    )
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let mut answer = match state.health.not_ready_reason() {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    };
    for warning in state.health.warnings() {
        answer.1.push_str(&format!("warning: {warning}\n"));
    }
    answer
}

// === change events ===

/// What the change-event endpoints need.
#[derive(Clone)]
pub struct ChangesApi {
    /// Where posted changes are recorded and listed from.
    pub log: Arc<ChangeLog>,
    /// The tokens `POST` accepts as `Authorization: Bearer <token>`
    /// (`changes.api_token` and the admin tokens); `None`: any caller.
    pub auth: Option<BearerAuth>,
    /// Its clock dates a change posted without a time.
    pub store: Arc<Store>,
}

/// `POST /api/v1/changes` and `GET /api/v1/changes`, with the body limit.
pub fn changes_router(api: ChangesApi) -> Router {
    Router::new()
        .route("/api/v1/changes", get(list_changes).post(post_change))
        .layer(axum::extract::DefaultBodyLimit::max(
            changes_api::MAX_BODY_BYTES,
        ))
        .with_state(api)
}

/// `GET /api/v1/incidents/{id}` from the history.
pub fn incidents_router(history: Arc<crate::history::History>) -> Router {
    Router::new()
        .route("/api/v1/incidents/{id}", get(get_incident))
        .with_state(history)
}

async fn get_incident(
    State(history): State<Arc<crate::history::History>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> axum::response::Response {
    // Reading SQLite blocks; keep it off the runtime's workers.
    let found = tokio::task::spawn_blocking(move || {
        let found = history.get_incident(&id);
        (id, found)
    })
    .await;
    match found {
        Ok((_, Ok(Some((incident, events))))) => json(
            StatusCode::OK,
            &serde_json::json!({ "incident": incident, "events": events }),
        ),
        Ok((id, Ok(None))) => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({ "error": format!("no incident {id:?}") }),
        ),
        Ok((_, Err(error))) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({ "error": format!("cannot read the history: {error}") }),
        ),
        Err(_) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({ "error": "cannot read the history" }),
        ),
    }
}

/// A JSON response.
fn json(status: StatusCode, value: &serde_json::Value) -> axum::response::Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// `{"error": ..., "field": ..., "problems": [{"field", "message"}]}`.
fn json_error(
    status: StatusCode,
    problems: &[changes_api::FieldProblem],
) -> axum::response::Response {
    let error = problems
        .iter()
        .map(|problem| format!("{}: {}", problem.field, problem.message))
        .collect::<Vec<_>>()
        .join("; ");
    json(
        status,
        &serde_json::json!({
            "error": error,
            "field": problems.first().map(|problem| problem.field.as_str()),
            "problems": problems,
        }),
    )
}

fn problem(field: &str, message: impl Into<String>) -> [changes_api::FieldProblem; 1] {
    [changes_api::FieldProblem {
        field: field.to_owned(),
        message: message.into(),
    }]
}

/// A change as JSON, with its time also in RFC 3339.
fn change_json(change: &Change) -> serde_json::Value {
    let mut value = serde_json::to_value(change).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("time".to_owned(), change.time().into());
    }
    value
}

async fn post_change(
    State(api): State<ChangesApi>,
    headers: axum::http::HeaderMap,
    body: Result<bytes::Bytes, axum::extract::rejection::BytesRejection>,
) -> axum::response::Response {
    if let Some(auth) = &api.auth {
        if auth.check_headers(&headers).is_err() {
            telemetry::record_change_refused("unauthorized");
            let mut response = json_error(
                StatusCode::UNAUTHORIZED,
                &problem(
                    "authorization",
                    "this collector requires an `Authorization: Bearer <token>` header \
                     with the token of changes.api_token or an admin.auth token",
                ),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            return response;
        }
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            telemetry::record_change_refused("too_large");
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &problem(
                    "body",
                    format!(
                        "larger than {} bytes; a change is a small JSON object",
                        changes_api::MAX_BODY_BYTES
                    ),
                ),
            );
        }
        Err(rejection) => {
            telemetry::record_change_refused("invalid");
            return json_error(rejection.status(), &problem("body", rejection.body_text()));
        }
    };
    match changes_api::parse_change(&body, api.store.now_unix_nanos()) {
        Ok(change) => {
            let mut recorded = change.clone();
            recorded.id = api.log.record(change);
            tracing::info!(
                id = recorded.id,
                service = %recorded.service,
                kind = recorded.kind.as_str(),
                "change event posted"
            );
            json(StatusCode::CREATED, &change_json(&recorded))
        }
        Err(error) => {
            telemetry::record_change_refused("invalid");
            tracing::debug!(%error, "change event refused");
            json_error(StatusCode::BAD_REQUEST, &error.problems)
        }
    }
}

async fn list_changes(
    State(api): State<ChangesApi>,
    query: Result<
        axum::extract::Query<Vec<(String, String)>>,
        axum::extract::rejection::QueryRejection,
    >,
) -> axum::response::Response {
    let pairs = match query {
        Ok(axum::extract::Query(pairs)) => pairs,
        Err(rejection) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &problem("query", rejection.body_text()),
            )
        }
    };
    let filter = match changes_api::parse_filter(
        pairs
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    ) {
        Ok(filter) => filter,
        Err(error) => return json_error(StatusCode::BAD_REQUEST, &error.problems),
    };
    let changes: Vec<serde_json::Value> = api.log.list(&filter).iter().map(change_json).collect();
    json(StatusCode::OK, &serde_json::json!({ "changes": changes }))
}
