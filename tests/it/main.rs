//! All integration tests, in one test binary.
//!
//! Each file under `tests/` used to be its own test binary, and each of them
//! linked the whole library plus tonic, reqwest and the OpenTelemetry SDK:
//! thirteen links of the same code on every test build. Here each former
//! file is a module of one binary, linked once. Run one of them with, for
//! example, `cargo test --test it deploy::`.
//!
//! `common` holds the shared helpers (a real collector on 127.0.0.1:0).
//! Fixtures stay in `tests/fixtures` and the Python scripts in
//! `tests/python`; tests find them from `CARGO_MANIFEST_DIR`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod admin;
mod admission;
mod agent_gateway;
mod alertmanager;
mod analysis_spans;
mod api_listener;
mod changes;
mod cli;
mod demo;
mod deploy;
mod eval;
mod forward;
mod gateway_equivalence;
mod limits;
mod listeners;
mod otlp_grpc;
mod python_sdk;
mod query_api;
mod red_metrics;
mod restart;
mod rust_sdk;
mod supervision;
mod tls;
mod walls;
