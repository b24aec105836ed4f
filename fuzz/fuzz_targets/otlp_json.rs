//! OTLP/JSON export requests: the scanning readers and the JSON walk (receiver::json).
//! The checks are in `triage::tools::fuzz::otlp_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| triage::tools::fuzz::otlp_json(bytes));
