//! Serving the query API (`query::service`) on a [`Listener`], with the
//! limits of the OTLP/gRPC listener: a connection cap, handshake and idle
//! deadlines, HTTP/2 `max_concurrent_streams` (also enforced per
//! connection), a call timeout and keepalive pings. See
//! docs/RELIABILITY.md, "Listeners".
//!
//! One difference from OTLP: `WatchIncidents` streams for as long as the
//! client listens. A call here counts as in flight on its connection until
//! its answer's body has ended ([`CallTrackLayer`]), so a connection with a
//! watch open is never closed as idle; tonic's call timeout ends when the
//! answer starts, so it does not cut the stream either. A watcher that has
//! vanished is found by the keepalive pings.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::task::JoinHandle;
use tonic::transport::server::TlsConnectInfo;
use tower::Service;

use super::listen::{Busy, ConnectInfo, Listener};
use crate::config::ConnectionLimits;
use crate::query::config::ApiLimits;
use crate::query::service::Serving;
use crate::security::tls::TlsIncoming;

/// The listener's name in logs and in the `listener` metric label.
pub const LISTENER_API: &str = "api";

/// The connection limits of the API listener, in the listener's type.
pub fn connection_limits(limits: &ApiLimits) -> ConnectionLimits {
    ConnectionLimits {
        max_connections: limits.max_connections,
        read_header_timeout: limits.read_header_timeout,
        idle_timeout: limits.idle_timeout,
    }
}

/// Serves the API on its own task until its stop token is cancelled.
pub fn serve(
    serving: Serving,
    limits: ApiLimits,
) -> JoinHandle<Result<(), tonic::transport::Error>> {
    let Serving {
        builder,
        routes,
        listener,
        tls,
        stop,
    } = serving;
    let streams = limits.max_concurrent_streams.get();
    let mut builder = builder
        .max_concurrent_streams(u32::try_from(streams).unwrap_or(u32::MAX))
        .concurrency_limit_per_connection(streams)
        .timeout(limits.request_timeout)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .layer(CallTrackLayer);
    let router = builder.add_routes(routes);
    let incoming = TlsIncoming::new(
        Listener::new(LISTENER_API, listener, connection_limits(&limits)).incoming(),
        tls,
        limits.read_header_timeout,
    );
    tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop.cancelled_owned()))
}

/// Marks each call in flight on its connection until its answer's body
/// ends or is dropped (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct CallTrackLayer;

/// The service [`CallTrackLayer`] makes.
#[derive(Debug, Clone)]
pub struct CallTrack<S> {
    inner: S,
}

/// An answer's body holding its call's in-flight mark.
struct Marked<B> {
    inner: B,
    _busy: Option<Busy>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower::Layer<S> for CallTrackLayer {
    type Service = CallTrack<S>;

    fn layer(&self, inner: S) -> CallTrack<S> {
        CallTrack { inner }
    }
}

impl<S> Service<Request<tonic::body::Body>> for CallTrack<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<tonic::body::Body>) -> Self::Future {
        // Behind TLS tonic wraps the listener's connection info.
        let extensions = request.extensions();
        let info = extensions.get::<ConnectInfo>().cloned().or_else(|| {
            extensions
                .get::<TlsConnectInfo<ConnectInfo>>()
                .map(|tls| tls.get_ref().clone())
        });
        let busy = info.map(|info| {
            request.extensions_mut().insert(info.tcp());
            info.start()
        });
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| {
                tonic::body::Body::new(Marked {
                    inner: body,
                    _busy: busy,
                })
            }))
        })
    }
}

impl<B> HttpBody for Marked<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
