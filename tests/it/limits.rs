//! The per-request decoding limits against what real exporters send: an
//! ordinary large OTLP/JSON batch is recorded whole, while the body of
//! empty spans from issue #14 is refused before it is decoded.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use triage::model::{SeriesKey, SeriesKind};

use crate::common::TestServer;

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// `n` server spans of `checkout` as an exporter writes them: ids, times,
/// a route and a handful of attributes (about 700 bytes of JSON each).
fn batch(n: usize) -> Value {
    let end = now_nanos() - 2_000_000_000;
    let spans: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "traceId": format!("{:032x}", i + 1),
                "spanId": format!("{:016x}", i + 1),
                "name": "GET /cart/{id}",
                "kind": 2,
                "startTimeUnixNano": (end - 20_000_000).to_string(),
                "endTimeUnixNano": end.to_string(),
                "attributes": [
                    {"key": "http.route", "value": {"stringValue": "/cart/{id}"}},
                    {"key": "http.request.method", "value": {"stringValue": "GET"}},
                    {"key": "http.response.status_code", "value": {"intValue": "200"}},
                    {"key": "url.path", "value": {"stringValue": format!("/cart/{i}")}},
                    {"key": "user_agent.original", "value": {"stringValue": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"}},
                    {"key": "client.address", "value": {"stringValue": "10.1.2.3"}},
                ],
                "status": {},
            })
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "checkout"}},
            {"key": "service.version", "value": {"stringValue": "1.4.2"}},
        ]},
        "scopeSpans": [{"scope": {"name": "io.opentelemetry.http"}, "spans": spans}],
    }]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_json_batch_is_recorded_and_empty_spans_are_refused() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/traces", server.http_url());

    // 10,000 spans, about 7 MiB: the general JSON decoder would need some
    // 150 MiB for it, over the per-request limit; the borrowing reader
    // takes a view per span.
    let body = batch(10_000).to_string();
    assert!(body.len() > 5 << 20, "{} bytes", body.len());
    let response = client
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send the batch");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{text}");
    let key = SeriesKey::new(SeriesKind::Operation, "checkout", "GET /cart/{id}");
    let recorded = server
        .wait_for(Duration::from_secs(5), |store| {
            store
                .stats(&key, 0, u64::MAX)
                .filter(|stats| stats.requests == 10_000)
        })
        .await;
    assert_eq!(recorded.requests, 10_000, "every span recorded");

    // 18 MiB of empty spans (within the body limit): refused, not decoded.
    let empty = format!(
        "{{\"resourceSpans\":[{{\"scopeSpans\":[{{\"spans\":[{}{{}}]}}]}}]}}",
        "{},".repeat(6 << 20)
    );
    let response = client
        .post(&url)
        .header("content-type", "application/json")
        .body(empty)
        .send()
        .await
        .expect("send the bomb");
    assert_eq!(response.status(), 400);
    let refusal: Value = response.json().await.expect("a JSON status");
    assert!(
        refusal["message"]
            .as_str()
            .is_some_and(|message| message.contains("max_items")),
        "{refusal}"
    );
}
