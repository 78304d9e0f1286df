//! The `driftwatch` command line.

#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use driftwatch::clock::Timestamp;
use driftwatch::analyze::service::AnalysisSettings;
use driftwatch::attribute::classify::{Authorship, Classifier};
use driftwatch::attribute::repo::RepoReader;
use driftwatch::config::Config;
use driftwatch::server::{Server, termination_signal};

#[derive(Parser)]
#[command(
    name = "driftwatch",
    version,
    about = "Runtime drift detector: an OTLP collector that catches latency regressions and unexpected outbound calls"
)]
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
        /// If the store file is damaged, move it aside (keeping it, renamed)
        /// and start with an empty store. Without it, a damaged store stops
        /// startup; a healthy store is kept either way.
        #[arg(long)]
        reset_store: bool,
    },
    /// Run a self-contained demonstration on free loopback ports.
    Demo {
        /// Keep serving the API and incident pages afterwards, until Ctrl-C.
        #[arg(long)]
        serve: bool,
    },
    /// Replay a scenario corpus through the detectors and score them:
    /// recall, false alerts per service-week, detection delay.
    Eval {
        /// Directory of scenario files (*.toml), or with `--attribution`
        /// of attribution cases.
        dir: PathBuf,
        /// Score attribution instead: how often the commit that caused a
        /// drift ranks first, or among the first three.
        #[arg(long)]
        attribution: bool,
        /// Configuration whose [analyze] and [detect] settings to use.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also write the report as JSON to this file ("-" for stdout).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// List commits with their AI classification and the marker that decided it.
    Commits {
        /// A git checkout.
        #[arg(long)]
        repo: PathBuf,
        /// `A..B`: commits reachable from B and not from A; `B` alone: everything reachable from B. Default: HEAD.
        #[arg(long)]
        range: Option<String>,
        /// Only commits touching this directory (monorepos).
        #[arg(long)]
        subdir: Option<String>,
        /// Configuration whose [ai] rules extend the built-in ones.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Drive a collector with realistic OTLP/gRPC load and report throughput,
    /// latency and (with --pid) the collector's CPU and memory.
    Loadgen {
        /// OTLP/gRPC endpoint.
        #[arg(long, default_value = "http://127.0.0.1:4317")]
        endpoint: String,
        /// Concurrent gRPC streams.
        #[arg(long, default_value_t = 4)]
        streams: usize,
        /// How long to run, e.g. 10s.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Spans per second in total; the maximum rate when omitted.
        #[arg(long)]
        rate: Option<u64>,
        /// The collector's pid, to report its CPU seconds and RSS over time.
        #[arg(long)]
        pid: Option<u32>,
        /// How often to sample the collector's RSS.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        sample_every: std::time::Duration,
        #[command(flatten)]
        shape: driftwatch::tools::loadgen::Shape,
        /// Send the same event times in every request instead of advancing
        /// them with the wall clock.
        #[arg(long)]
        frozen_time: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Wait for the rollout verdict of a revision: exit 0 pass, 1 fail, 2
    /// still inconclusive at the timeout, 3 when driftwatch refuses the
    /// question (a bad parameter or token).
    Gate(GateArgs),
    /// Pre-merge check: compare two recordings of the same load test (OTLP/JSON
    /// lines, as the Collector's file exporter writes them, optionally gzip).
    /// Exits 0 without drift, 1 when the head drifted, 3 on an error.
    Compare(CompareArgs),
    /// Validate the configuration and exit non-zero naming any bad key.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Do not check that the repositories, token and certificate files
        /// it names exist (for a configuration meant for another machine).
        #[arg(long)]
        skip_file_checks: bool,
    },
}

#[derive(clap::Args)]
struct GateArgs {
    /// driftwatch's admin listener, e.g. http://driftwatch:9464.
    #[arg(long)]
    admin: String,
    /// The service, as its spans name it (service.namespace/service.name,
    /// or service.name).
    #[arg(long)]
    service: String,
    /// The deployment environment, as its spans name it
    /// (deployment.environment.name); needed when the service runs in several.
    #[arg(long)]
    environment: Option<String>,
    /// The revision being rolled out: full or abbreviated SHA, or the
    /// name its spans carry.
    #[arg(long)]
    revision: String,
    /// How long to wait for enough traffic, e.g. 10m.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
    /// Samples per operation required, when above the detector's min_samples.
    #[arg(long)]
    min_samples: Option<u64>,
    /// How often to ask.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    interval: std::time::Duration,
    /// The least severity that fails the revision: warning (any drift) or critical.
    #[arg(long)]
    severity: Option<String>,
    /// Comma-separated event kinds that fail the revision (default: all).
    #[arg(long)]
    kind: Option<String>,
    /// A file holding the bearer token of /api (admin.api_token_file).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct CompareArgs {
    /// The base's recording.
    base: PathBuf,
    /// The head's recording.
    head: PathBuf,
    /// The repository, for suspects among the pull request's commits.
    #[arg(long, requires = "range")]
    repo: Option<PathBuf>,
    /// `BASE..HEAD` of the pull request; the recordings are labelled with its ends.
    #[arg(long)]
    range: Option<String>,
    /// Only commits touching this directory (monorepos).
    #[arg(long)]
    subdir: Option<String>,
    /// Configuration whose [detect] settings and [ai] rules to use.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// Print the report as Markdown, for a pull-request comment.
    #[arg(long)]
    markdown: bool,
}

fn main() -> ExitCode {
    // Usage errors exit 64 (EX_USAGE), not clap's 2: `gate` answers
    // "inconclusive" with 2.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(64) } else { ExitCode::SUCCESS };
        }
    };
    // The demo speaks for itself on stdout; keep its logs to errors.
    let default_filter = if matches!(cli.command, Command::Demo { .. }) {
        "error"
    } else {
        "info"
    };
    if let Err(error) = driftwatch::telemetry::init_logging(default_filter) {
        eprintln!("driftwatch: {error}");
        return ExitCode::from(64);
    }
    if matches!(
        cli.command,
        Command::Commits { .. } | Command::Eval { .. } | Command::Compare(_) | Command::CheckConfig { .. }
    ) {
        die_quietly_on_closed_stdout();
    }
    let command = match cli.command {
        Command::Gate(args) => return gate(args),
        Command::Compare(args) => return compare(args),
        command => command,
    };
    match dispatch(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("driftwatch: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config, reset_store } => {
            let mut config = Config::load(config.as_deref())?;
            config.read_secret_files()?;
            if reset_store {
                reset_damaged_store(&config.store.path)?;
            }
            runtime()?.block_on(async {
                let server = Server::start(config).await?;
                server.run_until(termination_signal()).await?;
                Ok(())
            })
        }
        Command::Demo { serve } => runtime()?.block_on(driftwatch::tools::demo::run(driftwatch::tools::demo::DemoOptions { serve })),
        Command::Eval {
            dir,
            attribution: true,
            json,
            ..
        } => eval_attribution(&dir, json.as_deref()),
        Command::Eval { dir, config, json, .. } => eval(&dir, config.as_deref(), json.as_deref()),
        Command::Commits {
            repo,
            range,
            subdir,
            config,
            json,
        } => commits(&repo, range.as_deref(), subdir, config.as_deref(), json),
        Command::Loadgen {
            endpoint,
            streams,
            duration,
            rate,
            pid,
            sample_every,
            shape,
            frozen_time,
            json,
        } => runtime()?.block_on(async {
            let report = driftwatch::tools::loadgen::run(driftwatch::tools::loadgen::LoadOptions {
                endpoint,
                streams,
                duration,
                rate,
                pid,
                shape,
                frozen_time,
                sample_every,
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{}", report.text());
            }
            Ok(())
        }),
        Command::Gate(_) | Command::Compare(_) => anyhow::bail!("answered with an exit code of its own"),
        Command::CheckConfig {
            config,
            skip_file_checks,
        } => {
            let mut config = Config::load(config.as_deref())?;
            let mut missing = Vec::new();
            if !skip_file_checks {
                missing = config.missing_files();
                if let Err(error) = config.read_secret_files() {
                    missing.push(error.to_string());
                }
            }
            anyhow::ensure!(missing.is_empty(), "invalid configuration: {}", missing.join("; "));
            println!(
                "configuration is valid: OTLP/gRPC on {}, OTLP/HTTP on {}, admin on {}",
                config.receiver.grpc_listen, config.receiver.http_listen, config.admin.listen
            );
            Ok(())
        }
    }
}

/// `driftwatch commits | head -1`: a reader that stops early ends the
/// command the way it ends `git log`, by SIGPIPE, instead of a panic on
/// the next print. Only for the commands that print and do no network I/O
/// of their own; a server must survive a peer that closes its socket.
#[expect(unsafe_code, reason = "libc::signal has no safe wrapper in the standard library")]
fn die_quietly_on_closed_stdout() {
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any
    // thread is started; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn gate(args: GateArgs) -> ExitCode {
    let GateArgs {
        admin,
        service,
        environment,
        revision,
        timeout,
        min_samples,
        interval,
        severity,
        kind,
        token_file,
    } = args;
    let token = match token_file.map(|path| {
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_owned())
            .with_context(|| format!("cannot read the token file {}", path.display()))
    }) {
        Some(Err(error)) => {
            eprintln!("driftwatch: {error:#}");
            return ExitCode::from(3);
        }
        Some(Ok(token)) => Some(token),
        None => None,
    };
    let options = driftwatch::gate::GateOptions {
        admin,
        service,
        environment,
        revision,
        timeout,
        interval,
        min_samples,
        severity,
        kinds: kind,
        token,
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("driftwatch: {error:#}");
            return ExitCode::from(3);
        }
    };
    let mut out = std::io::stdout();
    match runtime.block_on(driftwatch::gate::run(&options, &mut out)) {
        Ok((driftwatch::verdict::Outcome::Pass, _)) => ExitCode::SUCCESS,
        Ok((driftwatch::verdict::Outcome::Fail, _)) => ExitCode::from(1),
        Ok((driftwatch::verdict::Outcome::Inconclusive, _)) => ExitCode::from(2),
        Err(error) => {
            eprintln!("driftwatch: {error}");
            ExitCode::from(3)
        }
    }
}

fn compare(args: CompareArgs) -> ExitCode {
    let run = || -> anyhow::Result<driftwatch::compare::Report> {
        let config = Config::load(args.config.as_deref())?;
        let report = driftwatch::compare::run(driftwatch::compare::CompareOptions {
            base: args.base.clone(),
            head: args.head.clone(),
            repo: args.repo.clone(),
            range: args.range.clone(),
            subdir: args.subdir.clone(),
            settings: AnalysisSettings::from_config(&config),
            classifier: Classifier::with_rules(config.ai.rules),
        })?;
        Ok(report)
    };
    match run() {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(error) => {
                        eprintln!("driftwatch: {error}");
                        return ExitCode::from(3);
                    }
                }
            } else if args.markdown {
                print!("{}", report.markdown());
            } else {
                print!("{}", report.text());
            }
            if report.drifted { ExitCode::from(1) } else { ExitCode::SUCCESS }
        }
        Err(error) => {
            eprintln!("driftwatch: {error:#}");
            ExitCode::from(3)
        }
    }
}

fn eval(dir: &Path, config: Option<&Path>, json: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let settings = AnalysisSettings::from_config(&config);
    let scenarios = driftwatch::tools::eval::load_corpus(dir)?;
    let to_stdout = json.is_some_and(|p| p == Path::new("-"));
    let report = driftwatch::tools::eval::evaluate(&scenarios, &settings, |result| {
        if !to_stdout {
            eprintln!("  replayed {} ({} spans)", result.name, result.spans);
        }
    });
    print_report(serde_json::to_string_pretty(&report)?, &report.table(), json)
}

fn eval_attribution(dir: &Path, json: Option<&Path>) -> anyhow::Result<()> {
    let cases = driftwatch::tools::eval::attribution::load_cases(dir)?;
    let report = driftwatch::tools::eval::attribution::evaluate(&cases)?;
    print_report(serde_json::to_string_pretty(&report)?, &report.table(), json)
}

/// An eval report: its JSON to stdout (`--json -`), or the table, with the
/// JSON written to a file when one is named.
fn print_report(rendered: String, table: &str, json: Option<&Path>) -> anyhow::Result<()> {
    match json {
        Some(path) if path == Path::new("-") => println!("{rendered}"),
        Some(path) => {
            std::fs::write(path, rendered).with_context(|| format!("cannot write the JSON report to {}", path.display()))?;
            print!("{table}");
        }
        None => print!("{table}"),
    }
    Ok(())
}

fn commits(repo: &Path, range: Option<&str>, subdir: Option<String>, config: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let classifier = Classifier::with_rules(config.ai.rules);
    let (base, head) = match range {
        Some(range) => match range.split_once("..") {
            Some((base, head)) => (
                Some(base).filter(|b| !b.is_empty()),
                if head.is_empty() { "HEAD" } else { head },
            ),
            // One revision: everything reachable from it.
            None => (None, range),
        },
        None => (None, "HEAD"),
    };
    let reader = RepoReader::new(repo, subdir);
    let listing = reader.commits(base, head, &classifier)?;
    if json {
        let rows: Vec<serde_json::Value> = listing
            .commits
            .iter()
            .map(|c| {
                serde_json::json!({
                    "commit": c.id,
                    "summary": c.summary,
                    "author": c.author(),
                    "committed_at": Timestamp::from_unix_secs(c.committed_at),
                    "authorship": c.authorship,
                    "ai": c.authorship.ai(),
                    "lines_added": c.files.iter().map(|f| f.lines_added).sum::<u32>(),
                    "lines_removed": c.files.iter().map(|f| f.lines_removed).sum::<u32>(),
                    "ai_notes": c.note.is_some(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"commits": rows, "truncated": listing.truncated}))?
        );
        return Ok(());
    }
    println!(
        "{:<12} {:<10} {:<22} {:<20} {:<7} {:<40} summary",
        "commit", "date", "author", "tool", "conf.", "marker"
    );
    for c in &listing.commits {
        let (tool, confidence, marker) = match &c.authorship {
            Authorship::Ai(ai) => (ai.tool.clone(), ai.confidence.as_str().to_owned(), ai.marker.clone()),
            Authorship::Bot { name, marker } => (format!("bot: {name}"), "-".into(), marker.clone()),
            Authorship::Unknown => ("unknown".into(), "-".into(), "-".into()),
        };
        let date = Timestamp::from_unix_secs(c.committed_at).rfc3339();
        println!(
            "{:<12} {:<10} {:<22} {:<20} {:<7} {:<40} {}",
            &c.id[..12.min(c.id.len())],
            &date[..10],
            truncate(&c.author_name, 22),
            truncate(&tool, 20),
            confidence,
            truncate(&marker, 40),
            c.summary
        );
    }
    if listing.truncated {
        println!(
            "(only the newest {} commits were read)",
            driftwatch::attribute::repo::MAX_COMMITS
        );
    }
    Ok(())
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `run --reset-store`: a store that cannot be opened as damaged is moved
/// aside; a healthy one is left alone.
fn reset_damaged_store(dir: &Path) -> anyhow::Result<()> {
    use driftwatch::store::{EmbeddedStore, StoreError};
    match EmbeddedStore::open(dir) {
        Ok(_) => Ok(()),
        Err(error @ StoreError::Open { .. }) => {
            let aside = EmbeddedStore::move_aside(dir)?;
            if let Some(aside) = aside {
                eprintln!(
                    "driftwatch: {error}\ndriftwatch: moved the damaged store aside to {}; starting with an empty store",
                    aside.display()
                );
            }
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}
