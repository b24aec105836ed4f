use std::collections::VecDeque;

use super::*;

/// Batches a target accepted, each with the time of its request.
type Accepted = Arc<Mutex<Vec<(Duration, Vec<u32>)>>>;

/// A target scripted with the outcome of each request, recording what it
/// was sent and when (in the paused test clock).
#[derive(Clone, Default)]
struct Scripted {
    /// Outcomes of the next requests; once empty every request succeeds.
    script: Arc<Mutex<VecDeque<Result<(), SendError>>>>,
    /// Accepted batches, with the time of the request.
    accepted: Accepted,
    /// Times of every request, accepted or not.
    attempts: Arc<Mutex<Vec<Duration>>>,
    /// Requests never answer (a target that accepts the connection and
    /// hangs).
    hang: bool,
    start: Option<Instant>,
}

impl Sink for Scripted {
    type Key = u32;
    type Item = u32;
    const BATCH: usize = 2;
    const KIND: &'static str = "test";

    async fn send(&self, batch: &[&u32]) -> Result<(), SendError> {
        let at = self
            .start
            .map(|start| Instant::now() - start)
            .unwrap_or_default();
        self.attempts.lock().push(at);
        if self.hang {
            std::future::pending::<()>().await;
        }
        let outcome = self.script.lock().pop_front().unwrap_or(Ok(()));
        if outcome.is_ok() {
            self.accepted
                .lock()
                .push((at, batch.iter().map(|item| **item).collect()));
        }
        outcome
    }
}

fn scripted(outcomes: Vec<Result<(), SendError>>) -> Scripted {
    Scripted {
        script: Arc::new(Mutex::new(outcomes.into())),
        start: Some(Instant::now()),
        ..Scripted::default()
    }
}

fn outbox(capacity: usize) -> Arc<Outbox<u32, u32>> {
    Arc::new(Outbox::new(
        "test",
        "http://test".into(),
        NonZeroUsize::new(capacity).expect("capacity"),
    ))
}

fn down() -> Result<(), SendError> {
    Err(SendError::Retryable("connection refused".into()))
}

/// Lets the delivery loop run until it waits (paused clock: sleeps end only
/// when the test advances time).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let backoff = Backoff {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(5),
    };
    let delays: Vec<u64> = (1..=7)
        .map(|failures| backoff.delay(failures).as_millis() as u64)
        .collect();
    assert_eq!(delays, vec![500, 1000, 2000, 4000, 5000, 5000, 5000]);
    // Far past any doubling the shift would overflow; it must not.
    assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(5));
    assert_eq!(Backoff::default().delay(1), Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn retries_with_backoff_until_the_target_returns() {
    let sink = scripted(vec![down(), down(), down()]);
    let outbox = outbox(10);
    let stop = CancellationToken::new();
    outbox.push([(1, 1), (2, 2)]);
    let task = tokio::spawn(deliver(
        sink.clone(),
        Arc::clone(&outbox),
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        },
        stop.clone(),
        Duration::from_secs(1),
    ));
    // Paused time auto-advances through the backoff sleeps.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let attempts: Vec<u64> = sink.attempts.lock().iter().map(|at| at.as_secs()).collect();
    // Fails at 0, waits 1 s; fails at 1, waits 2 s; fails at 3, waits 4 s; 7 works.
    assert_eq!(attempts, vec![0, 1, 3, 7]);
    assert_eq!(
        *sink.accepted.lock(),
        vec![(Duration::from_secs(7), vec![1, 2])]
    );
    assert_eq!(outbox.len(), 0);
    stop.cancel();
    task.await.expect("delivery loop ends");
}

#[tokio::test(start_paused = true)]
async fn while_down_the_queue_keeps_the_newest_and_sends_them_on_return() {
    let sink = scripted(vec![down(), down()]);
    let outbox = outbox(3);
    let stop = CancellationToken::new();
    let task = tokio::spawn(deliver(
        sink.clone(),
        Arc::clone(&outbox),
        Backoff {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(10),
        },
        stop.clone(),
        Duration::from_secs(1),
    ));
    outbox.push([(1, 1), (2, 2)]);
    settle().await;
    // The first attempt failed; while waiting, five more arrive into a
    // queue of three: the oldest go.
    outbox.push([(3, 3), (4, 4), (5, 5), (6, 6), (7, 7)]);
    assert_eq!(outbox.len(), 3);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let delivered: Vec<u32> = sink
        .accepted
        .lock()
        .iter()
        .flat_map(|(_, batch)| batch.clone())
        .collect();
    assert_eq!(delivered, vec![5, 6, 7]);
    stop.cancel();
    task.await.expect("delivery loop ends");
}

#[tokio::test(start_paused = true)]
async fn a_refused_batch_is_dropped_and_the_rest_still_goes() {
    let sink = scripted(vec![Err(SendError::Rejected("HTTP 400".into()))]);
    let outbox = outbox(10);
    let stop = CancellationToken::new();
    outbox.push([(1, 1), (2, 2), (3, 3)]);
    let task = tokio::spawn(deliver(
        sink.clone(),
        Arc::clone(&outbox),
        Backoff::default(),
        stop.clone(),
        Duration::from_secs(1),
    ));
    settle().await;
    assert_eq!(*sink.attempts.lock(), vec![Duration::ZERO; 2]);
    assert_eq!(*sink.accepted.lock(), vec![(Duration::ZERO, vec![3])]);
    stop.cancel();
    task.await.expect("delivery loop ends");
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_what_is_queued() {
    // Down at first, so the items are still queued when the stop comes.
    let sink = scripted(vec![down()]);
    let outbox = outbox(10);
    let stop = CancellationToken::new();
    let task = tokio::spawn(deliver(
        sink.clone(),
        Arc::clone(&outbox),
        Backoff {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(60),
        },
        stop.clone(),
        Duration::from_secs(2),
    ));
    outbox.push([(1, 1), (2, 2), (3, 3)]);
    settle().await;
    stop.cancel();
    task.await.expect("delivery loop ends");
    let delivered: Vec<u32> = sink
        .accepted
        .lock()
        .iter()
        .flat_map(|(_, batch)| batch.clone())
        .collect();
    assert_eq!(delivered, vec![1, 2, 3]);
    assert_eq!(outbox.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_shutdown_flush_is_bounded_by_its_deadline() {
    let sink = Scripted {
        hang: true,
        start: Some(Instant::now()),
        ..Scripted::default()
    };
    let outbox = outbox(10);
    let stop = CancellationToken::new();
    let task = tokio::spawn(deliver(
        sink.clone(),
        Arc::clone(&outbox),
        Backoff::default(),
        stop.clone(),
        Duration::from_secs(2),
    ));
    outbox.push([(1, 1), (2, 2), (3, 3)]);
    settle().await;
    let stopped = Instant::now();
    stop.cancel();
    task.await.expect("delivery loop ends");
    assert_eq!(Instant::now() - stopped, Duration::from_secs(2));
    // What could not be sent is given up (and counted), not left behind.
    assert_eq!(outbox.len(), 0);
    assert!(sink.accepted.lock().is_empty());
}
