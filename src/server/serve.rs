//! Serving HTTP and gRPC over [`listen::Listener`]s, with the per-request
//! limits the listener cannot see.
//!
//! HTTP (OTLP/HTTP and admin): [`serve_http`] runs the accept loop and one
//! task per connection with hyper-util's connection builder (HTTP/1.1 and
//! h2c), rather than `axum::serve`, which sets no timer: hyper's HTTP/1.1
//! header read timeout needs one. Each request is marked in flight on its
//! connection (for the idle timeout) and raced against its body's deadline:
//! a body still arriving `read_timeout` after the headers is answered 408 and
//! the handler, with whatever it had buffered, is dropped. On a TLS listener
//! the connection's task first completes the handshake, within the
//! listener's `read_header_timeout` (`crate::security::tls`).
//!
//! gRPC: tonic serves its own connections; [`TrackLayer`] marks each call in
//! flight on the connection it came on, through the [`ConnectInfo`] tonic
//! puts in the request's extensions.
//!
//! Both OTLP listeners hold request bytes against a [`BodyBudget`]: each
//! data frame of a request body takes its size from the listener's budget
//! before the handler sees it, and gives it back when the request is
//! answered (or dropped). A frame that does not fit waits, and meanwhile the
//! connection is not read, so TCP slows its sender. The connection cap bounds
//! how many uploads there are and the read timeout how long they last; the
//! budget bounds the memory they hold together, whatever their speed.
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
use std::task::{ready, Context, Poll};
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
use metrics::{counter, gauge, Counter, Gauge};
use parking_lot::Mutex;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::listen::{Activity, Busy, Conn, ConnectInfo, Listener};
use crate::security::tls::{Acceptor, MaybeTls};
use crate::telemetry;

/// Streams per HTTP/2 connection on the HTTP listeners (h2c is rare there;
/// this only keeps one connection from multiplexing without bound).
const HTTP2_MAX_STREAMS: u32 = 100;

/// Largest HTTP/1.1 read buffer (hyper's default is about 400 KiB). A body
/// frame is read before it is paid for from the [`BodyBudget`], so each
/// connection may hold one frame beyond the budget: this bounds it.
const HTTP1_MAX_BUFFER: usize = 64 * 1024;

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

/// Request-body bytes one listener holds at once (see the module docs).
#[derive(Clone)]
pub struct BodyBudget {
    /// One permit per byte.
    permits: Arc<Semaphore>,
    /// The whole budget in bytes; no frame asks for more than this.
    total: usize,
    /// `triage_listener_buffered_bytes` for the listener.
    held: Gauge,
    /// `triage_listener_buffer_waits_total` for the listener.
    waits: Counter,
}

/// What one request holds of its listener's budget. Shared by the request's
/// body (which adds to it) and its handling (which keeps it until the answer
/// is ready), so it is given back once both are gone.
type Claim = Arc<Mutex<Claimed>>;

#[derive(Default)]
struct Claimed {
    permit: Option<OwnedSemaphorePermit>,
    held: Option<Gauge>,
}

/// A request body whose data frames are paid for from a [`BodyBudget`]
/// before they are passed on.
struct Budgeted<B> {
    inner: B,
    budget: BodyBudget,
    claim: Claim,
    /// A frame read but not yet paid for, and the wait for room.
    waiting: Option<(Frame<Bytes>, Acquiring)>,
}

type Acquiring = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// How the 408 for a slow body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorBody {
    /// A `google.rpc.Status`, in JSON for a JSON request and protobuf
    /// otherwise, as OTLP/HTTP requires of every error.
    Otlp,
    /// A line of text.
    Text,
}

/// One connection's request handling: the router, plus the in-flight mark,
/// the body deadline and the byte budget.
#[derive(Clone)]
struct Guarded {
    router: Router,
    activity: Arc<Activity>,
    limits: HttpLimits,
    /// `None` on the admin port, whose bodies are a few KiB and few.
    budget: Option<BodyBudget>,
    /// `triage_listener_timeouts_total{kind="body"}` for this listener.
    body_timeouts: Counter,
}

/// A request body that says when it has been read to the end (or failed),
/// so that a handler still working after that is not cut off.
struct Watched<B> {
    inner: B,
    /// Set once the body has ended or failed.
    done: Arc<AtomicBool>,
}

/// A `google.rpc.Status` (the OTLP/HTTP error body) with no details.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Status {
    #[prost(int32, tag = "1")]
    pub(super) code: i32,
    #[prost(string, tag = "2")]
    pub(super) message: String,
}

/// `google.rpc.Code.DEADLINE_EXCEEDED`.
const CODE_DEADLINE_EXCEEDED: i32 = 4;

/// Serves `router` on `listener` until `shutdown` is cancelled, then waits
/// for the open connections to finish. With `tls`, each connection is
/// handshaken on its own task within `read_header_timeout` (the time a
/// plaintext connection has to start speaking), so a slow handshake holds
/// neither the accept loop nor, for longer than that, a connection slot.
pub async fn serve_http(
    mut listener: Listener,
    router: Router,
    limits: HttpLimits,
    budget: Option<BodyBudget>,
    tls: Option<Arc<Acceptor>>,
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
                    budget: budget.clone(),
                    body_timeouts: body_timeouts.clone(),
                };
                let (builder, tls, shutdown, header_timeouts) = (
                    Arc::clone(&builder),
                    tls.clone(),
                    shutdown.clone(),
                    header_timeouts.clone(),
                );
                connections.spawn(async move {
                    let remote = conn.remote();
                    let conn = match tls {
                        None => MaybeTls::Plain(conn),
                        Some(tls) => {
                            // Counted and logged by the acceptor.
                            let Ok(stream) = tls.handshake(conn, limits.read_header_timeout).await
                            else {
                                return;
                            };
                            MaybeTls::Tls(Box::new(stream))
                        }
                    };
                    serve_connection(builder, conn, remote, service, shutdown, header_timeouts)
                        .await;
                });
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
        .max_buf_size(HTTP1_MAX_BUFFER)
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
    conn: MaybeTls<Conn>,
    remote: std::net::SocketAddr,
    service: Guarded,
    shutdown: CancellationToken,
    header_timeouts: Counter,
) {
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
        let claim = Claim::default();
        let body = match &self.budget {
            Some(budget) => Body::new(Watched {
                inner: Budgeted::new(body, budget.clone(), Arc::clone(&claim)),
                done: Arc::clone(&done),
            }),
            None => Body::new(Watched {
                inner: body,
                done: Arc::clone(&done),
            }),
        };
        let handling = self.router.call(Request::from_parts(parts, body));
        let limits = self.limits;
        let body_timeouts = self.body_timeouts.clone();
        Box::pin(async move {
            // Held until the answer is ready: the connection is not idle,
            // and the body's bytes are still counted.
            let (_busy, _claim) = (busy, claim);
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
pub(super) fn is_json(content_type: Option<&HeaderValue>) -> bool {
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

impl<B> HttpBody for Watched<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
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

// === impl BodyBudget ===

impl BodyBudget {
    /// A budget of `bytes` for `listener`'s request bodies.
    pub fn new(listener: &'static str, bytes: usize) -> BodyBudget {
        let total = bytes.clamp(1, Semaphore::MAX_PERMITS);
        gauge!(telemetry::LISTENER_BUFFER_LIMIT, "listener" => listener).set(total as f64);
        BodyBudget {
            permits: Arc::new(Semaphore::new(total)),
            total,
            held: gauge!(telemetry::LISTENER_BUFFERED, "listener" => listener),
            waits: counter!(telemetry::LISTENER_BUFFER_WAITS, "listener" => listener),
        }
    }
}

// === impl Claimed ===

impl Claimed {
    fn add(&mut self, permit: OwnedSemaphorePermit, held: &Gauge) {
        held.increment(permit.num_permits() as f64);
        self.held.get_or_insert_with(|| held.clone());
        match &mut self.permit {
            Some(claimed) => claimed.merge(permit),
            None => self.permit = Some(permit),
        }
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if let (Some(permit), Some(held)) = (&self.permit, &self.held) {
            held.decrement(permit.num_permits() as f64);
        }
    }
}

// === impl Budgeted ===

impl<B> Budgeted<B> {
    fn new(inner: B, budget: BodyBudget, claim: Claim) -> Budgeted<B> {
        Budgeted {
            inner,
            budget,
            claim,
            waiting: None,
        }
    }

    fn pay(&self, permit: OwnedSemaphorePermit) {
        self.claim.lock().add(permit, &self.budget.held);
    }
}

impl<B> HttpBody for Budgeted<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some((frame, mut acquiring)) = this.waiting.take() {
            match acquiring.as_mut().poll(cx) {
                Poll::Pending => {
                    this.waiting = Some((frame, acquiring));
                    return Poll::Pending;
                }
                Poll::Ready(paid) => {
                    // The semaphore is never closed, so this is a permit.
                    if let Ok(permit) = paid {
                        this.pay(permit);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
            }
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        // A frame bigger than the whole budget takes all of it rather than
        // waiting for ever.
        let size = frame
            .data_ref()
            .map_or(0, Bytes::len)
            .min(this.budget.total);
        let Ok(size) = u32::try_from(size) else {
            return Poll::Ready(Some(Ok(frame)));
        };
        if size == 0 {
            return Poll::Ready(Some(Ok(frame)));
        }
        match Arc::clone(&this.budget.permits).try_acquire_many_owned(size) {
            Ok(permit) => {
                this.pay(permit);
                Poll::Ready(Some(Ok(frame)))
            }
            Err(_) => {
                this.budget.waits.increment(1);
                let acquiring: Acquiring =
                    Box::pin(Arc::clone(&this.budget.permits).acquire_many_owned(size));
                this.waiting = Some((frame, acquiring));
                // Polled at once, so that it registers for a wake-up.
                Pin::new(this).poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.waiting.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === gRPC ===

/// Marks each gRPC call in flight on its connection (see the module docs),
/// pays for its request bytes from the listener's [`BodyBudget`], and gives
/// it tonic's own `TcpConnectInfo` so that `remote_addr` works.
#[derive(Clone)]
pub struct TrackLayer {
    budget: BodyBudget,
}

/// The service [`TrackLayer`] makes.
#[derive(Clone)]
pub struct Track<S> {
    inner: S,
    budget: BodyBudget,
}

/// A call's answer, with its in-flight mark and its claim on the budget
/// held until the answer is ready.
pub struct Tracked<F> {
    inner: Pin<Box<F>>,
    _busy: Option<Busy>,
    _claim: Claim,
}

impl TrackLayer {
    pub fn new(budget: BodyBudget) -> TrackLayer {
        TrackLayer { budget }
    }
}

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            budget: self.budget.clone(),
        }
    }
}

impl<S> Service<Request<tonic::body::Body>> for Track<S>
where
    S: Service<Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Tracked<S::Future> {
        let claim = Claim::default();
        let budget = self.budget.clone();
        let body_claim = Arc::clone(&claim);
        let mut request =
            request.map(|body| tonic::body::Body::new(Budgeted::new(body, budget, body_claim)));
        let info = request.extensions().get::<ConnectInfo>().cloned();
        let busy = info.map(|info| {
            request.extensions_mut().insert(info.tcp());
            info.start()
        });
        Tracked {
            inner: Box::pin(self.inner.call(request)),
            _busy: busy,
            _claim: claim,
        }
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.inner.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests;
