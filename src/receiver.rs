//! OTLP receivers: gRPC (`grpc`) and HTTP (`http`), both feeding one [`Sink`].
//!
//! The receivers decode and validate requests (`wire`: the zero-copy
//! protobuf trace reader; `json`: the fast OTLP/JSON readers; `decode`: the
//! general JSON decoder and the conversion of prost requests into the
//! views of `model`); the sink (`ingest::Ingest` in production) turns the
//! decoded requests into store records. Keeping the sink behind a trait lets each transport be tested on
//! its own and keeps the transports free of recording logic.

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};

pub mod admission;
pub mod decode;
pub mod grpc;
pub mod http;
pub mod json;
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
    fn logs(&self, request: &ExportLogsServiceRequest) -> Outcome;
}
