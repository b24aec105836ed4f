//! Bearer-token checks in front of the OTLP receivers and the admin
//! routes, answering each protocol's way (the query API checks its own in
//! `query::service`).
//!
//! - OTLP/gRPC: [`GrpcAuthLayer`] answers `UNAUTHENTICATED` (16) before the
//!   call reaches a service, so nothing of the request is decoded.
//! - OTLP/HTTP: [`otlp_http`] answers 401 with a `google.rpc.Status` of
//!   code 16 in the request's encoding, as the OTLP specification asks of
//!   every error, and `WWW-Authenticate: Bearer` (RFC 6750).
//! - Admin: [`admin`] requires a token on every route but the probes
//!   (`GET /healthz`, `GET /readyz`: kubelet and load-balancer probes send
//!   no secrets, as with Envoy's and the Collector's health endpoints).
//!   `POST /api/v1/changes` is passed to its handler, which accepts the
//!   admin tokens and `changes.api_token` alike.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{header, HeaderValue, Method, StatusCode};

use super::serve;
use crate::security::auth::{BearerAuth, Denied};

/// `google.rpc.Code.UNAUTHENTICATED`.
const CODE_UNAUTHENTICATED: i32 = 16;

/// Admin paths served without a token: the probes.
pub const OPEN_ADMIN_PATHS: &[&str] = &["/healthz", "/readyz"];

/// Refuses gRPC calls without an accepted bearer token.
#[derive(Clone)]
pub struct GrpcAuthLayer {
    auth: Option<BearerAuth>,
}

/// The service [`GrpcAuthLayer`] makes.
#[derive(Clone)]
pub struct GrpcAuth<S> {
    inner: S,
    auth: Option<BearerAuth>,
}

// === impl GrpcAuthLayer ===

impl GrpcAuthLayer {
    /// Checks calls against `auth`; `None` lets every call through.
    pub fn new(auth: Option<BearerAuth>) -> GrpcAuthLayer {
        GrpcAuthLayer { auth }
    }
}

impl<S> tower::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;

    fn layer(&self, inner: S) -> GrpcAuth<S> {
        GrpcAuth {
            inner,
            auth: self.auth.clone(),
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcAuth<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if let Some(auth) = &self.auth {
            if let Err(denied) = auth.check_headers(request.headers()) {
                // Trailers-only: HTTP 200 with grpc-status in the headers.
                let response = tonic::Status::unauthenticated(denied.message()).into_http();
                return Box::pin(async move { Ok(response) });
            }
        }
        Box::pin(self.inner.call(request))
    }
}

// === OTLP/HTTP ===

/// Axum middleware for the OTLP/HTTP router (state: the listener's tokens).
pub async fn otlp_http(State(auth): State<BearerAuth>, request: Request, next: Next) -> Response {
    match auth.check_headers(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(denied) => {
            let json = serve::is_json(request.headers().get(header::CONTENT_TYPE));
            let message = denied.message().to_owned();
            let (content_type, body) = if json {
                (
                    "application/json",
                    Body::from(
                        serde_json::json!({ "code": CODE_UNAUTHENTICATED, "message": message })
                            .to_string(),
                    ),
                )
            } else {
                (
                    "application/x-protobuf",
                    Body::from(prost::Message::encode_to_vec(&serve::Status {
                        code: CODE_UNAUTHENTICATED,
                        message,
                    })),
                )
            };
            unauthorized(content_type, body)
        }
    }
}

// === admin ===

/// Axum middleware for the admin router (state: the admin tokens).
pub async fn admin(State(auth): State<BearerAuth>, request: Request, next: Next) -> Response {
    let method = request.method();
    let path = request.uri().path();
    let open =
        (method == Method::GET || method == Method::HEAD) && OPEN_ADMIN_PATHS.contains(&path);
    // Its handler checks the admin tokens and changes.api_token.
    let change_write = method == Method::POST && path == "/api/v1/changes";
    if open || change_write {
        return next.run(request).await;
    }
    match auth.check_headers(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(denied) => unauthorized(
            "text/plain; charset=utf-8",
            Body::from(format!("{}\n", Denied::message(denied))),
        ),
    }
}

/// A 401 with `WWW-Authenticate: Bearer`.
fn unauthorized(content_type: &'static str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}
