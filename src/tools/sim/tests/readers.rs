//! The product's readers and replay on the simulator's output: every
//! reader reads what the general decoder reads, whatever the member order
//! and spacing, and replay finds the same incidents whichever reader and
//! input format it takes. They live here, with the simulator, because no
//! product module imports the tools (the walls test checks it).

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use crate::detect::DetectConfig;
use crate::model::ExtraKeys;
use crate::pipeline;
use crate::receiver::decode::{decode_json_any, JsonRequest};
use crate::receiver::json::tests::scanning::{
    as_log_recording_reads, general_logs, general_metrics,
};
use crate::receiver::json::{read_logs, read_metrics, JsonTraces, ScannedTraces};
use crate::replay::tests::events_of;
use crate::replay::{replay_input, Replay, ReplayStats};
use crate::store::StoreConfig;

/// `seconds` of simulated traffic at 5 requests/s, as OTLP JSON lines.
fn simulated_lines(seconds: u64) -> String {
    use crate::tools::sim::{write_json_lines, Scenario, Simulator};
    let scenario = Scenario {
        duration: std::time::Duration::from_secs(seconds),
        entry_rate_per_sec: 5.0,
        ..Scenario::default()
    };
    let mut out = Vec::new();
    write_json_lines(Simulator::new(scenario), &mut out).expect("simulates");
    String::from_utf8(out).expect("UTF-8")
}

/// Puts an object's members in some order.
type Order = fn(&mut Vec<(&String, &serde_json::Value)>);

/// `value` as compact JSON with each object's members in the order
/// `order` puts them, or with spaces and newlines around every token.
fn rewrite(value: &serde_json::Value, order: Order, spaced: bool) -> String {
    let gap = if spaced { " \n " } else { "" };
    match value {
        serde_json::Value::Object(map) => {
            let mut members: Vec<_> = map.iter().collect();
            order(&mut members);
            let inner: Vec<String> = members
                .iter()
                .map(|(key, value)| {
                    format!(
                        "{gap}{}{gap}:{gap}{}",
                        serde_json::to_string(key).expect("key"),
                        rewrite(value, order, spaced)
                    )
                })
                .collect();
            format!("{{{}{gap}}}", inner.join(","))
        }
        serde_json::Value::Array(items) => {
            let inner: Vec<String> = items
                .iter()
                .map(|item| format!("{gap}{}", rewrite(item, order, spaced)))
                .collect();
            format!("[{}{gap}]", inner.join(","))
        }
        other => other.to_string(),
    }
}

#[test]
fn lines_read_the_same_whatever_the_member_order_and_spacing() {
    let text = simulated_lines(20);
    let keys = ExtraKeys::new(&["app.tenant", "*.region"]);
    let orders: [Order; 3] = [
        |members| members.sort_by(|a, b| a.0.cmp(b.0)),
        |members| members.sort_by(|a, b| b.0.cmp(a.0)),
        // Every other member moved to the end: some where expected,
        // some not.
        |members| {
            let (even, odd): (Vec<_>, Vec<_>) = members
                .drain(..)
                .enumerate()
                .partition(|(index, _)| index % 2 == 0);
            members.extend(even.into_iter().chain(odd).map(|(_, member)| member));
        },
    ];
    let variants = |line: &str| -> Vec<String> {
        let value: serde_json::Value = serde_json::from_str(line).expect("JSON");
        let mut variants = Vec::new();
        for order in orders {
            for spaced in [false, true] {
                variants.push(rewrite(&value, order, spaced));
            }
        }
        variants
    };
    let (mut traces, mut metrics, mut logs) = (0, 0, 0);
    for line in text.lines() {
        if line.starts_with(r#"{"resourceSpans""#) {
            let expected = ScannedTraces::read(line, &keys).expect("scans");
            let slow = JsonTraces::read(line.as_bytes()).expect("serde reads");
            assert_eq!(expected.batch(), slow.batch_with(&keys));
            for variant in variants(line) {
                let scanned = ScannedTraces::read(&variant, &keys).expect("scans the variant");
                assert_eq!(scanned.batch(), expected.batch(), "{variant}");
            }
            traces += 1;
        } else if line.starts_with(r#"{"resourceMetrics""#) {
            let expected = read_metrics(line).expect("scans");
            for variant in variants(line) {
                assert_eq!(
                    read_metrics(&variant).as_ref(),
                    Some(&expected),
                    "{variant}"
                );
            }
            metrics += 1;
        } else {
            let expected = read_logs(line).expect("scans");
            for variant in variants(line) {
                assert_eq!(read_logs(&variant).as_ref(), Some(&expected), "{variant}");
            }
            logs += 1;
        }
    }
    assert!(traces > 5 && metrics > 0 && logs > 5);
}

#[test]
fn simulated_lines_read_the_same_both_ways() {
    let text = simulated_lines(30);
    let keys = ExtraKeys::new(&["app.tenant", "*.region"]);
    let (mut n_traces, mut n_metrics, mut n_logs) = (0, 0, 0);
    for line in text.lines() {
        if line.starts_with(r#"{"resourceSpans""#) {
            let scanned = ScannedTraces::read(line, &keys).expect("scans");
            let slow = JsonTraces::read(line.as_bytes()).expect("serde reads");
            assert_eq!(scanned.batch(), slow.batch_with(&keys));
            n_traces += 1;
        } else if line.starts_with(r#"{"resourceMetrics""#) {
            assert_eq!(read_metrics(line), Some(general_metrics(line)));
            n_metrics += 1;
        } else {
            assert_eq!(
                read_logs(line),
                Some(as_log_recording_reads(general_logs(line)))
            );
            n_logs += 1;
        }
    }
    assert!(n_traces > 10 && n_metrics > 0 && n_logs > 10);
}

/// A simulated shop with a latency fault, in small windows so that it is
/// detected within a few simulated minutes.
fn simulated_fault() -> crate::tools::sim::Scenario {
    use crate::tools::sim::{parse_fault, Fault, Scenario};
    Scenario {
        seed: 11,
        duration: Duration::from_secs(150),
        entry_rate_per_sec: 10.0,
        faults: vec![Fault {
            kind: parse_fault("latency:payment").expect("a fault spec"),
            start: Duration::from_secs(100),
            duration: None,
        }],
        benign_deploys: false,
        daily_shape: false,
        ..Scenario::default()
    }
}

fn small_windows() -> Replay {
    let store = StoreConfig {
        window: Duration::from_secs(2),
        ..StoreConfig::default()
    };
    // Few requests per window at this rate: judge them anyway.
    let detect = DetectConfig {
        warmup_windows: 10,
        latency_min_requests: 5,
        latency_p99_min_requests: 20,
        lateness: Duration::from_secs(2),
        ..DetectConfig::default()
    };
    Replay::new(&pipeline::Settings {
        store,
        detect,
        ..pipeline::Settings::default()
    })
}

/// Replays `input` through [`replay_input`] with small windows.
fn replay_small(input: Vec<u8>, path: &str) -> (Vec<String>, ReplayStats) {
    let mut replay = small_windows();
    let mut out = Vec::new();
    let reader: Box<dyn BufRead + Send> = Box::new(std::io::Cursor::new(input));
    replay_input(&mut replay, Path::new(path), reader, |events| {
        out.extend(
            events
                .iter()
                .map(|event| serde_json::to_string(event).expect("serializes")),
        )
    })
    .expect("valid input");
    events_of(&mut replay, out)
}

#[test]
fn the_fast_readers_change_nothing() {
    use crate::tools::sim::{write_json_lines, Simulator};
    use prost::Message;
    let mut json = Vec::new();
    write_json_lines(Simulator::new(simulated_fault()), &mut json).expect("simulates");

    // The reference: every line through the general decoder, in order. The
    // same requests, encoded, are the protobuf input.
    let mut general = small_windows();
    let mut out = Vec::new();
    let mut protobuf = Vec::new();
    for line in json.split(|byte| *byte == b'\n') {
        if line.is_empty() {
            continue;
        }
        let request = decode_json_any(line).expect("valid OTLP/JSON");
        let message = match &request {
            JsonRequest::Traces(request) => request.encode_to_vec(),
            JsonRequest::Metrics(request) => request.encode_to_vec(),
            JsonRequest::Logs(request) => request.encode_to_vec(),
        };
        protobuf.extend_from_slice(&(message.len() as u32).to_be_bytes());
        protobuf.extend_from_slice(&message);
        out.extend(
            general
                .feed(request)
                .iter()
                .map(|event| serde_json::to_string(event).expect("serializes")),
        );
    }
    let (expected, expected_stats) = events_of(&mut general, out);
    assert!(
        expected
            .iter()
            .any(|event| event.contains(r#""event":"opened""#)),
        "the fault is detected: {expected:#?}"
    );

    let (from_json, json_stats) = replay_small(json, "sim.jsonl");
    assert_eq!(from_json, expected, "scanning JSON readers");
    assert_eq!(json_stats, expected_stats);
    let (from_protobuf, protobuf_stats) = replay_small(protobuf, "sim.binpb");
    assert_eq!(from_protobuf, expected, "protobuf wire readers");
    assert_eq!(protobuf_stats, expected_stats);
}
