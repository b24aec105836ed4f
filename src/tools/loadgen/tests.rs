use std::collections::HashSet;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};
use prost::Message;

use super::*;

const BASE: u64 = 1_765_000_000_000_000_000;

fn mix(services: usize, operations: usize, error_share: f64) -> Mix {
    Mix {
        services,
        operations,
        batch_spans: 64,
        error_share,
        call_share: 0.5,
        seed: 7,
    }
}

fn spans(request: &ExportTraceServiceRequest) -> Vec<(String, &Span)> {
    request
        .resource_spans
        .iter()
        .flat_map(|resource| {
            let service = resource
                .resource
                .as_ref()
                .and_then(|resource| {
                    resource
                        .attributes
                        .iter()
                        .find(|kv| kv.key == "service.name")
                })
                .and_then(|kv| kv.value.as_ref()?.value.clone());
            let Some(Value::StringValue(service)) = service else {
                panic!("resource without service.name");
            };
            resource
                .scope_spans
                .iter()
                .flat_map(|scope| &scope.spans)
                .map(move |span| (service.clone(), span))
        })
        .collect()
}

fn text<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(text) => Some(text.as_str()),
            _ => None,
        })
}

#[test]
fn stamping_moves_every_time_and_id_and_keeps_the_links() {
    let request = &mix(4, 5, 0.1).requests(1, BASE)[0];
    let template = Template::new(request).expect("index the request");
    let shift = 3_600_000_000_000;
    let nonce = 0x0123_4567_89ab_cdef;
    let mut bytes = Vec::new();
    template.write(shift, nonce, &mut bytes);
    let stamped = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("decodes");

    let before = spans(request);
    let after = spans(&stamped);
    assert_eq!(before.len() as u64, template.spans);
    assert_eq!(before.len(), after.len());
    let xor = |id: &[u8]| {
        let mut id = id.to_vec();
        for (byte, key) in id.iter_mut().zip(nonce.to_le_bytes()) {
            *byte ^= key;
        }
        id
    };
    for ((_, old), (_, new)) in before.iter().zip(&after) {
        assert_eq!(new.start_time_unix_nano, old.start_time_unix_nano + shift);
        assert_eq!(new.end_time_unix_nano, old.end_time_unix_nano + shift);
        assert_eq!(new.trace_id, xor(&old.trace_id));
        assert_eq!(new.span_id, xor(&old.span_id));
        assert_eq!(new.parent_span_id.is_empty(), old.parent_span_id.is_empty());
        if !old.parent_span_id.is_empty() {
            assert_eq!(new.parent_span_id, xor(&old.parent_span_id));
        }
        assert_eq!(new.name, old.name);
        assert_eq!(new.attributes, old.attributes);
    }
    // Every parent is a span of the same request and trace, after stamping too.
    let ids: HashSet<(&[u8], &[u8])> = after
        .iter()
        .map(|(_, span)| (span.trace_id.as_slice(), span.span_id.as_slice()))
        .collect();
    for (_, span) in &after {
        if !span.parent_span_id.is_empty() {
            assert!(ids.contains(&(span.trace_id.as_slice(), span.parent_span_id.as_slice())));
        }
    }
}

#[test]
fn the_mix_has_every_operation_edges_and_resources() {
    let requests = mix(3, 4, 0.0).requests(40, BASE);
    let mut operations = HashSet::new();
    let mut edges = HashSet::new();
    for request in &requests {
        assert!(request.resource_spans.iter().all(|resource| {
            let keys: Vec<_> = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .map(|kv| kv.key.as_str())
                .collect();
            ["service.name", "service.version", "k8s.pod.name"]
                .iter()
                .all(|key| keys.contains(key))
        }));
        for (service, span) in spans(request) {
            assert!(span.status.is_none(), "error share 0: no errors");
            assert!(
                span.end_time_unix_nano <= BASE
                    && span.start_time_unix_nano < span.end_time_unix_nano
            );
            if span.kind == SpanKind::Server as i32 {
                operations.insert((service, span.name.clone()));
            } else {
                assert_eq!(span.kind, SpanKind::Client as i32);
                let peer = text(span, "peer.service").expect("client spans name their peer");
                assert!(text(span, "server.address").is_some());
                assert_ne!(peer, service);
                edges.insert((service, peer.to_owned()));
            }
        }
    }
    assert_eq!(operations.len(), 3 * 4);
    assert_eq!(edges.len(), 3 * 2, "each of 3 services calls the 2 others");

    let failing = mix(3, 4, 1.0).requests(1, BASE);
    for (_, span) in spans(&failing[0]) {
        let status = span.status.as_ref().expect("error share 1: all fail");
        assert_eq!(status.code, StatusCode::Error as i32);
    }
}

#[test]
fn the_same_seed_gives_the_same_requests() {
    assert_eq!(
        mix(5, 5, 0.1).requests(3, BASE),
        mix(5, 5, 0.1).requests(3, BASE)
    );
}

#[tokio::test]
async fn a_short_run_against_the_reference_server_is_all_accepted() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(serve_reference_on(listener));
    let args = LoadgenArgs {
        reference_server: None,
        endpoint: format!("http://{address}"),
        connections: 2,
        rate: Some(5_000.0),
        duration: "300ms".to_owned(),
        services: 3,
        operations: 4,
        batch_spans: 50,
        error_share: 0.01,
        call_share: 0.5,
        requests: 4,
        seed: 1,
        gzip: false,
    };
    let report = send(&args.plan().expect("valid arguments"))
        .await
        .expect("run");
    server.abort();
    assert!(report.requests > 0);
    assert_eq!(report.accepted_spans, report.sent_spans);
    assert!(report.errors.is_empty(), "{report}");
    assert!(report.to_string().contains("\nresult seconds="));
}

#[test]
fn bad_arguments_are_refused_before_anything_runs() {
    let args = |change: fn(&mut LoadgenArgs)| {
        let mut args = LoadgenArgs {
            reference_server: None,
            endpoint: "http://127.0.0.1:4317".to_owned(),
            connections: 1,
            rate: None,
            duration: "1s".to_owned(),
            services: 1,
            operations: 1,
            batch_spans: 1,
            error_share: 0.0,
            call_share: 0.0,
            requests: 1,
            seed: 1,
            gzip: false,
        };
        change(&mut args);
        args.plan()
    };
    assert!(args(|_| {}).is_ok());
    assert!(args(|args| args.connections = 0).is_err());
    assert!(args(|args| args.rate = Some(0.0)).is_err());
    assert!(args(|args| args.duration = "soon".into()).is_err());
    assert!(args(|args| args.error_share = 1.5).is_err());
    assert!(args(|args| args.operations = 0).is_err());
}
