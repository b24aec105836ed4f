//! `triage simulate`: raw command-line arguments, validated into a
//! [`Scenario`] and an output before anything runs.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::tools::sim::{
    find_scenario, named_scenarios, parse_duration, parse_fault_in, rca_scenarios, send_otlp,
    topology_of, write_json_lines, Fault, Scenario, ScenarioTruth, Shop, Signals, SimError,
    Simulator, FAULT_SPECS,
};

/// Generate OTLP traffic for a simulated microservice shop (12 services),
/// optionally with a fault, as OTLP JSON lines or live OTLP/gRPC.
///
/// Examples:
///   triage simulate latency --out latency.jsonl.gz
///   triage simulate --scenario rca-bad-deploy --out bad.jsonl.gz --truth bad.truth.json
///   triage simulate --fault down:inventory --fault-at 30m --duration 40m --out down.jsonl
///   triage simulate --fault 'errors:inventory@cloud.region=eu-west-1' --fault-at 10m --duration 16m
///   triage simulate healthy --otlp-endpoint http://127.0.0.1:4317 --realtime
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SimulateArgs {
    /// A named scenario (see --list): a detection scenario or a root-cause
    /// one (rca-*). Without one: one healthy hour, plus any --fault given.
    #[arg(value_name = "SCENARIO")]
    pub scenario: Option<String>,
    /// The named scenario, as an option (the same as the positional
    /// SCENARIO).
    #[arg(long = "scenario", value_name = "NAME", conflicts_with = "scenario")]
    pub scenario_option: Option<String>,
    /// List the named scenarios and fault specs, then exit.
    #[arg(long)]
    pub list: bool,
    /// The simulated system: "first" (the default: the 12-service web
    /// shop) or "second" (`stays`, a 15-service travel-booking platform
    /// sharing nothing with the first; its scenarios are named shop2-*).
    /// Faults are checked against its services.
    #[arg(long, value_name = "first|second")]
    pub shop: Option<String>,
    /// Inject a fault, e.g. latency:payment, errors:checkout:/api/checkout,
    /// down:inventory, retry-storm:checkout:payment, bad-deploy:payment,
    /// slow:inventory:250, timeouts:checkout:payment,
    /// flag-flip:checkout:new-checkout-flow, canary:catalog, or a scoped one:
    /// errors:inventory@cloud.region=eu-west-1, slow:cart:400@pod=1,
    /// errors:catalog@app.tenant=initech. Repeatable; each needs a
    /// --fault-at.
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<String>,
    /// When the matching --fault starts, from the start of the run (e.g.
    /// 30m).
    #[arg(long = "fault-at", value_name = "DURATION")]
    pub fault_at: Vec<String>,
    /// How long the matching --fault lasts (default: to the end).
    #[arg(long = "fault-for", value_name = "DURATION")]
    pub fault_for: Vec<String>,
    /// Length of the run, e.g. 40m, 2h, 1d.
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,
    /// Random seed; the same seed and scenario give identical output.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Mean entry requests per second (default 20; about 13 spans each).
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<f64>,
    /// Event time of the start: Unix seconds, or "now" (default
    /// 2025-01-06T09:00:00Z, for reproducible files).
    #[arg(long, value_name = "UNIX_SECONDS|now")]
    pub start: Option<String>,
    /// Keep the entry rate flat instead of following the time of day.
    #[arg(long)]
    pub no_daily_shape: bool,
    /// Do not roll out new versions at random times.
    #[arg(long)]
    pub no_benign_deploys: bool,
    /// Signals to emit, comma-separated: traces, metrics, logs (default
    /// all).
    #[arg(long, value_delimiter = ',', value_name = "SIGNALS")]
    pub signals: Vec<String>,
    /// Write OTLP JSON lines here ("-" for stdout, the default; a name
    /// ending in .gz is gzipped; .binpb or .pb (before any .gz) writes
    /// length-delimited OTLP protobuf instead). Read it back with `triage
    /// replay`.
    #[arg(long, value_name = "FILE", conflicts_with = "otlp_endpoint")]
    pub out: Option<PathBuf>,
    /// Send live OTLP/gRPC to this collector instead, e.g.
    /// http://127.0.0.1:4317.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// With --otlp-endpoint: send each simulated second when it has passed
    /// on the wall clock, with timestamps moved to now.
    #[arg(long, requires = "otlp_endpoint")]
    pub realtime: bool,
    /// Also write the run's ground truth (per fault: origin, affected
    /// services, causing change, scope, pattern) and the change events a
    /// CI/CD tool would post, as JSON. Not with --realtime, whose
    /// timestamps move.
    #[arg(long, value_name = "FILE", conflicts_with = "realtime")]
    pub truth: Option<PathBuf>,
}

// === impl SimulateArgs ===

impl SimulateArgs {
    /// The scenario these arguments describe.
    pub fn to_scenario(&self) -> Result<Scenario, SimError> {
        let shop = match &self.shop {
            None => None,
            Some(text) => Some(Shop::parse(text).ok_or_else(|| {
                SimError::Args(format!(
                    "--shop {text:?}: use \"first\" (the default) or \"second\""
                ))
            })?),
        };
        let mut scenario = match self.scenario.as_ref().or(self.scenario_option.as_ref()) {
            None => Scenario::for_shop(shop.unwrap_or_default()),
            Some(name) => {
                let scenario = find_scenario(name).ok_or_else(|| SimError::UnknownScenario {
                    name: name.clone(),
                    known: scenario_names(),
                })?;
                if shop.is_some_and(|shop| shop != scenario.shop) {
                    return Err(SimError::Args(format!(
                        "scenario {name} runs the {} shop, not the one --shop names; \
                         leave --shop out",
                        scenario.shop.name()
                    )));
                }
                scenario
            }
        };
        if let Some(duration) = &self.duration {
            scenario.duration = parse_duration(duration)?;
        }
        if scenario.duration < Duration::from_secs(1) {
            return Err(SimError::Args(
                "--duration must be at least 1s (e.g. --duration 40m)".to_owned(),
            ));
        }
        if let Some(seed) = self.seed {
            scenario.seed = seed;
        }
        if let Some(rate) = self.rate {
            if !rate.is_finite() || rate < 0.0 {
                return Err(SimError::Args(format!(
                    "--rate {rate} is not a rate: give entry requests per second, e.g. --rate 20"
                )));
            }
            scenario.entry_rate_per_sec = rate;
        }
        if let Some(start) = &self.start {
            scenario.start_unix_nanos = if start == "now" {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |since| since.as_secs() * 1_000_000_000)
            } else {
                let seconds: u64 = start.parse().map_err(|_| {
                    SimError::Args(format!(
                        "--start {start:?}: give Unix seconds (e.g. 1736154000) or \"now\""
                    ))
                })?;
                seconds.checked_mul(1_000_000_000).ok_or_else(|| {
                    SimError::Args(format!("--start {start}: too far in the future"))
                })?
            };
        }
        if self.no_daily_shape {
            scenario.daily_shape = false;
        }
        if self.no_benign_deploys {
            scenario.benign_deploys = false;
        }

        if self.fault_at.len() != self.faults.len() {
            return Err(SimError::Args(format!(
                "{} --fault but {} --fault-at: give each fault its start, e.g. \
                 --fault latency:payment --fault-at 30m",
                self.faults.len(),
                self.fault_at.len()
            )));
        }
        if self.fault_for.len() > self.faults.len() {
            return Err(SimError::Args(
                "more --fault-for than --fault: each --fault-for belongs to the --fault in the same position"
                    .to_owned(),
            ));
        }
        for (index, spec) in self.faults.iter().enumerate() {
            let kind = parse_fault_in(scenario.shop, spec)?;
            let start = parse_duration(&self.fault_at[index])?;
            let duration = self
                .fault_for
                .get(index)
                .map(|text| parse_duration(text))
                .transpose()?;
            scenario.faults.push(Fault {
                kind,
                start,
                duration,
            });
        }
        for fault in &scenario.faults {
            if fault.start >= scenario.duration {
                return Err(SimError::Args(format!(
                    "fault {} starts at {:?}, after the run ends ({:?}): use an earlier \
                     --fault-at or a longer --duration",
                    fault.kind, fault.start, scenario.duration
                )));
            }
        }
        Ok(scenario)
    }
}

impl SimulateArgs {
    /// The signals these arguments ask for.
    pub fn to_signals(&self) -> Result<Signals, SimError> {
        if self.signals.is_empty() {
            return Ok(Signals::ALL);
        }
        let mut signals = Signals {
            traces: false,
            metrics: false,
            logs: false,
        };
        for name in &self.signals {
            match name.trim() {
                "traces" => signals.traces = true,
                "metrics" => signals.metrics = true,
                "logs" => signals.logs = true,
                other => {
                    return Err(SimError::Args(format!(
                        "--signals: unknown signal {other:?}; use traces, metrics and/or logs, \
                         e.g. --signals traces,metrics"
                    )))
                }
            }
        }
        Ok(signals)
    }
}

fn scenario_names() -> String {
    named_scenarios()
        .iter()
        .chain(rca_scenarios().iter())
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_scenarios() -> String {
    let mut text = String::from("Detection scenarios (triage eval):\n");
    let describe = |text: &mut String, name: &str, scenario: &Scenario| {
        let mut items: Vec<String> = scenario
            .faults
            .iter()
            .map(|fault| format!("{} from {}s", fault.kind, fault.start.as_secs()))
            .collect();
        for change in &scenario.benign_changes {
            let what = match &change.kind {
                super::BenignChangeKind::Deploy { service } => {
                    format!("benign deploy of {service}")
                }
                super::BenignChangeKind::FlagFlip { service, flag } => {
                    format!("benign flag {flag} on {service}")
                }
            };
            items.push(format!("{what} at {}s", change.at.as_secs()));
        }
        let detail = if scenario.faults.is_empty() && items.is_empty() {
            ", no fault".to_owned()
        } else if scenario.faults.is_empty() {
            format!(", no fault; {}", items.join(", "))
        } else {
            format!(", {}", items.join(", "))
        };
        let shop = match scenario.shop {
            Shop::First => String::new(),
            other => format!(" ({} shop)", other.name()),
        };
        text.push_str(&format!(
            "  {name:<22} {} min, {} req/s{shop}{detail}\n",
            scenario.duration.as_secs() / 60,
            scenario.entry_rate_per_sec,
        ));
    };
    for (name, scenario) in named_scenarios() {
        describe(&mut text, name, &scenario);
    }
    text.push_str("Root-cause scenarios (ground truth with --truth):\n");
    for (name, scenario) in rca_scenarios() {
        describe(&mut text, name, &scenario);
    }
    text.push_str(&format!("Fault specs: {FAULT_SPECS}\nServices: "));
    let topology = super::topology();
    let names: Vec<&str> = topology.services.iter().map(|s| s.name.as_str()).collect();
    text.push_str(&names.join(", "));
    text.push('\n');
    text.push_str(&describe_second_shop());
    text
}

/// The second shop in `--list`: its services and the faults written for
/// it (every fault spec above applies to it as well, with its names).
fn describe_second_shop() -> String {
    let topology = topology_of(Shop::Second);
    let names: Vec<&str> = topology.services.iter().map(|s| s.name.as_str()).collect();
    let mut text = format!(
        "Second shop (--shop second, scenarios shop2-*; {} services, entries {}):\n  Services: {}\n  Faults:\n",
        names.len(),
        topology.entries.join(", "),
        names.join(", ")
    );
    for (spec, what) in super::SHOP2_FAULTS {
        text.push_str(&format!("    {spec:<44} {what}\n"));
    }
    text
}

/// Runs `triage simulate`.
pub async fn run_simulate(args: SimulateArgs) -> Result<(), SimError> {
    if args.list {
        print!("{}", describe_scenarios());
        return Ok(());
    }
    if args.realtime && args.otlp_endpoint.is_none() {
        return Err(SimError::Args(
            "--realtime paces live sending: add --otlp-endpoint http://127.0.0.1:4317".to_owned(),
        ));
    }
    let scenario = args.to_scenario()?;
    let simulator = Simulator::try_new(scenario)?.with_signals(args.to_signals()?);
    if let Some(path) = &args.truth {
        write_truth(&simulator, path)?;
    }

    if let Some(endpoint) = &args.otlp_endpoint {
        if args.out.is_some() {
            return Err(SimError::Args(
                "--out and --otlp-endpoint exclude each other: write a file for `triage replay`, \
                 or send to a collector"
                    .to_owned(),
            ));
        }
        let summary = send_otlp(simulator, endpoint, args.realtime).await?;
        eprintln!("sent to {endpoint}: {summary}");
        return Ok(());
    }

    let out = args.out.clone();
    let summary = tokio::task::spawn_blocking(move || write_file(simulator, out))
        .await
        .map_err(|error| SimError::Args(format!("the writer task failed: {error}")))??;
    let target = match &args.out {
        Some(path) if path.as_os_str() != "-" => path.display().to_string(),
        _ => "stdout".to_owned(),
    };
    eprintln!("wrote {target}: {summary}");
    Ok(())
}

/// Writes the run's ground truth and posted changes as pretty JSON.
fn write_truth(simulator: &Simulator, path: &std::path::Path) -> Result<(), SimError> {
    let truth = ScenarioTruth {
        ground_truth: simulator.ground_truth().to_vec(),
        changes: simulator.changes().to_vec(),
    };
    let io_error = |error| SimError::Io {
        path: path.display().to_string(),
        error,
    };
    let mut file = File::create(path).map_err(io_error)?;
    serde_json::to_writer_pretty(&mut file, &truth)
        .map_err(|error| io_error(std::io::Error::other(error)))?;
    file.write_all(b"\n").map_err(io_error)?;
    Ok(())
}

/// `&mut dyn Write` as a sized writer.
struct WriteRef<'a>(&'a mut dyn Write);

impl Write for WriteRef<'_> {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        self.0.write(buffer)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Writes JSON lines (length-delimited protobuf for a name ending in
/// `.binpb` or `.pb`) to `path` (gzipped for `.gz`) or stdout.
fn write_file(simulator: Simulator, path: Option<PathBuf>) -> Result<super::SimSummary, SimError> {
    let path = path.filter(|path| path.as_os_str() != "-");
    let Some(path) = path else {
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        return write_json_lines(simulator, &mut lock).map_err(|error| SimError::Io {
            path: "stdout".to_owned(),
            error,
        });
    };
    let io_error = |error| SimError::Io {
        path: path.display().to_string(),
        error,
    };
    let file = File::create(&path).map_err(io_error)?;
    let gzip = path.extension().is_some_and(|extension| extension == "gz");
    let stem = if gzip {
        path.file_stem().map(std::path::Path::new)
    } else {
        Some(path.as_path())
    };
    let protobuf = stem
        .and_then(|stem| stem.extension())
        .is_some_and(|extension| extension == "binpb" || extension == "pb");
    let write = |simulator, out: &mut dyn Write| {
        if protobuf {
            super::output::write_protobuf(simulator, &mut WriteRef(out))
        } else {
            write_json_lines(simulator, &mut WriteRef(out))
        }
    };
    if gzip {
        let mut encoder = GzEncoder::new(file, Compression::fast());
        let summary = write(simulator, &mut encoder).map_err(io_error)?;
        encoder
            .finish()
            .map_err(io_error)?
            .flush()
            .map_err(io_error)?;
        Ok(summary)
    } else {
        let mut file = file;
        let summary = write(simulator, &mut file).map_err(io_error)?;
        // Only regular files can be synced: /dev/null or a pipe answer
        // EINVAL, and there is nothing to make durable there anyway.
        if file.metadata().map_err(io_error)?.is_file() {
            file.sync_all().map_err(io_error)?;
        }
        Ok(summary)
    }
}
