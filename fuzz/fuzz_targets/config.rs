//! YAML config text -> Settings (config::Settings::from_yaml).
//! The checks are in `triage::tools::fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| triage::tools::fuzz::config(bytes));
