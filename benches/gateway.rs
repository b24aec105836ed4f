//! How many services of agent summaries one gateway keeps up with: the
//! figures in docs/SCALING.md.
//!
//! ```sh
//! cargo bench --bench gateway -- --services 5000 --operations 20 --agents 3
//! ```
//!
//! Keeps `--agents` agent stores, each recording one 10 s window of every
//! service's operations (`--operations` per service, each with its own
//! series, an edge to the next service and a latency spread), summarises
//! the window on each agent exactly as agent mode does
//! (`agent::summary::summarize`), encodes the requests to protobuf, and
//! then times the gateway: reading and recording every request
//! (`Sink::metrics_protobuf`, as the OTLP receivers call it; with
//! `--prost`, decoding with prost and `Sink::metrics`) and closing the
//! window (detection and analysis, `Pipeline::tick`). It repeats this for
//! `--windows` windows (the first ones warm the baselines up) and prints,
//! per window, the time to record, the time to close, and their sum
//! against the window length: detection keeps up while the sum stays
//! below it (on one core; the receivers decode on every core).
//!
//! Run by `cargo test --all-targets` only as a smoke run (without
//! `--bench`, tiny sizes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use triage::agent::summary::summarize;
use triage::model::SeriesKind;
use triage::pipeline::{Pipeline, Settings};
use triage::receiver::Sink;
use triage::store::{ManualClock, RedPoint, Store, StoreConfig};

const SECOND: u64 = 1_000_000_000;

struct Options {
    services: usize,
    operations: usize,
    agents: usize,
    windows: usize,
    /// Decode the requests with prost and record the decoded request
    /// (`Sink::metrics`, the OTLP/JSON path and the path before the
    /// zero-copy reader), instead of reading the protobuf bytes
    /// (`Sink::metrics_protobuf`, the receivers' path).
    prost: bool,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|arg| arg == "--bench");
    let value = |name: &str, default: usize| {
        args.iter()
            .position(|arg| arg == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|text| text.parse().ok())
            .unwrap_or(default)
    };
    if !bench {
        // `cargo test --all-targets`: a smoke run.
        return Options {
            services: 20,
            operations: 3,
            agents: 2,
            windows: 3,
            prost: false,
        };
    }
    Options {
        services: value("--services", 5000),
        operations: value("--operations", 20),
        agents: value("--agents", 3),
        windows: value("--windows", 8),
        prost: args.iter().any(|arg| arg == "--prost"),
    }
}

fn store_config(services: usize, operations: usize) -> StoreConfig {
    let mut config = StoreConfig::default();
    // Operations, edges and own series of every service, with room.
    let series = services * (operations * 2 + 2) + 1000;
    config.max_series = std::num::NonZeroUsize::new(series).expect("non-zero");
    config.max_series_per_service =
        std::num::NonZeroUsize::new(operations * 2 + 100).expect("non-zero");
    config
}

/// One agent's share of window `index`: every operation of every service
/// with `requests` requests over a spread of latencies, one edge per
/// service.
fn fill_agent(store: &Store, index: i64, options: &Options, agent: usize) {
    let time = store.window_start(index) + 5 * SECOND;
    let latencies: Vec<(u64, u64)> = (0..8).map(|i| (2_000 + 1_500 * i * i, 3)).collect();
    for s in 0..options.services {
        let service = store.service(&format!("service-{s:05}"));
        for o in 0..options.operations {
            let point = RedPoint {
                time,
                requests: 24,
                errors: u64::from((s + o + agent).is_multiple_of(7)),
                latencies: &latencies,
                exemplars: &[(20_000, false, (s * 1000 + o + 1) as u128)],
            };
            let name = format!("GET /v1/resource-{o:02}");
            store.record_red(&service, SeriesKind::Operation, &name, &point);
            store.record_red(&service, SeriesKind::Own, &name, &point);
        }
        let callee = format!("service-{:05}", (s + 1) % options.services);
        let point = RedPoint {
            time,
            requests: 24 * options.operations as u64,
            errors: 0,
            latencies: &latencies,
            exemplars: &[],
        };
        store.record_red(&service, SeriesKind::Edge, &callee, &point);
    }
}

fn main() {
    let options = options();
    let settings = Settings {
        store: store_config(options.services, options.operations),
        ..Settings::default()
    };
    let window = settings.store.window;
    let window_nanos = window.as_nanos() as u64;
    let start = 1_800_000_000 * SECOND;
    let first = (start / window_nanos) as i64;

    let gateway_clock = Arc::new(ManualClock::new(start));
    let gateway_store = Arc::new(Store::with_clock(
        settings.store.clone(),
        gateway_clock.clone(),
    ));
    let mut gateway = Pipeline::new(&settings, gateway_store);

    println!(
        "gateway: {} services x {} operations (+ own series, + 1 edge each), {} agents, {}-s windows",
        options.services,
        options.operations,
        options.agents,
        window.as_secs()
    );
    println!("window  requests  points  bytes(MiB)  record(s)  close(s)  total/window");
    let mut worst = Duration::ZERO;
    // The agents' stores live as long as the run, as agents do: each
    // window is recorded into them and summarised.
    let agents: Vec<(Arc<ManualClock>, Store)> = (0..options.agents)
        .map(|_| {
            let clock = Arc::new(ManualClock::new(start));
            let store = Store::with_clock(settings.store.clone(), clock.clone());
            (clock, store)
        })
        .collect();
    for w in 0..options.windows as i64 {
        let index = first + w;
        let mut encoded: Vec<Vec<u8>> = Vec::new();
        let mut points = 0;
        for (agent, (clock, store)) in agents.iter().enumerate() {
            clock.set(start + w as u64 * window_nanos + window_nanos);
            fill_agent(store, index, &options, agent);
            let summary = summarize(store, None, index, &format!("agent-{agent}"));
            points += summary.points;
            encoded.extend(summary.requests.iter().map(Message::encode_to_vec));
        }
        let bytes: usize = encoded.iter().map(Vec::len).sum();
        let now = (index as u64 + 1) * window_nanos + SECOND;
        gateway_clock.set(now);
        let started = Instant::now();
        for message in &encoded {
            let outcome = if options.prost {
                let request =
                    ExportMetricsServiceRequest::decode(message.as_slice()).expect("decode");
                gateway.ingest().metrics(&request)
            } else {
                gateway.ingest().metrics_protobuf(message).expect("read")
            };
            assert_eq!(outcome.rejected, 0, "{outcome:?}");
        }
        let record = started.elapsed();
        // Close the window (lateness passed).
        let close_at = now + settings.detect.lateness.as_nanos() as u64;
        gateway_clock.set(close_at);
        let started = Instant::now();
        let _ = gateway.tick(close_at);
        let close = started.elapsed();
        let total = record + close;
        if w >= 2 {
            worst = worst.max(total);
        }
        println!(
            "{w:>6}  {:>8}  {points:>6}  {:>10.1}  {:>9.3}  {:>8.3}  {:>11.1}%",
            encoded.len(),
            bytes as f64 / (1 << 20) as f64,
            record.as_secs_f64(),
            close.as_secs_f64(),
            100.0 * total.as_secs_f64() / window.as_secs_f64()
        );
    }
    println!(
        "series on the gateway: {}; worst window after warm-up: {:.3} s of {} s",
        gateway.store().n_series(),
        worst.as_secs_f64(),
        window.as_secs()
    );
}
