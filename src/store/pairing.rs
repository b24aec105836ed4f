//! The pairing buffer: matches client spans with their server-side children
//! so that a dependency edge is named after the service that really answered.
//!
//! A CLIENT/PRODUCER span and the SERVER/CONSUMER span whose parent it is
//! arrive in either order (the child usually ends, and is exported, first).
//! Whichever comes first waits here under the key (trace id, client span id);
//! the second one completes the pair. Client spans whose child does not come
//! within the timeout are resolved from their own attributes by the caller of
//! [`PairingBuffer::expire`]; children whose client never comes are dropped.
//!
//! The buffer is split into shards by key, each behind its own short mutex,
//! so concurrent requests rarely meet; it is bounded in total, and what does
//! not fit is resolved at once (clients) or forgotten (children) and counted.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::Sample;

const SHARDS: usize = 64;

/// A client span id within its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PairKey {
    pub trace_id: u128,
    pub span_id: u64,
}

impl PairKey {
    fn shard(&self) -> usize {
        // Ids are random, so their low bits spread evenly.
        (self.span_id as usize ^ self.trace_id as usize) % SHARDS
    }
}

/// A client span waiting for its child, or a child waiting for its client.
#[derive(Debug, Clone)]
enum Pending {
    Client {
        caller: Arc<str>,
        sample: Sample,
        fallback: Arc<str>,
        since: u64,
    },
    Child {
        callee: Arc<str>,
        since: u64,
    },
}

impl Pending {
    fn since(&self) -> u64 {
        match self {
            Pending::Client { since, .. } | Pending::Child { since, .. } => *since,
        }
    }
}

/// A client span whose callee is now known.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub caller: Arc<str>,
    pub callee: Arc<str>,
    pub sample: Sample,
}

/// What became of a client span handed to the buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientOutcome {
    /// Its child was already here: record the edge now.
    Paired(Arc<str>),
    /// It waits for its child.
    Waiting,
    /// The buffer is full: resolve it from its attributes now.
    Full,
}

/// Hashes the already-random ids cheaply instead of running SipHash on them.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 ^= value.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_u128(&mut self, value: u128) {
        self.write_u64(value as u64 ^ (value >> 64) as u64);
    }
}

type Shard = HashMap<PairKey, Pending, BuildHasherDefault<IdHasher>>;

#[derive(Debug, Default)]
pub struct PairingCounters {
    /// Edges named from a client span and its server-side child.
    pub paired: AtomicU64,
    /// Client spans resolved from their own attributes after the timeout.
    pub expired_clients: AtomicU64,
    /// Children forgotten because their client never came.
    pub expired_children: AtomicU64,
    /// Spans that did not fit in the buffer.
    pub full: AtomicU64,
}

pub struct PairingBuffer {
    shards: Box<[Mutex<Shard>]>,
    per_shard_capacity: usize,
    timeout_nanos: u64,
    /// Entries across all shards (for the self-metric).
    len: AtomicUsize,
    pub counters: PairingCounters,
}

impl PairingBuffer {
    pub fn new(capacity: usize, timeout: Duration) -> Self {
        PairingBuffer {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard_capacity: capacity.div_ceil(SHARDS).max(1),
            timeout_nanos: timeout.as_nanos() as u64,
            len: AtomicUsize::new(0),
            counters: PairingCounters::default(),
        }
    }

    /// Spans waiting in the buffer.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A client span: pairs it with a waiting child or leaves it waiting.
    /// `fallback` is the callee to use if no child comes.
    pub fn client(
        &self,
        key: PairKey,
        caller: &Arc<str>,
        sample: Sample,
        fallback: Arc<str>,
        now: u64,
    ) -> ClientOutcome {
        let mut shard = self.shards[key.shard()].lock();
        match shard.remove(&key) {
            Some(Pending::Child { callee, .. }) => {
                self.len.fetch_sub(1, Ordering::Relaxed);
                self.counters.paired.fetch_add(1, Ordering::Relaxed);
                ClientOutcome::Paired(callee)
            }
            previous => {
                if previous.is_some() {
                    // A duplicate client span (an exporter retry): keep the newest.
                    self.len.fetch_sub(1, Ordering::Relaxed);
                } else if shard.len() >= self.per_shard_capacity {
                    self.counters.full.fetch_add(1, Ordering::Relaxed);
                    return ClientOutcome::Full;
                }
                shard.insert(
                    key,
                    Pending::Client {
                        caller: Arc::clone(caller),
                        sample,
                        fallback,
                        since: now,
                    },
                );
                self.len.fetch_add(1, Ordering::Relaxed);
                ClientOutcome::Waiting
            }
        }
    }

    /// A server-side child of the client span `key`: returns the edge if its
    /// client was waiting, else leaves the child waiting for it.
    pub fn child(&self, key: PairKey, callee: &Arc<str>, now: u64) -> Option<Resolved> {
        let mut shard = self.shards[key.shard()].lock();
        match shard.remove(&key) {
            Some(Pending::Client { caller, sample, .. }) => {
                self.len.fetch_sub(1, Ordering::Relaxed);
                self.counters.paired.fetch_add(1, Ordering::Relaxed);
                Some(Resolved {
                    caller,
                    callee: Arc::clone(callee),
                    sample,
                })
            }
            previous => {
                if previous.is_some() {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                } else if shard.len() >= self.per_shard_capacity {
                    self.counters.full.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                shard.insert(
                    key,
                    Pending::Child {
                        callee: Arc::clone(callee),
                        since: now,
                    },
                );
                self.len.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Removes entries older than the timeout; returns the client spans among
    /// them, resolved to their fallback callee.
    pub fn expire(&self, now: u64) -> Vec<Resolved> {
        self.drain(|pending| now.saturating_sub(pending.since()) >= self.timeout_nanos)
    }

    /// Removes everything (at shutdown); returns the client spans.
    pub fn flush(&self) -> Vec<Resolved> {
        self.drain(|_| true)
    }

    fn drain(&self, due: impl Fn(&Pending) -> bool) -> Vec<Resolved> {
        let mut resolved = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            shard.retain(|_, pending| {
                if !due(pending) {
                    return true;
                }
                match pending {
                    Pending::Client {
                        caller,
                        sample,
                        fallback,
                        ..
                    } => {
                        resolved.push(Resolved {
                            caller: Arc::clone(caller),
                            callee: Arc::clone(fallback),
                            sample: *sample,
                        });
                        self.counters
                            .expired_clients
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Pending::Child { .. } => {
                        self.counters
                            .expired_children
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.len.fetch_sub(1, Ordering::Relaxed);
                false
            });
        }
        resolved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sample {
        Sample {
            end_unix_nanos: 1_000,
            duration_nanos: 5_000_000,
            error: false,
            trace_id: 1,
        }
    }

    fn key(span_id: u64) -> PairKey {
        PairKey {
            trace_id: 0xabc,
            span_id,
        }
    }

    #[test]
    fn child_first_then_client_pairs() {
        let buffer = PairingBuffer::new(100, Duration::from_secs(5));
        let callee: Arc<str> = Arc::from("payment");
        let caller: Arc<str> = Arc::from("checkout");
        assert!(buffer.child(key(1), &callee, 0).is_none());
        assert_eq!(buffer.len(), 1);
        let outcome = buffer.client(key(1), &caller, sample(), Arc::from("payment-host"), 0);
        assert_eq!(outcome, ClientOutcome::Paired(callee));
        assert!(buffer.is_empty());
    }

    #[test]
    fn client_first_then_child_pairs() {
        let buffer = PairingBuffer::new(100, Duration::from_secs(5));
        let caller: Arc<str> = Arc::from("checkout");
        let outcome = buffer.client(key(7), &caller, sample(), Arc::from("x"), 0);
        assert_eq!(outcome, ClientOutcome::Waiting);
        let resolved = buffer
            .child(key(7), &Arc::from("payment"), 1)
            .expect("paired");
        assert_eq!(&*resolved.caller, "checkout");
        assert_eq!(&*resolved.callee, "payment");
        assert!(buffer.is_empty());
    }

    #[test]
    fn unpaired_client_expires_to_its_fallback_and_child_is_forgotten() {
        let buffer = PairingBuffer::new(100, Duration::from_nanos(10));
        let caller: Arc<str> = Arc::from("checkout");
        buffer.client(key(1), &caller, sample(), Arc::from("db"), 0);
        buffer.child(key(2), &Arc::from("orphan"), 0);
        assert!(buffer.expire(5).is_empty(), "not due yet");
        let resolved = buffer.expire(10);
        assert_eq!(resolved.len(), 1);
        assert_eq!(&*resolved[0].callee, "db");
        assert_eq!(buffer.counters.expired_children.load(Ordering::Relaxed), 1);
        assert!(buffer.is_empty());
    }

    #[test]
    fn full_buffer_refuses_and_counts() {
        let buffer = PairingBuffer::new(SHARDS, Duration::from_secs(5));
        let caller: Arc<str> = Arc::from("a");
        let mut full = 0;
        for span_id in 0..(SHARDS as u64 * 4) {
            if buffer.client(key(span_id), &caller, sample(), Arc::from("b"), 0)
                == ClientOutcome::Full
            {
                full += 1;
            }
        }
        assert_eq!(buffer.len() + full, SHARDS * 4);
        assert!(buffer.len() <= SHARDS);
        assert_eq!(buffer.counters.full.load(Ordering::Relaxed), full as u64);
    }
}
