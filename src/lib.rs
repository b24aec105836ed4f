//! `triage`: an OpenTelemetry-native anomaly-detection collector.
//!
//! Module map, in the order data flows (ARCHITECTURE.md draws it). A module
//! imports only modules above it in this list, never one beside or below
//! it; `tests/it/walls.rs` checks that, and that the inner stages do no
//! I/O, read no clock and never see protobuf types.
//!
//! - [`model`], [`telemetry`], [`validate`]: leaves. The shared domain types
//!   (spans, series keys, anomalies, incidents, analysis results, changes);
//!   self-metric names, the Prometheus recorder and logging; the machinery
//!   that reads a YAML config section and collects every problem.
//! - [`security`]: TLS (certificates reloaded on change, mTLS) and
//!   bearer-token authentication, the same for every listener.
//! - [`store`]: RED series (per service, operation, dependency edge, metric
//!   and log severity) in event-time windows of compact log-linear
//!   latency histograms and counters, bounded; the change log; the in-process read API.
//! - [`receiver`]: OTLP/gRPC and OTLP/HTTP transports and the decoders
//!   (protobuf wire reader, JSON readers). Protobuf types stop here and in
//!   `ingest`, which reads the decoded metric and log requests.
//! - [`forward`]: optional forwarding of every accepted request, as
//!   received, to upstream OTLP endpoints (bounded queues, retries, an
//!   optional persistent queue); the receivers hand bodies over without
//!   waiting.
//! - [`ingest`]: decoded telemetry -> samples in the store; span analysis
//!   (own time, local errors, drill-down sketches); changes inferred from
//!   the telemetry.
//! - [`detect`]: per-series detectors, hysteresis, the engine that closes
//!   windows.
//! - [`analyze`]: cascades, origin ranking, patterns, blast radius, change
//!   correlation, hypotheses.
//! - [`pipeline`]: builds ingest, store, detection and analysis once from
//!   settings and drives them with one `tick(now)`.
//! - [`history`], [`replay`]: incidents, events, changes and baselines in
//!   SQLite; recorded OTLP through the pipeline on event time.
//! - [`alert`], [`query`], [`admin`]: Alertmanager and webhooks; the gRPC
//!   query API and `triage query`; admin HTTP (`/metrics`, health, the
//!   change webhook).
//! - [`config`]: the YAML file, its sections (each validated beside its
//!   type), overrides; precedence flag > environment > file > default.
//! - [`server`]: binds the listeners, ticks the pipeline, drains on
//!   shutdown.
//! - [`tools`]: the simulator, the evaluation and the demo; no product
//!   module imports them.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin;
pub mod agent;
pub mod alert;
pub mod analyze;
pub mod config;
pub mod detect;
pub mod forward;
pub mod history;
pub mod ingest;
pub mod model;
pub mod pipeline;
pub mod query;
pub mod receiver;
pub mod replay;
pub mod security;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tools;
pub mod validate;
