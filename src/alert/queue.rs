//! The bounded per-target queue: what waits to be sent to one Alertmanager
//! or webhook while it is slow or unreachable.
//!
//! Invariants: at most `capacity` items are held; every key is held at most
//! once (a newer item with the same key replaces the queued one in place, so
//! an alert re-sent every minute while its Alertmanager is down takes one
//! slot, and the newest state is what goes out); when full, the oldest item
//! is dropped and the drop is reported to the caller, who counts it.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::num::NonZeroUsize;

/// A bounded FIFO of keyed items; see the module docs.
#[derive(Debug)]
pub(crate) struct Queue<K, T> {
    /// Keys, oldest first; each key is in `items` exactly once.
    order: VecDeque<K>,
    /// The newest item of each queued key.
    items: HashMap<K, T>,
    /// Most items held.
    capacity: usize,
}

impl<K: Hash + Eq + Clone, T> Queue<K, T> {
    /// An empty queue holding at most `capacity` items.
    pub(crate) fn new(capacity: NonZeroUsize) -> Self {
        Queue {
            order: VecDeque::new(),
            items: HashMap::new(),
            capacity: capacity.get(),
        }
    }

    /// Items waiting.
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// Adds `item`, or replaces the queued item with the same key (which
    /// keeps its place). Returns how many old items were dropped to make room.
    pub(crate) fn push(&mut self, key: K, item: T) -> usize {
        match self.items.entry(key) {
            Entry::Occupied(mut queued) => {
                queued.insert(item);
                0
            }
            Entry::Vacant(slot) => {
                self.order.push_back(slot.key().clone());
                slot.insert(item);
                self.trim()
            }
        }
    }

    /// Removes and returns up to `max` of the oldest items.
    pub(crate) fn take(&mut self, max: usize) -> Vec<(K, T)> {
        let n = max.min(self.order.len());
        let mut batch = Vec::with_capacity(n);
        for key in self.order.drain(..n) {
            // Every key in `order` is in `items`; a miss would be a bug here,
            // and skipping it loses nothing that is still queued.
            if let Some(item) = self.items.remove(&key) {
                batch.push((key, item));
            }
        }
        batch
    }

    /// Puts a batch that could not be sent back at the front, oldest first,
    /// except items whose key was pushed again meanwhile (the newer one is
    /// queued and wins). Returns how many items were dropped to stay within
    /// capacity; the oldest go first, which may be some of `batch`.
    pub(crate) fn requeue(&mut self, batch: Vec<(K, T)>) -> usize {
        for (key, item) in batch.into_iter().rev() {
            if let Entry::Vacant(slot) = self.items.entry(key) {
                self.order.push_front(slot.key().clone());
                slot.insert(item);
            }
        }
        self.trim()
    }

    /// Drops the oldest items until at most `capacity` remain.
    fn trim(&mut self) -> usize {
        let mut dropped = 0;
        while self.order.len() > self.capacity {
            if let Some(key) = self.order.pop_front() {
                self.items.remove(&key);
                dropped += 1;
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(capacity: usize) -> Queue<u32, &'static str> {
        Queue::new(NonZeroUsize::new(capacity).expect("capacity"))
    }

    fn keys<T>(batch: &[(u32, T)]) -> Vec<u32> {
        batch.iter().map(|(key, _)| *key).collect()
    }

    #[test]
    fn drops_the_oldest_when_full_and_says_so() {
        let mut queue = queue(3);
        assert_eq!(queue.push(1, "a"), 0);
        assert_eq!(queue.push(2, "b"), 0);
        assert_eq!(queue.push(3, "c"), 0);
        assert_eq!(queue.push(4, "d"), 1);
        assert_eq!(queue.push(5, "e"), 1);
        assert_eq!(queue.len(), 3);
        assert_eq!(keys(&queue.take(10)), vec![3, 4, 5]);
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn a_newer_item_replaces_the_queued_one_in_place() {
        let mut queue = queue(3);
        queue.push(1, "firing");
        queue.push(2, "other");
        assert_eq!(queue.push(1, "resolved"), 0);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.take(10), vec![(1, "resolved"), (2, "other")]);
    }

    #[test]
    fn take_is_oldest_first_and_bounded() {
        let mut queue = queue(10);
        for key in 0..5 {
            queue.push(key, "x");
        }
        assert_eq!(keys(&queue.take(2)), vec![0, 1]);
        assert_eq!(keys(&queue.take(2)), vec![2, 3]);
        assert_eq!(keys(&queue.take(2)), vec![4]);
        assert!(queue.take(2).is_empty());
    }

    #[test]
    fn a_failed_batch_goes_back_in_front_unless_superseded() {
        let mut queue = queue(10);
        for key in 0..4 {
            queue.push(key, "old");
        }
        let batch = queue.take(2);
        // While the batch was out, key 1 got a newer state and key 9 arrived.
        queue.push(1, "new");
        queue.push(9, "x");
        assert_eq!(queue.requeue(batch), 0);
        assert_eq!(
            queue.take(10),
            vec![(0, "old"), (2, "old"), (3, "old"), (1, "new"), (9, "x")]
        );
    }

    #[test]
    fn requeue_over_capacity_drops_the_oldest() {
        let mut queue = queue(3);
        for key in 0..3 {
            queue.push(key, "x");
        }
        let batch = queue.take(2);
        queue.push(3, "x");
        queue.push(4, "x");
        // 0 and 1 come back in front of 2, 3, 4: five items, two too many.
        assert_eq!(queue.requeue(batch), 2);
        assert_eq!(keys(&queue.take(10)), vec![2, 3, 4]);
    }
}
