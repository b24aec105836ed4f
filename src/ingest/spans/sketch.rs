//! A Space-Saving heavy-hitter sketch (Metwally et al.): the most frequent
//! values of a stream in a fixed number of counters.
//!
//! Invariants: at most `capacity` counters; every counter's `count` is an
//! upper bound of its value's true count and `count - error` a lower bound;
//! a value without a counter occurred at most [`SpaceSaving::min_count`]
//! times (0 while the sketch is not full); the counts add up to the total
//! weight added. So any value with more than `total / capacity` occurrences
//! is guaranteed to hold a counter. Value strings reuse their allocation when
//! a counter is taken over, so a full sketch allocates only for values longer
//! than the one they replace.

use std::collections::HashMap;
use std::hash::BuildHasher;

/// Longest value kept, in bytes; longer values are cut (on a character
/// boundary) so one attribute cannot hold a lot of memory.
pub const MAX_VALUE_LEN: usize = 128;

/// One monitored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    /// Hash of the value, compared first so a lookup rarely reads strings.
    hash: u64,
    /// The value.
    pub value: String,
    /// Upper bound of the value's occurrences.
    pub count: u64,
    /// How much of `count` may belong to values this counter replaced.
    pub error: u64,
}

/// The sketch. See the module documentation for its guarantees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceSaving {
    capacity: usize,
    counters: Vec<Counter>,
    /// Sum of every weight added.
    total: u64,
}

/// Cuts a value to [`MAX_VALUE_LEN`] bytes on a character boundary.
pub fn clip(value: &str) -> &str {
    if value.len() <= MAX_VALUE_LEN {
        return value;
    }
    let mut cut = MAX_VALUE_LEN;
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    &value[..cut]
}

/// The hash the sketch keys values by (fixed seed: sketches of different
/// windows can be merged and results do not depend on the process).
pub fn value_hash(value: &str) -> u64 {
    foldhash::fast::FixedState::with_seed(0x7472_6961_6765).hash_one(value)
}

impl SpaceSaving {
    /// An empty sketch of `capacity` counters (at least one).
    pub fn new(capacity: usize) -> Self {
        SpaceSaving {
            capacity: capacity.max(1),
            counters: Vec::new(),
            total: 0,
        }
    }

    /// Sum of all weights added.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The counters, in no particular order.
    pub fn counters(&self) -> &[Counter] {
        &self.counters
    }

    /// Bytes the counters hold on the heap, their values included.
    pub fn heap_bytes(&self) -> usize {
        self.counters.capacity() * std::mem::size_of::<Counter>()
            + self
                .counters
                .iter()
                .map(|counter| counter.value.capacity())
                .sum::<usize>()
    }

    /// Whether every counter is in use.
    pub fn is_full(&self) -> bool {
        self.counters.len() >= self.capacity
    }

    /// The bound on the count of any value without a counter.
    pub fn min_count(&self) -> u64 {
        if self.is_full() {
            self.counters.iter().map(|c| c.count).min().unwrap_or(0)
        } else {
            0
        }
    }

    /// Forgets everything, keeping the allocations.
    pub fn clear(&mut self) {
        self.counters.clear();
        self.total = 0;
    }

    /// Adds `weight` occurrences of `value` (already clipped, hashed by
    /// [`value_hash`]).
    pub fn add(&mut self, value: &str, hash: u64, weight: u64) {
        if weight == 0 {
            return;
        }
        self.total += weight;
        if let Some(counter) = self
            .counters
            .iter_mut()
            .find(|counter| counter.hash == hash && counter.value == value)
        {
            counter.count += weight;
            return;
        }
        if !self.is_full() {
            self.counters.push(Counter {
                hash,
                value: value.to_string(),
                count: weight,
                error: 0,
            });
            return;
        }
        // Take over the smallest counter: the newcomer may have occurred up
        // to that many times unseen.
        let Some(smallest) = self.counters.iter_mut().min_by_key(|counter| counter.count) else {
            return;
        };
        smallest.hash = hash;
        smallest.value.clear();
        smallest.value.push_str(value);
        smallest.error = smallest.count;
        smallest.count += weight;
    }
}

/// Several sketches merged (e.g. the windows of a time range): for each
/// value an upper bound of its count and how much of it is uncertain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged {
    /// Value -> (upper bound, error); `upper - error` is a lower bound.
    pub values: HashMap<String, (u64, u64), foldhash::fast::RandomState>,
    /// Sum of the weights of the merged sketches.
    pub total: u64,
    /// Bound on the count of a value held by none of the merged sketches.
    pub unseen: u64,
}

impl Merged {
    /// Adds one sketch. A value this sketch lacks may have occurred up to
    /// its [`SpaceSaving::min_count`] times in it, and a value new here may
    /// have occurred up to `unseen` times in the sketches merged before:
    /// both widen the bounds, so the guarantees hold for the merge.
    pub fn add(&mut self, sketch: &SpaceSaving) {
        let missing = sketch.min_count();
        if missing > 0 {
            for (value, (count, error)) in self.values.iter_mut() {
                if !sketch
                    .counters
                    .iter()
                    .any(|counter| &counter.value == value)
                {
                    *count += missing;
                    *error += missing;
                }
            }
        }
        for counter in &sketch.counters {
            match self.values.get_mut(&counter.value) {
                Some((count, error)) => {
                    *count += counter.count;
                    *error += counter.error;
                }
                None => {
                    self.values.insert(
                        counter.value.clone(),
                        (counter.count + self.unseen, counter.error + self.unseen),
                    );
                }
            }
        }
        self.unseen += missing;
        self.total += sketch.total;
    }

    /// Guaranteed lower bound of a value's count.
    pub fn lower(&self, value: &str) -> u64 {
        self.values
            .get(value)
            .map_or(0, |(count, error)| count.saturating_sub(*error))
    }

    /// Upper bound of a value's count.
    pub fn upper(&self, value: &str) -> u64 {
        self.values
            .get(value)
            .map_or(self.unseen, |(count, _)| *count)
    }
}
