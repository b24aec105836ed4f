//! `triage`: an OpenTelemetry-native anomaly-detection collector.
//!
//! Module map (data flows top to bottom):
//!
//! - [`config`]: YAML config, validated into typed settings; precedence
//!   flag > environment > file > default.
//! - [`receiver`]: OTLP/gRPC and OTLP/HTTP receivers. Protobuf types stop here:
//!   `receiver::ingest` turns decoded requests into store records.
//! - [`store`]: lock-free-on-the-hot-path RED series (per service, operation,
//!   dependency edge, metric and log severity) in event-time windows of HDR
//!   histograms and counters, with bounded cardinality; and the in-process read
//!   API used by detection and queries.
//! - [`history`]: incidents, incident events, changes and detection-state
//!   snapshots in embedded SQLite, so they survive restarts.
//! - [`query`]: the gRPC query API (services, RED statistics, topology,
//!   incidents with a resumable watch, changes; health and reflection) and
//!   the `triage query` client. Protobuf types stop in `query`.
//! - [`alert`]: incidents delivered to Prometheus Alertmanager (v2 API, every
//!   replica, resent and resolved as Prometheus does) and JSON webhooks.
//! - [`telemetry`]: self-metric names, the Prometheus recorder, and logging.
//! - [`admin`]: admin HTTP (`/metrics`, `/healthz`, `/readyz`).
//! - [`server`]: binds the listeners, runs the background tasks, drains on
//!   shutdown.
//! - [`demo`]: `triage demo`, the collector and the simulator in one
//!   process, printing incidents as a fault is found.

#![forbid(unsafe_code)]

pub mod admin;
pub mod alert;
pub mod analyze;
pub mod config;
pub mod detect;
pub mod history;
pub mod ingest;
pub mod model;
pub mod pipeline;
pub mod query;
pub mod receiver;
pub mod replay;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tools;
