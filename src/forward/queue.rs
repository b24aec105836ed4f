//! One exporter's sending queue: bounded by items and by bytes, pushed to
//! without waiting by the receivers, popped by the senders.
//!
//! With a persistent queue, a pushed request is first *staged*: the disk
//! writer (`forward::disk`) takes the staged requests, writes them to a
//! segment file and fsyncs it, and only then are they *ready* for the
//! senders. Without one, a push is ready at once. The bounds count both.
//!
//! Invariant: the lock is held only to move requests between the deques and
//! update the counts, never across I/O or an `.await`.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use metrics::Gauge;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::disk::Segment;
use crate::receiver::{BodyFormat, Signal};

/// One accepted export request waiting to be forwarded.
#[derive(Debug)]
pub struct Item {
    pub signal: Signal,
    pub format: BodyFormat,
    /// The decompressed body as received.
    pub body: Bytes,
    /// Items (spans, data points, log records) in it.
    pub items: u64,
    /// The segment file holding it, when the queue is persistent and it has
    /// been written; it is removed from there once the upstream accepted it
    /// (or refused it for good).
    pub segment: Option<Arc<Segment>>,
}

/// The queue (see the module documentation).
pub struct Queue {
    state: Mutex<State>,
    /// Wakes a sender when a request becomes ready or the queue closes.
    ready: Notify,
    /// Wakes the disk writer when a request is staged or the queue closes.
    staged: Notify,
    /// Whether pushes are staged for the disk writer first.
    persistent: bool,
    capacity_items: u64,
    capacity_bytes: u64,
    /// `triage_exporter_queue_size` of this exporter (items).
    size_gauge: Gauge,
    /// `triage_exporter_queue_bytes` of this exporter.
    bytes_gauge: Gauge,
}

#[derive(Default)]
struct State {
    staged: VecDeque<Item>,
    ready: VecDeque<Item>,
    /// Items and bytes in both deques.
    items: u64,
    bytes: u64,
    /// No more pushes; senders end once it is empty.
    closed: bool,
}

impl Queue {
    pub fn new(
        capacity_items: u64,
        capacity_bytes: u64,
        persistent: bool,
        size_gauge: Gauge,
        bytes_gauge: Gauge,
    ) -> Queue {
        // At 0 from the start, like the counters.
        size_gauge.set(0.0);
        bytes_gauge.set(0.0);
        Queue {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            staged: Notify::new(),
            persistent,
            capacity_items,
            capacity_bytes,
            size_gauge,
            bytes_gauge,
        }
    }

    /// Adds `item` if it fits (and the queue is open); else gives it back.
    /// Never waits.
    pub fn try_push(&self, item: Item) -> Result<(), Item> {
        let bytes = item.body.len() as u64;
        {
            let mut state = self.state.lock();
            if state.closed
                || state.items.saturating_add(item.items) > self.capacity_items
                || state.bytes.saturating_add(bytes) > self.capacity_bytes
            {
                return Err(item);
            }
            state.items += item.items;
            state.bytes += bytes;
            self.report(&state);
            if self.persistent {
                state.staged.push_back(item);
            } else {
                state.ready.push_back(item);
            }
        }
        if self.persistent {
            self.staged.notify_one();
        } else {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Requests read back from disk at start-up: ready at once, counted,
    /// and let in even past the bounds (the writer loads a segment only
    /// while the queue is under half full, so by at most one segment).
    pub fn restore(&self, items: Vec<Item>) {
        if items.is_empty() {
            return;
        }
        {
            let mut state = self.state.lock();
            for item in items {
                state.items += item.items;
                state.bytes += item.body.len() as u64;
                state.ready.push_back(item);
            }
            self.report(&state);
        }
        // A woken sender wakes the next while more are ready (`pop`).
        self.ready.notify_one();
    }

    /// Whether the queue is under half full, by both bounds: room to read
    /// another segment back from disk.
    pub fn has_room_to_restore(&self) -> bool {
        let state = self.state.lock();
        state.items < self.capacity_items / 2 && state.bytes < self.capacity_bytes / 2
    }

    /// Takes every staged request (for the disk writer).
    pub fn take_staged(&self) -> Vec<Item> {
        self.state.lock().staged.drain(..).collect()
    }

    /// Waits until a request is staged or the queue closes.
    pub async fn staged_or_closed(&self) {
        {
            let state = self.state.lock();
            if !state.staged.is_empty() || state.closed {
                return;
            }
        }
        self.staged.notified().await;
    }

    /// Makes written requests ready for the senders.
    pub fn make_ready(&self, items: Vec<Item>) {
        if items.is_empty() {
            return;
        }
        self.state.lock().ready.extend(items);
        // A woken sender wakes the next while more are ready (`pop`).
        self.ready.notify_one();
    }

    /// The next ready request; `None` once the queue is closed and empty.
    pub async fn pop(&self) -> Option<Item> {
        loop {
            // Registered before the check, so a push between the check and
            // the wait is not missed.
            let notified = self.ready.notified();
            {
                let mut state = self.state.lock();
                if let Some(item) = state.ready.pop_front() {
                    state.items -= item.items;
                    state.bytes -= item.body.len() as u64;
                    self.report(&state);
                    // Another sender may have more to take.
                    if !state.ready.is_empty() {
                        self.ready.notify_one();
                    }
                    return Some(item);
                }
                if state.closed && state.staged.is_empty() {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Refuses further pushes; senders end once what is queued is sent.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.ready.notify_waiters();
        self.staged.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Empties the queue (at the end of a shutdown), returning what was in
    /// it.
    pub fn drain(&self) -> Vec<Item> {
        let mut state = self.state.lock();
        let mut items: Vec<Item> = state.staged.drain(..).collect();
        items.extend(state.ready.drain(..));
        state.items = 0;
        state.bytes = 0;
        self.report(&state);
        items
    }

    /// Items and bytes waiting.
    pub fn len(&self) -> (u64, u64) {
        let state = self.state.lock();
        (state.items, state.bytes)
    }

    fn report(&self, state: &State) {
        self.size_gauge.set(state.items as f64);
        self.bytes_gauge.set(state.bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(items: u64, bytes: usize) -> Item {
        Item {
            signal: Signal::Traces,
            format: BodyFormat::Protobuf,
            body: Bytes::from(vec![0; bytes]),
            items,
            segment: None,
        }
    }

    fn queue(items: u64, bytes: u64, persistent: bool) -> Queue {
        Queue::new(items, bytes, persistent, Gauge::noop(), Gauge::noop())
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
        assert_eq!(queue.pop().await.map(|item| item.items), Some(6));
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
            async move { queue.pop().await.map(|item| item.items) }
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
}
