//! Root-cause analysis: topology, cascades, origin ranking, blast radius,
//! change correlation and hypotheses.

pub mod changes;
pub mod cohort;
mod explain;
pub mod model;
pub mod rca;
pub mod spans;

pub use model::{
    AttributeLift, BlastRadius, CorrelatedChange, Evidence, Hypothesis, HypothesisKind, Pattern,
    PatternKind, RootCause,
};
