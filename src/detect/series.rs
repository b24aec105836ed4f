//! (being written)
pub struct SeriesDetector;
