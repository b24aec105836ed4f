//! Change events against the real collector: changes seen in spans sent by
//! the real Rust OpenTelemetry SDK (a new `service.version`, a feature flag
//! serving a new variant), Kubernetes events arriving as OTLP logs, and the
//! `POST`/`GET /api/v1/changes` webhook on the admin port, with and without
//! a bearer token.
//!
//! Spans and log records carry explicit event times minutes in the past, so
//! a "deploy" ten minutes after a service's first spans takes no wall-clock
//! time: change detection runs on event time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{Span as _, SpanKind, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{RetryPolicy, WithExportConfig, WithTonicConfig};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, KeyValue as ProtoKeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{test_settings, TestServer};
use triage::ingest::changes::ApiToken;

/// Longest wait for changes to show up; exports are synchronous, so this
/// is only a safety net.
const WAIT: Duration = Duration::from_secs(10);

/// Keeps the OTLP exporter's errors, so a failed export fails the test with
/// its message instead of a timeout.
#[derive(Debug)]
struct CheckedExporter {
    inner: opentelemetry_otlp::SpanExporter,
    errors: Arc<Mutex<Vec<String>>>,
}

impl SpanExporter for CheckedExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        if let Err(error) = &result {
            self.errors
                .lock()
                .expect("errors lock")
                .push(error.to_string());
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A tracer provider exporting over OTLP/gRPC to `server`, for a resource
/// with `service.name`, `service.version` and `k8s.pod.name`.
fn provider(
    server: &TestServer,
    service: &str,
    version: &str,
    pod: &str,
    errors: &Arc<Mutex<Vec<String>>>,
) -> SdkTracerProvider {
    let inner = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(server.grpc_url())
        .with_timeout(Duration::from_secs(3))
        .with_retry_policy(RetryPolicy::disabled())
        .build()
        .expect("build OTLP span exporter");
    SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .with_attributes([
                    KeyValue::new("service.version", version.to_owned()),
                    KeyValue::new("k8s.pod.name", pod.to_owned()),
                ])
                .build(),
        )
        .with_simple_exporter(CheckedExporter {
            inner,
            errors: Arc::clone(errors),
        })
        .build()
}

/// One span to send: its end time (seconds before now) and the flag
/// variant it evaluated, if any.
#[derive(Debug, Clone, Copy)]
struct PlannedSpan {
    ago_secs: u64,
    flag: Option<&'static str>,
}

/// Sends `spans` through `provider` and shuts it down (which flushes).
/// The simple processor exports with a blocking call inside `Span::end`,
/// so this runs on a blocking thread.
async fn send(provider: SdkTracerProvider, spans: Vec<PlannedSpan>) {
    tokio::task::spawn_blocking(move || {
        let tracer = provider.tracer("changes-test");
        let now = SystemTime::now();
        for planned in spans {
            let end = now - Duration::from_secs(planned.ago_secs);
            let mut span = tracer
                .span_builder("POST /checkout")
                .with_kind(SpanKind::Server)
                .with_start_time(end - Duration::from_millis(5))
                .start(&tracer);
            if let Some(variant) = planned.flag {
                span.add_event_with_timestamp(
                    "feature_flag.evaluation",
                    end - Duration::from_millis(2),
                    vec![
                        KeyValue::new("feature_flag.key", "new-checkout"),
                        KeyValue::new("feature_flag.result.variant", variant),
                    ],
                );
            }
            span.end_with_timestamp(end);
        }
        provider.force_flush().expect("force_flush");
        provider.shutdown().expect("shutdown");
    })
    .await
    .expect("span sender does not panic");
}

fn check_exports(errors: &Arc<Mutex<Vec<String>>>) {
    let errors = errors.lock().expect("errors lock");
    assert!(errors.is_empty(), "export errors: {errors:?}");
}

fn changes_url(server: &TestServer) -> String {
    format!("{}/api/v1/changes", server.admin_url())
}

/// `GET /api/v1/changes?<query>`, as JSON.
async fn list(server: &TestServer, query: &str) -> Vec<Value> {
    let response = reqwest::get(format!("{}?{query}", changes_url(server)))
        .await
        .expect("GET /api/v1/changes");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON list");
    body["changes"].as_array().expect("changes array").clone()
}

/// Polls `GET /api/v1/changes?<query>` until it lists `n` changes or more;
/// panics after `WAIT`.
async fn wait_for_changes(server: &TestServer, query: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = list(server, query).await;
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{query}: wanted {n} changes within {WAIT:?}, have {found:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Spans ending every 10 s from `from` down to `to` seconds ago.
fn every_10s(from: u64, to: u64, flag: Option<&'static str>) -> Vec<PlannedSpan> {
    (to..=from)
        .rev()
        .step_by(10)
        .map(|ago_secs| PlannedSpan { ago_secs, flag })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_in_the_telemetry_is_a_deploy_change() {
    let server = TestServer::start().await;
    let errors = Arc::new(Mutex::new(Vec::new()));

    // v1 for five minutes, from twenty minutes ago: the baseline.
    let v1 = provider(&server, "payment", "v1", "payment-6d4c8b7f9-q7x2w", &errors);
    send(v1, every_10s(1200, 900, None)).await;
    // Then the new version, from another pod, ten minutes later.
    let v2 = provider(&server, "payment", "v2", "payment-5f8b9c7d6-m2k8z", &errors);
    send(v2, every_10s(600, 300, None)).await;
    check_exports(&errors);

    let found = wait_for_changes(&server, "service=payment&kind=deploy", 1).await;
    assert_eq!(found.len(), 1, "{found:#?}");
    let deploy = &found[0];
    assert_eq!(deploy["source"], "telemetry");
    assert_eq!(deploy["version"], "v2");
    assert_eq!(deploy["description"], "payment: new version v2 (was v1)");
    // Dated by the first v2 span's end (event time), ten minutes ago.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as u64;
    let time = deploy["time_unix_nanos"].as_u64().expect("time");
    let ago = Duration::from_nanos(now - time);
    assert!(
        (Duration::from_secs(595)..Duration::from_secs(630)).contains(&ago),
        "{ago:?}"
    );
    // The pod turnover is the same deploy, not a second change.
    assert!(list(&server, "service=payment&kind=scale").await.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_serving_a_new_variant_is_a_feature_flag_change() {
    let server = TestServer::start().await;
    let errors = Arc::new(Mutex::new(Vec::new()));
    let cart = provider(&server, "cart", "v3", "cart-7c9d5b8f4-h4t6p", &errors);
    // `off` for ten minutes (the first five are the flag's baseline), then
    // the flag flips to `on`.
    let mut spans = every_10s(1200, 610, Some("off"));
    spans.extend(every_10s(600, 300, Some("on")));
    send(cart, spans).await;
    check_exports(&errors);

    let found = wait_for_changes(&server, "service=cart&kind=feature_flag", 1).await;
    assert_eq!(found.len(), 1, "{found:#?}");
    let flip = &found[0];
    assert_eq!(flip["key"], "new-checkout");
    assert_eq!(flip["value"], "on");
    assert_eq!(flip["source"], "telemetry");
    assert_eq!(
        flip["description"],
        "cart: flag new-checkout serves a new variant on"
    );
    // Same version and pod throughout: no deploy.
    assert!(list(&server, "service=cart&kind=deploy").await.is_empty());
    server.stop().await;
}

fn text(key: &str, value: &str) -> ProtoKeyValue {
    ProtoKeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

fn map(entries: Vec<ProtoKeyValue>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::KvlistValue(KeyValueList {
            values: entries,
        })),
    }
}

/// Sends one OTLP/HTTP protobuf logs request with `resource_logs`.
async fn send_logs(server: &TestServer, resource_logs: Vec<ResourceLogs>) {
    let request = ExportLogsServiceRequest { resource_logs };
    let response = reqwest::Client::new()
        .post(format!("{}/v1/logs", server.http_url()))
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .expect("POST /v1/logs");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_events_in_logs_are_changes() {
    let server = TestServer::start().await;
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as u64
        - 60_000_000_000;
    // As the Collector's k8s_events receiver writes them: the object in the
    // resource, the reason as an attribute, the message as the body.
    let k8s_events = |reason: &str, pod: &str, message: &str| ResourceLogs {
        resource: Some(ProtoResource {
            attributes: vec![
                text("k8s.node.name", "node-1"),
                text("k8s.object.kind", "Pod"),
                text("k8s.object.name", pod),
            ],
            ..Default::default()
        }),
        scope_logs: vec![ScopeLogs {
            log_records: vec![LogRecord {
                time_unix_nano: time,
                severity_number: 13,
                severity_text: "Warning".to_owned(),
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(message.to_owned())),
                }),
                attributes: vec![
                    text("k8s.event.reason", reason),
                    text("k8s.namespace.name", "shop"),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    // As the k8sobjects receiver writes a watched Event: the object as a map.
    let watched = ResourceLogs {
        resource: Some(ProtoResource {
            attributes: vec![text("k8s.namespace.name", "shop")],
            ..Default::default()
        }),
        scope_logs: vec![ScopeLogs {
            log_records: vec![LogRecord {
                observed_time_unix_nano: time + 1_000_000_000,
                attributes: vec![
                    text("event.domain", "k8s"),
                    text("event.name", "ledger-0.17d2a"),
                    text("k8s.resource.name", "events"),
                ],
                body: Some(map(vec![
                    text("type", "ADDED"),
                    ProtoKeyValue {
                        key: "object".to_owned(),
                        value: Some(map(vec![
                            text("kind", "Event"),
                            text("reason", "OOMKilling"),
                            text(
                                "message",
                                "Memory cgroup out of memory: Killed process 4242",
                            ),
                            ProtoKeyValue {
                                key: "involvedObject".to_owned(),
                                value: Some(map(vec![
                                    text("kind", "Pod"),
                                    text("name", "ledger-0"),
                                ])),
                                ..Default::default()
                            },
                        ])),
                        ..Default::default()
                    },
                ])),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    send_logs(
        &server,
        vec![
            k8s_events(
                "BackOff",
                "payment-7d9f8c6b5-x2k4q",
                "Back-off restarting failed container payment",
            ),
            // Routine: not a change.
            k8s_events("Pulled", "payment-7d9f8c6b5-x2k4q", "Image pulled"),
            watched,
        ],
    )
    .await;

    let found = wait_for_changes(&server, "kind=infra", 2).await;
    let got: Vec<(&str, &str, &str)> = found
        .iter()
        .map(|change| {
            (
                change["service"].as_str().unwrap_or_default(),
                change["key"].as_str().unwrap_or_default(),
                change["value"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("payment", "BackOff", "Pod/payment-7d9f8c6b5-x2k4q"),
            ("ledger", "OOMKilling", "Pod/ledger-0"),
        ]
    );
    assert_eq!(
        found[0]["description"],
        "payment: Kubernetes BackOff on Pod/payment-7d9f8c6b5-x2k4q: \
         Back-off restarting failed container payment"
    );
    assert_eq!(list(&server, "").await.len(), 2, "nothing else recorded");
    server.stop().await;
}

/// POSTs `body` to the change webhook, with `token` as a bearer token.
async fn post(server: &TestServer, body: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(changes_url(server))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("POST /api/v1/changes");
    let status = response.status();
    let body: Value = response.json().await.expect("JSON response");
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_changes_are_stored_listed_and_checked() {
    let server = TestServer::start().await;
    let (status, stored) = post(
        &server,
        r#"{"service": "payment", "kind": "deploy", "version": "v2.4.1",
            "description": "payment v2.4.1 by pipeline 812",
            "time": "2024-05-01T12:30:00Z", "link": "https://ci.example.com/runs/812"}"#,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    assert_eq!(stored["id"], 1);
    assert_eq!(stored["source"], "api");
    assert_eq!(stored["time"], "2024-05-01T12:30:00Z");
    assert_eq!(stored["time_unix_nanos"], 1_714_566_600_000_000_000u64);

    // Without a time, the change is dated now.
    let (status, flag) = post(
        &server,
        r#"{"service": "cart", "kind": "feature_flag", "key": "new-checkout", "value": "on"}"#,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{flag}");
    assert_eq!(flag["id"], 2);
    assert_eq!(flag["description"], "cart: feature flag new-checkout = on");

    // Each bad body is refused with the field it is about.
    for (body, field) in [
        (r#"{"kind": "deploy"}"#, "service"),
        (r#"{"service": "payment", "kind": "rollback"}"#, "kind"),
        (
            r#"{"service": "payment", "kind": "deploy", "time": "yesterday"}"#,
            "time",
        ),
        (
            r#"{"service": "payment", "kind": "deploy", "verison": "v2"}"#,
            "verison",
        ),
        (r#"{"service": "payment", "kind": "feature_flag"}"#, "key"),
        ("not json", "body"),
    ] {
        let (status, error) = post(&server, body, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert_eq!(error["field"], field, "{body}: {error}");
        assert!(
            error["error"]
                .as_str()
                .is_some_and(|text| text.starts_with(field)),
            "{error}"
        );
    }
    let huge = json!({"service": "payment", "kind": "deploy", "description": "x".repeat(20_000)});
    let (status, error) = post(&server, &huge.to_string(), None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    assert_eq!(error["field"], "body");

    // Only the two good ones were stored; filters apply.
    let all = list(&server, "").await;
    assert_eq!(all.len(), 2, "{all:#?}");
    let deploys = list(&server, "kind=deploy").await;
    assert_eq!(deploys.len(), 1);
    assert_eq!(deploys[0]["version"], "v2.4.1");
    assert_eq!(deploys[0]["link"], "https://ci.example.com/runs/812");
    let recent = list(&server, "since=2025-01-01T00:00:00Z").await;
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0]["service"], "cart");
    assert_eq!(list(&server, "service=search").await.len(), 0);
    let response = reqwest::get(format!("{}?kind=rollback", changes_url(&server)))
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.expect("JSON error");
    assert_eq!(error["field"], "kind");

    // Counted by source and by refusal reason.
    let metrics = reqwest::get(format!("{}/metrics", server.admin_url()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains("triage_changes_refused_total{reason=\"invalid\"}"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posting_needs_the_token_when_one_is_configured() {
    let mut settings = test_settings();
    settings.changes.api_token = ApiToken::new("s3cret-token");
    let server = TestServer::start_with(settings).await;
    let body = r#"{"service": "payment", "kind": "config", "key": "pool.size", "value": "40"}"#;

    let response = reqwest::Client::new()
        .post(changes_url(&server))
        .body(body)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .and_then(|value| value.to_str().ok()),
        Some("Bearer")
    );
    let (status, error) = post(&server, body, Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{error}");
    assert_eq!(error["field"], "authorization");

    let (status, stored) = post(&server, body, Some("s3cret-token")).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    assert_eq!(stored["key"], "pool.size");
    // Listing needs no token.
    assert_eq!(list(&server, "").await.len(), 1);
    server.stop().await;
}

/// A change announced in a log record by whatever made it (a deploy tool, a
/// config service), with the attribute convention of docs/CHANGES.md.
fn announcement(
    emitter: &str,
    time: u64,
    attributes: Vec<ProtoKeyValue>,
    body: &str,
) -> ResourceLogs {
    ResourceLogs {
        resource: Some(ProtoResource {
            attributes: vec![text("service.name", emitter)],
            ..Default::default()
        }),
        scope_logs: vec![ScopeLogs {
            log_records: vec![LogRecord {
                time_unix_nano: time,
                severity_number: 9,
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(body.to_owned())),
                }),
                attributes,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn changes_announced_in_logs_are_recorded_once_with_their_own_ids() {
    let server = TestServer::start().await;
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as u64
        - 60_000_000_000;
    let deploy = |pod: &str| {
        announcement(
            "payment",
            time,
            vec![
                text("deployment.id", "deploy-81"),
                text("service.version", "2.4.1"),
                text("k8s.pod.name", pod),
            ],
            "payment 2.4.1 rolled out",
        )
    };
    send_logs(
        &server,
        vec![
            // Every pod of the rollout says so: one change.
            deploy("payment-a"),
            deploy("payment-b"),
            deploy("payment-c"),
            announcement(
                "config-service",
                time + 5_000_000_000,
                vec![
                    text("change.kind", "config"),
                    text("change.service", "checkout"),
                    text("config.key", "payment.timeout_ms"),
                    text("config.value", "300"),
                    text("change.id", "CHG-4711"),
                ],
                "payment.timeout_ms changed from 3000 to 300",
            ),
            // Tries to announce one and gets the kind wrong: not recorded.
            announcement(
                "config-service",
                time,
                vec![text("change.kind", "reboot")],
                "rebooted",
            ),
        ],
    )
    .await;
    let found = wait_for_changes(&server, "", 2).await;
    let got: Vec<(&str, &str, &str, &str)> = found
        .iter()
        .map(|change| {
            (
                change["service"].as_str().unwrap_or_default(),
                change["kind"].as_str().unwrap_or_default(),
                change["external_id"].as_str().unwrap_or_default(),
                change["source"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("payment", "deploy", "deploy-81", "telemetry"),
            ("checkout", "config", "CHG-4711", "telemetry"),
        ],
        "{found:#?}"
    );
    assert_eq!(found[0]["version"], "2.4.1");
    assert_eq!(found[1]["value"], "300");
    let metrics = reqwest::get(format!("{}/metrics", server.admin_url()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains("triage_changes_refused_total{reason=\"invalid_announcement\"} 1"),
        "{metrics}"
    );
    server.stop().await;
}
