//! The span mix the load generator sends: `services x operations` SERVER
//! operations, some of them calling another service through a CLIENT span
//! (an edge), errors at a set share, Kubernetes-style resources, and
//! latencies drawn from a log-normal per operation.
//!
//! Every trace is either one root SERVER span, or a root SERVER span, its
//! CLIENT child naming the callee (`peer.service`, `server.address`) and
//! the callee's SERVER span under that (parent and child span ids link
//! them, so triage pairs the client span with its server-side child). The
//! spans of one request come from many services, as an OTel Collector
//! gateway batches them. The same seed always gives the same requests.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};

use crate::tools::sim::rng::Rng;

/// Instances (pods) per service: each sends under its own resource.
const PODS: usize = 2;
/// Each service calls this many others (the next ones, round the ring).
const CALLEES: usize = 3;
/// Log-space standard deviation of every operation's latency.
const SIGMA: f64 = 0.6;

/// What the generated traffic looks like (validated by the caller).
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    /// Services (at least 1).
    pub services: usize,
    /// SERVER operations per service (at least 1).
    pub operations: usize,
    /// Spans per request; a request holds whole traces, so it may hold up
    /// to two more.
    pub batch_spans: usize,
    /// Share of root operations that fail (a failing callee fails its
    /// caller too).
    pub error_share: f64,
    /// Share of traces whose root calls another service.
    pub call_share: f64,
    pub seed: u64,
}

/// One operation's fixed traits.
struct Operation {
    name: String,
    route: String,
    method: &'static str,
    /// Median latency in nanoseconds.
    median_nanos: f64,
}

/// The services, their pods and operations.
struct System {
    services: Vec<String>,
    operations: Vec<Vec<Operation>>,
}

// === impl Mix ===

impl Mix {
    /// `count` requests, their spans ending within the second before
    /// `base_nanos` (Unix nanoseconds).
    pub fn requests(&self, count: usize, base_nanos: u64) -> Vec<ExportTraceServiceRequest> {
        let mut rng = Rng::new(self.seed, 0);
        let system = self.system(&mut Rng::new(self.seed, 1));
        (0..count)
            .map(|_| self.request(&system, &mut rng, base_nanos))
            .collect()
    }

    fn system(&self, rng: &mut Rng) -> System {
        let services = (0..self.services)
            .map(|service| format!("service-{service:02}"))
            .collect();
        let operations = (0..self.services)
            .map(|_| {
                (0..self.operations)
                    .map(|operation| {
                        let method = if operation % 4 == 3 { "POST" } else { "GET" };
                        let route = format!("/api/v1/resource-{operation:03}/{{id}}");
                        // Medians from 2 ms to 200 ms, even in log space.
                        let median_ms = (rng.range(2f64.ln(), 200f64.ln())).exp();
                        Operation {
                            name: format!("{method} {route}"),
                            route,
                            method,
                            median_nanos: median_ms * 1e6,
                        }
                    })
                    .collect()
            })
            .collect();
        System {
            services,
            operations,
        }
    }

    fn request(
        &self,
        system: &System,
        rng: &mut Rng,
        base_nanos: u64,
    ) -> ExportTraceServiceRequest {
        // Spans per (service, pod) resource, in the order first seen.
        let mut resources: Vec<((usize, usize), Vec<Span>)> = Vec::new();
        let mut add = |service: usize, pod: usize, span: Span| match resources
            .iter_mut()
            .find(|(key, _)| *key == (service, pod))
        {
            Some((_, spans)) => spans.push(span),
            None => resources.push(((service, pod), vec![span])),
        };
        let mut n_spans = 0;
        while n_spans < self.batch_spans {
            let trace_id = id128(rng);
            let service = rng.below(self.services as u64) as usize;
            let operation = &system.operations[service][rng.below(self.operations as u64) as usize];
            let pod = rng.below(PODS as u64) as usize;
            let end = base_nanos - rng.below(1_000_000_000);
            let own = rng.log_normal(operation.median_nanos, SIGMA) as u64 + 1;
            let root_id = id64(rng);
            let mut failed = rng.chance(self.error_share);

            if self.services > 1 && rng.chance(self.call_share) {
                let hop = 1 + rng.below(CALLEES.min(self.services - 1) as u64) as usize;
                let callee = (service + hop) % self.services;
                let callee_operation =
                    &system.operations[callee][rng.below(self.operations as u64) as usize];
                let callee_pod = rng.below(PODS as u64) as usize;
                let callee_failed = rng.chance(self.error_share);
                failed |= callee_failed;
                let server_nanos = rng.log_normal(callee_operation.median_nanos, SIGMA) as u64 + 1;
                // The network and the client library: half a millisecond
                // each way, so a client span is always longer than its
                // server-side child.
                let client_nanos = server_nanos + 1_000_000;
                let client_end = end - own / 2;
                let client_id = id64(rng);
                let callee_name = &system.services[callee];
                let mut client = span(
                    trace_id,
                    client_id,
                    root_id,
                    format!("{} {}", callee_operation.method, callee_operation.route),
                    SpanKind::Client,
                    (client_end - client_nanos, client_end),
                    callee_failed,
                );
                client.attributes = vec![
                    text("http.request.method", callee_operation.method),
                    text("peer.service", callee_name),
                    text("server.address", &format!("{callee_name}.shop.svc")),
                    int("server.port", 8080),
                    int(
                        "http.response.status_code",
                        if callee_failed { 500 } else { 200 },
                    ),
                ];
                add(service, pod, client);
                let server_end = client_end - 500_000;
                let mut server = span(
                    trace_id,
                    id64(rng),
                    client_id,
                    callee_operation.name.clone(),
                    SpanKind::Server,
                    (server_end - server_nanos, server_end),
                    callee_failed,
                );
                server.attributes = server_attributes(callee_operation, callee_failed);
                add(callee, callee_pod, server);
                n_spans += 2;
                let root_nanos = own + client_nanos;
                let mut root = span(
                    trace_id,
                    root_id,
                    0,
                    operation.name.clone(),
                    SpanKind::Server,
                    (end - root_nanos, end),
                    failed,
                );
                root.attributes = server_attributes(operation, failed);
                add(service, pod, root);
            } else {
                let mut root = span(
                    trace_id,
                    root_id,
                    0,
                    operation.name.clone(),
                    SpanKind::Server,
                    (end - own, end),
                    failed,
                );
                root.attributes = server_attributes(operation, failed);
                add(service, pod, root);
            }
            n_spans += 1;
        }
        let resource_spans = resources
            .into_iter()
            .map(|((service, pod), spans)| ResourceSpans {
                resource: Some(resource(&system.services[service], service, pod)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "io.opentelemetry.tomcat-10.0".to_owned(),
                        version: "2.10.0-alpha".to_owned(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        ExportTraceServiceRequest { resource_spans }
    }
}

fn resource(name: &str, service: usize, pod: usize) -> Resource {
    let pod_name = format!("{name}-7f9c{service:02}d5b-{pod:x}q2zk");
    Resource {
        attributes: vec![
            text("service.name", name),
            text("service.namespace", "shop"),
            text("service.version", &format!("1.{}.{}", service % 7, 3 + pod)),
            text("service.instance.id", &pod_name),
            text("k8s.pod.name", &pod_name),
            text("k8s.namespace.name", "shop"),
            text("k8s.deployment.name", name),
            text("k8s.node.name", &format!("node-{}", (service + pod) % 5)),
            text("host.name", &pod_name),
            text("cloud.region", "eu-west-1"),
            text("deployment.environment.name", "production"),
            text("telemetry.sdk.language", "java"),
            text("telemetry.sdk.name", "opentelemetry"),
            text("telemetry.sdk.version", "1.44.1"),
        ],
        ..Default::default()
    }
}

fn server_attributes(operation: &Operation, failed: bool) -> Vec<KeyValue> {
    vec![
        text("http.request.method", operation.method),
        text("http.route", &operation.route),
        text("url.scheme", "http"),
        text("url.path", &operation.route.replace("{id}", "1042")),
        int("http.response.status_code", if failed { 500 } else { 200 }),
        text("network.protocol.version", "1.1"),
        text("user_agent.original", "okhttp/4.12.0"),
    ]
}

fn span(
    trace_id: [u8; 16],
    span_id: u64,
    parent_id: u64,
    name: String,
    kind: SpanKind,
    (start, end): (u64, u64),
    failed: bool,
) -> Span {
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_le_bytes().to_vec(),
        parent_span_id: if parent_id == 0 {
            Vec::new()
        } else {
            parent_id.to_le_bytes().to_vec()
        },
        name,
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        status: failed.then(|| Status {
            code: StatusCode::Error as i32,
            message: "HTTP 500".to_owned(),
        }),
        ..Default::default()
    }
}

/// A span id whose top bit is set, read as a little-endian word: the
/// sender XORs each id with a per-request nonce whose top bit is clear
/// ([`super::stamp`]), so an id can never become all zeros.
fn id64(rng: &mut Rng) -> u64 {
    rng.next_u64() | 1 << 63
}

fn id128(rng: &mut Rng) -> [u8; 16] {
    let mut id = [0; 16];
    id[..8].copy_from_slice(&id64(rng).to_le_bytes());
    id[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    id
}

fn text(key: &str, value: &str) -> KeyValue {
    attribute(key, Value::StringValue(value.to_owned()))
}

fn int(key: &str, value: i64) -> KeyValue {
    attribute(key, Value::IntValue(value))
}

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}
