//! The body of POST /api/v1/changes (admin::changes), and RFC 3339 times.
//! The checks are in `triage::tools::fuzz::changes`.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| triage::tools::fuzz::changes(bytes));
