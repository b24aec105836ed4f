//! The trace buffer: recent spans grouped under their parent, so that a
//! parent span can be compared with its children when it arrives.
//!
//! A span with a parent is kept as a [`Child`] in the *family* keyed by
//! (trace id, parent span id). Children usually arrive first: a process ends
//! (and exports) a child before its parent. The parent takes its family when
//! it is analyzed; a client span's family holds the callee's server span.
//!
//! Bounds: the buffer is split into shards by key, each behind its own short
//! mutex; it holds at most `capacity` children in total (per shard
//! `capacity / SHARDS`); a child that does not fit is dropped and counted.
//! A family expires `ttl` after its first child arrived, in store-clock time
//! (event time in replay, so replays stay deterministic), and its children
//! are counted as expired.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

const SHARDS: usize = 64;

/// A parent span within its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FamilyKey {
    pub trace_id: u128,
    pub parent_span_id: u64,
}

impl FamilyKey {
    fn shard(&self) -> usize {
        // Ids are random, so their low bits spread evenly.
        (self.parent_span_id as usize ^ self.trace_id as usize) % SHARDS
    }
}

/// What a parent needs to know about one of its children.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    pub span_id: u64,
    pub start: u64,
    pub end: u64,
    /// Failed (status ERROR, or a 5xx server span).
    pub failed: bool,
    /// A span the service handled (SERVER, CONSUMER, INTERNAL): it accounts
    /// for its own errors; a CLIENT/PRODUCER span is a call.
    pub handled: bool,
    /// A call to a database or broker: no traced child is expected.
    pub untraced: bool,
    /// The service that produced the span.
    pub service: Arc<str>,
    /// For calls: the callee the span names itself (see
    /// `receiver::ingest`), used when no server-side child shows up.
    pub peer: Option<Arc<str>>,
}

/// The children of one parent, in arrival order. The first is held inline:
/// most families have one child, and then keeping it allocates nothing.
#[derive(Debug)]
struct Family {
    /// Store-clock time of the first child, for expiry.
    since: u64,
    first: Child,
    rest: Vec<Child>,
}

impl Family {
    fn len(&self) -> usize {
        1 + self.rest.len()
    }

    fn children(&self) -> impl Iterator<Item = &Child> {
        std::iter::once(&self.first).chain(&self.rest)
    }
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

type Shard = HashMap<FamilyKey, Family, BuildHasherDefault<IdHasher>>;

/// Counters of the buffer, for self-metrics and tests.
#[derive(Debug, Default)]
pub struct BufferCounters {
    /// Children dropped because their shard was full.
    pub dropped_full: AtomicU64,
    /// Children whose parent never took them within the TTL (parents in
    /// services that are not traced, or children arriving after their
    /// parent was analyzed).
    pub expired: AtomicU64,
}

/// The buffer. See the module documentation.
#[derive(Debug)]
pub struct TraceBuffer {
    shards: Box<[Mutex<Shard>]>,
    per_shard_capacity: usize,
    ttl_nanos: u64,
    /// Children held, across shards.
    len: AtomicUsize,
    pub counters: BufferCounters,
}

impl TraceBuffer {
    pub fn new(capacity: usize, ttl_nanos: u64) -> Self {
        TraceBuffer {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard_capacity: capacity.div_ceil(SHARDS).max(1),
            ttl_nanos,
            len: AtomicUsize::new(0),
            counters: BufferCounters::default(),
        }
    }

    /// Children held.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Bytes the buffer holds: each shard's table at its capacity, and
    /// the children past the first of a family (each family keeps its
    /// first child inline). Takes each shard's lock for a moment.
    pub fn heap_bytes(&self) -> usize {
        let mut bytes = 0;
        let mut families = 0;
        for shard in self.shards.iter() {
            let shard = shard.lock();
            families += shard.len();
            // hashbrown: one control byte per bucket beside each entry.
            bytes += shard.capacity() * (std::mem::size_of::<(FamilyKey, Family)>() + 1);
        }
        bytes + self.len().saturating_sub(families) * std::mem::size_of::<Child>()
    }

    /// Whether no child is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps `child` in its parent's family. Returns false (and counts it)
    /// when the shard is full.
    pub fn add(&self, key: FamilyKey, child: Child, now: u64) -> bool {
        let mut shard = self.shards[key.shard()].lock();
        // Children are bounded in total; families per shard, so that one
        // shard cannot take all the room.
        if self.len() >= self.per_shard_capacity * SHARDS
            || (shard.len() >= self.per_shard_capacity && !shard.contains_key(&key))
        {
            self.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match shard.entry(key) {
            Entry::Occupied(mut family) => family.get_mut().rest.push(child),
            Entry::Vacant(family) => {
                family.insert(Family {
                    since: now,
                    first: child,
                    rest: Vec::new(),
                });
            }
        }
        self.len.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Copies the children of `key` into `out` (cleared first); returns
    /// whether the family exists.
    pub fn copy(&self, key: FamilyKey, out: &mut Vec<Child>) -> bool {
        out.clear();
        let shard = self.shards[key.shard()].lock();
        match shard.get(&key) {
            Some(family) => {
                out.extend(family.children().cloned());
                true
            }
            None => false,
        }
    }

    /// Whether the family of `key` holds any child.
    pub fn contains(&self, key: FamilyKey) -> bool {
        self.shards[key.shard()].lock().contains_key(&key)
    }

    /// Removes the family of `key`, handing its children to `out`
    /// (appended). Returns how many there were.
    pub fn take(&self, key: FamilyKey, out: &mut Vec<Child>) -> usize {
        let family = self.shards[key.shard()].lock().remove(&key);
        match family {
            Some(family) => {
                let n = family.len();
                self.len.fetch_sub(n, Ordering::Relaxed);
                out.push(family.first);
                out.extend(family.rest);
                n
            }
            None => 0,
        }
    }

    /// Removes the family of `key`, if any.
    pub fn remove(&self, key: FamilyKey) {
        let family = self.shards[key.shard()].lock().remove(&key);
        if let Some(family) = family {
            self.len.fetch_sub(family.len(), Ordering::Relaxed);
        }
    }

    /// Drops families older than the TTL at store-clock time `now`.
    pub fn expire(&self, now: u64) -> usize {
        let mut expired = 0;
        for shard in self.shards.iter() {
            shard.lock().retain(|_, family| {
                let keep = now.saturating_sub(family.since) < self.ttl_nanos;
                if !keep {
                    expired += family.len();
                }
                keep
            });
        }
        self.len.fetch_sub(expired, Ordering::Relaxed);
        self.counters
            .expired
            .fetch_add(expired as u64, Ordering::Relaxed);
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(span_id: u64) -> Child {
        Child {
            span_id,
            start: 0,
            end: 1,
            failed: false,
            handled: false,
            untraced: false,
            service: Arc::from("s"),
            peer: None,
        }
    }

    #[test]
    fn families_are_taken_bounded_and_expire() {
        let buffer = TraceBuffer::new(64, 100);
        let key = |parent| FamilyKey {
            trace_id: 7,
            parent_span_id: parent,
        };
        assert!(buffer.add(key(1), child(10), 0));
        assert!(buffer.add(key(1), child(11), 5));
        assert!(buffer.add(key(2), child(20), 50));
        assert_eq!(buffer.len(), 3);
        let mut out = Vec::new();
        assert!(buffer.copy(key(1), &mut out));
        assert_eq!(out.len(), 2);
        assert_eq!(buffer.take(key(1), &mut out), 2);
        assert_eq!(out.len(), 4, "take appends");
        assert!(!buffer.contains(key(1)));
        // Family 2 is 60 old at 110: kept; at 150 it is gone.
        assert_eq!(buffer.expire(110), 0);
        assert_eq!(buffer.expire(150), 1);
        assert!(buffer.is_empty());
        assert_eq!(buffer.counters.expired.load(Ordering::Relaxed), 1);

        // 64 children over 64 shards: one family per shard at most.
        let small = TraceBuffer::new(64, 100);
        let mut dropped = 0;
        for parent in 0..1_000u64 {
            if !small.add(key(parent), child(parent), 0) {
                dropped += 1;
            }
        }
        assert!(small.len() <= 64, "{}", small.len());
        assert_eq!(small.len() + dropped, 1_000);
        assert_eq!(
            small.counters.dropped_full.load(Ordering::Relaxed),
            dropped as u64
        );
    }
}
