//! What differs between the three OTLP export requests, for the receivers:
//! how each is measured against the decoding limits, decoded, handed to the
//! sink and answered. Both transports go through [`Export`], so a request
//! is held to the same limits over gRPC and HTTP.

use opentelemetry_proto::tonic::collector::{
    logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse},
    metrics::v1::{
        ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    },
    trace::v1::{ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse},
};

use super::limits::{Limits, Measured, OverLimit};
use super::schema;
use super::JsonExport;
use crate::receiver::{json, wire, Outcome, Signal, Sink};

/// One of the three export requests.
pub trait Export: prost::Message + JsonExport + 'static {
    const SIGNAL: Signal;
    /// Message name used in error messages.
    const NAME: &'static str;
    /// lowerCamelCase name of the response's `rejected_<items>` field.
    const REJECTED_FIELD: &'static str;
    /// The request's layout, for measuring it before decoding.
    const SCHEMA: schema::Message;

    /// The `Export*ServiceResponse`.
    type Response: prost::Message + Default + Send + 'static;

    /// Hands a decoded request to the sink.
    fn export(&self, sink: &dyn Sink) -> Outcome;

    /// Decodes a protobuf body and hands it to the sink; the error says
    /// what is wrong with the body. Traces override this to use the sink's
    /// zero-copy path.
    fn export_protobuf(body: &[u8], sink: &dyn Sink) -> Result<Outcome, String> {
        let request = Self::decode(body).map_err(|error| error.to_string())?;
        Ok(request.export(sink))
    }

    /// Checks a protobuf body against `limits` before
    /// [`Export::export_protobuf`] decodes it.
    fn measure_protobuf(body: &[u8], limits: Limits) -> Result<Measured, OverLimit> {
        wire::measure_prost(body, Self::SCHEMA, limits)
    }

    /// Checks a JSON body against `limits` before `decode_json` decodes it.
    fn measure_json(body: &[u8], limits: Limits) -> Result<Measured, OverLimit> {
        json::measure(body, Self::SCHEMA, limits)
    }

    /// Reads a JSON body with the sink's borrowing reader, when it has one
    /// for this signal and can read the body; `None` falls back to the
    /// general decoder.
    fn export_json_fast(
        _body: &[u8],
        _sink: &dyn Sink,
        _limits: Limits,
    ) -> Option<Result<Outcome, Refused>> {
        None
    }

    /// The response; `partial` is `(rejected, error_message)`.
    fn response(partial: Option<(i64, String)>) -> Self::Response;
}

impl Export for ExportTraceServiceRequest {
    const SIGNAL: Signal = Signal::Traces;
    const NAME: &'static str = "ExportTraceServiceRequest";
    const REJECTED_FIELD: &'static str = "rejectedSpans";
    const SCHEMA: schema::Message = schema::Message::ExportTraces;
    type Response = ExportTraceServiceResponse;

    fn export(&self, sink: &dyn Sink) -> Outcome {
        sink.traces(self)
    }

    fn export_protobuf(body: &[u8], sink: &dyn Sink) -> Result<Outcome, String> {
        sink.traces_protobuf(body)
            .map_err(|error| error.to_string())
    }

    /// The production sink reads protobuf spans without copying them
    /// (`Sink::traces_protobuf`), into views: measured as such.
    fn measure_protobuf(body: &[u8], limits: Limits) -> Result<Measured, OverLimit> {
        wire::measure_views(body, limits)
    }

    /// The sink's scanning reader borrows from the body: besides the body
    /// it holds a view per span, so the number of spans is what bounds it
    /// (checked first). The general decoder's estimate (about 20 times the
    /// body) would refuse ordinary batches of a few thousand spans.
    fn export_json_fast(
        body: &[u8],
        sink: &dyn Sink,
        limits: Limits,
    ) -> Option<Result<Outcome, Refused>> {
        let text = std::str::from_utf8(body).ok()?;
        let counted = Limits {
            max_decoded_bytes: usize::MAX,
            ..limits
        };
        if let Err(over) = json::measure(body, Self::SCHEMA, counted) {
            return Some(Err(over.into()));
        }
        sink.traces_json(text).map(Ok)
    }

    fn response(partial: Option<(i64, String)>) -> Self::Response {
        ExportTraceServiceResponse {
            partial_success: partial.map(|(rejected_spans, error_message)| {
                ExportTracePartialSuccess {
                    rejected_spans,
                    error_message,
                }
            }),
        }
    }
}

impl Export for ExportMetricsServiceRequest {
    const SIGNAL: Signal = Signal::Metrics;
    const NAME: &'static str = "ExportMetricsServiceRequest";
    const REJECTED_FIELD: &'static str = "rejectedDataPoints";
    const SCHEMA: schema::Message = schema::Message::ExportMetrics;
    type Response = ExportMetricsServiceResponse;

    fn export(&self, sink: &dyn Sink) -> Outcome {
        sink.metrics(self)
    }

    fn export_protobuf(body: &[u8], sink: &dyn Sink) -> Result<Outcome, String> {
        sink.metrics_protobuf(body)
            .map_err(|error| error.to_string())
    }

    /// The production sink reads protobuf metrics without copying them
    /// (`Sink::metrics_protobuf`), into views: measured as such.
    fn measure_protobuf(body: &[u8], limits: Limits) -> Result<Measured, OverLimit> {
        wire::measure_metric_views(body, limits)
    }

    fn response(partial: Option<(i64, String)>) -> Self::Response {
        ExportMetricsServiceResponse {
            partial_success: partial.map(|(rejected_data_points, error_message)| {
                ExportMetricsPartialSuccess {
                    rejected_data_points,
                    error_message,
                }
            }),
        }
    }
}

impl Export for ExportLogsServiceRequest {
    const SIGNAL: Signal = Signal::Logs;
    const NAME: &'static str = "ExportLogsServiceRequest";
    const REJECTED_FIELD: &'static str = "rejectedLogRecords";
    const SCHEMA: schema::Message = schema::Message::ExportLogs;
    type Response = ExportLogsServiceResponse;

    fn export(&self, sink: &dyn Sink) -> Outcome {
        sink.logs(self)
    }

    fn response(partial: Option<(i64, String)>) -> Self::Response {
        ExportLogsServiceResponse {
            partial_success: partial.map(|(rejected_log_records, error_message)| {
                ExportLogsPartialSuccess {
                    rejected_log_records,
                    error_message,
                }
            }),
        }
    }
}

/// Why a body was refused while being decoded.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Over the limits: refused before decoding.
    #[error(transparent)]
    OverLimit(#[from] OverLimit),
    /// Not a valid request; what is wrong with it.
    #[error("{0}")]
    Decode(String),
}

/// Measures a protobuf body against `limits`, then decodes it and hands it
/// to the sink.
pub fn export_protobuf<R: Export>(
    body: &[u8],
    sink: &dyn Sink,
    limits: Limits,
) -> Result<Outcome, Refused> {
    R::measure_protobuf(body, limits)?;
    R::export_protobuf(body, sink).map_err(Refused::Decode)
}

/// Measures an OTLP/JSON body against `limits`, then decodes it (with the
/// general decoder) and hands it to the sink.
pub fn export_json<R: Export>(
    body: &[u8],
    sink: &dyn Sink,
    limits: Limits,
) -> Result<Outcome, Refused> {
    if let Some(fast) = R::export_json_fast(body, sink, limits) {
        return fast;
    }
    R::measure_json(body, limits)?;
    let request = super::decode_json::<R>(body).map_err(Refused::Decode)?;
    Ok(request.export(sink))
}
