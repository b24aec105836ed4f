//! Protobuf metrics requests: the zero-copy metrics reader (receiver::wire::metrics)
//! against prost, its pre-read walk, the limits and recording.
//! The checks are in `triage::tools::fuzz::metrics_protobuf`.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| triage::tools::fuzz::metrics_protobuf(bytes));
