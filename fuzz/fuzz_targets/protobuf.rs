//! Protobuf export requests: the zero-copy trace reader and the pre-decode walks (receiver::wire).
//! The checks are in `triage::tools::fuzz::protobuf`.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| triage::tools::fuzz::protobuf(bytes));
