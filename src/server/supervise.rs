//! Long-running tasks that come back after a panic.
//!
//! No input may stop a task for good. A task that panics is logged with its
//! panic message, counted in `triage_task_restarts_total{task}`, reported
//! by `/readyz` as down until it runs again, and started again after a short
//! backoff. Detection keeps its state across a panic (see
//! [`catch_panic`]); the other tasks keep theirs in the history and the
//! broadcast channels they subscribe to again.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use crate::admin::Health;
use crate::telemetry;

/// First wait before a restart; doubled after each panic in a row, up to
/// [`MAX_BACKOFF`], so a task that panics on every start does not spin.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A task that ran this long before panicking starts over at the first
/// backoff.
const STABLE_FOR: Duration = Duration::from_secs(60);

/// The text of a panic payload (`panic!` with a literal or a format).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

/// Runs `work` on `state`, catching a panic; `state` is handed back either
/// way, so the caller carries on from it. A panic is reported as `task`
/// (logged with `context`, counted, `/readyz` down); a run that returns
/// reports the task up again.
pub fn catch_panic<S, T>(
    task: &'static str,
    health: &Health,
    context: impl FnOnce() -> String,
    state: &mut S,
    work: impl FnOnce(&mut S) -> T,
) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(|| work(state))) {
        Ok(value) => {
            health.task_up(task);
            Some(value)
        }
        Err(payload) => {
            report_panic(task, health, &panic_message(payload.as_ref()), &context());
            None
        }
    }
}

fn report_panic(task: &'static str, health: &Health, message: &str, context: &str) {
    tracing::error!(
        task,
        panic = message,
        context,
        "task panicked; it carries on from its state"
    );
    metrics::counter!(telemetry::TASK_RESTARTS, "task" => task).increment(1);
    health.task_down(task, message);
}

/// Runs the future `start` makes, and makes and runs a new one each time it
/// panics (after a backoff). Returns when a run ends without panicking, or
/// when `start` has nothing more to run (`None`: what it needs is gone, as
/// when the channel it reads from has closed).
pub async fn supervise<F, Fut>(task: &'static str, health: Arc<Health>, mut start: F)
where
    F: FnMut() -> Option<Fut>,
    Fut: Future<Output = ()> + Send + 'static,
{
    // At zero from the start, so that an alert on its increase fires on
    // the first panic.
    metrics::counter!(telemetry::TASK_RESTARTS, "task" => task).increment(0);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(run) = start() else {
            health.task_up(task);
            return;
        };
        health.task_up(task);
        let started = tokio::time::Instant::now();
        match tokio::spawn(run).await {
            Ok(()) => return,
            Err(error) if error.is_panic() => {
                let message = panic_message(error.into_panic().as_ref());
                report_panic(task, &health, &message, "restarting");
                if started.elapsed() >= STABLE_FOR {
                    backoff = FIRST_BACKOFF;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            // Cancelled: the runtime is shutting down.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests;
