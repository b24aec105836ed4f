//! Tools beside the product: the traffic simulator (`triage simulate`), the
//! evaluation that scores detection and root cause against the simulator's
//! ground truth (`triage eval`), the demo (`triage demo`), and the load
//! generator with its reference server (`triage loadgen`).
//!
//! They use the product as a user would; no product module imports them
//! (the walls test in `tests/it/walls.rs` checks it).

pub mod demo;
pub mod eval;
/// The checks the fuzz targets in `fuzz/` run (see its own documentation).
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzz;
pub mod loadgen;
pub mod sim;
