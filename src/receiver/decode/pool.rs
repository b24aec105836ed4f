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

use std::num::NonZeroUsize;
use std::sync::{Arc, OnceLock};

use tokio::sync::Semaphore;

use super::limits::Limits;

/// The work of a request ended without an answer: it panicked (a sink must
/// never panic; this keeps one that does from taking the connection down).
#[derive(Debug, thiserror::Error)]
#[error("decoding the request failed unexpectedly: {0}")]
pub struct PoolError(String);

/// Runs request decoding off the async workers, a bounded number at once.
/// Cloning shares the permits.
#[derive(Debug, Clone)]
pub struct DecodePool {
    /// One permit per request being decoded and recorded; a request waits
    /// for one before its work is handed to a blocking thread.
    permits: Arc<Semaphore>,
}

impl DecodePool {
    /// A pool that decodes at most `size` requests at once.
    pub fn new(size: NonZeroUsize) -> Self {
        DecodePool {
            permits: Arc::new(Semaphore::new(size.get())),
        }
    }

    /// A new pool with one permit per core the process may use.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN))
    }

    /// Runs `work` on a blocking thread once a permit is free.
    pub async fn run<T, F>(&self, work: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // The semaphore is never closed, so acquiring only waits.
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|error| PoolError(error.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|error| PoolError(error.to_string()))
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
        assert_eq!(pool.run(|| 2 + 2).await.unwrap(), 4);
        let error = pool
            .run(|| -> u32 { panic!("sink bug") })
            .await
            .unwrap_err();
        assert!(error.to_string().contains("panicked"), "{error}");
        // The permit of the panicked work came back.
        assert_eq!(pool.run(|| 1).await.unwrap(), 1);
    }
}
