//! `sessionbus bench`: the bus side by side with the raw NATS operations each bus call
//! cannot avoid, in one run, on servers it starts itself.
//!
//! The comparisons are a table ([`scenarios::SCENARIOS`]): each row names a bus call and
//! the raw reference it is compared with, and one loop measures them all. Before them,
//! the floor (a raw echo); after them, how costs grow with history and sessions.

mod burst;
mod copy_seed;
mod cpu;
mod fixture;
mod growth;
mod measure;
mod raw;
mod report;
mod scale;
mod scenarios;

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use sessionbus_api::EchoExecutor;
use sessionbus_launch::{NatsCluster, NatsServer, WorkerConfig, WorkerProcess};
use sessionbus_nats::{BusClient, BusClientConfig, JetStreamHost, JetStreamHostConfig};

use super::setup::{LayoutArgs, setup_layout};
use crate::connect::{CliError, ConnectionArgs};
use crate::output;
use cpu::CpuMeter;
use fixture::{Fixture, failed};
use measure::{Shape, sequential};
use raw::Raw;
use report::Row;
use scenarios::{Meters, SCENARIOS};

/// Options of `bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Run on a 3-node cluster with R3 streams instead of one node.
    #[arg(long)]
    pub cluster: bool,
    /// Print the results as JSON (every ratio under a key containing `ratio`).
    #[arg(long)]
    pub json: bool,
    /// Sequential calls per measurement (half raw, half bus, interleaved in blocks).
    #[arg(long, default_value_t = 1000)]
    pub iterations: usize,
    /// Calls per throughput measurement.
    #[arg(long, default_value_t = 3000)]
    pub throughput_calls: usize,
    /// Calls in flight for throughput.
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// Sessions touched for the worker memory measurement.
    #[arg(long, default_value_t = 10_000)]
    pub sessions: usize,
    /// Nodes of the large history (append cost and snapshot of a large graph).
    #[arg(long, default_value_t = 10_000)]
    pub history: usize,
    /// Instead of the comparison with raw NATS: store N sessions (each with a tool state,
    /// a few nodes and one turn; e.g. 1000000) and compare every op's p50 with its p50
    /// at 10 sessions, for random (cold) sessions and a hot set, plus the registry's
    /// first page, nats-server memory and disk per session and the worker's memory.
    /// `--iterations` calls per op and phase. Manual: at 10^6 it seeds for a long time.
    #[arg(long, value_name = "N")]
    pub scale: Option<usize>,
    /// With `--scale`: also measure nats-server's memory after this many idle seconds,
    /// once the short-lived state of the seeding (block caches, message ids within the
    /// duplicate window, 600 s by default) has gone.
    #[arg(long, value_name = "SECONDS", default_value_t = 0, requires = "scale")]
    pub settle_secs: u64,
    /// With `--scale`: how the sessions beyond the first 1,000 are seeded (the first
    /// 1,000 always go through a JetStream host).
    #[arg(long, value_enum, default_value_t = scale::SeedMode::Copy, requires = "scale")]
    pub seed: scale::SeedMode,
    /// Also write the JSON results to `<DIR>/bench-<r1|r3>-<UTC time>.json` (one file per
    /// run, never overwritten).
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
}

/// Runs the benchmark.
pub async fn run(connection: &ConnectionArgs, args: BenchArgs) -> Result<(), CliError> {
    if let Some(sessions) = args.scale {
        let settle = Duration::from_secs(args.settle_secs);
        return scale::run(connection, sessions, args.iterations, settle, args.seed, args.json).await;
    }
    // The servers are stopped, and their stores deleted, before the report is printed.
    let result = if args.cluster {
        let cluster = NatsCluster::start().await?;
        let servers = CpuMeter::new((0..3).filter_map(|node| cluster.pid(node)));
        bench(connection, &args, &cluster.nats_url(), 3, servers).await
    } else {
        let server = NatsServer::start()?;
        let servers = CpuMeter::new(server.pid());
        bench(connection, &args, &server.url(), 1, servers).await
    };
    let rows = result.map_err(CliError::Other)?;
    report::print(&args, &rows);
    if let Some(dir) = &args.out {
        let setup = if args.cluster { "r3" } else { "r1" };
        let path = dir.join(format!("bench-{setup}-{}.json", sessionbus_api::clock::now_basic_utc()));
        let text = serde_json::to_string_pretty(&report::results_json(&args, &rows)).unwrap_or_default();
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|e| CliError::Other(format!("could not write {}: {e}", path.display())))?;
        eprintln!("bench results written to {}", path.display());
    }
    Ok(())
}

/// Sets the bus up on `url`, starts a worker process and measures: the floor, every
/// scenario, then growth with history and sessions.
async fn bench(
    connection: &ConnectionArgs,
    args: &BenchArgs,
    url: &str,
    replicas: usize,
    servers: CpuMeter,
) -> Result<Vec<Row>, String> {
    let connect = |name: &'static str| async move { connection.connect_to(url, name).await.map_err(|e| e.to_string()) };
    let subjects = connection.subjects();
    // The host in this process is only for setup; every measured bus call goes to the
    // worker process.
    let setup_client = connect("bench-setup").await?;
    setup_layout(&setup_client, &subjects, &LayoutArgs { replicas }, Duration::from_secs(60))
        .await
        .map_err(|error| error.to_string())?;
    let setup_config = JetStreamHostConfig::default().with_subjects(subjects.clone());
    let setup = JetStreamHost::connect(setup_client.clone(), Arc::new(EchoExecutor), setup_config)
        .await
        .map_err(|error| format!("setup: {error}"))?;
    // This very executable serves as the worker; the layout is there already (with the
    // replicas of this setup, which `--setup` would reset).
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the sessionbus binary: {e}"))?;
    let worker = WorkerProcess::start_with(url, &WorkerConfig::default().with_binary(exe).without_setup())
        .await
        .map_err(|e| e.to_string())?;
    let client =
        BusClient::new(connect("bench-bus").await?, BusClientConfig::default().with_subjects(subjects.clone()));
    client.ping().await.map_err(failed("ping"))?;
    let raw = Raw::start(connect("bench-raw").await?, connect("bench-echo").await?).await?;
    let raw_js = async_nats::jetstream::new(connect("bench-raw-js").await?);
    raw_js
        .create_or_update_stream(async_nats::jetstream::stream::Config {
            name: "BENCH_RAW".into(),
            subjects: vec!["bench.raw.>".into()],
            num_replicas: replicas,
            // The raw reference of a turn commits as an atomic batch, as the bus does.
            allow_atomic_publish: true,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("raw stream: {e}"))?;

    // setup, floor, the scenarios, the trace burst, history (two rows), memory.
    let bar = output::progress(2 + SCENARIOS.len() as u64 + 4, "setup");
    let fixture = Fixture::prepare(client, raw, &setup, &subjects, args.in_flight).await?;
    bar.inc(1);
    let n = args.iterations.max(20);
    let shape = Shape {
        blocks: 10,
        per_block: n.div_ceil(20),
        calls: args.throughput_calls.max(args.in_flight),
        in_flight: args.in_flight,
    };

    bar.set_message("echo");
    let echo = sequential(n, |_| fixture.raw.echo(fixture.empty.clone())).await?;
    let mut rows = vec![Row::floor(&echo)];
    bar.inc(1);

    let meters = Meters { worker: CpuMeter::new([worker.pid()]), servers };
    for scenario in &SCENARIOS {
        bar.set_message(scenario.name);
        rows.extend(scenario.run(&fixture, shape, &meters).await?);
        bar.inc(1);
    }

    bar.set_message("trace burst");
    rows.push(burst::trace_burst(&fixture, (shape.calls / 3).max(1), 5).await?);
    bar.inc(1);

    bar.set_message("history");
    rows.extend(growth::history(&fixture.client, &setup, args.history, n / 2).await?);
    bar.inc(2);
    bar.set_message("memory");
    rows.push(growth::memory(&fixture.client, &worker, args.sessions, args.in_flight).await?);
    bar.inc(1);
    bar.finish_and_clear();
    Ok(rows)
}
