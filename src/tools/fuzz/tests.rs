use std::path::PathBuf;

use super::*;

/// Runs `check` on every seed of `fuzz/corpus/<target>/`, so the checks
/// and the committed corpus are exercised by `cargo test` on a stable
/// toolchain too; returns how many seeds there were.
fn seeds(target: &str, check: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n_seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&bytes));
        assert!(outcome.is_ok(), "{} fails its check", path.display());
        n_seeds += 1;
    }
    n_seeds
}

#[test]
fn every_seed_passes_its_target_check() {
    assert!(seeds("protobuf", protobuf) >= 5);
    assert!(seeds("metrics_protobuf", metrics_protobuf) >= 5);
    assert!(seeds("otlp_json", otlp_json) >= 5);
    assert!(seeds("config", config) >= 3);
    assert!(seeds("changes", changes) >= 4);
}

/// The seeds are real requests: each one is read, not only survived.
#[test]
fn the_seeds_are_accepted_by_the_parsers_they_feed() {
    let extra = ExtraKeys::none();
    for name in ["traces", "traces_error", "traces_flag"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let bytes = std::fs::read(dir.join(format!("protobuf/{name}.binpb"))).unwrap();
        assert!(
            !TraceBatch::read(&bytes).unwrap().spans.is_empty(),
            "{name}"
        );
        let text = std::fs::read_to_string(dir.join(format!("otlp_json/{name}.json"))).unwrap();
        assert!(
            !ScannedTraces::read(&text, &extra).unwrap().is_empty(),
            "{name}"
        );
    }
    // Metrics: an agent's summary, span metrics whose data, buckets and
    // attribute values come in pieces prost merges, unpacked counts.
    for name in [
        "metrics",
        "agent_summary",
        "data_replaced",
        "merged_buckets",
        "unpacked_counts",
    ] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/metrics_protobuf");
        let bytes = std::fs::read(dir.join(format!("{name}.binpb"))).unwrap();
        assert!(
            ExportMetricsServiceRequest::decode(&bytes[..]).is_ok(),
            "{name}"
        );
        let batch = MetricBatch::read(&bytes).unwrap();
        assert!(!batch.points.is_empty(), "{name}");
    }
    let example = crate::config::example_yaml();
    assert!(Settings::from_yaml(example, &Overrides::default()).is_ok());
    assert!(parse_change(br#"{"service":"cart","kind":"deploy"}"#, NOW_UNIX_NANOS).is_ok());
}

/// A check fails loudly when its property breaks: a sink handed more
/// items than the limit allows trips `within`.
#[test]
#[should_panic(expected = "items through a limit of 3")]
fn a_limit_crossed_fails_the_check() {
    within::<ExportLogsServiceRequest>(TIGHT, |sink| Ok(sink.add(4)));
}

/// The body the third protobuf run found, where the pre-decode estimate
/// came out below what prost allocates: a `resource` given three times in
/// one `resourceMetrics`, whose attributes prost gathers into one vector.
#[test]
fn the_estimate_covers_a_message_given_several_times() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/protobuf");
    let bytes = std::fs::read(dir.join("merged_resource_attributes.binpb")).unwrap();
    protobuf(&bytes);
}

/// One level further down than the body above: an attribute whose `value`
/// is given twice, each with an `array_value`. prost merges the two arrays
/// into one vector (33 values: capacity 64), while a walk counting each
/// occurrence's vector from empty charged 32 + 16. The walk now charges
/// such vectors twice; the whole check runs, the heap estimate included.
#[test]
fn the_estimate_covers_a_message_merged_inside_a_merged_message() {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};

    fn field(number: u64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_key(
            number as u32,
            prost::encoding::WireType::LengthDelimited,
            &mut out,
        );
        prost::encoding::encode_varint(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }
    let array = |n: i64| AnyValue {
        value: Some(any_value::Value::ArrayValue(ArrayValue {
            values: (0..n)
                .map(|i| AnyValue {
                    value: Some(any_value::Value::IntValue(i)),
                })
                .collect(),
        })),
    };
    let mut pair = KeyValue {
        key: "k".to_string(),
        value: Some(array(17)),
        ..KeyValue::default()
    }
    .encode_to_vec();
    pair.extend(field(2, &array(16).encode_to_vec()));
    let resource = field(1, &pair);
    let body = field(1, &field(1, &resource));

    let decoded = ExportMetricsServiceRequest::decode(&body[..]).expect("prost reads it");
    let attribute = &decoded.resource_metrics[0]
        .resource
        .as_ref()
        .expect("resource")
        .attributes[0];
    let Some(any_value::Value::ArrayValue(merged)) = attribute
        .value
        .as_ref()
        .and_then(|value| value.value.as_ref())
    else {
        panic!("not an array: {attribute:?}");
    };
    assert_eq!(merged.values.len(), 33, "prost merges the two arrays");
    let measured = measure_prost(&body, Schema::ExportMetrics, Limits::default()).expect("within");
    assert!(
        measured.decoded_bytes >= metrics_heap(&decoded),
        "{} bytes estimated, prost holds {}",
        measured.decoded_bytes,
        metrics_heap(&decoded)
    );
    protobuf(&body);
}
