//! The `triage` command line: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use triage::config::{LogFormat, Overrides, Settings};
use triage::server::Server;
use triage::telemetry;

/// triage: an OpenTelemetry-native anomaly-detection collector.
///
/// Receives OTLP traces, metrics and logs, keeps rate/error/duration
/// statistics per service, operation and dependency edge, detects anomalies
/// and finds where an incident started.
///
/// Ports, each on 127.0.0.1 by default (`triage run --help` for the flags):
///   4317  OTLP/gRPC receiver                    --grpc-endpoint
///   4318  OTLP/HTTP receiver                    --http-endpoint
///   8888  admin: /metrics, /healthz, /readyz    --admin-endpoint
///   4320  gRPC query API (`triage query`)       --api-endpoint
///
/// Settings come from, highest first: command-line flags, TRIAGE_* environment
/// variables, the YAML file given with --config, embedded defaults.
#[derive(Debug, Parser)]
// Verbatim, so that clap keeps the ports table's lines as written.
#[command(
    name = "triage",
    version,
    propagate_version = true,
    verbatim_doc_comment
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector. Works with no config file: embedded defaults,
    /// listening on localhost only.
    Run(RunArgs),
    /// Check a config file and report every problem with the field's path.
    /// Exits 0 when the file is valid, 1 otherwise.
    Validate {
        /// The YAML config file to check.
        #[arg(short, long, value_name = "FILE", env = "TRIAGE_CONFIG")]
        config: PathBuf,
    },
    /// Print a complete, commented example config with every default.
    ExampleConfig,
    /// Generate realistic OTLP traffic for a simulated microservice system,
    /// optionally with a fault, as OTLP JSON lines or sent live over gRPC.
    Simulate(triage::tools::sim::SimulateArgs),
    /// Run recorded OTLP (JSON lines or length-delimited protobuf, as the
    /// OTel Collector file exporter writes them; .gz accepted) through
    /// recording and detection, with time taken only from the data. Prints
    /// incident events as JSON lines.
    Replay(ReplayArgs),
    /// Score detection on simulated faults: recall, time to detect, false
    /// incidents. Build with --release; the full suite takes minutes.
    Eval(EvalArgs),
    /// Ask a running collector over its gRPC query API: services, stats,
    /// topology, incidents, changes, or watch incident events live.
    Query(triage::query::cli::QueryArgs),
    /// Watch triage find a fault in under two minutes: the collector on
    /// localhost, a simulated shop sending it live OTLP, a fault after a
    /// healthy period, incidents printed as they open and resolve.
    Demo(triage::tools::demo::DemoArgs),
    /// Send OTLP/gRPC trace load (pre-encoded, fresh timestamps) at a fixed
    /// rate or as fast as possible, and report accepted spans/s, errors and
    /// export latency; or, with --reference-server, serve a decode-and-drop
    /// trace service to compare against (benches/e2e.sh).
    Loadgen(triage::tools::loadgen::LoadgenArgs),
    /// Exit 0 when the admin endpoint answers 200 within 2 s, 1 otherwise:
    /// a container HEALTHCHECK that needs no curl in the image.
    Healthcheck {
        /// The URL to check: http://, or https:// (the certificate is not
        /// checked, as the kubelet does not check a probe's: this only
        /// reads a local status).
        #[arg(
            long,
            value_name = "URL",
            default_value = "http://127.0.0.1:8888/healthz"
        )]
        url: String,
    },
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// Files replayed in the order given: OTLP JSON lines, or
    /// length-delimited OTLP protobuf (the Collector file exporter's
    /// `format: proto`), told apart by content; `.gz` is inflated.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Config file: the same store and detection settings as live mode.
    #[arg(short, long, value_name = "FILE", env = "TRIAGE_CONFIG")]
    config: Option<PathBuf>,
    /// Write incident events here instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// Only these scenarios (see `triage simulate --list`; a trailing `*`
    /// selects all it starts, e.g. 'shop2-*'); default the first shop's set.
    #[arg(value_name = "SCENARIO")]
    scenarios: Vec<String>,
    /// Config file with the detection settings to evaluate.
    #[arg(short, long, value_name = "FILE", env = "TRIAGE_CONFIG")]
    config: Option<PathBuf>,
    /// Entry requests per second of the simulated traffic (default: the
    /// scenarios' own, 20/s).
    #[arg(long, value_name = "N")]
    rate: Option<f64>,
    /// Seeds: each scenario runs once per seed (default 1).
    #[arg(long, value_name = "N", default_value_t = 1)]
    seeds: u64,
    /// The first seed (default 1): `--first-seed 10 --seeds 3` runs seeds
    /// 10 to 12, data never tuned on.
    #[arg(long, value_name = "N", default_value_t = 1)]
    first_seed: u64,
    /// Simulated days of the long healthy scenario `healthy-days`, which
    /// runs only when named (default 3).
    #[arg(long, value_name = "N", default_value_t = 3)]
    days: u64,
    /// Score root-cause analysis instead (origin ranking, changes, scope,
    /// patterns) on the root-cause scenarios (`rca-*`).
    #[arg(long)]
    rca: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// YAML config file. Without it, embedded defaults are used.
    #[arg(short, long, value_name = "FILE", env = "TRIAGE_CONFIG")]
    config: Option<PathBuf>,
    /// OTLP/gRPC listen address (default 127.0.0.1:4317; use 0.0.0.0:4317 to
    /// accept from other hosts).
    #[arg(long, value_name = "HOST:PORT", env = "TRIAGE_GRPC_ENDPOINT")]
    grpc_endpoint: Option<String>,
    /// OTLP/HTTP listen address (default 127.0.0.1:4318).
    #[arg(long, value_name = "HOST:PORT", env = "TRIAGE_HTTP_ENDPOINT")]
    http_endpoint: Option<String>,
    /// Admin HTTP listen address for /metrics, /healthz, /readyz (default
    /// 127.0.0.1:8888).
    #[arg(long, value_name = "HOST:PORT", env = "TRIAGE_ADMIN_ENDPOINT")]
    admin_endpoint: Option<String>,
    /// gRPC query API listen address (default 127.0.0.1:4320).
    #[arg(long, value_name = "HOST:PORT", env = "TRIAGE_API_ENDPOINT")]
    api_endpoint: Option<String>,
    /// Log filter: a level (trace, debug, info, warn, error) or directives
    /// such as "triage=debug,info" (default info).
    #[arg(long, value_name = "FILTER", env = "TRIAGE_LOG_LEVEL")]
    log_level: Option<String>,
    /// Log format on stderr (default text).
    #[arg(long, value_enum, value_name = "FORMAT", env = "TRIAGE_LOG_FORMAT")]
    log_format: Option<LogFormat>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => match run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("triage: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Validate { config } => {
            match Settings::load(Some(&config), &Overrides::default()) {
                Ok(_) => {
                    println!("{}: valid", config.display());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{}: invalid\n{error}", config.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::ExampleConfig => {
            print!("{}", triage::config::example_yaml());
            ExitCode::SUCCESS
        }
        Command::Simulate(args) => report(block_on(triage::tools::sim::run_simulate(args))),
        Command::Replay(args) => report(replay(args).map_err(|error| format!("{error:#}"))),
        Command::Eval(args) => report(eval(args).map_err(|error| format!("{error:#}"))),
        Command::Query(args) => report(query(args).map_err(|error| format!("{error:#}"))),
        Command::Demo(args) => report(demo(args).map_err(|error| format!("{error:#}"))),
        Command::Loadgen(args) => report(block_on(triage::tools::loadgen::run(args))),
        Command::Healthcheck { url } => match healthcheck(&url) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("triage healthcheck: {url}: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn demo(args: triage::tools::demo::DemoArgs) -> anyhow::Result<()> {
    let plan = args.plan()?;
    telemetry::init_logging(&args.log_level, LogFormat::Text)
        .map_err(|error| anyhow::anyhow!("--log-level {}: {error}", args.log_level))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        let interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
        tokio::spawn(wait_for_signal(terminate, interrupt, shutdown.clone()));
        let mut stdout = std::io::stdout();
        triage::tools::demo::run(&plan, args.json, shutdown, &mut stdout).await?;
        Ok(())
    })
}

/// GET `url` (http://HOST:PORT/PATH) and succeed on a 200 status, all within
/// two seconds. Plain std I/O: a health probe should not need a runtime.
fn healthcheck(url: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
    let deadline = std::time::Instant::now() + TIMEOUT;
    let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => anyhow::bail!("only http:// and https:// URLs are supported"),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let address = authority
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {authority:?} (give HOST:PORT)"))?
        .next()
        .with_context(|| format!("{authority:?} resolves to no address"))?;
    let socket = std::net::TcpStream::connect_timeout(&address, TIMEOUT)
        .with_context(|| format!("cannot connect to {address}"))?;
    let left = || {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        (!left.is_zero())
            .then_some(left)
            .context("no answer in time")
    };
    // One socket timeout for the whole exchange (the TLS handshake
    // included): the check is bounded by TIMEOUT and a little more.
    socket.set_write_timeout(Some(left()?))?;
    socket.set_read_timeout(Some(left()?))?;
    let mut stream: Box<dyn ReadWrite> = if tls {
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .with_context(|| format!("{host:?} is not a host name"))?;
        let connection =
            rustls::ClientConnection::new(probe_tls_config()?, name).context("cannot start TLS")?;
        Box::new(rustls::StreamOwned::new(connection, socket))
    } else {
        Box::new(socket)
    };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .context("cannot send the request")?;
    stream.flush().context("cannot send the request")?;
    // The status line is all that matters; a small read bounds the work.
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        left()?;
        let n = stream
            .read(&mut head[read..])
            .context("no answer in time")?;
        if n == 0 {
            break;
        }
        read += n;
    }
    let status_line = String::from_utf8_lossy(&head[..read]);
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        Ok(())
    } else {
        anyhow::bail!(
            "answered {:?}",
            status_line.lines().next().unwrap_or_default()
        )
    }
}

/// A byte stream, plain or TLS.
trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

/// A TLS client configuration for `triage healthcheck` that accepts any
/// server certificate: the check reads the status of the local admin
/// port, whose certificate names the Service, not 127.0.0.1; the kubelet
/// does not check a probe's certificate either.
fn probe_tls_config() -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use triage::forward::tls::AnyCertificate;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Runs `future` to completion on a multi-threaded runtime of its own.
fn block_on<T, E: std::fmt::Display>(
    future: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;
    runtime.block_on(future).map_err(|error| error.to_string())
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("triage: {error}");
            ExitCode::FAILURE
        }
    }
}

fn load(config: Option<&std::path::Path>) -> anyhow::Result<Settings> {
    Settings::load(config, &Overrides::default()).map_err(|error| {
        anyhow::anyhow!(
            "invalid configuration:\n{error}\n(check it with `triage validate -c FILE`)"
        )
    })
}

fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let settings = load(args.config.as_deref())?;
    let mut replay = triage::replay::Replay::new(&settings.pipeline());
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let started = std::time::Instant::now();
    let mut write_error = None;
    let mut emit = |events: &[triage::model::IncidentEvent]| {
        for event in events {
            let written = serde_json::to_writer(&mut out, event)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"));
            if let Err(error) = written {
                write_error.get_or_insert(error);
            }
        }
    };
    for path in &args.files {
        let size = std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0);
        let read = Arc::new(AtomicU64::new(0));
        let input = triage::replay::open_counted(path, Arc::clone(&read))?;
        let progress = Progress::start(path, size, read);
        let format = triage::replay::replay_input(&mut replay, path, input, &mut emit);
        progress.finish();
        let format = format?;
        eprintln!(
            "replayed {} ({:.1} MB, {})",
            path.display(),
            size as f64 / 1e6,
            match format {
                triage::replay::Format::JsonLines => "OTLP JSON lines",
                triage::replay::Format::Protobuf => "length-delimited OTLP protobuf",
            }
        );
    }
    let last = replay.finish();
    emit(&last);
    if let Some(error) = write_error {
        return Err(error).context("cannot write incident events");
    }
    out.flush().context("cannot write incident events")?;
    let stats = replay.stats;
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "{} lines: {} spans, {} points, {} log records ({} rejected); {} incident events; {:.1} s ({:.0} spans/s)",
        stats.lines,
        stats.spans,
        stats.points,
        stats.logs,
        stats.rejected,
        stats.events,
        elapsed,
        stats.spans as f64 / elapsed.max(1e-9)
    );
    Ok(())
}

/// A progress bar on stderr while a large file replays: shown only when
/// stderr is a terminal, so logs and CI output stay clean.
struct Progress {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Files smaller than this finish before a bar would help.
    const MIN_BYTES: u64 = 64 << 20;

    fn start(path: &std::path::Path, size: u64, read: Arc<AtomicU64>) -> Progress {
        use std::io::IsTerminal;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if size < Self::MIN_BYTES || !std::io::stderr().is_terminal() {
            return Progress { stop, thread: None };
        }
        let name = path.display().to_string();
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(250));
                let done = read.load(Ordering::Relaxed).min(size);
                let share = done as f64 / size.max(1) as f64;
                let width = 30;
                let filled = (share * width as f64) as usize;
                let rate = done as f64 / 1e6 / started.elapsed().as_secs_f64().max(1e-3);
                eprint!(
                    "\r{name} [{}{}] {:>5.1}% {:.0} MB/s ",
                    "#".repeat(filled),
                    "-".repeat(width - filled),
                    share * 100.0,
                    rate
                );
            }
            eprint!("\r\x1b[2K");
        });
        Progress {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn query(args: triage::query::cli::QueryArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(triage::query::cli::run(args))?;
    Ok(())
}

/// The scenarios `args` names (all of `all` when it names none), each once
/// per seed, with the rate override applied.
fn selected_runs(
    all: Vec<(&'static str, triage::tools::sim::Scenario)>,
    args: &EvalArgs,
) -> anyhow::Result<Vec<(&'static str, u64, triage::tools::sim::Scenario)>> {
    // A name ending in `*` selects every scenario it starts ("shop2-*").
    let matches = |wanted: &str, name: &str| match wanted.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => wanted == name,
    };
    for name in &args.scenarios {
        if !all.iter().any(|(known, _)| matches(name, known)) {
            let known: Vec<&str> = all.iter().map(|(known, _)| *known).collect();
            anyhow::bail!("unknown scenario {name:?}; known: {}", known.join(", "));
        }
    }
    let mut runs = Vec::new();
    for (name, scenario) in all {
        if !args.scenarios.is_empty() && !args.scenarios.iter().any(|wanted| matches(wanted, name))
        {
            continue;
        }
        let first = args.first_seed.max(1);
        for seed in first..first + args.seeds.max(1) {
            let mut scenario = scenario.clone();
            scenario.seed = seed;
            if let Some(rate) = args.rate {
                scenario.entry_rate_per_sec = rate;
            }
            runs.push((name, seed, scenario));
        }
    }
    Ok(runs)
}

fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let settings = load(args.config.as_deref())?;
    if args.rca {
        return eval_rca(&args, &settings);
    }
    let mut outcomes = Vec::new();
    for (name, seed, scenario) in selected_runs(
        triage::tools::eval::scenario_set(&args.scenarios, args.days),
        &args,
    )? {
        let started = std::time::Instant::now();
        let outcome =
            triage::tools::eval::run_scenario(name, scenario, &settings.detect, &settings.store);
        eprintln!(
            "{name} (seed {seed}): {} in {:.1} s ({} spans)",
            if outcome.fault.is_none() {
                format!("{} false incidents", outcome.false_incidents.len())
            } else if outcome.detected {
                format!(
                    "detected after {:.0} s",
                    outcome.time_to_detect_secs.unwrap_or_default()
                )
            } else {
                "NOT detected".to_string()
            },
            started.elapsed().as_secs_f64(),
            outcome.spans
        );
        outcomes.push(outcome);
    }
    print!("{}", triage::tools::eval::table(&outcomes));
    Ok(())
}

/// `triage eval --rca`: the root-cause scenarios, scored against their
/// ground truth.
fn eval_rca(args: &EvalArgs, settings: &Settings) -> anyhow::Result<()> {
    let mut outcomes = Vec::new();
    for (name, seed, scenario) in selected_runs(triage::tools::sim::rca_scenarios(), args)? {
        let started = std::time::Instant::now();
        let outcome = triage::tools::eval::run_rca_scenario(
            name,
            scenario,
            &settings.detect,
            &settings.store,
        );
        let firsts: Vec<String> = outcome
            .faults
            .iter()
            .map(|fault| {
                format!(
                    "{} -> ranked first {}",
                    fault.fault,
                    fault.ranked_first.as_deref().unwrap_or("(no incident)")
                )
            })
            .collect();
        eprintln!(
            "{name} (seed {seed}): {}; {} incidents; {:.1} s",
            if firsts.is_empty() {
                "no fault".to_string()
            } else {
                firsts.join(", ")
            },
            outcome.incidents,
            started.elapsed().as_secs_f64()
        );
        outcomes.push(outcome);
    }
    print!("{}", triage::tools::eval::rca_table(&outcomes));
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        grpc_endpoint: args.grpc_endpoint,
        http_endpoint: args.http_endpoint,
        admin_endpoint: args.admin_endpoint,
        api_endpoint: args.api_endpoint,
        log_level: args.log_level,
        log_format: args.log_format,
    };
    let settings = Settings::load(args.config.as_deref(), &overrides).map_err(|error| {
        anyhow::anyhow!(
            "invalid configuration:\n{error}\n(check it with `triage validate -c FILE`)"
        )
    })?;
    telemetry::init_logging(&settings.log.level, settings.log.format)
        .map_err(|error| anyhow::anyhow!("cannot set up logging: {error}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = Server::bind(settings).await?;
        let shutdown = CancellationToken::new();
        // The handlers are installed before serving starts (not inside the
        // spawned task), so a SIGTERM that arrives as soon as the collector
        // says it is ready still drains instead of killing the process.
        let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        let interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
        tokio::spawn(wait_for_signal(terminate, interrupt, shutdown.clone()));
        server.run(shutdown).await?;
        Ok(())
    })
}

/// Cancels `shutdown` on SIGINT or SIGTERM. A second signal exits at once.
async fn wait_for_signal(
    terminate: std::io::Result<tokio::signal::unix::Signal>,
    interrupt: std::io::Result<tokio::signal::unix::Signal>,
    shutdown: CancellationToken,
) {
    let (mut terminate, mut interrupt) = match (terminate, interrupt) {
        (Ok(terminate), Ok(interrupt)) => (terminate, interrupt),
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(%error, "cannot listen for SIGTERM/SIGINT; stop triage with SIGKILL");
            return;
        }
    };
    tokio::select! {
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
    }
    shutdown.cancel();
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::warn!("second signal: exiting without draining");
    std::process::exit(1);
}
