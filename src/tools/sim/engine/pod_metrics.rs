//! The metrics tick: every interval, the engine's live pods and the
//! effects of the active faults become one OTLP metrics request, built
//! from the per-pod state and helpers of `sim::metrics`.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};

use super::{Effects, Pod};
use crate::tools::sim::fault::MEMORY_LEAK_TIME_TO_LIMIT;
use crate::tools::sim::metrics::*;
use crate::tools::sim::model::{self, kv_int, kv_str, Model};
use crate::tools::sim::rng::Rng;

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
                        model::OpKind::Http { method, route } => (method, route),
                        _ => ("_OTHER", ""),
                    };
                    let scheme = if model.services[def.service].public_host.is_some() {
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
