//! Root-cause analysis: topology, cascades, origin ranking, blast radius,
//! change correlation and hypotheses. Reads the store, the span analysis
//! and the change log; never a clock, never I/O.
//!
//! - [`rca::Analyzer`]: the state machine between detection and every
//!   consumer: groups per-service incidents into cascades, ranks origins.
//! - [`cohort`]: a version or flag variant failing where its siblings do
//!   not.
//! - `explain`: patterns, blast radius, changes and hypotheses of a ranked
//!   incident.
//! - [`correlate`]: the pure ranking of change events against an incident.
//! - [`context`]: what the steps share (handles, settings, the call graph,
//!   per-origin evidence), so `rca` and `explain` never import each other.

// No clock and no I/O here: see clippy.toml and tests/it/walls.rs.
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod cohort;
pub mod context;
pub mod correlate;
mod explain;
pub mod rca;
