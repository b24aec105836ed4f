//! (being written)
#[derive(Debug, Clone, Default)]
pub struct DetectConfig {}
