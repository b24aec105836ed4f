//! Tests of the queue's bounds, its lanes and when a batch is due.

use super::*;
use std::time::Duration;

fn item(items: u64, bytes: usize) -> Item {
    signal_item(Signal::Traces, items, bytes)
}

fn signal_item(signal: Signal, items: u64, bytes: usize) -> Item {
    Item {
        signal,
        format: BodyFormat::Protobuf,
        body: Bytes::from(vec![0; bytes]),
        items,
        queued: Instant::now(),
        segment: None,
    }
}

fn queue(items: u64, bytes: u64, persistent: bool) -> Queue {
    Queue::new(
        items,
        bytes,
        persistent,
        Limits::NONE,
        Gauge::noop(),
        Gauge::noop(),
    )
}

/// A queue of `min_items`-item batches, flushed after 200 ms.
fn batching(min_items: u64) -> Arc<Queue> {
    let limits = Limits {
        flush_timeout: Duration::from_millis(200),
        min_items,
        min_bytes: u64::MAX,
        max_items: u64::MAX,
        max_bytes: 1 << 20,
    };
    Arc::new(Queue::new(
        1000,
        1 << 30,
        false,
        limits,
        Gauge::noop(),
        Gauge::noop(),
    ))
}

/// What `pop` gives within `wait` (paused time: advanced, not slept).
async fn pop_within(queue: &Queue, wait: Duration) -> Option<Batch> {
    tokio::time::timeout(wait, queue.pop()).await.ok().flatten()
}

#[tokio::test]
async fn bounds_by_items_and_bytes_and_frees_on_pop() {
    let queue = queue(10, 100, false);
    assert!(queue.try_push(item(6, 10)).is_ok());
    // 6 + 5 items > 10.
    assert!(queue.try_push(item(5, 10)).is_err());
    // 10 + 91 bytes > 100.
    assert!(queue.try_push(item(1, 91)).is_err());
    assert!(queue.try_push(item(4, 90)).is_ok());
    assert_eq!(queue.len(), (10, 100));
    assert_eq!(queue.pop().await.map(|batch| batch.items()), Some(6));
    assert_eq!(queue.len(), (4, 90));
    assert!(queue.try_push(item(5, 10)).is_ok());
    queue.close();
    assert!(queue.try_push(item(1, 1)).is_err(), "closed");
    assert!(queue.pop().await.is_some());
    assert!(queue.pop().await.is_some());
    assert!(queue.pop().await.is_none(), "closed and empty");
}

#[tokio::test]
async fn persistent_pushes_wait_for_the_writer() {
    let queue = Arc::new(queue(10, 100, true));
    assert!(queue.try_push(item(1, 1)).is_ok());
    let popper = tokio::spawn({
        let queue = Arc::clone(&queue);
        async move { queue.pop().await.map(|batch| batch.items()) }
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(!popper.is_finished(), "staged requests are not ready");
    queue.staged_or_closed().await;
    let staged = queue.take_staged();
    assert_eq!(staged.len(), 1);
    queue.make_ready(staged);
    let popped = tokio::time::timeout(std::time::Duration::from_secs(5), popper)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(popped, Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_lone_request_is_sent_at_the_flush_timeout() {
    let queue = batching(100);
    queue.try_push(item(1, 10)).unwrap();
    // Paused time: the timeout below advances the clock to 199 ms.
    assert!(pop_within(&queue, Duration::from_millis(199))
        .await
        .is_none());
    let started = Instant::now();
    let batch = pop_within(&queue, Duration::from_secs(5)).await.unwrap();
    assert_eq!(batch.items(), 1);
    // Due 200 ms after it was queued, so within 1 ms of now.
    assert!(started.elapsed() <= Duration::from_millis(1));
    assert_eq!(queue.len(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn requests_are_merged_until_the_minimum() {
    let queue = batching(10);
    let popper = tokio::spawn({
        let queue = Arc::clone(&queue);
        async move { queue.pop().await }
    });
    for _ in 0..4 {
        queue.try_push(item(3, 10)).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // 3 + 3 + 3 + 3 = 12 reached the minimum of 10 at the fourth push,
    // well before the 200 ms flush.
    let batch = popper.await.unwrap().unwrap();
    assert_eq!((batch.requests.len(), batch.items()), (4, 12));
    assert!(Instant::now() - batch.requests[0].queued < Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn signals_are_batched_apart_oldest_first() {
    let queue = batching(1000);
    queue.try_push(signal_item(Signal::Logs, 1, 10)).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    queue.try_push(signal_item(Signal::Traces, 2, 10)).unwrap();
    queue.try_push(signal_item(Signal::Logs, 3, 10)).unwrap();
    queue.try_push(signal_item(Signal::Traces, 4, 10)).unwrap();
    let first = queue.pop().await.unwrap();
    assert_eq!((first.signal, first.items()), (Signal::Logs, 4));
    let second = queue.pop().await.unwrap();
    assert_eq!((second.signal, second.items()), (Signal::Traces, 6));
}

#[tokio::test(start_paused = true)]
async fn closing_and_a_half_full_queue_send_at_once() {
    let queue = batching(1000);
    queue.try_push(item(10, 10)).unwrap();
    assert!(pop_within(&queue, Duration::from_millis(100))
        .await
        .is_none());
    // Half of the 1,000-item capacity: sent without waiting.
    queue.try_push(item(490, 10)).unwrap();
    let batch = pop_within(&queue, Duration::from_millis(1)).await.unwrap();
    assert_eq!(batch.items(), 500);
    queue.try_push(item(1, 10)).unwrap();
    queue.close();
    let batch = pop_within(&queue, Duration::from_millis(1)).await.unwrap();
    assert_eq!(batch.items(), 1);
    assert!(queue.pop().await.is_none());
}
