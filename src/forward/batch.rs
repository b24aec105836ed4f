//! Batching (the Collector's `sending_queue.batch`): which queued requests
//! are sent together, and the body of the merged request.
//!
//! A batch holds requests of one signal, in the order they were queued.
//! Protobuf requests are merged by concatenating their bodies: an
//! `Export{Trace,Metrics,Logs}ServiceRequest` has a single field, 1, the
//! repeated `resource_spans` / `resource_metrics` / `resource_logs`, and
//! protobuf decodes the concatenation of two encodings of a message as one
//! message whose repeated fields are concatenated. So the merged body is a
//! valid request holding every resource of every request, in order,
//! without decoding or encoding anything. OTLP/JSON requests are never
//! merged: each is a batch of its own (sent as JSON over HTTP, converted to
//! protobuf for gRPC, as before batching).
//!
//! Invariants:
//!
//! - A batch takes requests from the front of one signal's queue only, so
//!   each signal's order is kept and each request is in exactly one batch.
//! - A batch of several requests stays within `max_size` and, unless
//!   `max_size` counts bytes, within
//!   [`MAX_BATCH_BYTES`](super::config::MAX_BATCH_BYTES). A single request
//!   larger than that is a batch of its own: sent, never split or dropped.
//! - Once a batch reaches `min_size` no more is added: batches are about
//!   `min_size`, as in the Collector, and the rest is left for the next one.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::config::{BatchConfig, Sizer};
use super::queue::Item;
use crate::receiver::{BodyFormat, Signal};

/// When a signal's waiting requests are sent, and how many go together.
/// Zero minimums with zero maximums: batching is off, each request is sent
/// alone as soon as it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest the oldest waiting request waits for others.
    pub flush_timeout: Duration,
    /// A batch is sent once it holds this many items, or this many bytes
    /// (`u64::MAX`: not measured in that unit).
    pub min_items: u64,
    pub min_bytes: u64,
    /// Most items and bytes of a batch of several requests.
    pub max_items: u64,
    pub max_bytes: u64,
}

/// Requests of one signal sent as one export request.
#[derive(Debug)]
pub struct Batch {
    pub signal: Signal,
    /// Protobuf unless the batch is a single OTLP/JSON request.
    pub format: BodyFormat,
    /// The queued requests, oldest first; each leaves the persistent queue
    /// only when the whole batch is done.
    pub requests: Vec<Item>,
}

// === impl Limits ===

impl Limits {
    /// Batching off: every request alone, at once.
    pub const NONE: Limits = Limits {
        flush_timeout: Duration::ZERO,
        min_items: 0,
        min_bytes: 0,
        max_items: 0,
        max_bytes: 0,
    };

    /// The limits of an exporter's `sending_queue.batch` (`None`: off).
    pub fn new(config: Option<&BatchConfig>) -> Limits {
        let Some(config) = config else {
            return Limits::NONE;
        };
        let (min_items, min_bytes) = match config.sizer {
            Sizer::Items => (config.min_size, u64::MAX),
            Sizer::Bytes => (u64::MAX, config.min_size),
        };
        Limits {
            flush_timeout: config.flush_timeout,
            min_items,
            min_bytes,
            max_items: config.max_items(),
            max_bytes: config.max_bytes(),
        }
    }

    /// Whether `items` and `bytes` reach the minimum that sends a batch.
    pub fn reached(&self, items: u64, bytes: u64) -> bool {
        items >= self.min_items || bytes >= self.min_bytes
    }

    /// Whether a batch of `items` and `bytes` may take in a request of
    /// `more_items` and `more_bytes`.
    fn fits(&self, items: u64, bytes: u64, more_items: u64, more_bytes: u64) -> bool {
        items.saturating_add(more_items) <= self.max_items
            && bytes.saturating_add(more_bytes) <= self.max_bytes
    }
}

/// Takes the next batch from the front of `waiting` (requests of one
/// signal, oldest first): the first request, then each next one while it
/// can be merged and fits, until the batch reaches the minimum. `None` when
/// nothing is waiting.
pub fn take(waiting: &mut VecDeque<Item>, limits: &Limits) -> Option<Batch> {
    let first = waiting.pop_front()?;
    let (signal, format) = (first.signal, first.format);
    let mut items = first.items;
    let mut bytes = first.body.len() as u64;
    let mut requests = vec![first];
    if format == BodyFormat::Protobuf {
        while !limits.reached(items, bytes) {
            let Some(next) = waiting.front() else { break };
            let next_bytes = next.body.len() as u64;
            if next.format != BodyFormat::Protobuf
                || !limits.fits(items, bytes, next.items, next_bytes)
            {
                break;
            }
            items += next.items;
            bytes += next_bytes;
            requests.extend(waiting.pop_front());
        }
    }
    Some(Batch {
        signal,
        format,
        requests,
    })
}

/// The body of several protobuf export requests of one signal merged into
/// one: their concatenation (see the module documentation). One body is
/// returned as it is, without a copy.
pub fn merge(bodies: &[Bytes]) -> Bytes {
    match bodies {
        [] => Bytes::new(),
        [one] => one.clone(),
        several => {
            let len = several.iter().map(Bytes::len).sum();
            let mut merged = BytesMut::with_capacity(len);
            for body in several {
                merged.extend_from_slice(body);
            }
            merged.freeze()
        }
    }
}

// === impl Batch ===

impl Batch {
    /// Items (spans, data points, log records) in every request.
    pub fn items(&self) -> u64 {
        self.requests.iter().map(|request| request.items).sum()
    }

    /// Bytes of every request's body.
    pub fn bytes(&self) -> u64 {
        self.requests
            .iter()
            .map(|request| request.body.len() as u64)
            .sum()
    }

    /// Each request's body (shared, not copied).
    pub fn bodies(&self) -> Vec<Bytes> {
        self.requests
            .iter()
            .map(|request| request.body.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests;
