//! `bench --scale N`: the bus holding N sessions, most of them idle, as an agent fleet
//! keeps them (manual; not in CI). The first 1,000 sessions are seeded straight through a
//! JetStream host in this process, the rest (by default) as copies of the first one's
//! stored messages ([`super::copy_seed`], decision 0025); every measured call goes
//! through the bus to a worker process with default settings. Each op's p50 with N sessions stored is compared with the same op
//! when 10 were, in the same run, for sessions picked uniformly at random (cold) and
//! for a small hot set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};
use sessionbus_api::{
    EchoExecutor, SessionCreateRequest, SessionGraphService as _, SessionLifecycleService as _, SessionListQuery,
    SessionStateService as _, SessionTurnRequest, TurnInput,
};
use sessionbus_launch::{NatsServer, WorkerConfig, WorkerProcess};
use sessionbus_nats::jetstream::CacheStats;
use sessionbus_nats::jetstream::describe_session;
use sessionbus_nats::worker::{ServiceQuery, service_answers};
use sessionbus_nats::{BusClient, BusClientConfig, JetStreamHost, JetStreamHostConfig, Subjects};

use super::copy_seed::Template;
use super::fixture::{failed, one_message, tools};
use super::measure::{Samples, sequential};
use crate::commands::setup::{LayoutArgs, setup_layout};
use crate::connect::{CliError, ConnectionArgs};
use crate::output;

/// The sessions measured "at 10".
const FEW: usize = 10;
/// Where the registry's first page is measured first: the bar compares its
/// time at N with its time at 10^3 (a page of 50 needs at least 50 sessions).
const REGISTRY_BASE: usize = 1_000;
/// The hot set: sessions called again and again.
const HOT: usize = 100;
/// Seeding writes in flight.
const SEED_IN_FLIGHT: usize = 64;
/// How long a seeding write waits for JetStream: with that many in flight on a busy
/// machine, a slow answer is waited for rather than ending a long run (the seeding is
/// timed, not measured per call).
const SEED_API_TIMEOUT: Duration = Duration::from_secs(30);

/// One measured op on one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Snapshot,
    ToolState,
    ToolCatalog,
    Append,
    Turn,
}

impl Op {
    const ALL: [Op; 5] = [Op::Snapshot, Op::ToolState, Op::ToolCatalog, Op::Append, Op::Turn];

    fn name(self) -> &'static str {
        match self {
            Op::Snapshot => "snapshot",
            Op::ToolState => "tool_state",
            Op::ToolCatalog => "tool_catalog",
            Op::Append => "append_nodes",
            Op::Turn => "start_turn",
        }
    }

    async fn call(self, client: &BusClient, session: &str, call: usize) -> Result<(), String> {
        match self {
            Op::Snapshot => client.snapshot_session(session).await.map(drop),
            Op::ToolState => client.tool_state(session).await.map(drop),
            Op::ToolCatalog => client.tool_catalog(session).await.map(drop),
            Op::Append => client.append_session_nodes(session, one_message(format!("call {call}"))).await.map(drop),
            Op::Turn => {
                match SessionTurnRequest::for_turn(
                    session,
                    format!("bench-{call}-{}", uuid::Uuid::new_v4().simple()),
                    TurnInput::text("hello"),
                ) {
                    Ok(turn) => client.start_turn(turn).await.map(drop),
                    Err(error) => Err(error),
                }
            }
        }
        .map_err(failed(self.name()))
    }
}

/// Session number `i`'s id.
fn session_id(i: usize) -> String {
    format!("scale-{i:08}")
}

/// A number in `0..n`, uniformly.
fn uniform(n: usize) -> usize {
    (uuid::Uuid::new_v4().as_u128() % n.max(1) as u128) as usize
}

/// How the sessions beyond the first 1,000 are seeded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SeedMode {
    /// As copies of the first session's stored messages, pipelined (decision 0025).
    #[default]
    Copy,
    /// Through the JetStream host, as the first 1,000 are: two atomic batches per
    /// session, a few hundred sessions per second on one node.
    Host,
}

/// Runs `write` for every session number in `range`, [`SEED_IN_FLIGHT`] at a time,
/// counting each written session on `bar`.
async fn seed_each<F, Fut>(range: std::ops::Range<usize>, bar: &indicatif::ProgressBar, write: F) -> Result<(), String>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let one = |i: usize| {
        let written = write(i);
        async move {
            written.await?;
            bar.inc(1);
            Ok::<_, String>(())
        }
    };
    let mut writes = futures::stream::iter(range).map(one).buffer_unordered(SEED_IN_FLIGHT);
    while let Some(written) = writes.next().await {
        written?;
    }
    Ok(())
}

/// Creates sessions `range` with a tool state, three nodes and one turn.
pub(super) async fn seed(
    host: &JetStreamHost,
    range: std::ops::Range<usize>,
    bar: &indicatif::ProgressBar,
) -> Result<(), String> {
    seed_each(range, bar, |i: usize| async move {
        let session = session_id(i);
        host.create_session(SessionCreateRequest::root(Some(session.clone()))).await.map_err(failed("create"))?;
        host.apply_tool_state(&session, tools(4)).await.map_err(failed("tools"))?;
        for node in 0..3 {
            host.append_session_nodes(&session, one_message(format!("node {node}"))).await.map_err(failed("append"))?;
        }
        let turn = SessionTurnRequest::for_turn(&session, "seed", TurnInput::text("hello")).map_err(failed("turn"))?;
        host.start_turn(turn).await.map_err(failed("turn"))?;
        Ok(())
    })
    .await
}

/// Writes sessions `range` as copies of `template`.
async fn seed_copies(
    js: &async_nats::jetstream::Context,
    template: &Template,
    range: std::ops::Range<usize>,
    bar: &indicatif::ProgressBar,
) -> Result<(), String> {
    seed_each(range, bar, |i: usize| async move { template.copy_as(js, &session_id(i)).await }).await
}

/// The p50 of `calls` calls of each op, on sessions `pick` chooses.
async fn p50s(client: &BusClient, calls: usize, pick: impl Fn() -> usize) -> Result<Vec<f64>, String> {
    let mut p50 = Vec::new();
    for op in Op::ALL {
        let samples: Samples = sequential(calls, |call| {
            let session = session_id(pick());
            async move { op.call(client, &session, call).await }
        })
        .await?;
        p50.push(samples.percentile_ms(50.0));
    }
    Ok(p50)
}

/// The first page of `sessions` and one `sessions show`, in milliseconds (medians of 9).
async fn registry_ms(client: &BusClient, nats: &async_nats::Client, subjects: &Subjects) -> Result<(f64, f64), String> {
    let page = sequential(9, |_| async {
        client.list_sessions(&SessionListQuery::first(50)).await.map(drop).map_err(failed("sessions"))
    })
    .await?;
    let show = sequential(9, |_| async {
        describe_session(nats, subjects, &session_id(uniform(FEW))).await.map(drop).map_err(failed("sessions show"))
    })
    .await?;
    Ok((page.percentile_ms(50.0), show.percentile_ms(50.0)))
}

/// nats-server's RSS after `settle` without a call (with a progress bar); `None` when
/// `settle` is zero.
async fn settled_rss_mib(server: &NatsServer, settle: Duration) -> Option<f64> {
    if settle.is_zero() {
        return None;
    }
    let bar = output::progress(settle.as_secs(), "settling");
    for _ in 0..settle.as_secs() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Some(rss_mib(server.pid()))
}

/// What a process has read so far, from `/proc/<pid>/io`: through `read()` and the like
/// (`rchar`, page cache included) and from storage (`read_bytes`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ReadBytes {
    through_read: u64,
    from_disk: u64,
}

impl ReadBytes {
    /// Reads `pid`'s counters; zero where `/proc` does not say.
    fn of(pid: Option<u32>) -> Self {
        pid.and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/io")).ok())
            .map_or_else(Self::default, |text| Self::parse(&text))
    }

    fn parse(text: &str) -> Self {
        let field =
            |name: &str| text.lines().find_map(|line| line.strip_prefix(name)?.trim().parse().ok()).unwrap_or_default();
        Self { through_read: field("rchar:"), from_disk: field("read_bytes:") }
    }

    fn since(self, before: Self) -> Self {
        Self {
            through_read: self.through_read.saturating_sub(before.through_read),
            from_disk: self.from_disk.saturating_sub(before.from_disk),
        }
    }
}

fn rss_mib(pid: Option<u32>) -> f64 {
    pid.and_then(sessionbus_launch::rss_kib).unwrap_or(0) as f64 / 1024.0
}

fn disk_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => disk_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Runs the scale measurement with `sessions` sessions and prints its tables.
pub async fn run(
    connection: &ConnectionArgs,
    sessions: usize,
    calls: usize,
    settle: Duration,
    seed_mode: SeedMode,
    json_out: bool,
) -> Result<(), CliError> {
    let server = NatsServer::start()?;
    let report = measure(connection, &server, sessions.max(FEW + HOT), calls.max(20), settle, seed_mode)
        .await
        .map_err(CliError::Other)?;
    drop(server);
    if json_out {
        println!("{report}");
    } else {
        print(&report);
    }
    Ok(())
}

async fn measure(
    connection: &ConnectionArgs,
    server: &NatsServer,
    sessions: usize,
    calls: usize,
    settle: Duration,
    seed_mode: SeedMode,
) -> Result<Value, String> {
    let url = server.url();
    let connect = |name: &'static str| {
        let url = url.clone();
        async move { connection.connect_to(&url, name).await.map_err(|e| e.to_string()) }
    };
    let subjects = connection.subjects();
    let setup_client = connect("bench-scale-setup").await?;
    setup_layout(&setup_client, &subjects, &LayoutArgs { replicas: 1 }, Duration::from_secs(60))
        .await
        .map_err(|error| error.to_string())?;
    let host_config = JetStreamHostConfig::default().with_subjects(subjects.clone()).with_api_timeout(SEED_API_TIMEOUT);
    let seeder = JetStreamHost::connect(setup_client.clone(), Arc::new(EchoExecutor), host_config)
        .await
        .map_err(failed("setup"))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the sessionbus binary: {e}"))?;
    let worker = WorkerProcess::start_with(&url, &WorkerConfig::default().with_binary(exe).without_setup())
        .await
        .map_err(|e| e.to_string())?;
    let client =
        BusClient::new(connect("bench-scale-bus").await?, BusClientConfig::default().with_subjects(subjects.clone()));
    client.ping().await.map_err(failed("ping"))?;

    let bar = output::progress(sessions as u64, "seeding");
    seed(&seeder, 0..FEW, &bar).await?;
    let js = async_nats::jetstream::new(setup_client.clone());
    let template = Template::capture(&js, &session_id(0)).await?;
    bar.set_message("at 10");
    let at_few = p50s(&client, calls, || uniform(FEW)).await?;
    let (server_mib_few, disk_few) = (rss_mib(server.pid()), disk_bytes(server.data_dir()));

    bar.set_message("seeding");
    let seeding = Instant::now();
    let base = REGISTRY_BASE.min(sessions);
    seed(&seeder, FEW..base, &bar).await?;
    let (page_base, show_base) = registry_ms(&client, &setup_client, &subjects).await?;
    match seed_mode {
        SeedMode::Copy => seed_copies(&js, &template, base..sessions, &bar).await?,
        SeedMode::Host => seed(&seeder, base..sessions, &bar).await?,
    }
    let seed_s = seeding.elapsed().as_secs_f64();
    bar.set_message("measuring");
    let before_cold = cache_stats(&setup_client).await?;
    let read_before_cold = ReadBytes::of(server.pid());
    let cold = p50s(&client, calls, || uniform(sessions)).await?;
    let cold_reads = ReadBytes::of(server.pid()).since(read_before_cold);
    let after_cold = cache_stats(&setup_client).await?;
    let hot_set: Vec<usize> = (0..HOT).map(|_| uniform(sessions)).collect();
    p50s(&client, HOT, || hot_set[uniform(HOT)]).await?;
    let before_hot = cache_stats(&setup_client).await?;
    let hot = p50s(&client, calls, || hot_set[uniform(HOT)]).await?;
    let after_hot = cache_stats(&setup_client).await?;
    let (page_many, show_many) = registry_ms(&client, &setup_client, &subjects).await?;
    let (server_mib, disk) = (rss_mib(server.pid()), disk_bytes(server.data_dir()));
    let worker_mib = worker.rss_kib().unwrap_or(0) as f64 / 1024.0;
    bar.finish_and_clear();
    let server_mib_settled = settled_rss_mib(server, settle).await;

    let ops: Vec<Value> = Op::ALL
        .iter()
        .enumerate()
        .map(|(i, op)| {
            json!({
                "op": op.name(), "p50_ms_at_10": at_few[i], "p50_ms_cold": cold[i], "p50_ms_hot": hot[i],
                "cold_ratio": cold[i] / at_few[i].max(1e-9), "hot_ratio": hot[i] / at_few[i].max(1e-9),
            })
        })
        .collect();
    let grown = (sessions - FEW) as f64;
    Ok(json!({
        "sessions": sessions,
        "calls_per_op": calls,
        "seeded_by": if seed_mode == SeedMode::Copy { "copies beyond the first 1,000" } else { "host" },
        "messages_per_copy": template.len(),
        "seed_seconds": seed_s,
        "seed_sessions_per_second": grown / seed_s.max(1e-9),
        "ops": ops,
        "registry_base_sessions": base,
        "sessions_first_page_ms": {"at_base": page_base, "at_n": page_many, "ratio": page_many / page_base.max(1e-9)},
        "sessions_show_ms": {"at_base": show_base, "at_n": show_many, "ratio": show_many / show_base.max(1e-9)},
        "nats_server": {
            "rss_mib_at_10": server_mib_few, "rss_mib": server_mib,
            "rss_bytes_per_session": (server_mib - server_mib_few) * 1024.0 * 1024.0 / grown,
            "settle_seconds": settle.as_secs(), "rss_mib_settled": server_mib_settled,
            "rss_bytes_per_session_settled":
                server_mib_settled.map(|settled| (settled - server_mib_few) * 1024.0 * 1024.0 / grown),
            "disk_bytes": disk, "disk_bytes_per_session": (disk.saturating_sub(disk_few)) as f64 / grown,
            "cold_phase_read_bytes": cold_reads.through_read, "cold_phase_read_bytes_from_disk": cold_reads.from_disk,
            "read_bytes_per_cold_call": cold_reads.through_read as f64 / (calls * Op::ALL.len()) as f64,
        },
        "worker_rss_mib": worker_mib,
        "worker_cache": {
            "cold": hit_rates(&before_cold, &after_cold),
            "hot": hit_rates(&before_hot, &after_hot),
            "sessions_cached": after_hot.sessions_cached,
        },
    }))
}

/// The worker's cache counters, from its `$SRV.STATS` answer (`ping`'s `data.host`).
async fn cache_stats(nats: &async_nats::Client) -> Result<CacheStats, String> {
    let answers = service_answers(nats, ServiceQuery::Stats, Duration::from_secs(1)).await.map_err(failed("stats"))?;
    answers
        .iter()
        .flat_map(|answer| answer["endpoints"].as_array().cloned().unwrap_or_default())
        .find(|endpoint| endpoint["name"] == "ping")
        .and_then(|ping| serde_json::from_value(ping["data"]["host"].clone()).ok())
        .ok_or_else(|| "the worker's $SRV.STATS answer has no cache counters (ping's data.host)".to_owned())
}

/// The share of a phase's calls the worker's caches served, from the counters before
/// and after it.
fn hit_rates(before: &CacheStats, after: &CacheStats) -> Value {
    let rate = |hits: u64, misses: u64| (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64);
    let (view_hits, view_misses) = (after.view_hits - before.view_hits, after.view_misses - before.view_misses);
    let (catalog_hits, catalog_builds) =
        (after.catalog_hits - before.catalog_hits, after.catalog_builds - before.catalog_builds);
    json!({
        "view_hits": view_hits, "view_misses": view_misses, "view_hit_rate": rate(view_hits, view_misses),
        "catalog_hits": catalog_hits, "catalog_builds": catalog_builds,
        "catalog_hit_rate": rate(catalog_hits, catalog_builds),
    })
}

fn print(report: &Value) {
    let ms = |value: &Value| value.as_f64().map_or_else(|| "-".to_owned(), |ms| format!("{ms:.3}"));
    let ratio = |value: &Value| value.as_f64().map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
    let mut table = output::table(["op (p50 ms)", "10 sessions", "cold", "cold / 10", "hot set", "hot / 10"]);
    for op in report["ops"].as_array().into_iter().flatten() {
        table.add_row(vec![
            op["op"].as_str().unwrap_or("?").to_owned(),
            ms(&op["p50_ms_at_10"]),
            ms(&op["p50_ms_cold"]),
            ratio(&op["cold_ratio"]),
            ms(&op["p50_ms_hot"]),
            ratio(&op["hot_ratio"]),
        ]);
    }
    println!(
        "sessionbus bench --scale: {} sessions stored (seeded in {:.0} s, {:.0} sessions/s); {} calls per op\n{table}",
        report["sessions"],
        report["seed_seconds"].as_f64().unwrap_or(0.0),
        report["seed_sessions_per_second"].as_f64().unwrap_or(0.0),
        report["calls_per_op"],
    );
    let mut others = output::table(["measurement", "before (10 sessions; registry: 1,000)", "at N", "ratio"]);
    for (name, key) in
        [("sessions: first page (ms)", "sessions_first_page_ms"), ("sessions show (ms)", "sessions_show_ms")]
    {
        others.add_row(vec![
            name.to_owned(),
            ms(&report[key]["at_base"]),
            ms(&report[key]["at_n"]),
            ratio(&report[key]["ratio"]),
        ]);
    }
    let server = &report["nats_server"];
    others.add_row(vec![
        "nats-server RSS (MiB)".to_owned(),
        ms(&server["rss_mib_at_10"]),
        ms(&server["rss_mib"]),
        format!("{:.0} B/session", server["rss_bytes_per_session"].as_f64().unwrap_or(0.0)),
    ]);
    if let Some(settled) = server["rss_mib_settled"].as_f64() {
        others.add_row(vec![
            format!("nats-server RSS after {} s idle (MiB)", server["settle_seconds"]),
            ms(&server["rss_mib_at_10"]),
            format!("{settled:.3}"),
            format!("{:.0} B/session", server["rss_bytes_per_session_settled"].as_f64().unwrap_or(0.0)),
        ]);
    }
    others.add_row(vec![
        "nats-server disk".to_owned(),
        "-".to_owned(),
        format!("{} B", server["disk_bytes"]),
        format!("{:.0} B/session", server["disk_bytes_per_session"].as_f64().unwrap_or(0.0)),
    ]);
    others.add_row(vec![
        "nats-server reads in the cold phase (page cache included; from disk)".to_owned(),
        "-".to_owned(),
        format!(
            "{:.2} GB; {:.1} MB",
            server["cold_phase_read_bytes"].as_f64().unwrap_or(0.0) / 1e9,
            server["cold_phase_read_bytes_from_disk"].as_f64().unwrap_or(0.0) / 1e6
        ),
        format!("{:.0} B/call", server["read_bytes_per_cold_call"].as_f64().unwrap_or(0.0)),
    ]);
    others.add_row(vec![
        "worker RSS (MiB, default settings)".to_owned(),
        "-".to_owned(),
        ms(&report["worker_rss_mib"]),
        "-".to_owned(),
    ]);
    let percent = |value: &Value| value.as_f64().map_or_else(|| "-".to_owned(), |rate| format!("{:.1}%", rate * 100.0));
    let cache = &report["worker_cache"];
    for (name, key) in [("session state", "view_hit_rate"), ("tool catalog", "catalog_hit_rate")] {
        others.add_row(vec![
            format!("worker cache hits: {name} (cold; hot set)"),
            "-".to_owned(),
            format!("{}; {}", percent(&cache["cold"][key]), percent(&cache["hot"][key])),
            "-".to_owned(),
        ]);
    }
    println!("{others}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_bytes_come_from_the_rchar_and_read_bytes_lines_of_proc_io() {
        let io = "rchar: 9363269048\nwchar: 12\nsyscr: 5\nsyscw: 6\nread_bytes: 34430976\nwrite_bytes: 7\n";
        let read = ReadBytes::parse(io);
        assert_eq!(read, ReadBytes { through_read: 9_363_269_048, from_disk: 34_430_976 });
        let later = ReadBytes { through_read: 9_363_269_148, from_disk: 34_430_976 };
        assert_eq!(later.since(read), ReadBytes { through_read: 100, from_disk: 0 });
        assert_eq!(ReadBytes::parse("garbage"), ReadBytes::default());
    }

    #[test]
    fn this_process_reading_a_file_shows_in_its_counters() {
        let before = ReadBytes::of(Some(std::process::id()));
        let text = std::fs::read_to_string("/proc/self/status").expect("/proc is readable on Linux");
        let after = ReadBytes::of(Some(std::process::id()));
        assert!(after.since(before).through_read >= text.len() as u64, "{before:?} -> {after:?}");
    }
}
