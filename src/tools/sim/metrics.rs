//! Per-pod metric state and the OTLP metrics it becomes every 10 s.
//!
//! Requests leave their traces here as they are generated (CPU time, DB pool
//! use, HTTP server durations); the tick turns one interval of them into
//! gauges (memory, CPU, pool usage) and cumulative sums and histograms
//! (throttling periods, pool wait/use time, request duration). Cumulative
//! streams start when the container starts and restart from zero when it
//! restarts, which is what OTel SDKs and cAdvisor do.

use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, Sum,
};

use crate::tools::sim::model::OpId;

/// Metrics are reported this often.
pub const INTERVAL_SECONDS: u64 = 10;
pub(crate) const INTERVAL_NS: f64 = INTERVAL_SECONDS as f64 * 1e9;
/// CFS period: 100 ms, so at most 100 periods per interval.
pub(crate) const CFS_PERIODS_PER_INTERVAL: f64 = INTERVAL_SECONDS as f64 * 10.0;
/// Share of a request's own time spent on CPU (the rest is I/O and waits).
pub const CPU_SHARE_OF_OWN_TIME: f64 = 0.5;

/// Bucket bounds (seconds) recommended by the HTTP semantic conventions.
pub(crate) const HTTP_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Bucket bounds (seconds) for connection wait and use times.
pub(crate) const POOL_BOUNDS: [f64; 10] =
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

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

    pub(crate) fn point(
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
    pub(crate) garbage: f64,
    /// Memory leaked so far, in bytes.
    pub leaked: f64,
    pub(crate) periods: u64,
    pub(crate) throttled: u64,
    pub(crate) wait: Hist,
    pub(crate) use_time: Hist,
    pub(crate) http: Vec<(OpId, i64, Hist)>,
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
    pub(crate) fn end_interval(&mut self) {
        self.requests = 0;
        self.cpu_ns = 0.0;
        self.db_use_ns = 0.0;
        self.db_calls = 0;
    }

    /// The container restarts (OOM kill): memory and cumulative streams
    /// start over.
    pub(crate) fn restart(&mut self, now_ns: u64) {
        *self = PodMetrics::new(now_ns);
    }
}

/// Rounds to 6 decimals, so that values survive a JSON round trip exactly
/// (serde_json parses short decimals exactly; long ones may be off by an ulp).
pub fn round6(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

pub(crate) fn gauge(
    name: &str,
    unit: &str,
    description: &str,
    points: Vec<NumberDataPoint>,
) -> Metric {
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

pub(crate) fn counter(name: &str, unit: &str, description: &str, point: NumberDataPoint) -> Metric {
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

pub(crate) fn histogram(name: &str, description: &str, points: Vec<HistogramDataPoint>) -> Metric {
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

pub(crate) fn int_point(
    attributes: Vec<KeyValue>,
    start: u64,
    time: u64,
    value: i64,
) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: time,
        exemplars: Vec::new(),
        flags: 0,
        value: Some(number_data_point::Value::AsInt(value)),
    }
}

pub(crate) fn double_point(time: u64, value: f64) -> NumberDataPoint {
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
