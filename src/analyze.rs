//! Root-cause analysis: topology, cascades, origin ranking, blast radius,
//! change correlation and hypotheses.

pub mod cohort;
pub mod context;
pub mod correlate;
mod explain;
pub mod rca;
