//! Where export requests are decoded and recorded: on tokio's blocking
//! threads, a bounded number at a time.
//!
//! Decoding a large request takes tens of milliseconds of CPU, and the sink
//! records synchronously. On an async worker that would stall every other
//! connection the worker serves (`/healthz` stalled 14 s behind two large
//! requests, issue #14). The pool moves that work to `spawn_blocking`, and
//! its semaphore lets one request per core decode at a time: the others
//! wait without holding a thread, and the memory decoded requests take at
//! once is bounded by permits × `Limits::max_decoded_bytes`.
//!
//! The wait is bounded too (`receiver::admission`): a request is counted
//! from its admission, before its body is read, until it gets a worker. A
//! request that finds `max_requests` others admitted and not yet decoding,
//! or whose body would take the bytes they hold past `max_bytes`, or that
//! waits longer than `max_wait`, is refused with a retryable [`Busy`] and
//! never decoded.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use metrics::gauge;
use tokio::sync::{Semaphore, TryAcquireError};

use super::limits::Limits;
use crate::receiver::admission::{
    Busy, MemoryLimiter, QueueLimits, DECODE_QUEUE_BYTES, DECODE_QUEUE_REQUESTS,
};

/// Why the work of a request was not done.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Refused for now, before decoding (admission control): retryable.
    #[error(transparent)]
    Busy(Busy),
    /// The work ended without an answer: it panicked (a sink must never
    /// panic; this keeps one that does from taking the connection down).
    #[error("decoding the request failed unexpectedly: {0}")]
    Failed(String),
}

/// Runs request decoding off the async workers, a bounded number at once,
/// with a bounded queue in front (see `receiver::admission`). Cloning
/// shares the permits, the queue and the memory limiter.
#[derive(Debug, Clone)]
pub struct DecodePool {
    /// One permit per request being decoded and recorded; a request waits
    /// for one before its work is handed to a blocking thread.
    permits: Arc<Semaphore>,
    /// The requests waiting for a permit, and their bounds.
    queue: Arc<Queue>,
    /// Refuses every new request while memory is over the soft limit.
    memory: Arc<MemoryLimiter>,
}

/// The account of the requests waiting for a permit.
#[derive(Debug)]
struct Queue {
    limits: QueueLimits,
    /// Requests waiting now.
    requests: AtomicUsize,
    /// Body bytes of the requests waiting now.
    bytes: AtomicUsize,
}

/// A request's place in the queue, from its admission (before its body is
/// read) until it gets a decoding permit, is refused or is dropped; leaving
/// gives back its count and bytes. Handed out by [`DecodePool::admit`].
#[derive(Debug)]
pub struct Ticket {
    queue: Arc<Queue>,
    bytes: usize,
}

impl DecodePool {
    /// A pool that decodes at most `size` requests at once, with the
    /// default queue bounds and no memory limit.
    pub fn new(size: NonZeroUsize) -> Self {
        Self::with_admission(size, QueueLimits::default(), MemoryLimiter::off())
    }

    /// A pool of `size` workers with these queue bounds and memory limiter.
    pub fn with_admission(
        size: NonZeroUsize,
        queue: QueueLimits,
        memory: Arc<MemoryLimiter>,
    ) -> Self {
        DecodePool {
            permits: Arc::new(Semaphore::new(size.get())),
            queue: Arc::new(Queue {
                limits: queue,
                requests: AtomicUsize::new(0),
                bytes: AtomicUsize::new(0),
            }),
            memory,
        }
    }

    /// A new pool with one permit per core the process may use.
    pub fn per_core() -> Self {
        Self::new(cores())
    }

    /// The memory limiter this pool's requests are held to.
    pub fn memory(&self) -> &Arc<MemoryLimiter> {
        &self.memory
    }

    /// Admits a new request before its body is read, or says why not:
    /// memory is over the soft limit, or `max_requests` requests are
    /// already admitted and not yet decoding (reading their bodies or
    /// waiting for a worker). A refused request costs no more than its
    /// headers; an admitted one keeps its place (the [`Ticket`]) until
    /// [`DecodePool::run`] gets it a worker.
    pub fn admit(&self) -> Result<Ticket, Busy> {
        self.memory.check()?;
        self.queue.enter()
    }

    /// Runs `work` on a blocking thread once a permit is free. `bytes` is
    /// the size of the body the request holds while it waits. A request
    /// whose body takes the queue past `max_bytes`, that waits longer than
    /// `max_wait`, or that finds memory over the soft limit (its body
    /// arrived while memory rose; decoding would add to it) is refused with
    /// [`PoolError::Busy`] and `work` is not run.
    pub async fn run<T, F>(&self, mut ticket: Ticket, bytes: usize, work: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.memory.check().map_err(PoolError::Busy)?;
        ticket.hold(bytes).map_err(PoolError::Busy)?;
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => {
                let max_wait = self.queue.limits.max_wait;
                let waiting = Arc::clone(&self.permits).acquire_owned();
                match tokio::time::timeout(max_wait, waiting).await {
                    Ok(Ok(permit)) => permit,
                    // The semaphore is never closed.
                    Ok(Err(error)) => return Err(PoolError::Failed(error.to_string())),
                    Err(_) => return Err(PoolError::Busy(Busy::Waited(max_wait))),
                }
            }
            Err(TryAcquireError::Closed) => {
                return Err(PoolError::Failed("the decode pool is closed".into()))
            }
        };
        drop(ticket);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|error| PoolError::Failed(error.to_string()))
    }

    /// [`DecodePool::admit`] then [`DecodePool::run`], for callers that
    /// hold the body already.
    pub async fn admit_and_run<T, F>(&self, bytes: usize, work: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let ticket = self.admit().map_err(PoolError::Busy)?;
        self.run(ticket, bytes, work).await
    }
}

/// The cores the process may use (at least one).
fn cores() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

impl Queue {
    /// Takes a place for a new request, or says why there is none.
    fn enter(self: &Arc<Self>) -> Result<Ticket, Busy> {
        let waiting = self.requests.fetch_add(1, Ordering::Relaxed);
        if waiting >= self.limits.max_requests {
            self.requests.fetch_sub(1, Ordering::Relaxed);
            return Err(Busy::QueueFull(waiting));
        }
        gauge!(DECODE_QUEUE_REQUESTS).increment(1.0);
        Ok(Ticket {
            queue: Arc::clone(self),
            bytes: 0,
        })
    }
}

impl Ticket {
    /// Adds the request's body, `bytes`, to the queue's account, unless it
    /// would take it past `max_bytes`; one request may always wait alone,
    /// whatever its size.
    fn hold(&mut self, bytes: usize) -> Result<(), Busy> {
        let queue = &self.queue;
        let held = queue.bytes.fetch_add(bytes, Ordering::Relaxed);
        if held > 0 && held.saturating_add(bytes) > queue.limits.max_bytes {
            queue.bytes.fetch_sub(bytes, Ordering::Relaxed);
            return Err(Busy::QueueBytes(held));
        }
        self.bytes += bytes;
        gauge!(DECODE_QUEUE_BYTES).increment(bytes as f64);
        Ok(())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.queue.requests.fetch_sub(1, Ordering::Relaxed);
        self.queue.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
        gauge!(DECODE_QUEUE_REQUESTS).decrement(1.0);
        gauge!(DECODE_QUEUE_BYTES).decrement(self.bytes as f64);
    }
}

impl Default for DecodePool {
    /// The process's shared pool, one permit per core: receivers built with
    /// the defaults share it, so that decoding over gRPC and HTTP together
    /// is bounded, not each on its own.
    fn default() -> Self {
        static SHARED: OnceLock<DecodePool> = OnceLock::new();
        SHARED.get_or_init(DecodePool::per_core).clone()
    }
}

/// How the receivers decode requests: the limits each request is held to
/// and the pool decoding runs on. The default is the default limits and the
/// process's shared pool, so the gRPC and the HTTP receiver are bounded
/// together.
#[derive(Debug, Clone, Default)]
pub struct Decoding {
    pub limits: Limits,
    pub pool: DecodePool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_and_a_panic_is_an_error() {
        let pool = DecodePool::new(NonZeroUsize::MIN);
        assert_eq!(pool.admit_and_run(0, || 2 + 2).await.unwrap(), 4);
        let error = pool
            .admit_and_run(0, || -> u32 { panic!("sink bug") })
            .await
            .unwrap_err();
        assert!(error.to_string().contains("panicked"), "{error}");
        // The permit of the panicked work came back.
        assert_eq!(pool.admit_and_run(0, || 1).await.unwrap(), 1);
    }

    /// A pool of one worker held by a task until `release` is sent.
    async fn held_pool(queue: QueueLimits) -> (DecodePool, std::sync::mpsc::Sender<()>) {
        let pool = DecodePool::with_admission(NonZeroUsize::MIN, queue, MemoryLimiter::off());
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let held = pool.clone();
        tokio::spawn(async move {
            held.admit_and_run(0, move || {
                let _ = started.send(());
                let _ = wait.recv();
            })
            .await
        });
        running.await.unwrap();
        (pool, release)
    }

    fn busy<T: std::fmt::Debug>(result: Result<T, PoolError>) -> Busy {
        match result {
            Err(PoolError::Busy(busy)) => busy,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_queue_is_bounded_by_count_and_bytes() {
        let queue = QueueLimits {
            max_requests: 2,
            max_bytes: 100,
            max_wait: std::time::Duration::from_secs(60),
        };
        let (pool, release) = held_pool(queue).await;
        assert!(pool.admit().is_ok());
        let first = tokio::spawn({
            let pool = pool.clone();
            async move { pool.admit_and_run(60, || 1).await }
        });
        while pool.queue.requests.load(Ordering::Relaxed) < 1 {
            tokio::task::yield_now().await;
        }
        // 60 + 50 bytes would cross the bound of 100.
        assert_eq!(
            busy(pool.admit_and_run(50, || 2).await),
            Busy::QueueBytes(60)
        );
        let second = tokio::spawn({
            let pool = pool.clone();
            async move { pool.admit_and_run(30, || 3).await }
        });
        while pool.queue.requests.load(Ordering::Relaxed) < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(busy(pool.admit_and_run(0, || 4).await), Busy::QueueFull(2));
        assert_eq!(pool.admit().unwrap_err(), Busy::QueueFull(2));
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(second.await.unwrap().unwrap(), 3);
        // Everything given back.
        assert_eq!(pool.queue.requests.load(Ordering::Relaxed), 0);
        assert_eq!(pool.queue.bytes.load(Ordering::Relaxed), 0);
        assert_eq!(pool.admit_and_run(10, || 5).await.unwrap(), 5);
    }

    #[tokio::test]
    async fn one_request_larger_than_the_byte_bound_may_wait_alone() {
        let queue = QueueLimits {
            max_bytes: 100,
            ..QueueLimits::default()
        };
        let (pool, release) = held_pool(queue).await;
        let large = tokio::spawn({
            let pool = pool.clone();
            async move { pool.admit_and_run(150, || 1).await }
        });
        while pool.queue.requests.load(Ordering::Relaxed) < 1 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            busy(pool.admit_and_run(0, || 2).await),
            Busy::QueueBytes(150)
        );
        release.send(()).unwrap();
        assert_eq!(large.await.unwrap().unwrap(), 1);
    }

    // Real time: paused time does not advance while blocking work runs.
    #[tokio::test]
    async fn a_request_that_waits_too_long_is_refused_and_not_run() {
        let queue = QueueLimits {
            max_wait: std::time::Duration::from_millis(100),
            ..QueueLimits::default()
        };
        let (pool, release) = held_pool(queue).await;
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let refused = pool
            .admit_and_run(10, move || flag.store(true, Ordering::SeqCst))
            .await;
        assert_eq!(
            busy(refused),
            Busy::Waited(std::time::Duration::from_millis(100))
        );
        assert!(!ran.load(Ordering::SeqCst));
        assert_eq!(pool.queue.requests.load(Ordering::Relaxed), 0);
        release.send(()).unwrap();
    }

    #[tokio::test]
    async fn memory_over_the_limit_refuses_before_anything_is_read() {
        let pool = DecodePool::per_core();
        let limiter = MemoryLimiter::off();
        let pool = DecodePool::with_admission(cores(), pool.queue.limits, Arc::clone(&limiter));
        assert!(pool.admit().is_ok());
        limiter.force(Some(true));
        assert_eq!(pool.admit().unwrap_err().reason(), "memory_limit");
        limiter.force(None);
        assert!(pool.admit().is_ok());
    }
}
