//! The `driftwatch` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use driftwatch::analyze::service::AnalysisSettings;
use driftwatch::config::Config;
use driftwatch::server::{Server, termination_signal};

#[derive(Parser)]
#[command(name = "driftwatch", version, about = "Runtime drift detector: an OTLP collector that catches latency regressions and unexpected outbound calls")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar: receive OTLP traces, detect drift, serve metrics.
    Run {
        /// TOML configuration file; environment variables DRIFTWATCH_SECTION__KEY override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a self-contained demonstration on free loopback ports.
    Demo,
    /// Replay a scenario corpus through the detectors and score them:
    /// recall, false alerts per service-week, detection delay.
    Eval {
        /// Directory of scenario files (*.toml).
        dir: PathBuf,
        /// Configuration whose [analyze] and [detect] settings to use.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also write the report as JSON to this file ("-" for stdout).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Validate the configuration and exit non-zero naming any bad key.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    driftwatch::telemetry::init_logging();
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("driftwatch: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => {
            let config = Config::load(config.as_deref())?;
            runtime()?.block_on(async {
                let server = Server::start(config).await?;
                server.run_until(termination_signal()).await?;
                Ok(())
            })
        }
        Command::Demo => runtime()?.block_on(driftwatch::demo::run()),
        Command::Eval { dir, config, json } => eval(&dir, config.as_deref(), json.as_deref()),
        Command::CheckConfig { config } => {
            let config = Config::load(config.as_deref())?;
            println!(
                "configuration is valid: OTLP/gRPC on {}, OTLP/HTTP on {}, admin on {}",
                config.receiver.grpc_listen, config.receiver.http_listen, config.admin.listen
            );
            Ok(())
        }
    }
}

fn eval(dir: &Path, config: Option<&Path>, json: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let settings = AnalysisSettings::from_config(&config);
    let scenarios = driftwatch::eval::load_corpus(dir)?;
    let to_stdout = json.is_some_and(|p| p == Path::new("-"));
    let report = driftwatch::eval::evaluate(&scenarios, &settings, |result| {
        if !to_stdout {
            eprintln!("  replayed {} ({} spans)", result.name, result.spans);
        }
    });
    let rendered = serde_json::to_string_pretty(&report)?;
    match json {
        Some(path) if path == Path::new("-") => println!("{rendered}"),
        Some(path) => {
            std::fs::write(path, rendered).with_context(|| format!("cannot write the JSON report to {}", path.display()))?;
            print!("{}", report.table());
        }
        None => print!("{}", report.table()),
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}
