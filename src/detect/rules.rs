//! (being written)
pub fn service_rules() {}
