//! Replay input formats.
//!
//! - OTLP JSON lines: one `Export*ServiceRequest` object per line (the OTel
//!   file exporter specification's format and the Collector file exporter's
//!   default).
//! - Length-delimited OTLP protobuf: each message is a big-endian `u32` byte
//!   count followed by that many bytes of an `Export*ServiceRequest` (what
//!   the Collector's file exporter writes with `format: proto`; the bytes
//!   are the same as `TracesData`, `MetricsData` and `LogsData`).
//!
//! The format is told from the first byte: a JSON line starts with `{` or
//! whitespace, a length prefix of a message under 16 MiB starts with 0. A
//! protobuf message does not name its signal, so each message's signal is
//! read from its first item's fields (see [`sniff_signal`]).

use std::io::{BufRead, ErrorKind, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Largest protobuf message accepted from a file. The Collector writes one
/// export batch per message, normally well under a few MiB.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// How an input file is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    JsonLines,
    Protobuf,
}

/// Which signal a protobuf message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

/// Tells the format from the first byte without consuming it. An empty
/// input is JSON lines (with no lines).
pub fn sniff_format(input: &mut dyn BufRead) -> std::io::Result<Format> {
    let buffer = input.fill_buf()?;
    Ok(match buffer.first() {
        Some(0) => Format::Protobuf,
        _ => Format::JsonLines,
    })
}

/// Reads one length-delimited message into `message`. `Ok(false)` at a
/// clean end of input; an error for a truncated or oversized message.
pub fn read_message(input: &mut dyn BufRead, message: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut prefix = [0u8; 4];
    let mut filled = 0;
    while filled < prefix.len() {
        match input.read(&mut prefix[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => {
                return Err(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "input ends inside a length prefix",
                ))
            }
            Ok(read) => filled += read,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    let length = u32::from_be_bytes(prefix) as usize;
    if length > MAX_MESSAGE_BYTES {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!(
                "message of {length} bytes is over the {MAX_MESSAGE_BYTES}-byte limit \
                 (is this really length-delimited OTLP protobuf?)"
            ),
        ));
    }
    message.clear();
    message.resize(length, 0);
    input.read_exact(message).map_err(|error| {
        if error.kind() == ErrorKind::UnexpectedEof {
            std::io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("input ends inside a message of {length} bytes"),
            )
        } else {
            error
        }
    })?;
    Ok(true)
}

/// A protobuf field: its number, wire type and (for length-delimited
/// fields) its bytes.
struct Field<'a> {
    number: u64,
    wire_type: u8,
    bytes: &'a [u8],
}

fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The fields of a message, stopping at the first malformed one.
fn fields(bytes: &[u8]) -> impl Iterator<Item = Field<'_>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let tag = varint(bytes, &mut at)?;
        let wire_type = (tag & 7) as u8;
        let number = tag >> 3;
        let start = at;
        match wire_type {
            0 => {
                varint(bytes, &mut at)?;
            }
            1 => at = at.checked_add(8)?,
            2 => {
                let length = usize::try_from(varint(bytes, &mut at)?).ok()?;
                let begin = at;
                at = at.checked_add(length)?;
                if at > bytes.len() {
                    return None;
                }
                return Some(Field {
                    number,
                    wire_type,
                    bytes: &bytes[begin..at],
                });
            }
            5 => at = at.checked_add(4)?,
            _ => return None,
        }
        if at > bytes.len() {
            return None;
        }
        Some(Field {
            number,
            wire_type,
            bytes: &bytes[start..at],
        })
    })
}

fn first_field(bytes: &[u8], number: u64) -> Option<&[u8]> {
    fields(bytes)
        .find(|field| field.number == number && field.wire_type == 2)
        .map(|field| field.bytes)
}

/// The signal of an `Export*ServiceRequest`, from the fields of its first
/// span, metric or log record: a span has its start time in field 7 as a
/// fixed64; a log record has its time in field 1 or 11 as a fixed64; a
/// metric has its data (sum, histogram, exponential histogram, summary) in
/// field 7, 9, 10 or 11 as a message, or a gauge in field 5 alongside a
/// name and no fixed64 fields. `None` when the message carries no items
/// (nothing to record) or cannot be told apart.
pub fn sniff_signal(message: &[u8]) -> Option<Signal> {
    for resource in fields(message).filter(|field| field.number == 1 && field.wire_type == 2) {
        for scope in
            fields(resource.bytes).filter(|field| field.number == 2 && field.wire_type == 2)
        {
            let Some(item) = first_field(scope.bytes, 2) else {
                continue;
            };
            let mut gauge_like = false;
            for field in fields(item) {
                match (field.number, field.wire_type) {
                    (7, 1) | (8, 1) => return Some(Signal::Traces),
                    (1, 1) | (11, 1) | (2, 0) => return Some(Signal::Logs),
                    (7 | 9 | 10 | 11, 2) => return Some(Signal::Metrics),
                    (5, 2) => gauge_like = true,
                    _ => {}
                }
            }
            if gauge_like {
                return Some(Signal::Metrics);
            }
        }
    }
    None
}

/// A reader that counts the bytes read through it, for progress reports.
pub struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R> Counting<R> {
    pub fn new(inner: R, count: Arc<AtomicU64>) -> Self {
        Counting { inner, count }
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.count.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    };
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        metric::Data, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    };
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    fn traces() -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        name: "GET /".into(),
                        start_time_unix_nano: 1,
                        end_time_unix_nano: 2,
                        ..Span::default()
                    }],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
        .encode_to_vec()
    }

    fn metrics(data: Data) -> Vec<u8> {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "process.memory.usage".into(),
                        data: Some(data),
                        ..Metric::default()
                    }],
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        }
        .encode_to_vec()
    }

    fn logs() -> Vec<u8> {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        time_unix_nano: 5,
                        severity_number: 17,
                        ..LogRecord::default()
                    }],
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn signals_are_told_apart() {
        let point = NumberDataPoint {
            time_unix_nano: 3,
            ..NumberDataPoint::default()
        };
        assert_eq!(sniff_signal(&traces()), Some(Signal::Traces));
        assert_eq!(
            sniff_signal(&metrics(Data::Gauge(Gauge {
                data_points: vec![point.clone()]
            }))),
            Some(Signal::Metrics)
        );
        assert_eq!(
            sniff_signal(&metrics(Data::Sum(Sum {
                data_points: vec![point],
                ..Sum::default()
            }))),
            Some(Signal::Metrics)
        );
        assert_eq!(sniff_signal(&logs()), Some(Signal::Logs));
        assert_eq!(
            sniff_signal(&ExportTraceServiceRequest::default().encode_to_vec()),
            None
        );
        // A log record whose time is unset still has its severity; a bare
        // record with nothing set has nothing to tell it by.
        assert_eq!(sniff_signal(b"\x0a\x00"), None);
    }

    #[test]
    fn length_delimited_messages_are_read_and_errors_named() {
        let mut input = Vec::new();
        for message in [traces(), logs()] {
            input.extend_from_slice(&(message.len() as u32).to_be_bytes());
            input.extend_from_slice(&message);
        }
        let mut reader = std::io::BufReader::new(&input[..]);
        assert_eq!(sniff_format(&mut reader).unwrap(), Format::Protobuf);
        let mut message = Vec::new();
        assert!(read_message(&mut reader, &mut message).unwrap());
        assert_eq!(message, traces());
        assert!(read_message(&mut reader, &mut message).unwrap());
        assert_eq!(message, logs());
        assert!(!read_message(&mut reader, &mut message).unwrap());

        let truncated = &input[..input.len() - 1];
        let mut reader = std::io::BufReader::new(truncated);
        read_message(&mut reader, &mut message).unwrap();
        let error = read_message(&mut reader, &mut message).unwrap_err();
        assert!(
            error.to_string().contains("ends inside a message"),
            "{error}"
        );

        let mut reader = std::io::BufReader::new(&[0u8, 0][..]);
        let error = read_message(&mut reader, &mut message).unwrap_err();
        assert!(error.to_string().contains("length prefix"), "{error}");

        let huge = [0x7fu8, 0, 0, 0];
        let mut reader = std::io::BufReader::new(&huge[..]);
        let error = read_message(&mut reader, &mut message).unwrap_err();
        assert!(error.to_string().contains("limit"), "{error}");

        let mut json = std::io::BufReader::new(&b"{\"resourceSpans\":[]}\n"[..]);
        assert_eq!(sniff_format(&mut json).unwrap(), Format::JsonLines);
        let mut empty = std::io::BufReader::new(&b""[..]);
        assert_eq!(sniff_format(&mut empty).unwrap(), Format::JsonLines);
    }
}
