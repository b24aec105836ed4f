//! Per-pod metric state and the OTLP metrics it becomes every 10 s.
//!
//! Requests leave their traces here as they are generated (CPU time, DB pool
//! use, HTTP server durations); the tick turns one interval of them into
//! gauges (memory, CPU, pool usage) and cumulative sums and histograms
//! (throttling periods, pool wait/use time, request duration). Cumulative
//! streams start when the container starts and restart from zero when it
//! restarts, which is what OTel SDKs and cAdvisor do.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};

use crate::tools::sim::engine::{Effects, Pod};
use crate::tools::sim::fault::MEMORY_LEAK_TIME_TO_LIMIT;
use crate::tools::sim::model::{kv_int, kv_str, Model, OpId};
use crate::tools::sim::rng::Rng;

/// Metrics are reported this often.
pub const INTERVAL_SECONDS: u64 = 10;
const INTERVAL_NS: f64 = INTERVAL_SECONDS as f64 * 1e9;
/// CFS period: 100 ms, so at most 100 periods per interval.
const CFS_PERIODS_PER_INTERVAL: f64 = INTERVAL_SECONDS as f64 * 10.0;
/// Share of a request's own time spent on CPU (the rest is I/O and waits).
pub const CPU_SHARE_OF_OWN_TIME: f64 = 0.5;

/// Bucket bounds (seconds) recommended by the HTTP semantic conventions.
const HTTP_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Bucket bounds (seconds) for connection wait and use times.
const POOL_BOUNDS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.34.0";

/// A cumulative explicit-bucket histogram.
#[derive(Debug, Clone)]
pub struct Hist {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
    min: f64,
    max: f64,
}

impl Hist {
    fn new(bounds: usize) -> Self {
        Hist {
            counts: vec![0; bounds + 1],
            sum: 0.0,
            count: 0,
            min: f64::INFINITY,
            max: 0.0,
        }
    }

    fn record(&mut self, bounds: &[f64], value: f64) {
        // Explicit buckets are (previous bound, bound]: upper-inclusive.
        let bucket = bounds.partition_point(|&bound| bound < value);
        self.counts[bucket] += 1;
        self.sum += value;
        self.count += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    fn point(
        &self,
        bounds: &[f64],
        attributes: Vec<KeyValue>,
        start: u64,
        time: u64,
    ) -> HistogramDataPoint {
        HistogramDataPoint {
            attributes,
            start_time_unix_nano: start,
            time_unix_nano: time,
            count: self.count,
            sum: Some(round6(self.sum)),
            bucket_counts: self.counts.clone(),
            explicit_bounds: bounds.to_vec(),
            exemplars: Vec::new(),
            flags: 0,
            min: Some(round6(if self.count == 0 { 0.0 } else { self.min })),
            max: Some(round6(self.max)),
        }
    }
}

/// What one pod measured, for its metrics.
#[derive(Debug, Clone)]
pub struct PodMetrics {
    /// Start of the cumulative streams (the container's start).
    pub started_ns: u64,
    // This interval.
    pub requests: u64,
    pub cpu_ns: f64,
    pub db_use_ns: f64,
    pub db_calls: u64,
    // State.
    /// Garbage waiting to be collected (a sawtooth), in bytes.
    garbage: f64,
    /// Memory leaked so far, in bytes.
    pub leaked: f64,
    periods: u64,
    throttled: u64,
    wait: Hist,
    use_time: Hist,
    http: Vec<(OpId, i64, Hist)>,
}

impl PodMetrics {
    pub fn new(started_ns: u64) -> Self {
        PodMetrics {
            started_ns,
            requests: 0,
            cpu_ns: 0.0,
            db_use_ns: 0.0,
            db_calls: 0,
            garbage: 0.0,
            leaked: 0.0,
            periods: 0,
            throttled: 0,
            wait: Hist::new(POOL_BOUNDS.len()),
            use_time: Hist::new(POOL_BOUNDS.len()),
            http: Vec::new(),
        }
    }

    /// Gives the CPU counters of a container that has been up for `up_ns`
    /// the totals it would have gathered (about 45 runnable CFS periods per
    /// interval, 0.5% of them throttled), so that a run does not start with
    /// every container freshly started.
    pub fn warm_up(&mut self, up_ns: u64) {
        let intervals = up_ns / (INTERVAL_SECONDS * 1_000_000_000);
        self.periods = intervals * 45;
        self.throttled = self.periods / 200;
    }

    /// A request served by this pod, with its own time.
    pub fn request(&mut self, own_ns: f64) {
        self.requests += 1;
        self.cpu_ns += own_ns * CPU_SHARE_OF_OWN_TIME;
    }

    /// A query through the connection pool.
    pub fn pooled_query(&mut self, wait_ns: f64, use_ns: f64) {
        self.db_calls += 1;
        self.db_use_ns += use_ns;
        self.wait.record(&POOL_BOUNDS, wait_ns / 1e9);
        self.use_time.record(&POOL_BOUNDS, use_ns / 1e9);
    }

    /// An HTTP server request of operation `op` answered with `status`.
    pub fn http_request(&mut self, op: OpId, status: i64, duration_ns: u64) {
        let seconds = duration_ns as f64 / 1e9;
        match self
            .http
            .iter_mut()
            .find(|(stream_op, stream_status, _)| *stream_op == op && *stream_status == status)
        {
            Some((_, _, hist)) => hist.record(&HTTP_BOUNDS, seconds),
            None => {
                let mut hist = Hist::new(HTTP_BOUNDS.len());
                hist.record(&HTTP_BOUNDS, seconds);
                self.http.push((op, status, hist));
            }
        }
    }

    /// Starts a new interval.
    fn end_interval(&mut self) {
        self.requests = 0;
        self.cpu_ns = 0.0;
        self.db_use_ns = 0.0;
        self.db_calls = 0;
    }

    /// The container restarts (OOM kill): memory and cumulative streams
    /// start over.
    fn restart(&mut self, now_ns: u64) {
        *self = PodMetrics::new(now_ns);
    }
}

/// Rounds to 6 decimals, so that values survive a JSON round trip exactly
/// (serde_json parses short decimals exactly; long ones may be off by an ulp).
pub fn round6(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

fn gauge(name: &str, unit: &str, description: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.to_owned(),
        description: description.to_owned(),
        unit: unit.to_owned(),
        metadata: Vec::new(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
    }
}

fn counter(name: &str, unit: &str, description: &str, point: NumberDataPoint) -> Metric {
    Metric {
        name: name.to_owned(),
        description: description.to_owned(),
        unit: unit.to_owned(),
        metadata: Vec::new(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![point],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
    }
}

fn histogram(name: &str, description: &str, points: Vec<HistogramDataPoint>) -> Metric {
    Metric {
        name: name.to_owned(),
        description: description.to_owned(),
        unit: "s".to_owned(),
        metadata: Vec::new(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
    }
}

fn int_point(attributes: Vec<KeyValue>, start: u64, time: u64, value: i64) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: time,
        exemplars: Vec::new(),
        flags: 0,
        value: Some(number_data_point::Value::AsInt(value)),
    }
}

fn double_point(time: u64, value: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: Vec::new(),
        start_time_unix_nano: 0,
        time_unix_nano: time,
        exemplars: Vec::new(),
        flags: 0,
        value: Some(number_data_point::Value::AsDouble(round6(value))),
    }
}

pub fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "triage-sim".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
    }
}

/// Closes the interval ending at `now_ns`: updates memory, CPU and pool
/// state of every live pod and returns their metrics (`None` if no pod is
/// reporting).
pub fn tick(
    model: &Model,
    pods: &mut [Pod],
    effects: &[Effects],
    now_ns: u64,
    rng: &mut Rng,
) -> Option<ExportMetricsServiceRequest> {
    let mut resource_metrics = Vec::new();
    for pod in pods.iter_mut() {
        if !pod.live || pod.metrics.started_ns >= now_ns {
            continue;
        }
        let service = &model.services[pod.service];
        let effect = &effects[pod.service];
        if effect.down {
            // A service that is down reports nothing; its interval is lost.
            pod.metrics.end_interval();
            continue;
        }
        let m = &mut pod.metrics;

        // Memory: a base, a garbage sawtooth (collected when it passes ~12%
        // of the base) and whatever has leaked.
        m.garbage += service.memory_base * rng.range(0.01, 0.03);
        if m.garbage > service.memory_base * 0.12 {
            m.garbage = service.memory_base * rng.range(0.0, 0.02);
        }
        if effect.leaking {
            let per_second = (service.memory_limit - service.memory_base)
                / MEMORY_LEAK_TIME_TO_LIMIT.as_secs_f64();
            m.leaked += per_second * INTERVAL_SECONDS as f64;
        }
        let mut memory = service.memory_base + m.garbage + m.leaked;
        if memory >= service.memory_limit {
            // OOM-killed: the container restarts with fresh memory and
            // counters.
            m.restart(now_ns);
            pod.restarts += 1;
            memory = service.memory_base;
        }
        let m = &mut pod.metrics;

        // CPU: own time of the interval's requests plus a small idle cost,
        // as a fraction of the CPU limit; throttling when the container runs
        // close to its limit, or heavily under a throttling fault.
        let busy = m.cpu_ns / (INTERVAL_NS * service.cpu_limit);
        let mut utilization = (0.02 + busy + 0.004 * rng.normal()).clamp(0.001, 1.0);
        let active = (0.4 + 2.0 * utilization).min(1.0);
        let periods = (CFS_PERIODS_PER_INTERVAL * active).round() as u64;
        let ratio = if effect.throttled {
            utilization = rng.range(0.93, 0.99);
            rng.range(0.35, 0.6)
        } else {
            (utilization - 0.7).max(0.0) * 0.5 + rng.range(0.0, 0.01)
        };
        m.periods += periods;
        m.throttled += (periods as f64 * ratio).round() as u64;

        let start = m.started_ns;
        let restarts = pod.restarts;
        let m = &mut pod.metrics;
        let mut metrics = vec![
            gauge(
                "process.memory.usage",
                "By",
                "The amount of physical memory in use.",
                vec![int_point(Vec::new(), 0, now_ns, memory as i64)],
            ),
            gauge(
                "k8s.container.memory.limit",
                "By",
                "Maximum memory resource limit set for the container.",
                vec![int_point(
                    Vec::new(),
                    0,
                    now_ns,
                    service.memory_limit as i64,
                )],
            ),
            gauge(
                "process.cpu.utilization",
                "1",
                "CPU time used since the last measurement, divided by elapsed time and available CPUs.",
                vec![double_point(now_ns, utilization)],
            ),
            counter(
                "container.cpu.throttling_data.periods",
                "{period}",
                "Number of CFS enforcement periods in which the container was runnable.",
                int_point(Vec::new(), start, now_ns, m.periods as i64),
            ),
            gauge(
                "k8s.container.restart.count",
                "{restart}",
                "Number of times the container has restarted (OOM kills here).",
                vec![int_point(Vec::new(), 0, now_ns, i64::from(restarts))],
            ),
            counter(
                "container.cpu.throttling_data.throttled_periods",
                "{period}",
                "Number of CFS periods in which the container was throttled.",
                int_point(Vec::new(), start, now_ns, m.throttled as i64),
            ),
        ];

        if let Some(max) = service.pool_max {
            // Little's law: connections in use = query rate x query time.
            // Every connection of the pool stays open (a fixed-size pool).
            let max = i64::from(max);
            let busy = m.db_use_ns / INTERVAL_NS;
            let (used, pending) = if effect.pool_exhausted {
                let demand = m.db_calls as f64 / INTERVAL_SECONDS as f64 * 0.2;
                (max, 1 + rng.poisson(demand.max(2.0)) as i64)
            } else {
                let used = (busy + rng.exponential(0.4)).round() as i64;
                (used.clamp(0, max), 0)
            };
            let pool = || kv_str("db.client.connection.pool.name", service.pool_name);
            metrics.push(gauge(
                "db.client.connection.count",
                "{connection}",
                "The number of connections that are currently in the state described by the state attribute.",
                vec![
                    int_point(
                        vec![pool(), kv_str("db.client.connection.state", "used")],
                        0,
                        now_ns,
                        used,
                    ),
                    int_point(
                        vec![pool(), kv_str("db.client.connection.state", "idle")],
                        0,
                        now_ns,
                        max - used,
                    ),
                ],
            ));
            metrics.push(gauge(
                "db.client.connection.max",
                "{connection}",
                "The maximum number of open connections allowed.",
                vec![int_point(vec![pool()], 0, now_ns, max)],
            ));
            metrics.push(gauge(
                "db.client.connection.pending_requests",
                "{request}",
                "The number of current pending requests for an open connection.",
                vec![int_point(vec![pool()], 0, now_ns, pending)],
            ));
            metrics.push(histogram(
                "db.client.connection.wait_time",
                "The time it took to obtain an open connection from the pool.",
                vec![m.wait.point(&POOL_BOUNDS, vec![pool()], start, now_ns)],
            ));
            metrics.push(histogram(
                "db.client.connection.use_time",
                "The time between borrowing a connection and returning it to the pool.",
                vec![m.use_time.point(&POOL_BOUNDS, vec![pool()], start, now_ns)],
            ));
        }

        if !m.http.is_empty() {
            let points = m
                .http
                .iter()
                .map(|(op, status, hist)| {
                    let def = &model.ops[*op];
                    let (method, route) = match def.kind {
                        super::model::OpKind::Http { method, route } => (method, route),
                        _ => ("_OTHER", ""),
                    };
                    let scheme = if model.services[def.service].name == "frontend" {
                        "https"
                    } else {
                        "http"
                    };
                    let attributes = vec![
                        kv_str("http.request.method", method),
                        kv_str("http.route", route),
                        kv_int("http.response.status_code", *status),
                        kv_str("url.scheme", scheme),
                    ];
                    hist.point(&HTTP_BOUNDS, attributes, start, now_ns)
                })
                .collect();
            metrics.push(histogram(
                "http.server.request.duration",
                "Duration of HTTP server requests.",
                points,
            ));
        }

        m.end_interval();

        resource_metrics.push(ResourceMetrics {
            resource: Some(pod.resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics,
                schema_url: SCHEMA_URL.to_owned(),
            }],
            schema_url: String::new(),
        });
    }
    if resource_metrics.is_empty() {
        None
    } else {
        Some(ExportMetricsServiceRequest { resource_metrics })
    }
}
