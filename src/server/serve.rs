//! Serving HTTP and gRPC over [`listen::Listener`]s, with the per-request
//! limits the listener cannot see.
//!
//! HTTP (OTLP/HTTP and admin): [`serve_http`] runs the accept loop and one
//! task per connection with hyper-util's connection builder (HTTP/1.1 and
//! h2c), rather than `axum::serve`, which sets no timer: hyper's HTTP/1.1
//! header read timeout needs one. Each request is marked in flight on its
//! connection (for the idle timeout) and raced against its body's deadline:
//! a body still arriving `read_timeout` after the headers is answered 408 and
//! the handler, with whatever it had buffered, is dropped.
//!
//! gRPC: tonic serves its own connections; [`TrackLayer`] marks each call in
//! flight on the connection it came on, through the [`ConnectInfo`] tonic
//! puts in the request's extensions.
//!
//! Shutdown: when the token is cancelled the accept loop stops (the
//! listening socket closes), every connection is told to finish (HTTP/1.1
//! closes after the response in flight, HTTP/2 sends GOAWAY), and
//! [`serve_http`] returns once all have closed. Dropping its future (the
//! server aborts it past the shutdown timeout) drops every connection.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use metrics::{counter, Counter};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::listen::{Activity, Busy, Conn, ConnectInfo, Listener};
use crate::telemetry;

/// Streams per HTTP/2 connection on the HTTP listeners (h2c is rare there;
/// this only keeps one connection from multiplexing without bound).
const HTTP2_MAX_STREAMS: u32 = 100;

/// What an HTTP listener bounds per request.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// How long a request's headers may take (HTTP/1.1; hyper counts from
    /// when the connection is ready for the next request).
    pub read_header_timeout: Duration,
    /// How long a request's body may take once its headers have arrived.
    pub read_timeout: Duration,
    /// How a 408 is written: as an OTLP `google.rpc.Status`, or plain text.
    pub errors: ErrorBody,
}

/// How the 408 for a slow body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorBody {
    /// A `google.rpc.Status`, in JSON for a JSON request and protobuf
    /// otherwise, as OTLP/HTTP requires of every error.
    Otlp,
    /// A line of text.
    Text,
}

/// One connection's request handling: the router, plus the in-flight mark
/// and the body deadline.
#[derive(Clone)]
struct Guarded {
    router: Router,
    activity: Arc<Activity>,
    limits: HttpLimits,
    /// `triage_listener_timeouts_total{kind="body"}` for this listener.
    body_timeouts: Counter,
}

/// A request body that says when it has been read to the end (or failed),
/// so that a handler still working after that is not cut off.
struct Watched {
    inner: Incoming,
    /// Set once the body has ended or failed.
    done: Arc<AtomicBool>,
}

/// A `google.rpc.Status` (the OTLP/HTTP error body) with no details.
#[derive(Clone, PartialEq, prost::Message)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// `google.rpc.Code.DEADLINE_EXCEEDED`.
const CODE_DEADLINE_EXCEEDED: i32 = 4;

/// Serves `router` on `listener` until `shutdown` is cancelled, then waits
/// for the open connections to finish.
pub async fn serve_http(
    mut listener: Listener,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let name = listener.name();
    let builder = Arc::new(builder(&limits));
    let header_timeouts =
        counter!(telemetry::LISTENER_TIMEOUTS, "listener" => name, "kind" => "header");
    let body_timeouts =
        counter!(telemetry::LISTENER_TIMEOUTS, "listener" => name, "kind" => "body");
    // Owned here, so that dropping this future ends every connection.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            conn = listener.accept() => {
                let service = Guarded {
                    router: router.clone(),
                    activity: conn.activity(),
                    limits,
                    body_timeouts: body_timeouts.clone(),
                };
                connections.spawn(serve_connection(
                    Arc::clone(&builder),
                    conn,
                    service,
                    shutdown.clone(),
                    header_timeouts.clone(),
                ));
            }
            // Reaps finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Closes the listening socket: new connections are refused by the
    // kernel from here on.
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// hyper-util's builder with the limits that apply per connection.
fn builder(limits: &HttpLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(HTTP2_MAX_STREAMS);
    builder
}

/// Serves one connection until it closes, or until shutdown, when it is
/// told to finish what is in flight and close.
async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    conn: Conn,
    service: Guarded,
    shutdown: CancellationToken,
    header_timeouts: Counter,
) {
    let remote = conn.remote();
    let connection =
        builder.serve_connection(TokioIo::new(conn), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        let timed_out = error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout);
        if timed_out {
            header_timeouts.increment(1);
        }
        // A client that goes away mid-request is routine, not worth more.
        tracing::debug!(%remote, %error, "HTTP connection ended with an error");
    }
}

// === impl Guarded ===

impl Service<Request<Incoming>> for Guarded {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let busy: Busy = self.activity.start();
        let deadline = tokio::time::Instant::now() + self.limits.read_timeout;
        let json = is_json(request.headers().get(header::CONTENT_TYPE));
        let (parts, body) = request.into_parts();
        let done = Arc::new(AtomicBool::new(body.is_end_stream()));
        let body = Body::new(Watched {
            inner: body,
            done: Arc::clone(&done),
        });
        let handling = self.router.call(Request::from_parts(parts, body));
        let limits = self.limits;
        let body_timeouts = self.body_timeouts.clone();
        Box::pin(async move {
            // Held until the answer is ready: the connection is not idle.
            let _busy = busy;
            let overdue = async {
                tokio::time::sleep_until(deadline).await;
                if done.load(Ordering::Acquire) {
                    // The body is in; the handler takes as long as it takes.
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                biased;
                () = overdue => {
                    body_timeouts.increment(1);
                    Ok(body_timeout(limits, json))
                }
                response = handling => response,
            }
        })
    }
}

/// Whether a `Content-Type` is JSON (`application/json`, parameters allowed).
fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// The 408 for a body that took longer than `read_timeout`. The connection
/// is closed after it: the rest of the body is not worth reading.
fn body_timeout(limits: HttpLimits, json: bool) -> Response<Body> {
    let message = format!(
        "request body not received within {}",
        crate::validate::format_duration(limits.read_timeout)
    );
    let (content_type, body) = match (limits.errors, json) {
        (ErrorBody::Text, _) => ("text/plain; charset=utf-8", Body::from(message + "\n")),
        (ErrorBody::Otlp, true) => (
            "application/json",
            Body::from(
                serde_json::json!({ "code": CODE_DEADLINE_EXCEEDED, "message": message })
                    .to_string(),
            ),
        ),
        (ErrorBody::Otlp, false) => (
            "application/x-protobuf",
            Body::from(prost::Message::encode_to_vec(&Status {
                code: CODE_DEADLINE_EXCEEDED,
                message,
            })),
        ),
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

// === impl Watched ===

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None | Some(Err(_))) => this.done.store(true, Ordering::Release),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => {
                this.done.store(true, Ordering::Release)
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === gRPC ===

/// Marks each gRPC call in flight on its connection (see the module docs),
/// and gives it tonic's own `TcpConnectInfo` so that `remote_addr` works.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackLayer;

/// The service [`TrackLayer`] makes.
#[derive(Debug, Clone)]
pub struct Track<S> {
    inner: S,
}

/// A call's answer, with its in-flight mark held until the answer is ready.
pub struct Tracked<F> {
    inner: Pin<Box<F>>,
    _busy: Option<Busy>,
}

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track { inner }
    }
}

impl<S, B> Service<Request<B>> for Track<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Tracked<S::Future> {
        let info = request.extensions().get::<ConnectInfo>().cloned();
        let busy = info.map(|info| {
            request.extensions_mut().insert(info.tcp());
            info.start()
        });
        Tracked {
            inner: Box::pin(self.inner.call(request)),
            _busy: busy,
        }
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.inner.as_mut().poll(cx)
    }
}
