//! Requests: one entry request becomes a whole trace, generated
//! recursively through the call graph. An operation spends part of its own
//! time, makes its calls (step by step, the calls of a step in parallel),
//! spends the rest, and ends; a failure of a required call fails it, a
//! failure of an optional one does not. Callers see callee time through
//! their CLIENT spans, plus network time both ways, cut at their timeout.
//!
//! Scoped faults, hangs, feature flags and trace attributes (tenants) are
//! applied here too; each draws random numbers only when the scenario has
//! it, so scenarios without them generate what they always did.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{
    span::{Event, SpanKind},
    status::StatusCode,
    Span, Status,
};

use crate::tools::sim::engine::{
    ms_to_ns, Engine, EngineScope, ACCESS_LOG_SHARE, FLAG_HAS_IS_REMOTE, FLAG_IS_REMOTE,
    FLAG_SAMPLED, MS, SECOND,
};
use crate::tools::sim::fault;
use crate::tools::sim::model::{
    kv_int, kv_str, pareto, Call, DbSystem, OpId, OpKind, ServiceId, SourceRate, Target,
};

/// How a request or call turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// A 4xx: the caller's fault, not a server failure.
    ClientError(i64),
    Failed(Failure),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// A bug or fault in this service.
    Internal,
    /// A call this request needed failed.
    Dependency,
    /// Load shed (overloaded).
    Unavailable,
    /// The client gave up waiting.
    Timeout,
    /// No pooled connection within the acquire timeout.
    PoolTimeout,
    /// The request's data is bad (one tenant's records).
    Data,
}

impl Outcome {
    fn failed(self) -> bool {
        !matches!(self, Outcome::Ok)
    }
}

impl Failure {
    fn message(self) -> &'static str {
        match self {
            Failure::Internal => "internal error",
            Failure::Dependency => "a dependency failed",
            Failure::Unavailable => "service unavailable: overloaded",
            Failure::Timeout => "deadline exceeded",
            Failure::PoolTimeout => "timed out waiting for a database connection",
            Failure::Data => "invalid record: failed validation",
        }
    }

    fn exception_type(self) -> &'static str {
        match self {
            Failure::Internal => "InternalError",
            Failure::Dependency => "UpstreamError",
            Failure::Unavailable => "ServiceUnavailable",
            Failure::Timeout => "TimeoutError",
            Failure::PoolTimeout => "ConnectionPoolTimeout",
            Failure::Data => "DataIntegrityError",
        }
    }

    fn http_status(self) -> i64 {
        match self {
            Failure::Unavailable => 503,
            Failure::Timeout => 504,
            _ => 500,
        }
    }

    fn grpc_status(self) -> i64 {
        match self {
            Failure::Unavailable => 14,
            Failure::Timeout => 4,
            _ => 13,
        }
    }
}

/// The `error.type` of a gRPC span that ended with `code`: the status
/// code's name, as the RPC semantic conventions ask.
fn grpc_error_type(code: i64) -> &'static str {
    match code {
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        16 => "UNAUTHENTICATED",
        _ => "_OTHER",
    }
}

fn grpc_client_error(http: i64) -> i64 {
    match http {
        401 => 16,
        404 => 5,
        _ => 3,
    }
}

/// The trace being generated.
struct TraceCtx {
    id: [u8; 16],
    region: usize,
    /// The value (index into `TENANTS`) of each of `Engine::trace_keys`.
    attributes: Vec<usize>,
}

impl TraceCtx {
    /// Whether a request of this trace served by `pod` (on `node`) is in
    /// `scope`.
    fn in_scope(&self, scope: EngineScope, pod: usize, node: usize) -> bool {
        match scope {
            EngineScope::Region(region) => self.region == region,
            EngineScope::Pod(scoped) => pod == scoped,
            EngineScope::Node(scoped) => node == scoped,
            EngineScope::Attribute { key, value } => self.attributes.get(key) == Some(&value),
        }
    }
}

/// Where a call ended and how.
#[derive(Debug, Clone, Copy)]
struct Served {
    end: u64,
    outcome: Outcome,
}

/// A copy of an attribute template with room for the per-span attributes,
/// so that adding them does not reallocate.
fn with_room(template: &[KeyValue]) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(template.len() + 4);
    attributes.extend_from_slice(template);
    attributes
}

// === impl Engine: requests ===

impl Engine {
    fn pick_pod(&mut self, service: ServiceId, region: usize) -> usize {
        let replicas = &self.slots[service][region];
        let index = if replicas.len() > 1 {
            self.requests.below(replicas.len() as u64) as usize
        } else {
            0
        };
        replicas[index]
    }

    /// One-way network time inside a region.
    fn network(&mut self) -> u64 {
        ms_to_ns(self.requests.log_normal(0.3, 0.3))
    }

    /// Serves one request of `op` arriving at `start`, whose parent span (in
    /// the caller) is `parent` (0 for a root span). With `shed`, the callee
    /// is overloaded and rejects the request at once.
    fn serve(
        &mut self,
        trace: &TraceCtx,
        op_id: OpId,
        start: u64,
        parent: u64,
        shed: bool,
        path: usize,
    ) -> Served {
        let model = self.model;
        let op = &model.ops[op_id];
        let service = op.service;
        let pod = self.pick_pod(service, trace.region);
        let effect = &self.effects[service];
        let mut latency = effect.latency;
        let mut error_rate = op.error_rate;
        let mut added_ms = effect.added_ms;
        let mut bad_data = false;
        if effect.error_op.is_none_or(|target| target == op_id) {
            error_rate += effect.error_rate;
        }
        let node = self.pods[pod].node;
        for scoped in &effect.scoped {
            if !trace.in_scope(scoped.scope, pod, node) {
                continue;
            }
            latency *= scoped.latency;
            added_ms += scoped.added_ms;
            if scoped.error_op.is_none_or(|target| target == op_id) {
                error_rate += scoped.error_rate;
                bad_data |= scoped.data;
            }
        }
        // A degraded operation takes `stretch` times as long as it would
        // have: its own work is slower and it waits as much longer around
        // its calls (contention, pauses).
        let mut stretch = 1.0;
        for &(target, factor, extra) in &effect.degrade {
            if target.is_none_or(|target| target == op_id) {
                stretch *= factor;
                error_rate += extra;
            }
        }
        latency *= stretch;
        let hang = effect.hang;
        let version = &self.versions[service][self.pods[pod].version];
        if version.bad {
            latency *= fault::BAD_DEPLOY_LATENCY_FACTOR;
            if version.failing {
                error_rate += fault::BAD_DEPLOY_ERROR_RATE;
            }
        }
        // Flags are evaluated at the start of the request.
        let mut events = Vec::new();
        for index in 0..self.flags.len() {
            let flag = &self.flags[index];
            if flag.service != service {
                continue;
            }
            let on = flag.flipped && self.requests.chance(fault::FLAG_ROLLOUT_SHARE);
            let flag = &self.flags[index];
            if on && flag.harmful {
                error_rate += fault::FLAG_ERROR_RATE;
            }
            events.push(Event {
                time_unix_nano: start,
                name: "feature_flag.evaluation".to_owned(),
                attributes: vec![
                    kv_str("feature_flag.key", &flag.key),
                    kv_str("feature_flag.result.variant", if on { "on" } else { "off" }),
                    kv_str(
                        "feature_flag.result.reason",
                        if flag.flipped { "split" } else { "static" },
                    ),
                    kv_str("feature_flag.provider.name", "flagd"),
                ],
                dropped_attributes_count: 0,
            });
        }
        if hang && !shed {
            added_ms += self
                .requests
                .log_normal(fault::HANG_MEDIAN_MS, fault::HANG_SIGMA);
        }
        let mut own_ms = self.requests.log_normal(op.own_ms, op.own_sigma);
        if let Some(tail) = op.tail {
            if self.requests.chance(tail.share) {
                own_ms *= pareto(self.requests.uniform(), tail.alpha, tail.cap);
            }
        }
        let own = if shed {
            ms_to_ns(own_ms * 0.1)
        } else {
            ms_to_ns(own_ms * latency)
        };
        let span_id = self.ids.id64();
        // Waiting (a lock, a hang) comes before the work, and is not CPU.
        let waited = if added_ms > 0.0 && !shed {
            ms_to_ns(added_ms)
        } else {
            0
        };
        let before = own * 7 / 10 + waited;
        let mut time = start + before;
        let mut outcome = Outcome::Ok;
        if !shed {
            'steps: for step in &op.steps {
                let mut step_end = time;
                for call in step {
                    if call.probability < 1.0 && !self.requests.chance(call.probability) {
                        continue;
                    }
                    let served = self.client_call(trace, service, pod, call, time, span_id);
                    step_end = step_end.max(served.end);
                    if !call.optional && outcome == Outcome::Ok {
                        outcome = match served.outcome {
                            Outcome::Ok => Outcome::Ok,
                            Outcome::ClientError(code) => Outcome::ClientError(code),
                            // Waiting for its own pool is this service's
                            // failure; anything a callee returns is a
                            // dependency's.
                            Outcome::Failed(Failure::PoolTimeout)
                                if matches!(call.target, Target::Db(_)) =>
                            {
                                Outcome::Failed(Failure::PoolTimeout)
                            }
                            Outcome::Failed(_) => Outcome::Failed(Failure::Dependency),
                        };
                    }
                }
                time = step_end;
                if outcome.failed() {
                    break 'steps;
                }
            }
        }
        if stretch != 1.0 && !shed {
            let in_calls = time - (start + before);
            time += (in_calls as f64 * (stretch - 1.0)).max(0.0) as u64;
        }
        time += own + waited - before;
        let local_error = self.requests.chance(error_rate);
        let client_error = op
            .client_error
            .filter(|(share, _)| self.requests.chance(*share));
        if shed {
            outcome = Outcome::Failed(Failure::Unavailable);
        } else if outcome == Outcome::Ok {
            if local_error && bad_data {
                outcome = Outcome::Failed(Failure::Data);
            } else if local_error {
                outcome = Outcome::Failed(Failure::Internal);
            } else if let Some((_, code)) = client_error {
                outcome = Outcome::ClientError(code);
            }
        }
        let end = time;

        // The server span.
        let mut attributes = with_room(&op.server_attrs);
        for (key, &value) in self.trace_keys.iter().zip(&trace.attributes) {
            attributes.push(kv_str(key, fault::TENANTS[value].0));
        }
        let mut status = Status::default();
        match op.kind {
            OpKind::Http { .. } => {
                attributes.push(kv_str("url.path", &op.paths[path % op.paths.len()]));
                let code = match outcome {
                    Outcome::Ok => 200,
                    Outcome::ClientError(code) => code,
                    Outcome::Failed(failure) => failure.http_status(),
                };
                attributes.push(kv_int("http.response.status_code", code));
                if code >= 500 {
                    attributes.push(kv_str("error.type", http_error_type(code)));
                }
                self.pods[pod]
                    .metrics
                    .http_request(op_id, code, end - start);
            }
            OpKind::Grpc { .. } => {
                let code = match outcome {
                    Outcome::Ok => 0,
                    Outcome::ClientError(code) => grpc_client_error(code),
                    Outcome::Failed(failure) => failure.grpc_status(),
                };
                attributes.push(kv_int("rpc.grpc.status_code", code));
                // Server spans fail on server errors only (not on a 4xx).
                if matches!(outcome, Outcome::Failed(_)) {
                    attributes.push(kv_str("error.type", grpc_error_type(code)));
                }
            }
            OpKind::Consume { .. } => {
                if let Outcome::Failed(failure) = outcome {
                    attributes.push(kv_str("error.type", failure.exception_type()));
                }
            }
        }
        if let Outcome::Failed(failure) = outcome {
            status = Status {
                message: failure.message().to_owned(),
                code: StatusCode::Error as i32,
            };
            events.push(Event {
                time_unix_nano: end,
                name: "exception".to_owned(),
                attributes: vec![
                    kv_str("exception.type", failure.exception_type()),
                    kv_str("exception.message", failure.message()),
                ],
                dropped_attributes_count: 0,
            });
        }
        let kind = match op.kind {
            OpKind::Consume { .. } => SpanKind::Consumer,
            _ => SpanKind::Server,
        };
        let flags = if parent == 0 {
            FLAG_SAMPLED | FLAG_HAS_IS_REMOTE
        } else {
            FLAG_SAMPLED | FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE
        };
        let span = Span {
            trace_id: trace.id.to_vec(),
            span_id: span_id.to_be_bytes().to_vec(),
            trace_state: String::new(),
            parent_span_id: if parent == 0 {
                Vec::new()
            } else {
                parent.to_be_bytes().to_vec()
            },
            flags,
            name: op.server_name.clone(),
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            dropped_attributes_count: 0,
            events,
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status: Some(status),
        };
        self.push_span(pod, span);
        self.pods[pod]
            .metrics
            .request((own_ms * latency).min(60_000.0) * MS);

        // Logs: every failure, a share of the successes.
        match outcome {
            Outcome::Failed(failure) => {
                let body = match failure {
                    Failure::Dependency => "request failed: a downstream call failed",
                    Failure::Unavailable => "request rejected: too many requests in flight",
                    Failure::PoolTimeout => "request failed: connection pool exhausted",
                    Failure::Data => "request failed: invalid record",
                    _ => "request failed: unhandled exception",
                };
                self.log(pod, end, 17, "ERROR", body, Some((&trace.id, span_id)));
            }
            _ => {
                if self.signals.logs && self.logs_rng.chance(ACCESS_LOG_SHARE) {
                    self.log(
                        pod,
                        end,
                        9,
                        "INFO",
                        "request completed",
                        Some((&trace.id, span_id)),
                    );
                }
            }
        }
        Served { end, outcome }
    }

    /// One call made by a request of `service` served on `pod`.
    fn client_call(
        &mut self,
        trace: &TraceCtx,
        service: ServiceId,
        pod: usize,
        call: &Call,
        start: u64,
        parent: u64,
    ) -> Served {
        match call.target {
            Target::Op(target) => {
                self.call_service(trace, service, pod, call, target, start, parent)
            }
            Target::Db(db_op) => self.call_db(trace, service, pod, call, db_op, start, parent),
            Target::Publish => self.publish(trace, pod, start, parent),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn call_service(
        &mut self,
        trace: &TraceCtx,
        service: ServiceId,
        pod: usize,
        call: &Call,
        target: OpId,
        start: u64,
        parent: u64,
    ) -> Served {
        let model = self.model;
        let op = &model.ops[target];
        let callee = op.service;
        let storm = self.storms.contains(&(service, callee));
        let attempts = if storm {
            fault::RETRY_MAX_ATTEMPTS
        } else {
            1 + call.retries
        };
        let timeout_ms = self
            .timeouts
            .iter()
            .find(|(caller, target, _)| *caller == service && *target == callee)
            .map_or(call.timeout_ms, |(_, _, ms)| *ms);
        let timeout = ms_to_ns(timeout_ms);
        let path = if op.paths.len() > 1 {
            self.requests.below(op.paths.len() as u64) as usize
        } else {
            0
        };
        let mut time = start;
        let mut result = Served {
            end: start,
            outcome: Outcome::Ok,
        };
        for attempt in 1..=attempts {
            let client_id = self.ids.id64();
            let (end, outcome) = if self.effects[callee].down {
                (time + timeout, Outcome::Failed(Failure::Timeout))
            } else {
                let shed = storm && self.requests.chance(fault::RETRY_FAILURE);
                let there = self.network();
                let served = self.serve(trace, target, time + there, client_id, shed, path);
                let end = served.end + self.network();
                if end - time > timeout {
                    (time + timeout, Outcome::Failed(Failure::Timeout))
                } else {
                    (end, served.outcome)
                }
            };

            let mut attributes = with_room(&op.client_attrs);
            let mut status = Status::default();
            match op.kind {
                OpKind::Http { .. } => {
                    attributes.push(kv_str("url.full", &op.urls[path % op.urls.len()]));
                    match outcome {
                        Outcome::Ok => attributes.push(kv_int("http.response.status_code", 200)),
                        Outcome::ClientError(code) => {
                            attributes.push(kv_int("http.response.status_code", code));
                            attributes.push(kv_str("error.type", http_error_type(code)));
                        }
                        Outcome::Failed(Failure::Timeout) => {
                            attributes.push(kv_str("error.type", "timeout"));
                        }
                        Outcome::Failed(failure) => {
                            let code = failure.http_status();
                            attributes.push(kv_int("http.response.status_code", code));
                            attributes.push(kv_str("error.type", http_error_type(code)));
                        }
                    }
                    if attempt > 1 {
                        attributes
                            .push(kv_int("http.request.resend_count", i64::from(attempt - 1)));
                    }
                }
                OpKind::Grpc { .. } => {
                    let code = match outcome {
                        Outcome::Ok => 0,
                        Outcome::ClientError(code) => grpc_client_error(code),
                        Outcome::Failed(failure) => failure.grpc_status(),
                    };
                    attributes.push(kv_int("rpc.grpc.status_code", code));
                    if code != 0 {
                        attributes.push(kv_str("error.type", grpc_error_type(code)));
                    }
                }
                OpKind::Consume { .. } => {}
            }
            if let Outcome::Failed(failure) = outcome {
                status = Status {
                    message: failure.message().to_owned(),
                    code: StatusCode::Error as i32,
                };
            } else if matches!(outcome, Outcome::ClientError(_)) {
                // A 4xx is a failure of the call from the client's side.
                status.code = StatusCode::Error as i32;
            }
            let span = Span {
                trace_id: trace.id.to_vec(),
                span_id: client_id.to_be_bytes().to_vec(),
                trace_state: String::new(),
                parent_span_id: parent.to_be_bytes().to_vec(),
                flags: FLAG_SAMPLED | FLAG_HAS_IS_REMOTE,
                name: op.client_name.clone(),
                kind: SpanKind::Client as i32,
                start_time_unix_nano: time,
                end_time_unix_nano: end,
                attributes,
                dropped_attributes_count: 0,
                events: Vec::new(),
                dropped_events_count: 0,
                links: Vec::new(),
                dropped_links_count: 0,
                status: Some(status),
            };
            self.push_span(pod, span);
            result = Served { end, outcome };
            if !outcome.failed()
                || matches!(outcome, Outcome::ClientError(_))
                || attempt == attempts
            {
                break;
            }
            self.log(
                pod,
                end,
                13,
                "WARN",
                "call failed, retrying",
                Some((&trace.id, parent)),
            );
            // An aggressive retry policy: a short backoff with jitter.
            time = end + ms_to_ns(self.requests.range(5.0, 30.0));
        }
        result
    }

    /// A call to a database, cache or external API, retried as the call's
    /// policy says (each attempt its own CLIENT span).
    #[allow(clippy::too_many_arguments)]
    fn call_db(
        &mut self,
        trace: &TraceCtx,
        service: ServiceId,
        pod: usize,
        call: &Call,
        db_op: usize,
        start: u64,
        parent: u64,
    ) -> Served {
        let attempts = 1 + call.retries;
        let mut time = start;
        let mut attempt = 1;
        loop {
            let served = self.db_attempt(trace, service, pod, call, db_op, time, parent, attempt);
            if !served.outcome.failed() || attempt >= attempts {
                return served;
            }
            self.log(
                pod,
                served.end,
                13,
                "WARN",
                "call failed, retrying",
                Some((&trace.id, parent)),
            );
            time = served.end + ms_to_ns(self.requests.range(20.0, 120.0));
            attempt += 1;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn db_attempt(
        &mut self,
        trace: &TraceCtx,
        service: ServiceId,
        pod: usize,
        call: &Call,
        db_op: usize,
        start: u64,
        parent: u64,
        attempt: u32,
    ) -> Served {
        let model = self.model;
        let def = &model.db_ops[db_op];
        let db = &model.dbs[def.db];
        let effect = &self.effects[service];
        let slowdown = effect.dependency_slowdown;
        let exhausted = effect.pool_exhausted && db.system == DbSystem::Postgresql;
        let mut use_ms = self.requests.log_normal(def.median_ms, def.sigma) * slowdown;
        if let Some(tail) = def.tail {
            if self.requests.chance(tail.share) {
                use_ms *= pareto(self.requests.uniform(), tail.alpha, tail.cap);
            }
        }
        let failed = self.requests.chance(def.error_rate);
        let mut outcome = if failed {
            Outcome::Failed(Failure::Internal)
        } else {
            Outcome::Ok
        };
        let (wait_ms, use_ms) = if exhausted {
            let wait = self.requests.exponential(fault::POOL_WAIT_MEAN_MS);
            if wait >= fault::POOL_ACQUIRE_TIMEOUT_MS {
                outcome = Outcome::Failed(Failure::PoolTimeout);
                (fault::POOL_ACQUIRE_TIMEOUT_MS, 0.0)
            } else {
                (wait, use_ms)
            }
        } else if db.system == DbSystem::Postgresql {
            (0.02, use_ms)
        } else {
            (0.0, use_ms)
        };
        let mut duration = ms_to_ns(wait_ms + use_ms);
        let timeout = ms_to_ns(call.timeout_ms);
        if duration > timeout {
            duration = timeout;
            outcome = Outcome::Failed(Failure::Timeout);
        }
        if db.system == DbSystem::Postgresql {
            self.pods[pod]
                .metrics
                .pooled_query(wait_ms * MS, use_ms * MS);
        }
        let end = start + duration;
        let mut attributes = with_room(&def.attrs);
        let mut status = Status::default();
        if let Outcome::Failed(failure) = outcome {
            let error_type = match failure {
                Failure::Timeout => "timeout",
                Failure::PoolTimeout => "ConnectionPoolTimeout",
                _ if db.system == DbSystem::External => "500",
                _ => "DatabaseError",
            };
            if db.system == DbSystem::External && failure != Failure::Timeout {
                attributes.push(kv_int("http.response.status_code", 500));
            }
            attributes.push(kv_str("error.type", error_type));
            status = Status {
                message: failure.message().to_owned(),
                code: StatusCode::Error as i32,
            };
        } else if db.system == DbSystem::External {
            attributes.push(kv_int("http.response.status_code", 200));
        }
        if attempt > 1 && db.system == DbSystem::External {
            attributes.push(kv_int("http.request.resend_count", i64::from(attempt - 1)));
        }
        let span = Span {
            trace_id: trace.id.to_vec(),
            span_id: self.ids.id64().to_be_bytes().to_vec(),
            trace_state: String::new(),
            parent_span_id: parent.to_be_bytes().to_vec(),
            flags: FLAG_SAMPLED | FLAG_HAS_IS_REMOTE,
            name: def.name.clone(),
            kind: SpanKind::Client as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            dropped_attributes_count: 0,
            events: Vec::new(),
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status: Some(status),
        };
        self.push_span(pod, span);
        Served { end, outcome }
    }

    /// Publishes an order event; the consumer processes it a little later
    /// in the same trace (its parent is the PRODUCER span).
    fn publish(&mut self, trace: &TraceCtx, pod: usize, start: u64, parent: u64) -> Served {
        let model = self.model;
        let queue = &model.queue;
        let producer_id = self.ids.id64();
        let end = start + ms_to_ns(self.requests.log_normal(1.5, 0.4));
        let span = Span {
            trace_id: trace.id.to_vec(),
            span_id: producer_id.to_be_bytes().to_vec(),
            trace_state: String::new(),
            parent_span_id: parent.to_be_bytes().to_vec(),
            flags: FLAG_SAMPLED | FLAG_HAS_IS_REMOTE,
            name: queue.producer_name.clone(),
            kind: SpanKind::Producer as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: queue.producer_attrs.clone(),
            dropped_attributes_count: 0,
            events: Vec::new(),
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status: Some(Status::default()),
        };
        self.push_span(pod, span);
        let consumer = model.ops[queue.consumer].service;
        // A consumer that is down leaves the message in the queue.
        if !self.effects[consumer].down {
            let lag = ms_to_ns(2.0 + self.requests.exponential(20.0));
            self.serve(trace, queue.consumer, end + lag, producer_id, false, 0);
        }
        Served {
            end,
            outcome: Outcome::Ok,
        }
    }

    /// Generates the entry requests arriving in the second starting at `now`.
    pub(super) fn generate_traffic(&mut self, now: u64) {
        let model = self.model;
        if self.effects[model.entry].down {
            // Users get connection errors at the load balancer; nothing is
            // traced. Keep the traffic generator in step anyway.
            let rate = self.entry_rate(now);
            self.generate_sources(now, rate);
            return;
        }
        let rate = self.entry_rate(now);
        let count = self.traffic.poisson(rate) as usize;
        self.arrivals.clear();
        for _ in 0..count {
            self.arrivals.push(self.traffic.below(SECOND));
        }
        self.arrivals.sort_unstable();
        for index in 0..self.arrivals.len() {
            let arrival = now + self.arrivals[index];
            self.start_trace(&model.entry_ops, arrival, false);
        }
        self.generate_sources(now, rate);
    }

    /// Requests of the shop's other sources (webhooks, an admin console, a
    /// scheduled job) arriving in the second starting at `now`, when the
    /// entry rate is `entry_rate`. Draws nothing when the shop has none.
    fn generate_sources(&mut self, now: u64, entry_rate: f64) {
        let model = self.model;
        for source in &model.sources {
            let rate = match source.rate {
                SourceRate::Share(share) => share * entry_rate,
                SourceRate::Fixed(rate) => rate,
            };
            let count = self.traffic.poisson(rate);
            for _ in 0..count {
                let arrival = now + self.traffic.below(SECOND);
                // A service that is down refuses its callers at the door.
                self.start_trace(&source.ops, arrival, true);
            }
        }
    }

    /// Starts one trace at `arrival` on an operation drawn from `ops`
    /// (cumulative weights), in a region and with trace attributes drawn
    /// like every trace's; with `refuse_down`, not at all when that
    /// operation's service is down.
    fn start_trace(&mut self, ops: &[(OpId, f64)], arrival: u64, refuse_down: bool) {
        let model = self.model;
        let total = ops.last().map_or(1.0, |(_, total)| *total);
        let pick = self.traffic.uniform() * total;
        let op = ops
            .iter()
            .find(|(_, cumulative)| pick < *cumulative)
            .or(ops.last())
            .map_or(0, |(op, _)| *op);
        let region = if self.traffic.chance(model.regions[0].1) {
            0
        } else {
            1
        };
        let attributes = self
            .trace_keys
            .iter()
            .map(|_| tenant(self.traffic.uniform()))
            .collect();
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.ids.id64().to_be_bytes());
        id[8..].copy_from_slice(&self.ids.next_u64().to_be_bytes());
        let path = self.requests.below(64) as usize;
        if refuse_down && self.effects[model.ops[op].service].down {
            return;
        }
        let trace = TraceCtx {
            id,
            region,
            attributes,
        };
        self.serve(&trace, op, arrival, 0, false, path);
    }
}

/// The tenant (index into `TENANTS`) at `pick` in [0, 1) of the shares.
fn tenant(pick: f64) -> usize {
    let mut total = 0.0;
    for (index, (_, share)) in fault::TENANTS.iter().enumerate() {
        total += share;
        if pick < total {
            return index;
        }
    }
    fault::TENANTS.len() - 1
}

fn http_error_type(code: i64) -> &'static str {
    match code {
        401 => "401",
        404 => "404",
        500 => "500",
        503 => "503",
        504 => "504",
        _ => "_OTHER",
    }
}
