//! `sessionbus`: run a bus (`up`), workers, a demo workload, and watch and inspect it.

mod commands;
mod connect;
mod embedded;
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
    /// Run a worker (JetStream host + executor) against NATS_URL.
    Worker(commands::worker::WorkerArgs),
    /// Run a realistic multi-session workload against a running bus and print a summary.
    Demo(commands::demo::DemoArgs),
    /// List sessions from the registry, or show one.
    Sessions(commands::sessions::SessionsArgs),
    /// Tail session events live, one line per event.
    Watch(commands::watch::WatchArgs),
    /// Show the workers on the bus and their per-endpoint statistics.
    Status(commands::status::StatusArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    output::init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => commands::up::run(&cli.connection, args).await,
        Command::Worker(args) => commands::worker::run(&cli.connection, args).await,
        Command::Demo(args) => commands::demo::run(&cli.connection, args).await,
        Command::Sessions(args) => commands::sessions::run(&cli.connection, args).await,
        Command::Watch(args) => commands::watch::run(&cli.connection, args).await,
        Command::Status(args) => commands::status::run(&cli.connection, args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
