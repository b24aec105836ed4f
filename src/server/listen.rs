//! Listeners that defend themselves: an accept loop per listener with a
//! connection cap, accepted connections that close themselves when they stay
//! silent, and the open-files limit checked at start-up.
//!
//! What each part answers (docs/RELIABILITY.md, "Listeners", has the
//! figures):
//!
//! - [`Listener::accept`] never fails. An accept error (out of file
//!   descriptors, out of memory, a peer that gave up) is counted in
//!   `triage_listener_accept_errors_total{listener,kind}`, logged at most
//!   once per [`LOG_EVERY`] per listener with how many were not logged, and
//!   followed by a short pause when retrying at once would only spin. The
//!   listener keeps going; before this, an accept error could end it
//!   silently.
//! - The cap: each listener holds a semaphore of `max_connections` permits.
//!   A connection accepted while none is free is closed at once (the kernel
//!   backlog keeps draining, so the flood does not pile up there) and
//!   counted in `triage_listener_refused_connections_total`. The caps are
//!   per listener, so a flood of one OTLP port leaves the admin port's
//!   permits alone and `/healthz` keeps answering.
//! - [`Conn`] is an accepted connection that ends itself (its reads return
//!   end-of-file, which every protocol handles) when it has not started
//!   speaking within the handshake timeout (a first request, or the 24
//!   bytes of an HTTP/2 preface), or when no request has been in flight on
//!   it for the idle timeout. Requests are counted in and out through its
//!   [`Activity`], by the HTTP serving loop and by the gRPC [`TrackLayer`].
//!   The close is abrupt but only ever happens with nothing in flight;
//!   HTTP/2 clients get no GOAWAY first, so a request sent at that very
//!   moment fails and is retried by the client.
//! - [`raise_open_files_limit`]: the soft open-files limit is raised to the
//!   hard one, as the Go runtime does for the OTel Collector, and a warning
//!   says when the listeners' caps together exceed it (then accept fails
//!   with EMFILE on every listener, the admin port included, before any cap
//!   is reached).
//!
//! Invariant: a [`Conn`] holds its listener's permit until it is dropped, so
//! `triage_listener_connections` counts exactly the connections open.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use metrics::{counter, gauge, Counter, Gauge};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::config::ConnectionLimits;
use crate::telemetry;

/// How often each listener logs the same kind of trouble (refusals, accept
/// errors); the ones in between are counted in the next line.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

/// Pause after an accept error that retrying at once would only repeat
/// (out of file descriptors or memory): the pending connection stays in the
/// backlog and the listening socket stays readable, so without a pause the
/// loop would spin on the same error.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Length of the HTTP/2 connection preface. A connection that has sent this
/// much has started speaking, whatever it speaks.
const PREFACE_BYTES: usize = 24;

/// TCP keepalive probes start after this long without traffic, so a peer
/// that vanished (no FIN, no RST) does not keep its permit forever.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Open file descriptors kept for everything but the listeners' connections
/// (the runtime, the query API, the history database, alert clients) when
/// checking the caps against the open-files limit.
const RESERVED_FDS: u64 = 128;

/// A bound TCP listener with its connection cap.
pub struct Listener {
    /// The listener's name in logs and metric labels: `otlp_grpc`,
    /// `otlp_http` or `admin`.
    name: &'static str,
    socket: TcpListener,
    /// One permit per open connection. A permit moves into the [`Conn`] and
    /// comes back when the connection is dropped, whoever drops it.
    slots: Arc<Semaphore>,
    limits: ConnectionLimits,
    metrics: ListenerMetrics,
    /// Warnings about refused connections, at most one per [`LOG_EVERY`].
    refusals: Throttle,
    /// Warnings about accept errors, at most one per [`LOG_EVERY`].
    errors: Throttle,
}

/// The metric handles of one listener, made once rather than per connection.
#[derive(Clone)]
struct ListenerMetrics {
    open: Gauge,
    refused: Counter,
    handshake_timeouts: Counter,
    idle_timeouts: Counter,
}

/// What went wrong in `accept`, as counted in the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    /// EMFILE or ENFILE: the process or the system is out of file
    /// descriptors.
    FdLimit,
    /// ENOBUFS or ENOMEM: the kernel could not allocate for the socket.
    NoMemory,
    /// The peer went away before the connection was accepted.
    Aborted,
    /// Anything else.
    Other,
}

/// Logs one of a run of events at most once per period.
#[derive(Debug, Default)]
struct Throttle {
    /// When the last line was logged.
    last: Option<Instant>,
    /// Events since then that were not logged.
    suppressed: u64,
}

/// Why a connection closed itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// It did not start speaking within the handshake timeout.
    Handshake,
    /// No request was in flight on it for the idle timeout.
    Idle,
}

/// Requests in flight on one connection, shared by the connection (which
/// closes itself when idle) and whoever serves its requests.
#[derive(Debug)]
pub struct Activity {
    state: Mutex<ActivityState>,
}

#[derive(Debug)]
struct ActivityState {
    in_flight: usize,
    /// Requests started on the connection so far.
    started: u64,
    /// When `in_flight` last fell to zero (or the connection was accepted).
    idle_since: Instant,
    /// The connection's reader, woken when the last request in flight ends
    /// so that it arms its idle timer again.
    waker: Option<Waker>,
}

/// One request in flight; ends when dropped.
#[derive(Debug)]
#[must_use = "the request counts as in flight until this is dropped"]
pub struct Busy {
    activity: Arc<Activity>,
}

/// The deadlines of one connection.
struct Expiry {
    activity: Arc<Activity>,
    /// Until the connection has started speaking; then `None`.
    handshake_deadline: Option<Instant>,
    idle_timeout: Duration,
    bytes_read: usize,
    timer: Pin<Box<Sleep>>,
}

/// An accepted connection under its listener's cap, closing itself when it
/// stays silent (see the module docs).
pub struct Conn {
    stream: TcpStream,
    info: ConnectInfo,
    expiry: Expiry,
    /// Set once the connection has closed itself; reads then return
    /// end-of-file.
    expired: Option<Expired>,
    metrics: ListenerMetrics,
    /// Returned to the listener, and the gauge lowered, on drop.
    _slot: Slot,
}

/// A listener's permit for one open connection.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

/// What tonic hands its services about a [`Conn`] (as a request extension):
/// the addresses, and the connection's [`Activity`] for the [`TrackLayer`].
#[derive(Debug, Clone)]
pub struct ConnectInfo {
    pub local: Option<SocketAddr>,
    pub remote: SocketAddr,
    activity: Arc<Activity>,
}

/// A listener's connections as the stream tonic serves from; it never ends
/// and never yields an error.
pub struct Incoming {
    accepting: Pin<Box<dyn Future<Output = (Listener, Conn)> + Send>>,
}

// === impl Listener ===

impl Listener {
    /// Wraps a bound socket; `name` labels its logs and metrics.
    pub fn new(name: &'static str, socket: TcpListener, limits: ConnectionLimits) -> Listener {
        let metrics = ListenerMetrics::new(name);
        gauge!(telemetry::LISTENER_MAX_CONNECTIONS, "listener" => name)
            .set(limits.max_connections.get() as f64);
        Listener {
            name,
            socket,
            slots: Arc::new(Semaphore::new(limits.max_connections.get())),
            limits,
            metrics,
            refusals: Throttle::default(),
            errors: Throttle::default(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The next connection under the cap. Never fails: connections over the
    /// cap are closed and accept errors are counted, logged and waited out.
    /// Cancel-safe (a connection is either returned or not yet accepted).
    pub async fn accept(&mut self) -> Conn {
        loop {
            match self.socket.accept().await {
                Ok((stream, remote)) => {
                    if let Some(conn) = self.admit(stream, remote) {
                        return conn;
                    }
                }
                Err(error) => {
                    let pause = self.accept_failed(&error);
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
    }

    /// This listener's connections as a stream, for tonic.
    pub fn incoming(self) -> Incoming {
        Incoming {
            accepting: Box::pin(self.accept_owned()),
        }
    }

    async fn accept_owned(mut self) -> (Listener, Conn) {
        let conn = self.accept().await;
        (self, conn)
    }

    /// `stream` as a [`Conn`] if a permit is free; otherwise it is closed
    /// (dropped) and counted.
    fn admit(&mut self, stream: TcpStream, remote: SocketAddr) -> Option<Conn> {
        let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
            self.metrics.refused.increment(1);
            if let Some(suppressed) = self.refusals.allow(Instant::now()) {
                tracing::warn!(
                    listener = self.name,
                    max_connections = self.limits.max_connections.get(),
                    not_logged = suppressed,
                    "connection limit reached; closing new connections"
                );
            }
            return None;
        };
        configure(&stream);
        let local = stream.local_addr().ok();
        Some(Conn::new(
            stream,
            local,
            remote,
            Slot::new(permit, self.metrics.open.clone()),
            &self.limits,
            self.metrics.clone(),
        ))
    }

    /// Counts and (at most once per [`LOG_EVERY`]) logs an accept error;
    /// returns how long to wait before accepting again.
    fn accept_failed(&mut self, error: &io::Error) -> Duration {
        let kind = AcceptError::of(error);
        counter!(telemetry::LISTENER_ACCEPT_ERRORS, "listener" => self.name, "kind" => kind.label())
            .increment(1);
        if kind == AcceptError::Aborted {
            // The peer's problem, not ours; nothing to wait out.
            tracing::debug!(listener = self.name, %error, "connection gone before accept");
            return Duration::ZERO;
        }
        if let Some(suppressed) = self.errors.allow(Instant::now()) {
            match kind {
                AcceptError::FdLimit => tracing::error!(
                    listener = self.name,
                    %error,
                    not_logged = suppressed,
                    "out of file descriptors: cannot accept connections; raise the \
                     open-files limit or lower max_connections"
                ),
                _ => tracing::error!(
                    listener = self.name,
                    %error,
                    not_logged = suppressed,
                    "cannot accept connections; retrying"
                ),
            }
        }
        ACCEPT_PAUSE
    }
}

/// TCP_NODELAY (answers are small and should not wait for more) and
/// keepalive on an accepted socket. Failing to set either is harmless.
fn configure(stream: &TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(%error, "cannot set TCP keepalive");
    }
}

// === impl ListenerMetrics ===

impl ListenerMetrics {
    fn new(listener: &'static str) -> ListenerMetrics {
        let timeouts = |kind: &'static str| counter!(telemetry::LISTENER_TIMEOUTS, "listener" => listener, "kind" => kind);
        // Failed accepts are counted where they happen; these make every
        // kind exist at zero, so an alert on `fd_limit` fires on the first.
        for kind in [
            AcceptError::FdLimit,
            AcceptError::NoMemory,
            AcceptError::Aborted,
            AcceptError::Other,
        ] {
            counter!(telemetry::LISTENER_ACCEPT_ERRORS, "listener" => listener, "kind" => kind.label())
                .increment(0);
        }
        ListenerMetrics {
            open: gauge!(telemetry::LISTENER_CONNECTIONS, "listener" => listener),
            refused: counter!(
                telemetry::LISTENER_REFUSED,
                "listener" => listener,
                "reason" => "connection_limit"
            ),
            handshake_timeouts: timeouts("handshake"),
            idle_timeouts: timeouts("idle"),
        }
    }
}

// === impl AcceptError ===

impl AcceptError {
    /// The kind of `error`, by its errno.
    pub fn of(error: &io::Error) -> AcceptError {
        use rustix::io::Errno;
        match Errno::from_io_error(error) {
            Some(Errno::MFILE | Errno::NFILE) => AcceptError::FdLimit,
            Some(Errno::NOBUFS | Errno::NOMEM) => AcceptError::NoMemory,
            Some(Errno::CONNABORTED | Errno::CONNRESET | Errno::PROTO | Errno::PERM) => {
                AcceptError::Aborted
            }
            _ => AcceptError::Other,
        }
    }

    /// The `kind` label.
    pub fn label(self) -> &'static str {
        match self {
            AcceptError::FdLimit => "fd_limit",
            AcceptError::NoMemory => "no_memory",
            AcceptError::Aborted => "aborted",
            AcceptError::Other => "other",
        }
    }
}

// === impl Throttle ===

impl Throttle {
    /// `Some(events not logged since the last line)` when a line may be
    /// logged at `now`; `None` (and one more suppressed) otherwise.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < LOG_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

// === impl Activity ===

impl Activity {
    fn new() -> Activity {
        Activity {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                started: 0,
                idle_since: Instant::now(),
                waker: None,
            }),
        }
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> Busy {
        let mut state = self.state.lock();
        state.in_flight += 1;
        state.started += 1;
        Busy {
            activity: Arc::clone(self),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.activity.state.lock();
            state.in_flight = state.in_flight.saturating_sub(1);
            if state.in_flight > 0 {
                return;
            }
            state.idle_since = Instant::now();
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

// === impl Expiry ===

impl Expiry {
    fn new(activity: Arc<Activity>, limits: &ConnectionLimits) -> Expiry {
        let now = Instant::now();
        Expiry {
            activity,
            handshake_deadline: Some(now + limits.read_header_timeout),
            idle_timeout: limits.idle_timeout,
            bytes_read: 0,
            timer: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
        }
    }

    /// Notes bytes read from the peer.
    fn read(&mut self, bytes: usize) {
        self.bytes_read = self.bytes_read.saturating_add(bytes);
    }

    /// Ready with the reason once the connection should close; pending
    /// (woken by its timer or by the last request in flight ending)
    /// otherwise.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Expired> {
        loop {
            let (deadline, reason) = {
                let mut state = self.activity.state.lock();
                if state.started > 0 || self.bytes_read >= PREFACE_BYTES {
                    self.handshake_deadline = None;
                }
                if state.in_flight > 0 {
                    // Nothing expires while a request runs; the last one to
                    // end wakes this reader.
                    match &state.waker {
                        Some(waker) if waker.will_wake(cx.waker()) => {}
                        _ => state.waker = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
                let idle = state.idle_since + self.idle_timeout;
                match self.handshake_deadline {
                    Some(handshake) if handshake <= idle => (handshake, Expired::Handshake),
                    _ => (idle, Expired::Idle),
                }
            };
            if Instant::now() >= deadline {
                return Poll::Ready(reason);
            }
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            ready!(self.timer.as_mut().poll(cx));
            // The timer fired: look again, a request may have come and gone.
        }
    }
}

// === impl Expired ===

impl Expired {
    pub fn label(self) -> &'static str {
        match self {
            Expired::Handshake => "handshake",
            Expired::Idle => "idle",
        }
    }
}

// === impl Slot ===

impl Slot {
    fn new(permit: OwnedSemaphorePermit, open: Gauge) -> Slot {
        open.increment(1.0);
        Slot {
            _permit: permit,
            open,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

// === impl Conn ===

impl Conn {
    fn new(
        stream: TcpStream,
        local: Option<SocketAddr>,
        remote: SocketAddr,
        slot: Slot,
        limits: &ConnectionLimits,
        metrics: ListenerMetrics,
    ) -> Conn {
        let activity = Arc::new(Activity::new());
        Conn {
            stream,
            info: ConnectInfo {
                local,
                remote,
                activity: Arc::clone(&activity),
            },
            expiry: Expiry::new(activity, limits),
            expired: None,
            metrics,
            _slot: slot,
        }
    }

    /// The requests in flight on this connection, for whoever serves them.
    pub fn activity(&self) -> Arc<Activity> {
        Arc::clone(&self.info.activity)
    }

    pub fn remote(&self) -> SocketAddr {
        self.info.remote
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.expired.is_some() {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.expiry.read(buf.filled().len() - before);
                Poll::Ready(result)
            }
            Poll::Pending => {
                // Every protocol keeps a read pending while it waits for the
                // peer, so this is where the deadlines are watched.
                let reason = ready!(this.expiry.poll_expired(cx));
                match reason {
                    Expired::Handshake => this.metrics.handshake_timeouts.increment(1),
                    Expired::Idle => this.metrics.idle_timeouts.increment(1),
                }
                tracing::debug!(remote = %this.info.remote, reason = reason.label(), "closing a silent connection");
                this.expired = Some(reason);
                // End-of-file: the protocol closes the connection as if the
                // peer had.
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnectInfo;

    fn connect_info(&self) -> ConnectInfo {
        self.info.clone()
    }
}

// === impl ConnectInfo ===

impl ConnectInfo {
    /// Marks a request in flight on this connection until the guard drops.
    pub fn start(&self) -> Busy {
        self.activity.start()
    }

    /// The addresses as tonic's own type, so that `Request::remote_addr`
    /// keeps working behind a [`Conn`].
    pub fn tcp(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.local,
            remote_addr: Some(self.remote),
        }
    }
}

// === impl Incoming ===

impl tokio_stream::Stream for Incoming {
    type Item = Result<Conn, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let (listener, conn) = ready!(self.accepting.as_mut().poll(cx));
        self.accepting = Box::pin(listener.accept_owned());
        Poll::Ready(Some(Ok(conn)))
    }
}

// === the open-files limit ===

/// Raises the soft open-files limit to the hard one, and warns when the
/// listeners' caps (`caps`, by listener name) and a reserve for everything
/// else do not fit under it.
pub fn raise_open_files_limit(caps: &[(&'static str, usize)]) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (limit.current, limit.maximum) {
        if soft < hard {
            let raised = rustix::process::Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => {
                    tracing::debug!(from = soft, to = hard, "raised the open-files limit");
                    limit.current = Some(hard);
                }
                Err(error) => {
                    tracing::debug!(%error, soft, hard, "cannot raise the open-files limit")
                }
            }
        }
    }
    let Some(soft) = limit.current else {
        return;
    };
    let wanted = caps.iter().map(|(_, cap)| *cap as u64).sum::<u64>() + RESERVED_FDS;
    if wanted > soft {
        let caps = caps
            .iter()
            .map(|(name, cap)| format!("{name} {cap}"))
            .collect::<Vec<_>>()
            .join(", ");
        tracing::warn!(
            open_files_limit = soft,
            needed = wanted,
            %caps,
            "the listeners' max_connections together exceed the open-files limit: \
             under a flood every listener, the admin port included, will fail to \
             accept before its cap is reached; raise the limit (ulimit -n, \
             LimitNOFILE) or lower max_connections"
        );
    }
}

#[cfg(test)]
mod tests;
