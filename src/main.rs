//! The `triage` command line: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use triage::config::{LogFormat, Overrides, Settings};
use triage::server::Server;
use triage::telemetry;

/// triage: an OpenTelemetry-native anomaly-detection collector.
///
/// Receives OTLP traces, metrics and logs (gRPC :4317, HTTP :4318), keeps
/// rate/error/duration statistics per service, operation and dependency edge,
/// and serves its own metrics and health on the admin port (:8888).
///
/// Settings come from, highest first: command-line flags, TRIAGE_* environment
/// variables, the YAML file given with --config, embedded defaults.
#[derive(Debug, Parser)]
#[command(name = "triage", version, propagate_version = true)]
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
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        grpc_endpoint: args.grpc_endpoint,
        http_endpoint: args.http_endpoint,
        admin_endpoint: args.admin_endpoint,
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
        tokio::spawn(wait_for_signal(shutdown.clone()));
        server.run(shutdown).await?;
        Ok(())
    })
}

/// Cancels `shutdown` on SIGINT or SIGTERM. A second signal exits at once.
async fn wait_for_signal(shutdown: CancellationToken) {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; use SIGINT to stop");
                let _ = tokio::signal::ctrl_c().await;
                shutdown.cancel();
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
    }
    shutdown.cancel();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::warn!("second signal: exiting without draining");
    std::process::exit(1);
}
