//! The domain model: the types every stage shares, and nothing else.
//!
//! Spans and resources as recording reads them, series identity, anomalies,
//! incidents and what analysis finds about them, change events, and time
//! helpers. This module depends on no other module of the crate, reads no
//! clock and does no I/O (the walls test in `tests/it/walls.rs` checks it),
//! so every stage can use it and any of it can be built in a test by hand.

// No clock and no I/O here: see clippy.toml and tests/it/walls.rs.
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

mod analysis;
mod anomaly;
mod change;
pub mod change_request;
mod incident;
mod log;
mod series;
mod span;
mod time;

pub use analysis::{
    AttributeLift, BlastRadius, CorrelatedChange, Evidence, Hypothesis, HypothesisKind, Pattern,
    PatternKind, RootCause,
};
pub use anomaly::{Anomaly, AnomalyKind, Readiness, Severity};
pub use change::{Change, ChangeFilter, ChangeKind, ChangeSource};
pub use incident::{trace_links, Incident, IncidentEvent, IncidentState, SeriesAnomaly};
pub use log::log_attribute_read;
pub use series::{SeriesKey, SeriesKind, COLLECTOR_SERVICE};
pub use span::{
    invalid_span, is_flag_key, kind, operation_name, peer, ExtraKeys, ExtraValue,
    ResourceAttributes, ResourceView, SpanAttributes, SpanView, TraceBatch, ValueRef, FLAG_EVENT,
    MAX_EXTRA_KEYS, UNKNOWN_PEER, UNKNOWN_SERVICE,
};
pub use time::{relative_to_onset, rfc3339};
