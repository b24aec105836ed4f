//! OTLP receivers: gRPC (`grpc`) and HTTP (`http`), both feeding one [`Sink`].
//!
//! The receivers decode and validate requests (`wire`: the zero-copy
//! protobuf trace and metrics readers; `metric_batch`: the views of a
//! metrics request they read into; `json`: the fast OTLP/JSON readers;
//! `decode`: the general JSON decoder and the conversion of prost requests
//! into the views of `model`); the sink (`ingest::Ingest` in production)
//! turns the decoded requests into store records. Keeping the sink behind a trait lets each transport be tested on
//! its own and keeps the transports free of recording logic.
//!
//! A request the sink has recorded is then given, as received
//! (decompressed), to an optional [`Handoff`] (the forwarder,
//! `crate::forward`), which must take it without waiting.

use std::sync::Arc;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};

pub mod admission;
pub mod decode;
pub mod grpc;
pub mod http;
pub mod json;
pub mod metric_batch;
pub mod wire;

/// The signal a request carries; used in self-metric labels and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }
}

/// How an accepted request's body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// An `Export*ServiceRequest` in protobuf (gRPC, or HTTP
    /// `application/x-protobuf`).
    Protobuf,
    /// OTLP/JSON (HTTP `application/json`).
    Json,
}

/// An export request the receiver answered with success (full or partial),
/// as received (decompressed), for whoever wants it after the sink has
/// recorded it: the forwarder (`crate::forward`).
#[derive(Debug, Clone)]
pub struct Accepted {
    pub signal: Signal,
    pub format: BodyFormat,
    /// The decompressed body; shared, not copied.
    pub body: Bytes,
    /// Items in the request (accepted and rejected).
    pub items: u64,
}

/// Where accepted requests are handed after the sink. Called on the
/// decode pool's thread before the answer is sent, so an implementation
/// must return at once: no waiting, no I/O (the forwarder try-pushes into
/// bounded queues and drops what does not fit).
pub trait Handoff: Send + Sync + 'static {
    fn accepted(&self, request: Accepted);
}

/// Hands an answered request to `handoff`, if there is one and the
/// request carried items (an empty request has nothing to forward).
pub(crate) fn hand_off(
    handoff: Option<&Arc<dyn Handoff>>,
    signal: Signal,
    format: BodyFormat,
    body: Bytes,
    outcome: &Outcome,
) {
    let items = outcome.accepted.saturating_add(outcome.rejected);
    if let Some(handoff) = handoff {
        if items > 0 {
            handoff.accepted(Accepted {
                signal,
                format,
                body,
                items,
            });
        }
    }
}

/// What happened to the items of one export request.
///
/// `rejected > 0` becomes an OTLP partial success: the request is answered OK
/// with `rejected_<items>` and `error_message`, and the accepted items are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Items (spans, data points, log records) recorded.
    pub accepted: u64,
    /// Items that could not be used; they are counted, not recorded.
    pub rejected: u64,
    /// Why items were rejected; empty when `rejected == 0`.
    pub error_message: String,
}

/// A request body that is not a valid protobuf message of the expected type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Where decoded export requests go. Implementations must be cheap to call
/// from many tasks at once and must never panic on any input.
pub trait Sink: Send + Sync + 'static {
    fn traces(&self, request: &ExportTraceServiceRequest) -> Outcome;

    /// A protobuf-encoded `ExportTraceServiceRequest`. The default decodes it
    /// with prost; the production sink reads it without copying.
    fn traces_protobuf(&self, bytes: &[u8]) -> Result<Outcome, DecodeError> {
        let request =
            <ExportTraceServiceRequest as prost::Message>::decode(bytes).map_err(|error| {
                DecodeError(format!("cannot decode ExportTraceServiceRequest: {error}"))
            })?;
        Ok(self.traces(&request))
    }

    /// An OTLP/JSON `ExportTraceServiceRequest` read by a borrowing reader
    /// (no `serde_json::Value`, no owned copies); `None` when the sink has
    /// none or it cannot read this body, and the general decoder is used.
    fn traces_json(&self, _body: &str) -> Option<Outcome> {
        None
    }
    fn metrics(&self, request: &ExportMetricsServiceRequest) -> Outcome;

    /// A protobuf-encoded `ExportMetricsServiceRequest`. The default decodes
    /// it with prost (the error is prost's); the production sink reads it
    /// without copying (`metric_batch::MetricBatch::read`).
    fn metrics_protobuf(&self, bytes: &[u8]) -> Result<Outcome, DecodeError> {
        let request = <ExportMetricsServiceRequest as prost::Message>::decode(bytes)
            .map_err(|error| DecodeError(error.to_string()))?;
        Ok(self.metrics(&request))
    }
    fn logs(&self, request: &ExportLogsServiceRequest) -> Outcome;
}
