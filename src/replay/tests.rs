use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span};

use super::*;

use crate::pipeline;

const SECOND: u64 = 1_000_000_000;
const START: u64 = 1_700_000_000 * SECOND;

fn request(second: u64, millis: u64) -> ExportTraceServiceRequest {
    let spans = (0..20u64)
        .map(|i| {
            let end = START + second * SECOND + i * SECOND / 20;
            let jitter = (i * 7 + second * 3) % 5;
            Span {
                trace_id: (u128::from(second) << 32 | u128::from(i + 1))
                    .to_be_bytes()
                    .to_vec(),
                span_id: (second << 8 | (i + 1)).to_be_bytes().to_vec(),
                name: "POST /pay".to_string(),
                kind: SpanKind::Server as i32,
                start_time_unix_nano: end - (millis + jitter) * 1_000_000,
                end_time_unix_nano: end,
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".to_string(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue("payment".to_string())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// JSON lines: 20 minutes of payment traffic, 8x slower from minute 15 to 18.
fn json_lines() -> String {
    let mut lines = String::new();
    for second in 0..1_200 {
        let millis = if (900..1_080).contains(&second) {
            320
        } else {
            40
        };
        lines.push_str(&serde_json::to_string(&request(second, millis)).expect("serializes"));
        lines.push('\n');
    }
    lines
}

fn replay(input: &str) -> (Vec<String>, ReplayStats) {
    let mut replay = Replay::new(&pipeline::Settings::default());
    let mut out = Vec::new();
    replay_lines(
        &mut replay,
        Path::new("test.jsonl"),
        input.as_bytes(),
        |events| {
            out.extend(
                events
                    .iter()
                    .map(|event| serde_json::to_string(event).expect("serializes")),
            )
        },
    )
    .expect("valid input");
    events_of(&mut replay, out)
}

#[test]
fn replay_detects_and_is_deterministic() {
    let input = json_lines();
    let (first, stats) = replay(&input);
    let (second, _) = replay(&input);
    assert_eq!(first, second, "same input, same output");
    assert_eq!(stats.lines, 1_200);
    assert_eq!(stats.spans, 24_000);
    assert!(first.len() >= 2, "opened and resolved: {first:#?}");
    let opened: serde_json::Value = serde_json::from_str(&first[0]).expect("JSON");
    assert_eq!(opened["event"], "opened");
    assert_eq!(opened["incident"]["service"], "payment");
    let onset = opened["incident"]["onset_unix_nanos"]
        .as_u64()
        .expect("onset");
    assert!(
        (START + 890 * SECOND..=START + 930 * SECOND).contains(&onset),
        "onset {onset}"
    );
    let last: serde_json::Value =
        serde_json::from_str(first.last().expect("events")).expect("JSON");
    assert_eq!(last["event"], "resolved");
}

#[test]
fn a_bad_line_names_its_number() {
    let input = format!(
        "{}\nnot json\n",
        serde_json::to_string(&request(0, 5)).expect("serializes")
    );
    let mut replay = Replay::new(&pipeline::Settings::default());
    let error = replay_lines(&mut replay, Path::new("in.jsonl"), input.as_bytes(), |_| {})
        .expect_err("bad line");
    assert!(error.to_string().starts_with("in.jsonl:2: "), "{error}");
}

/// The same 20 minutes as length-delimited protobuf.
fn protobuf() -> Vec<u8> {
    use prost::Message;
    let mut bytes = Vec::new();
    for second in 0..1_200 {
        let millis = if (900..1_080).contains(&second) {
            320
        } else {
            40
        };
        let message = request(second, millis).encode_to_vec();
        bytes.extend_from_slice(&(message.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&message);
    }
    bytes
}

/// Replays through [`replay_input`] (format sniffing, the reader thread).
fn replay_any(input: Vec<u8>, path: &str) -> Result<(Vec<String>, ReplayStats, Format), String> {
    let mut replay = Replay::new(&pipeline::Settings::default());
    let mut out = Vec::new();
    let reader: Box<dyn BufRead + Send> = Box::new(std::io::Cursor::new(input));
    let format = replay_input(&mut replay, Path::new(path), reader, |events| {
        out.extend(
            events
                .iter()
                .map(|event| serde_json::to_string(event).expect("serializes")),
        )
    })
    .map_err(|error| error.to_string())?;
    out.extend(
        replay
            .finish()
            .iter()
            .map(|event| serde_json::to_string(event).expect("serializes")),
    );
    Ok((out, replay.stats, format))
}

#[test]
fn protobuf_and_json_lines_give_the_same_events() {
    let (from_json, json_stats) = replay(&json_lines());
    let (threaded, threaded_stats, format) =
        replay_any(json_lines().into_bytes(), "in.jsonl").expect("valid JSON lines");
    assert_eq!(format, Format::JsonLines);
    assert_eq!(threaded, from_json, "the reader thread changes nothing");
    assert_eq!(threaded_stats, json_stats);
    let (from_protobuf, protobuf_stats, format) =
        replay_any(protobuf(), "in.binpb").expect("valid protobuf");
    assert_eq!(format, Format::Protobuf);
    assert!(!from_protobuf.is_empty());
    assert_eq!(from_protobuf, from_json);
    assert_eq!(protobuf_stats, json_stats);
}

#[test]
fn bad_protobuf_names_the_message_and_bad_json_the_line() {
    let mut input = protobuf();
    input.truncate(input.len() - 3);
    let error = replay_any(input, "in.binpb").expect_err("truncated");
    assert!(error.starts_with("in.binpb: message 1200: "), "{error}");
    let mut garbage = Vec::new();
    garbage.extend_from_slice(&5u32.to_be_bytes());
    garbage.extend_from_slice(&[0xff; 5]);
    let error = replay_any(garbage, "bad.binpb").expect_err("garbage");
    assert!(error.starts_with("bad.binpb: message 1: "), "{error}");
    let input = format!(
        "{}\n\n{{\"resourceSpans\": 3}}\n",
        serde_json::to_string(&request(0, 5)).expect("serializes")
    );
    let error = replay_any(input.into_bytes(), "in.jsonl").expect_err("bad line");
    assert!(error.starts_with("in.jsonl:3: "), "{error}");
}

pub(crate) fn events_of(replay: &mut Replay, mut out: Vec<String>) -> (Vec<String>, ReplayStats) {
    out.extend(
        replay
            .finish()
            .iter()
            .map(|event| serde_json::to_string(event).expect("serializes")),
    );
    (out, replay.stats)
}
