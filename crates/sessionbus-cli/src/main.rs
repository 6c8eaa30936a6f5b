//! `sessionbus`: run a bus (`up`), workers, a demo workload, and watch and inspect it.

mod commands;
mod connect;
mod context;
mod duration;
mod output;

use clap::{Parser, Subcommand};

/// A distributed, NATS-backed session bus for LLM agent runtimes.
#[derive(Parser, Debug)]
#[command(name = "sessionbus", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    connection: connect::ConnectionArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a complete local bus: a JetStream nats-server (unless NATS_URL is set), a
    /// worker and, when an OTLP endpoint is configured, the trace exporter. Ctrl-C stops it.
    Up(commands::up::UpArgs),
    /// Create or update the JetStream layout (streams and buckets). Run once, as a user
    /// allowed to create streams, before starting workers.
    Setup(commands::setup::SetupArgs),
    /// Run a worker (JetStream host + executor) against NATS_URL.
    Worker(commands::worker::WorkerArgs),
    /// Run a realistic multi-session workload against a running bus and print a summary.
    Demo(commands::demo::DemoArgs),
    /// List sessions from the registry (one page, filtered), or show one.
    Sessions(commands::sessions::SessionsArgs),
    /// Retention: purge closed sessions older than an age, in bounded batches (needs
    /// the right to purge streams: the deploy/ `admin` user).
    Purge(commands::purge::PurgeArgs),
    /// Serve the web dashboard: sessions, one session's graph and turns, workers, live.
    Dashboard(commands::dashboard::DashboardArgs),
    /// Cancel a running turn, wherever it runs: it commits as cancelled with what it had.
    Cancel(commands::cancel::CancelArgs),
    /// Tail session events live, one line per event.
    Watch(commands::watch::WatchArgs),
    /// Show the workers on the bus and their per-endpoint statistics.
    Status(commands::status::StatusArgs),
    /// Measure the bus against raw NATS in one run, on servers it starts itself.
    Bench(commands::bench::BenchArgs),
    /// Export trace records as OpenTelemetry spans over OTLP (OTEL_EXPORTER_OTLP_*).
    Exporter(commands::exporter::ExporterArgs),
    /// Mint the credentials of the deploy/ NATS configs: an nkey per user and the
    /// cluster's route password.
    Credentials(commands::credentials::CredentialsArgs),
}

fn main() -> std::process::ExitCode {
    output::init_logging();
    let cli = Cli::parse();
    let threads = std::env::var("SESSIONBUS_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
        .max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: could not start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> std::process::ExitCode {
    // This process's own spans (bus calls, worker handling) go to the OTLP endpoint
    // when one is configured.
    let telemetry = match sessionbus_otel::Telemetry::from_env("sessionbus") {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("warning: {err}; spans of this process are not exported");
            None
        }
    };
    let result = match cli.command {
        Command::Up(args) => commands::up::run(&cli.connection, args).await,
        Command::Setup(args) => commands::setup::run(&cli.connection, args).await,
        Command::Credentials(args) => commands::credentials::run(args),
        Command::Worker(args) => commands::worker::run(&cli.connection, args).await,
        Command::Demo(args) => commands::demo::run(&cli.connection, args).await,
        Command::Sessions(args) => commands::sessions::run(&cli.connection, args).await,
        Command::Purge(args) => commands::purge::run(&cli.connection, args).await,
        Command::Dashboard(args) => commands::dashboard::run(&cli.connection, args).await,
        Command::Cancel(args) => commands::cancel::run(&cli.connection, args).await,
        Command::Watch(args) => commands::watch::run(&cli.connection, args).await,
        Command::Status(args) => commands::status::run(&cli.connection, args).await,
        Command::Bench(args) => commands::bench::run(&cli.connection, args).await,
        Command::Exporter(args) => commands::exporter::run(&cli.connection, args).await,
    };
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
