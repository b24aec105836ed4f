//! Admin HTTP: `/metrics` (Prometheus text format), `/healthz` (the process
//! is alive), `/readyz` (listeners are bound and the collector is not
//! draining). Load balancers and Kubernetes probes use the last two.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

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
}

impl Health {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst)
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
    telemetry::refresh_store_gauges(&state.store);
    state.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
