//! Agent mode against a real gateway: spans sent to an agent (a real
//! collector in `mode: agent`) reach a second real collector as window
//! summaries over OTLP/gRPC, and show up there as the operation, edge and
//! own series the spans made on the agent; a gateway that cannot be
//! reached is counted in the agent's `/metrics`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span};

use crate::common::{test_settings, TestServer};
use triage::model::{SeriesKey, SeriesKind};

const WAIT: Duration = Duration::from_secs(20);
const TRACES: u64 = 50;

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// `TRACES` traces of frontend `GET /` -> cart `GET /cart`, ending `end`.
fn traffic(end: u64) -> ExportTraceServiceRequest {
    let mut frontend = Vec::new();
    let mut cart = Vec::new();
    for n in 0..TRACES {
        let trace_id = (n + 1).to_be_bytes().repeat(2);
        let id = |k: u64| (n * 4 + k + 1).to_be_bytes().to_vec();
        let span = |span_id, parent, name: &str, kind: SpanKind, millis: u64| Span {
            trace_id: trace_id.clone(),
            span_id,
            parent_span_id: parent,
            name: name.to_string(),
            kind: kind as i32,
            start_time_unix_nano: end - millis * 1_000_000,
            end_time_unix_nano: end,
            ..Default::default()
        };
        let mut client = span(id(1), id(0), "GET", SpanKind::Client, 12);
        client.attributes.push(attribute("peer.service", "cart"));
        frontend.push(client);
        frontend.push(span(id(0), Vec::new(), "GET /", SpanKind::Server, 20));
        cart.push(span(id(2), id(1), "GET /cart", SpanKind::Server, 10));
    }
    let resource = |service: &str, spans| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![
                attribute("service.name", service),
                attribute("service.version", "1.0"),
            ],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![resource("frontend", frontend), resource("cart", cart)],
    }
}

fn fast_windows(settings: &mut triage::config::Settings) {
    settings.store.window = Duration::from_secs(1);
    settings.detect.lateness = Duration::from_secs(1);
}

async fn admin_metrics(server: &TestServer) -> String {
    reqwest::get(format!("{}/metrics", server.admin_url()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("/metrics body")
}

/// The value of the first sample line starting with `prefix`.
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_sent_to_an_agent_reach_the_gateway_as_the_same_series() {
    let mut gateway_settings = test_settings();
    fast_windows(&mut gateway_settings);
    let gateway = TestServer::start_with(gateway_settings).await;

    let mut settings = test_settings();
    fast_windows(&mut settings);
    settings.agent.enabled = true;
    settings.agent.gateway.endpoint = gateway.grpc_url();
    let agent = TestServer::start_with(settings).await;

    // Once detection runs on the agent, so the spans' window is one it
    // closes (and so summarises).
    agent.wait_for(WAIT, |store| store.closed_through()).await;
    let mut client = TraceServiceClient::connect(agent.grpc_url())
        .await
        .expect("connect to the agent");
    let response = client
        .export(traffic(now_nanos() - 100_000_000))
        .await
        .expect("export")
        .into_inner();
    assert!(response.partial_success.is_none(), "{response:?}");

    // The agent closes the window (1 s + 1 s lateness), summarises it and
    // sends it; the gateway records the series the spans made.
    let expected = [
        (SeriesKind::Operation, "frontend", "GET /"),
        (SeriesKind::Operation, "cart", "GET /cart"),
        (SeriesKind::Edge, "frontend", "cart"),
        (SeriesKind::Own, "frontend", "GET /"),
        (SeriesKind::Own, "cart", "GET /cart"),
    ];
    for (kind, service, name) in expected {
        let on_agent = agent
            .wait_for(WAIT, |store| {
                store
                    .stats(&SeriesKey::new(kind, service, name), 0, u64::MAX)
                    .filter(|stats| stats.requests == TRACES)
            })
            .await;
        let on_gateway = gateway
            .wait_for(WAIT, |store| {
                store
                    .stats(&SeriesKey::new(kind, service, name), 0, u64::MAX)
                    .filter(|stats| stats.requests == TRACES)
            })
            .await;
        assert_eq!(
            on_gateway.errors, on_agent.errors,
            "{kind:?} {service} {name}"
        );
        let (a, b) = (
            on_agent.p50.expect("latency"),
            on_gateway.p50.expect("latency"),
        );
        assert!(
            (b / a - 1.0).abs() < 0.025,
            "{kind:?} {service} {name}: {a} vs {b}"
        );
    }
    // The agent counts what it sent once the gateway has answered.
    let deadline = Instant::now() + WAIT;
    let metrics = loop {
        let metrics = admin_metrics(&agent).await;
        let sent = sample(
            &metrics,
            "triage_agent_sent_items_total{signal=\"metrics\"}",
        );
        if sent.is_some_and(|sent| sent > 0.0) {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "nothing counted as sent:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        sample(&metrics, "triage_agent_queue_capacity"),
        Some(1000.0)
    );

    agent.stop().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gateway_is_counted_not_waited_for() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let mut settings = test_settings();
    fast_windows(&mut settings);
    settings.agent.enabled = true;
    settings.agent.gateway.endpoint = format!("http://127.0.0.1:{port}");
    settings.agent.gateway.timeout = Duration::from_millis(500);
    settings.agent.max_elapsed_time = Duration::ZERO;
    let agent = TestServer::start_with(settings).await;

    // Once detection runs on the agent, so the spans' window is one it
    // closes (and so summarises).
    agent.wait_for(WAIT, |store| store.closed_through()).await;
    let mut client = TraceServiceClient::connect(agent.grpc_url())
        .await
        .expect("connect to the agent");
    let started = Instant::now();
    client
        .export(traffic(now_nanos() - 100_000_000))
        .await
        .expect("ingestion does not wait for the gateway");
    assert!(started.elapsed() < Duration::from_secs(2));

    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = admin_metrics(&agent).await;
        let failed = sample(
            &metrics,
            "triage_agent_send_failed_items_total{signal=\"metrics\"}",
        )
        .unwrap_or(0.0);
        if failed > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed send counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent.stop().await;
}
