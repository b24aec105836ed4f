//! The cost of closing one window at scale: 10,000 operation series (100
//! services x 100 operations) with every window of the ring filled and
//! every detector warmed up, then one pipeline tick that closes the next
//! window (snapshot, per-series detection, incident tracking, analysis).
//!
//! Also prints the memory per series, measured as the growth of resident
//! memory: the store's ring (all windows filled), then the detection state
//! added once every series has been judged for its whole history.
//!
//! Run: `cargo bench --bench window_close`. Figures: docs/PERFORMANCE.md.

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

use triage::pipeline::{Pipeline, Settings};
use triage::store::{Clock, ManualClock, Sample, Store, StoreConfig};

/// Resident memory of this process in bytes (Linux `/proc/self/statm`),
/// for the bytes-per-series figures: the growth while series fill is
/// what they cost, allocator overhead included.
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

const SERVICES: usize = 100;
const OPERATIONS: usize = 100;

/// Services and operations per service: the full scale under `cargo
/// bench`; a small one when `cargo test --all-targets` runs the bench once
/// as a smoke test (a debug build would take many minutes to warm 10,000
/// series up).
///
/// `WINDOW_CLOSE_SCALE=services,operations` sets another scale, for
/// profiling under callgrind at a size that finishes.
fn scale() -> (usize, usize) {
    let custom = std::env::var("WINDOW_CLOSE_SCALE").ok().and_then(|value| {
        let (services, operations) = value.split_once(',')?;
        Some((
            services.trim().parse().ok()?,
            operations.trim().parse().ok()?,
        ))
    });
    if let Some(scale) = custom {
        return scale;
    }
    if std::env::args().any(|arg| arg == "--bench") {
        (SERVICES, OPERATIONS)
    } else {
        (4, 5)
    }
}
/// Requests per series per window (10 s): 1 request/s.
const PER_WINDOW: u64 = 10;
const SECOND: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * SECOND;

/// A deterministic pseudo-random sequence (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct Scale {
    store: Arc<Store>,
    clock: Arc<ManualClock>,
    names: Vec<(String, Vec<String>)>,
    rng: Rng,
    window: u64,
}

impl Scale {
    fn new((services, operations): (usize, usize)) -> Scale {
        let clock = Arc::new(ManualClock::new(T0));
        let config = StoreConfig {
            max_series: NonZeroUsize::new(4 * services * operations).expect("non-zero"),
            ..StoreConfig::default()
        };
        let names = (0..services)
            .map(|service| {
                let operations = (0..operations)
                    .map(|operation| format!("GET /api/{service}/resource/{operation}"))
                    .collect();
                (format!("service-{service:03}"), operations)
            })
            .collect();
        Scale {
            store: Arc::new(Store::with_clock(config, clock.clone())),
            clock,
            names,
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            window: 0,
        }
    }

    fn window_nanos(&self) -> u64 {
        self.store.config().window.as_nanos() as u64
    }

    /// Records the next window's traffic: latencies spread over two orders
    /// of magnitude (5 ms to ~500 ms), 1% errors.
    fn record_window(&mut self) {
        let start = T0 + self.window * self.window_nanos();
        for (service, operations) in &self.names {
            let entry = self.store.service(service);
            for operation in operations {
                for i in 0..PER_WINDOW {
                    let draw = self.rng.next();
                    let millis = 5 + (draw % 100) * (1 + (draw >> 32) % 5);
                    self.store.record_operation(
                        &entry,
                        operation,
                        Sample {
                            end_unix_nanos: start + i * SECOND,
                            duration_nanos: millis * 1_000_000,
                            error: draw.is_multiple_of(100),
                            trace_id: u128::from(draw),
                        },
                    );
                }
            }
        }
        self.window += 1;
        // Past the window and the default lateness: it can close.
        self.clock
            .set(T0 + self.window * self.window_nanos() + 11 * SECOND);
    }
}

fn window_close(c: &mut Criterion) {
    let (services, operations) = scale();
    let series = services * operations;
    let mut scale = Scale::new((services, operations));
    let settings = Settings::default();
    let before = resident_bytes();
    let ring = scale.store.config().windows.get();
    for _ in 0..ring {
        scale.record_window();
    }
    let store_bytes = resident_bytes() - before;
    let window_structs = ring * std::mem::size_of::<triage::store::window::Window>();
    let heap = scale.store.histogram_bytes() / series;
    println!(
        "store per series: {} window structs of {} B = {} B; histograms and \
         sub-windows {} B (heap, without allocator headers); the rest \
         (keys, maps, pairing, allocator) {} B",
        ring,
        std::mem::size_of::<triage::store::window::Window>(),
        window_structs,
        heap,
        (store_bytes / series).saturating_sub(window_structs + heap),
    );
    let mut pipeline = Pipeline::new(&settings, Arc::clone(&scale.store));
    // Judge long enough for every detector's history to be full.
    let history = if std::env::args().any(|arg| arg == "--bench") {
        settings.detect.history_windows + settings.detect.warmup_windows
    } else {
        settings.detect.warmup_windows + 2
    };
    let with_store = resident_bytes();
    let mut tick_total = Duration::ZERO;
    for _ in 0..history {
        scale.record_window();
        let now = scale.clock.now_unix_nanos();
        let started = Instant::now();
        black_box(pipeline.tick(now));
        tick_total += started.elapsed();
    }
    let detect_bytes = resident_bytes().saturating_sub(with_store);
    println!(
        "{} series ({} windows of {} s in the ring): store {} bytes/series; \
         detection and analysis state {} bytes/series after {} windows; \
         mean tick during warm-up {:.1} ms",
        scale.store.n_series(),
        ring,
        scale.window_nanos() / SECOND,
        store_bytes / series,
        detect_bytes / series,
        history,
        tick_total.as_secs_f64() * 1e3 / history as f64,
    );

    // The detection snapshot the server saves once a minute is encoded on
    // the detection thread, series by series (`PackedSnapshot::of_engine`).
    let started = Instant::now();
    let packed =
        triage::history::PackedSnapshot::of_engine(pipeline.engine(), scale.store.config().window)
            .expect("snapshot");
    println!(
        "detection snapshot of {} series encoded in {:.0} ms (once a minute, on the \
         detection thread)",
        scale.store.n_series(),
        started.elapsed().as_secs_f64() * 1e3,
    );
    black_box(packed);

    let mut group = c.benchmark_group("window_close");
    group.sample_size(20);
    group.bench_function("10000_series", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                scale.record_window();
                let now = scale.clock.now_unix_nanos();
                let started = Instant::now();
                black_box(pipeline.tick(now));
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, window_close);
criterion_main!(benches);
