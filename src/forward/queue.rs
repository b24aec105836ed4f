//! One exporter's sending queue: bounded by items and by bytes, pushed to
//! without waiting by the receivers, popped by the senders as batches.
//!
//! With a persistent queue, a pushed request is first *staged*: the disk
//! writer (`forward::disk`) takes the staged requests, writes them to a
//! segment file and fsyncs it, and only then are they *ready* for the
//! senders. Without one, a push is ready at once. The bounds count both.
//!
//! Ready requests wait in one lane per signal, since a batch holds one
//! signal. A sender takes a batch ([`super::batch::take`]) from a lane
//! once it is due: it holds `min_size`, or cannot grow (full, or an
//! OTLP/JSON request is waiting), or its oldest request has waited
//! `flush_timeout`, or the queue is at least half full (so that waiting for
//! a batch never makes the queue drop requests), or the queue is closing.
//! Of several due lanes, the one with the oldest request goes first.
//!
//! Invariant: the lock is held only to move requests between the deques and
//! update the counts, never across I/O or an `.await`.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use metrics::Gauge;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::batch::{self, Batch, Limits};
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
    /// When it was queued (read back from disk: when it was read), for
    /// `flush_timeout`.
    pub queued: Instant,
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
    /// When a lane is due and how much one batch takes.
    limits: Limits,
    /// `triage_exporter_queue_size` of this exporter (items).
    size_gauge: Gauge,
    /// `triage_exporter_queue_bytes` of this exporter.
    bytes_gauge: Gauge,
}

#[derive(Default)]
struct State {
    staged: VecDeque<Item>,
    /// Ready requests by signal (traces, metrics, logs), oldest first.
    lanes: [Lane; 3],
    /// Items and bytes staged and ready.
    items: u64,
    bytes: u64,
    /// No more pushes; senders end once it is empty.
    closed: bool,
}

/// The ready requests of one signal, with their totals, so that whether a
/// batch is due is known without walking them.
#[derive(Default)]
struct Lane {
    requests: VecDeque<Item>,
    items: u64,
    bytes: u64,
    /// OTLP/JSON requests in it (never merged).
    json: usize,
}

impl Queue {
    pub fn new(
        capacity_items: u64,
        capacity_bytes: u64,
        persistent: bool,
        limits: Limits,
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
            limits,
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
                state.push_ready(item);
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
                state.push_ready(item);
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
        {
            let mut state = self.state.lock();
            for item in items {
                state.push_ready(item);
            }
        }
        // A woken sender wakes the next while more are ready (`pop`).
        self.ready.notify_one();
    }

    /// The next batch, once one is due (module documentation); `None` once
    /// the queue is closed and empty.
    pub async fn pop(&self) -> Option<Batch> {
        loop {
            // Registered before the check, so a push between the check and
            // the wait is not missed.
            let notified = self.ready.notified();
            let flush_at = {
                let mut state = self.state.lock();
                match self.due(&state, Instant::now()) {
                    Due::Now(lane) => {
                        let taken = state.take(lane, &self.limits);
                        self.report(&state);
                        // Another sender may have more to take, now or later.
                        if state.lanes.iter().any(|lane| !lane.requests.is_empty()) {
                            self.ready.notify_one();
                        }
                        if taken.is_some() {
                            return taken;
                        }
                        continue;
                    }
                    Due::At(flush_at) => Some(flush_at),
                    Due::Nothing if state.closed && state.staged.is_empty() => return None,
                    Due::Nothing => None,
                }
            };
            match flush_at {
                Some(flush_at) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(flush_at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Which lane has a batch due at `now`, or when the first will be.
    fn due(&self, state: &State, now: Instant) -> Due {
        // Past half full, waiting for bigger batches could make the queue
        // drop requests: send what there is.
        let pressed = state.items.saturating_mul(2) >= self.capacity_items
            || state.bytes.saturating_mul(2) >= self.capacity_bytes;
        let mut due: Option<(usize, Instant)> = None;
        let mut first_flush: Option<Instant> = None;
        for (index, lane) in state.lanes.iter().enumerate() {
            let Some(oldest) = lane.requests.front().map(|item| item.queued) else {
                continue;
            };
            let flush_at = oldest + self.limits.flush_timeout;
            if state.closed || pressed || flush_at <= now || lane.is_full(&self.limits) {
                if due.is_none_or(|(_, other)| oldest < other) {
                    due = Some((index, oldest));
                }
            } else {
                first_flush = Some(first_flush.map_or(flush_at, |other| other.min(flush_at)));
            }
        }
        match (due, first_flush) {
            (Some((lane, _)), _) => Due::Now(lane),
            (None, Some(flush_at)) => Due::At(flush_at),
            (None, None) => Due::Nothing,
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
        for lane in &mut state.lanes {
            items.extend(lane.requests.drain(..));
            *lane = Lane::default();
        }
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

/// Whether a batch is due.
enum Due {
    /// From this lane.
    Now(usize),
    /// Not before this time, unless something is pushed.
    At(Instant),
    /// Nothing is ready.
    Nothing,
}

// === impl State ===

impl State {
    /// Appends a ready request to its signal's lane.
    fn push_ready(&mut self, item: Item) {
        let lane = &mut self.lanes[lane_of(item.signal)];
        lane.items += item.items;
        lane.bytes += item.body.len() as u64;
        lane.json += usize::from(item.format == BodyFormat::Json);
        lane.requests.push_back(item);
    }

    /// Takes the next batch of `lane` out of the queue and its counts.
    fn take(&mut self, lane: usize, limits: &Limits) -> Option<Batch> {
        let lane = &mut self.lanes[lane];
        let batch = batch::take(&mut lane.requests, limits)?;
        for item in &batch.requests {
            let bytes = item.body.len() as u64;
            lane.items -= item.items;
            lane.bytes -= bytes;
            lane.json -= usize::from(item.format == BodyFormat::Json);
            self.items -= item.items;
            self.bytes -= bytes;
        }
        Some(batch)
    }
}

// === impl Lane ===

impl Lane {
    /// Whether its next batch cannot grow any more: it reaches the minimum
    /// or the maximum, or an OTLP/JSON request stops it.
    fn is_full(&self, limits: &Limits) -> bool {
        self.json > 0
            || limits.reached(self.items, self.bytes)
            || self.items > limits.max_items
            || self.bytes > limits.max_bytes
    }
}

fn lane_of(signal: Signal) -> usize {
    match signal {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

#[cfg(test)]
mod tests;
