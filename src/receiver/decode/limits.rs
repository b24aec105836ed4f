//! What decoding one export request may cost, and the running account of
//! it kept while a request's structure is walked before it is decoded
//! (`wire::measure` for protobuf, `json::measure` for JSON).
//!
//! The size of a request on the wire says little about what decoding it
//! takes: an empty span is two bytes of protobuf and about 250 bytes once
//! read, so a 20 MiB body of empty spans (20 KB gzipped) decoded into
//! 2.5 GiB (issue #14). Two limits hold whatever the body:
//!
//! - items (spans, metric data points, log records) per request, the
//!   number exporters batch by;
//! - the memory decoding a request takes, estimated from what each decoder
//!   builds: the Rust size of every message it allocates, of every string it
//!   copies, and of every vector as it grows (capacity 4, then doubling, as
//!   `Vec::push` does). Vectors are counted at their capacity and every
//!   allocation at what the allocator hands out, so the estimate is an upper
//!   bound on the decoded tree, not an average.
//!
//! Invariant: a [`Budget`] refuses as soon as either limit is crossed, so the
//! walk that keeps it stops early on a bomb and never allocates itself.

use std::fmt;

/// Most items one request may carry by default. Exporters batch a few
/// thousand (the Collector's batch processor sends 8,192; a 4 MiB gRPC
/// message holds about 11,000 real spans); 100,000 leaves room for any
/// real batch a 20 MiB body can hold.
pub const DEFAULT_MAX_ITEMS: usize = 100_000;

/// Most memory decoding one request may take by default. Real batches of
/// spans with eight attributes are estimated at about 40 MiB for 50,000 of
/// them in protobuf (a 17 MiB body, read without copying), but at about 30
/// MiB for 2,000 in JSON (1.4 MiB: the general JSON decoder builds a
/// `serde_json::Value` first, some twenty times the body). At most one
/// request per core decodes at a time (the shared `DecodePool`), so a
/// two-core collector holds at most 128 MiB of decoded requests, half of
/// the 256 MiB its sidecar manifest allows.
pub const DEFAULT_MAX_DECODED_BYTES: usize = 64 * 1024 * 1024;

/// Limits on decoding one export request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most items (spans, metric data points, log records) in one request.
    pub max_items: usize,
    /// Most memory decoding one request may take, as estimated before
    /// decoding (see the module documentation).
    pub max_decoded_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_items: DEFAULT_MAX_ITEMS,
            max_decoded_bytes: DEFAULT_MAX_DECODED_BYTES,
        }
    }
}

/// A request refused before decoding for crossing one of the [`Limits`].
/// Resending it as it is would fail the same way: the client must split it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverLimit {
    #[error(
        "request carries more than {limit} {items}, the limit per request \
         (max_items); send smaller batches"
    )]
    TooManyItems { items: &'static str, limit: usize },
    #[error(
        "decoding the request would take more than {}, the limit per request \
         (max_decoded_bytes), from {wire_bytes} bytes of {format}; send smaller \
         batches",
        Mib(*limit)
    )]
    TooLarge {
        limit: usize,
        wire_bytes: usize,
        format: &'static str,
    },
}

impl OverLimit {
    /// The `reason` label of the refused-requests counter.
    pub fn reason(&self) -> &'static str {
        match self {
            OverLimit::TooManyItems { .. } => "too_many_items",
            OverLimit::TooLarge { .. } => "decoded_too_large",
        }
    }
}

/// A byte count written in MiB when it is a whole number of them.
struct Mib(usize);

impl fmt::Display for Mib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: usize = 1024 * 1024;
        if self.0.is_multiple_of(MIB) {
            write!(f, "{} MiB", self.0 / MIB)
        } else {
            write!(f, "{} bytes", self.0)
        }
    }
}

/// The running account of one request's walk: items seen and bytes that
/// decoding would allocate so far.
#[derive(Debug)]
pub(crate) struct Budget {
    limits: Limits,
    /// What the items are called in messages (`spans`, `data points`, ...).
    items_name: &'static str,
    /// `protobuf` or `JSON`, for messages.
    format: &'static str,
    wire_bytes: usize,
    items: usize,
    bytes: usize,
}

impl Budget {
    pub(crate) fn new(
        limits: Limits,
        items_name: &'static str,
        format: &'static str,
        wire_bytes: usize,
    ) -> Self {
        Budget {
            limits,
            items_name,
            format,
            wire_bytes,
            items: 0,
            bytes: 0,
        }
    }

    /// Counts one item.
    pub(crate) fn item(&mut self) -> Result<(), OverLimit> {
        self.items += 1;
        if self.items > self.limits.max_items {
            return Err(OverLimit::TooManyItems {
                items: self.items_name,
                limit: self.limits.max_items,
            });
        }
        Ok(())
    }

    /// Counts `bytes` more of decoded memory.
    pub(crate) fn charge(&mut self, bytes: usize) -> Result<(), OverLimit> {
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > self.limits.max_decoded_bytes {
            return Err(OverLimit::TooLarge {
                limit: self.limits.max_decoded_bytes,
                wire_bytes: self.wire_bytes,
                format: self.format,
            });
        }
        Ok(())
    }

    /// What the walk found, once it is over.
    pub(crate) fn measured(&self) -> Measured {
        Measured {
            items: self.items,
            decoded_bytes: self.bytes,
        }
    }
}

/// What a request within the limits was found to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    /// Items (spans, metric data points, log records).
    pub items: usize,
    /// Estimated memory decoding it takes.
    pub decoded_bytes: usize,
}

/// What the allocator hands out for a `len`-byte allocation: glibc malloc
/// rounds to 16 bytes with an 8-byte header and gives at least 32. Nothing
/// for an empty string or vector, which does not allocate.
pub(crate) fn heap(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        (len.saturating_add(8 + 15) & !15).max(32)
    }
}

/// The capacity of a `Vec` grown by `push` to `len` elements: none, then 4
/// (what `Vec` first allocates for elements of up to 1 KiB), then doubling.
fn capacity(len: usize) -> usize {
    match len {
        0 => 0,
        1..=4 => 4,
        _ => len.checked_next_power_of_two().unwrap_or(usize::MAX),
    }
}

/// Bytes a `Vec` of `size`-byte elements allocates when `pushed` elements
/// are added to the `len` it holds: the growth of its capacity.
pub(crate) fn growth(len: usize, pushed: usize, size: usize) -> usize {
    let grown = capacity(len.saturating_add(pushed)) - capacity(len);
    grown.saturating_mul(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_grow_like_push() {
        let mut bytes = 0;
        let mut vector: Vec<[u8; 24]> = Vec::new();
        for len in 0..100 {
            bytes += growth(len, 1, 24);
            vector.push([0; 24]);
            assert_eq!(bytes, vector.capacity() * 24, "after {} pushes", len + 1);
        }
        // Several at once (a packed field) grow to the same capacity.
        assert_eq!(growth(0, 100, 8), 128 * 8);
        assert_eq!(growth(3, 2, 8), 4 * 8);
    }

    #[test]
    fn allocations_round_up() {
        assert_eq!(heap(0), 0);
        assert_eq!(heap(1), 32);
        assert_eq!(heap(24), 32);
        assert_eq!(heap(25), 48);
        assert_eq!(heap(40), 48);
        assert!(heap(usize::MAX) > 0);
    }

    #[test]
    fn budget_refuses_past_either_limit() {
        let limits = Limits {
            max_items: 2,
            max_decoded_bytes: 100,
        };
        let mut budget = Budget::new(limits, "spans", "protobuf", 10);
        assert!(budget.item().is_ok());
        assert!(budget.item().is_ok());
        let error = budget.item().unwrap_err();
        assert_eq!(error.reason(), "too_many_items");
        assert_eq!(
            error.to_string(),
            "request carries more than 2 spans, the limit per request (max_items); \
             send smaller batches"
        );
        assert!(budget.charge(100).is_ok());
        let error = budget.charge(1).unwrap_err();
        assert_eq!(error.reason(), "decoded_too_large");
        assert_eq!(
            error.to_string(),
            "decoding the request would take more than 100 bytes, the limit per \
             request (max_decoded_bytes), from 10 bytes of protobuf; send smaller batches"
        );
        let mib = Budget::new(Limits::default(), "spans", "JSON", 3)
            .charge(usize::MAX)
            .unwrap_err();
        assert!(mib.to_string().contains("more than 64 MiB"), "{mib}");
    }
}
