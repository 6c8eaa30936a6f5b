//! `sessionbus bench`: the bus side by side with the raw NATS operations each bus call
//! cannot avoid, in one run, on servers it starts itself.

mod measure;
mod raw;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::setup::{LayoutArgs, setup_layout};
use bytes::Bytes;
use clap::Args;
use serde_json::{Value, json};
use sessionbus_api::{
    AppendSessionNodesRequest, EchoExecutor, SessionAppendNode, SessionCreateRequest, SessionGraphService,
    SessionLifecycleService, SessionStateService, ToolManifest, ToolState, TraceContext, TraceEvent,
};
use sessionbus_nats::{BusClient, BusClientConfig, JetStreamHost, JetStreamHostConfig, STATE_STREAM, TOOLS_STREAM};

use crate::connect::{CliError, ConnectionArgs};
use crate::embedded::{EmbeddedConfig, EmbeddedServer, start_cluster};
use crate::output;
use measure::{Samples, interleaved, sequential, throughput};
use raw::Raw;

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
    /// Also write the JSON results to `<DIR>/bench-<r1|r3>-<UTC time>.json` (one file per
    /// run, never overwritten).
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
}

fn err(what: &str) -> impl Fn(sessionbus_api::PluginError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// One row of the result table.
struct Row {
    name: String,
    raw: String,
    bus: String,
    ratio: f64,
    target: String,
    met: bool,
    json: Value,
}

/// A `sessionbus worker` child process.
struct WorkerProcess(Child);

impl WorkerProcess {
    fn spawn(url: &str) -> Result<Self, CliError> {
        let exe =
            std::env::current_exe().map_err(|e| CliError::Other(format!("cannot find the sessionbus binary: {e}")))?;
        let mut child = Command::new(exe)
            .arg("worker")
            .env("NATS_URL", url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| CliError::Other(format!("could not start a worker process: {e}")))?;
        let stdout = child.stdout.take().ok_or_else(|| CliError::Other("worker stdout".into()))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map_err(|e| CliError::Other(format!("worker: {e}")))?;
        if !line.contains("ready") {
            return Err(CliError::Other(format!("the worker did not start: {line}")));
        }
        Ok(Self(child))
    }

    /// Resident memory in MiB, from /proc.
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tools(count: usize) -> ToolState {
    let mut state = ToolState::default();
    for i in 0..count {
        state.insert(ToolManifest::new(format!("tool:t{i}"), format!("t{i}"), format!("Tool number {i}.")));
    }
    state
}

fn one_message(text: String) -> AppendSessionNodesRequest {
    AppendSessionNodesRequest { nodes: vec![SessionAppendNode::message("User", text)], requires_ancestor_node_id: None }
}

/// A pool of independent keys, so calls in flight never contend on one subject.
struct Slots<T>(Mutex<Vec<T>>);

impl<T> Slots<T> {
    fn take(&self) -> Option<T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }
    fn put(&self, slot: T) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(slot);
    }
}

/// Runs the benchmark.
pub async fn run(connection: &ConnectionArgs, args: BenchArgs) -> Result<(), CliError> {
    let root = std::env::temp_dir().join(format!("sessionbus-bench-{}", uuid::Uuid::new_v4().simple()));
    let free_port = || {
        std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| CliError::Other(format!("no free port: {e}")))
    };
    let (_servers, url, replicas) = if args.cluster {
        let servers = start_cluster(&root, 3)?;
        let url = servers.iter().map(EmbeddedServer::url).collect::<Vec<_>>().join(",");
        (servers, url, 3)
    } else {
        let server = EmbeddedServer::start(EmbeddedConfig {
            cluster: None,
            host: "127.0.0.1".into(),
            port: free_port()?,
            http_port: 0,
            data_dir: root.clone(),
        })?;
        let url = server.url();
        (vec![server], url, 1)
    };
    let result = bench(connection, &args, &url, replicas).await;
    drop(_servers);
    let _ = std::fs::remove_dir_all(&root);
    let rows = result.map_err(CliError::Other)?;
    report(&args, &rows);
    if let Some(dir) = &args.out {
        let setup = if args.cluster { "r3" } else { "r1" };
        let path = dir.join(format!("bench-{setup}-{}.json", sessionbus_api::clock::now_basic_utc()));
        let text = serde_json::to_string_pretty(&results_json(&args, &rows)).unwrap_or_default();
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|e| CliError::Other(format!("could not write {}: {e}", path.display())))?;
        eprintln!("bench results written to {}", path.display());
    }
    Ok(())
}

/// The results as `--json` prints them.
fn results_json(args: &BenchArgs, rows: &[Row]) -> Value {
    let setup = if args.cluster { "3-node cluster, R3" } else { "one node, R1" };
    let results: Vec<&Value> = rows.iter().map(|r| &r.json).filter(|v| !v.is_null()).collect();
    json!({"setup": setup, "iterations": args.iterations, "in_flight": args.in_flight, "results": results})
}

async fn bench(connection: &ConnectionArgs, args: &BenchArgs, url: &str, replicas: usize) -> Result<Vec<Row>, String> {
    let connect = |name: &'static str| async move { connection.connect_to(url, name).await.map_err(|e| e.to_string()) };
    let subjects = connection.subjects();
    // The host in this process is only for setup; every measured bus call goes to the
    // worker process.
    let setup_config = JetStreamHostConfig::default().with_subjects(subjects.clone());
    let setup_client = connect("bench-setup").await?;
    setup_layout(&setup_client, &subjects, &LayoutArgs { replicas }, std::time::Duration::from_secs(60))
        .await
        .map_err(|error| error.to_string())?;
    let setup = JetStreamHost::connect(setup_client.clone(), Arc::new(EchoExecutor), setup_config)
        .await
        .map_err(|error| format!("setup: {error}"))?;
    let worker = WorkerProcess::spawn(url).map_err(|e| e.to_string())?;
    let client =
        BusClient::new(connect("bench-bus").await?, BusClientConfig::default().with_subjects(subjects.clone()));
    client.ping().await.map_err(err("ping"))?;
    let raw = Raw::start(connect("bench-raw").await?, connect("bench-echo").await?).await?;
    let raw_js = async_nats::jetstream::new(connect("bench-raw-js").await?);
    raw_js
        .create_or_update_stream(async_nats::jetstream::stream::Config {
            name: "BENCH_RAW".into(),
            subjects: vec!["bench.raw.>".into()],
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("raw stream: {e}"))?;

    let phases = 12u64;
    let bar = output::progress(phases, "setup");
    let mut rows = Vec::new();
    let n = args.iterations.max(20);
    let (blocks, per_block) = (10, n.div_ceil(20));
    let tp = args.throughput_calls.max(args.in_flight);
    let shape = Shape { blocks, per_block, calls: tp, in_flight: args.in_flight };

    // Setup: a small session with tools and three nodes.
    let small = format!("bench-small-{}", uuid::Uuid::new_v4().simple());
    setup.create_session(SessionCreateRequest::root(Some(small.clone()))).await.map_err(err("create"))?;
    for i in 0..3 {
        setup.append_session_nodes(&small, one_message(format!("message {i}"))).await.map_err(err("append"))?;
    }
    setup.apply_tool_state(&small, tools(8)).await.map_err(err("tools"))?;
    let meta_subject = subjects.meta(&small);
    let kv_subject = format!("$KV.SESSIONBUS_TOOLS.{small}");
    let empty = Bytes::from_static(b"{}");
    for _ in 0..100 {
        client.snapshot_session(&small).await.map_err(err("warmup"))?;
        client.tool_state(&small).await.map_err(err("warmup"))?;
        raw.echo(empty.clone()).await?;
    }
    bar.inc(1);

    // The floor: raw echo.
    bar.set_message("echo");
    let echo = sequential(n, |_| raw.echo(empty.clone())).await?;
    rows.push(Row {
        name: "raw request/reply echo (floor)".into(),
        raw: format!("{:.3} ms", echo.percentile_ms(50.0)),
        bus: "-".into(),
        ratio: 1.0,
        target: "-".into(),
        met: true,
        json: json!({"name": "echo", "raw_p50_ms": echo.percentile_ms(50.0), "raw_p99_ms": echo.percentile_ms(99.0)}),
    });
    bar.inc(1);

    // Reads: bus vs raw request + leader get of the same value.
    bar.set_message("reads");
    let read_ops: [(&str, &str, &str); 3] = [
        ("tool_state", TOOLS_STREAM, &kv_subject),
        ("snapshot_session", STATE_STREAM, &meta_subject),
        ("tool_catalog", TOOLS_STREAM, &kv_subject),
    ];
    for (name, stream, subject) in read_ops {
        let raw_op = |_| {
            let raw = raw.clone();
            let empty = empty.clone();
            async move {
                raw.echo(empty).await?;
                raw.leader_get(stream, subject).await
            }
        };
        let bus_op = |_| {
            let client = client.clone();
            let small = small.clone();
            async move {
                match name {
                    "tool_state" => client.tool_state(&small).await.map(drop),
                    "snapshot_session" => client.snapshot_session(&small).await.map(drop),
                    _ => client.tool_catalog(&small).await.map(drop),
                }
                .map_err(|e| format!("{name}: {e}"))
            }
        };
        compare(&mut rows, shape, name, "request + leader get", 1.25, raw_op, bus_op).await?;
        bar.inc(1);
    }

    // apply_tool_state vs raw request + KV update with revision, on independent keys.
    bar.set_message("apply");
    let bus_keys = Slots(Mutex::new(Vec::new()));
    let raw_keys = Slots(Mutex::new(Vec::new()));
    for i in 0..args.in_flight.max(1) {
        let session = format!("bench-apply-{i}-{}", uuid::Uuid::new_v4().simple());
        let generation = setup.apply_tool_state(&session, tools(8)).await.map_err(err("apply"))?;
        bus_keys.put((session.clone(), generation));
        let raw_subject = format!("$KV.SESSIONBUS_TOOLS.raw-{session}");
        let seq = raw
            .publish_expecting(&raw_subject, Bytes::from(serde_json::to_vec(&tools(8)).unwrap_or_default()), 0)
            .await?;
        raw_keys.put((raw_subject, seq));
    }
    let state_bytes = Bytes::from(serde_json::to_vec(&tools(8)).unwrap_or_default());
    let bus_apply = |_| {
        let client = client.clone();
        let bus_keys = &bus_keys;
        async move {
            let (session, generation) = bus_keys.take().ok_or("no free key")?;
            let mut state = tools(8);
            state.generation = generation;
            let result = client.apply_tool_state(&session, state).await;
            let next = result.as_ref().map_or(generation, |g| *g);
            bus_keys.put((session, next));
            result.map(drop).map_err(|e| format!("apply_tool_state: {e}"))
        }
    };
    let raw_apply = |_| raw_conditional_write(&raw, &raw_keys, state_bytes.clone());
    compare(&mut rows, shape, "apply_tool_state", "request + KV update with revision", 1.25, raw_apply, bus_apply)
        .await?;
    bar.inc(1);

    // append_session_nodes vs raw request + publish with expected last subject sequence.
    bar.set_message("append");
    let bus_sessions = Slots(Mutex::new(Vec::new()));
    let raw_subjects = Slots(Mutex::new(Vec::new()));
    for i in 0..args.in_flight.max(1) {
        let session = format!("bench-append-{i}-{}", uuid::Uuid::new_v4().simple());
        client.create_session(SessionCreateRequest::root(Some(session.clone()))).await.map_err(err("create"))?;
        bus_sessions.put(session);
        raw_subjects.put((format!("bench.raw.append.{i}"), 0u64));
    }
    let append_body = Bytes::from(serde_json::to_vec(&one_message("a benchmark message".into())).unwrap_or_default());
    let bus_append = |i: usize| {
        let client = client.clone();
        let bus_sessions = &bus_sessions;
        async move {
            let session = bus_sessions.take().ok_or("no free session")?;
            let result = client.append_session_nodes(&session, one_message(format!("message {i}"))).await;
            bus_sessions.put(session);
            result.map(drop).map_err(|e| format!("append_session_nodes: {e}"))
        }
    };
    let raw_append = |_| raw_conditional_write(&raw, &raw_subjects, append_body.clone());
    compare(
        &mut rows,
        shape,
        "append_session_nodes",
        "request + publish with expected sequence",
        1.25,
        raw_append,
        bus_append,
    )
    .await?;
    bar.inc(1);

    // shared_tool_catalog unchanged vs one raw request.
    bar.set_message("catalog");
    client.shared_tool_catalog(&small).await.map_err(err("catalog"))?;
    let ask = Bytes::from_static(b"{\"if_generation\":1}");
    let raw_ask = |_| raw.echo(ask.clone());
    let bus_ask = |_| {
        let client = client.clone();
        let small = small.clone();
        async move { client.shared_tool_catalog(&small).await.map(drop).map_err(|e| format!("shared_tool_catalog: {e}")) }
    };
    compare(&mut rows, shape, "shared_tool_catalog (unchanged)", "request", 1.2, raw_ask, bus_ask).await?;
    bar.inc(1);

    // emit_trace_event throughput vs raw JetStream publish throughput.
    bar.set_message("trace");
    let trace_subject = subjects.trace(&format!("raw-{small}"));
    let record = Bytes::from(
        serde_json::to_vec(&json!({"schema_version": 2, "type": "custom", "name": "bench"})).unwrap_or_default(),
    );
    let raw_trace = |i: usize| {
        let raw = raw.clone();
        let subject = trace_subject.clone();
        let record = record.clone();
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("raw-{i}-{}", uuid::Uuid::new_v4().simple()).as_str());
            raw.publish(&subject, headers, record).await.map(drop)
        }
    };
    let bus_trace = |i: usize| {
        let client = client.clone();
        let small = small.clone();
        async move {
            let context = TraceContext { session_id: Some(small), ..TraceContext::default() };
            let event =
                TraceEvent::Custom { name: "bench".into(), payload: json!({"i": i}), extra: Default::default() };
            client.emit_trace_event(context, event).await.map_err(|e| format!("emit_trace_event: {e}"))
        }
    };
    let raw_tp = throughput(tp, args.in_flight, raw_trace).await?;
    let bus_tp = throughput(tp, args.in_flight, bus_trace).await?;
    let ratio = bus_tp / raw_tp.max(1e-9);
    rows.push(Row {
        name: format!("emit_trace_event, {} in flight (calls/s)", args.in_flight),
        raw: format!("{raw_tp:.0}/s"),
        bus: format!("{bus_tp:.0}/s"),
        ratio,
        target: ">= 0.60".into(),
        met: ratio >= 0.6,
        json: json!({"name": "emit_trace_event", "raw_per_s": raw_tp, "bus_per_s": bus_tp, "throughput_ratio": ratio}),
    });
    bar.inc(1);

    // Histories: snapshot of a large graph (cold, then warm), and append cost as history grows.
    bar.set_message("history");
    let mut history_p50 = Vec::new();
    let mut large = String::new();
    for size in [10usize, 1000, args.history.max(1000)] {
        let session = format!("bench-history-{size}-{}", uuid::Uuid::new_v4().simple());
        setup.create_session(SessionCreateRequest::root(Some(session.clone()))).await.map_err(err("create"))?;
        let mut written = 0;
        while written < size {
            let batch = (size - written).min(500);
            let nodes = (0..batch)
                .map(|k| SessionAppendNode::message("User", format!("history node {}", written + k)))
                .collect();
            setup
                .append_session_nodes(&session, AppendSessionNodesRequest { nodes, requires_ancestor_node_id: None })
                .await
                .map_err(err("history"))?;
            written += batch;
        }
        large = session;
        history_p50.push((size, large.clone()));
    }
    let started = Instant::now();
    let snapshot = client.snapshot_session(&large).await.map_err(err("snapshot"))?;
    let first_ms = started.elapsed().as_secs_f64() * 1000.0;
    let started = Instant::now();
    client.snapshot_session(&large).await.map_err(err("snapshot"))?;
    let second_ms = started.elapsed().as_secs_f64() * 1000.0;
    rows.push(Row {
        name: format!("snapshot_session of a {}-node graph: first / second", snapshot.session_graph.nodes.len()),
        raw: format!("{first_ms:.1} ms"),
        bus: format!("{second_ms:.1} ms"),
        ratio: second_ms / first_ms.max(1e-9),
        target: "second < first".into(),
        met: second_ms < first_ms,
        json: json!({"name": "snapshot_large", "first_ms": first_ms, "second_ms": second_ms, "second_to_first_ratio": second_ms / first_ms.max(1e-9)}),
    });
    bar.inc(1);
    let mut per_history = Vec::new();
    for (size, session) in &history_p50 {
        client.append_session_nodes(session, one_message("warm".into())).await.map_err(err("append"))?;
        let samples = sequential(n / 2, |i| {
            let client = client.clone();
            let session = session.clone();
            async move {
                client
                    .append_session_nodes(&session, one_message(format!("more {i}")))
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        })
        .await?;
        per_history.push((*size, samples.percentile_ms(50.0)));
    }
    let (small_size, small_p50) = per_history[0];
    let (big_size, big_p50) = per_history[per_history.len() - 1];
    let ratio = big_p50 / small_p50.max(1e-9);
    rows.push(Row {
        name: format!("append p50 at history {big_size} vs {small_size}"),
        raw: format!("{small_p50:.3} ms"),
        bus: format!("{big_p50:.3} ms"),
        ratio,
        target: "<= 1.25".into(),
        met: ratio <= 1.25,
        json: json!({"name": "append_history", "p50_ms_by_history": per_history.iter().map(|(s, p)| json!({"history": s, "p50_ms": p})).collect::<Vec<_>>(), "history_ratio": ratio}),
    });
    bar.inc(1);

    // Worker memory as sessions grow.
    bar.set_message("memory");
    let baseline = worker.rss_mib();
    let touch = |i: usize| {
        let client = client.clone();
        async move {
            let session = format!("bench-touch-{i}");
            client
                .create_session(SessionCreateRequest::root(Some(session.clone())))
                .await
                .map_err(|e| e.to_string())?;
            client
                .append_session_nodes(&session, one_message("hello".into()))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    };
    let fifth = (args.sessions / 5).max(1);
    throughput(fifth, args.in_flight, touch).await?;
    let at_fifth = worker.rss_mib();
    throughput(args.sessions - fifth, args.in_flight, |i| touch(i + fifth)).await?;
    let at_all = worker.rss_mib();
    let ratio = at_all / at_fifth.max(1e-9);
    rows.push(Row {
        name: format!("worker RSS: {fifth} vs {} sessions touched (MiB)", args.sessions),
        raw: format!("{at_fifth:.1}"),
        bus: format!("{at_all:.1}"),
        ratio,
        target: "<= 1.50".into(),
        met: ratio <= 1.5,
        json: json!({"name": "worker_memory", "baseline_mib": baseline, "mib_after_fifth": at_fifth, "mib_after_all": at_all, "sessions": args.sessions, "memory_ratio": ratio}),
    });
    bar.inc(1);
    bar.finish_and_clear();
    Ok(rows)
}

/// How a comparison is measured.
#[derive(Clone, Copy)]
struct Shape {
    blocks: usize,
    per_block: usize,
    calls: usize,
    in_flight: usize,
}

/// Measures `raw_op` and `bus_op` side by side (latency interleaved, then throughput)
/// and adds their rows.
async fn compare<FA, FutA, FB, FutB>(
    rows: &mut Vec<Row>,
    shape: Shape,
    name: &str,
    raw_what: &str,
    target: f64,
    raw_op: FA,
    bus_op: FB,
) -> Result<(), String>
where
    FA: Fn(usize) -> FutA,
    FutA: std::future::Future<Output = Result<(), String>>,
    FB: Fn(usize) -> FutB,
    FutB: std::future::Future<Output = Result<(), String>>,
{
    let (raw_lat, bus_lat) = interleaved(shape.blocks, shape.per_block, &raw_op, &bus_op).await?;
    let raw_tp = throughput(shape.calls, shape.in_flight, &raw_op).await?;
    let bus_tp = throughput(shape.calls, shape.in_flight, &bus_op).await?;
    push_pair(rows, name, raw_what, &raw_lat, &bus_lat, raw_tp, bus_tp, target);
    Ok(())
}

/// The raw composite of a conditional write: an echo of the body, then a publish
/// expecting the slot's last sequence (the slot keeps the new one).
async fn raw_conditional_write(raw: &Raw, slots: &Slots<(String, u64)>, payload: Bytes) -> Result<(), String> {
    let (subject, seq) = slots.take().ok_or("no free subject")?;
    raw.echo(payload.clone()).await?;
    let result = raw.publish_expecting(&subject, payload, seq).await;
    slots.put((subject, *result.as_ref().unwrap_or(&seq)));
    result.map(drop)
}

#[allow(clippy::too_many_arguments)]
fn push_pair(
    rows: &mut Vec<Row>,
    name: &str,
    raw_what: &str,
    raw: &Samples,
    bus: &Samples,
    raw_tp: f64,
    bus_tp: f64,
    target: f64,
) {
    let (raw50, bus50) = (raw.percentile_ms(50.0), bus.percentile_ms(50.0));
    let ratio = bus50 / raw50.max(1e-9);
    let tp_ratio = bus_tp / raw_tp.max(1e-9);
    rows.push(Row {
        name: format!("{name} p50 (raw: {raw_what})"),
        raw: format!("{raw50:.3} ms (p99 {:.3})", raw.percentile_ms(99.0)),
        bus: format!("{bus50:.3} ms (p99 {:.3})", bus.percentile_ms(99.0)),
        ratio,
        target: format!("<= {target:.2}"),
        met: ratio <= target,
        json: json!({
            "name": name, "raw": raw_what,
            "raw_p50_ms": raw50, "raw_p99_ms": raw.percentile_ms(99.0),
            "bus_p50_ms": bus50, "bus_p99_ms": bus.percentile_ms(99.0),
            "p50_ratio": ratio, "raw_per_s": raw_tp, "bus_per_s": bus_tp, "throughput_ratio": tp_ratio,
        }),
    });
    rows.push(Row {
        name: format!("{name}, 32 in flight (calls/s)"),
        raw: format!("{raw_tp:.0}/s"),
        bus: format!("{bus_tp:.0}/s"),
        ratio: tp_ratio,
        target: ">= 0.60".into(),
        met: tp_ratio >= 0.6,
        json: Value::Null,
    });
}

fn report(args: &BenchArgs, rows: &[Row]) {
    let setup = if args.cluster { "3-node cluster, R3" } else { "one node, R1" };
    if args.json {
        println!("{}", results_json(args, rows));
        return;
    }
    let mut table = output::table(["measurement", "raw", "bus", "ratio", "target", "met"]);
    for row in rows {
        table.add_row(vec![
            row.name.clone(),
            row.raw.clone(),
            row.bus.clone(),
            format!("{:.2}", row.ratio),
            row.target.clone(),
            if row.met { "yes".into() } else { "NO".into() },
        ]);
    }
    println!(
        "sessionbus bench ({setup}; medians of {} sequential calls, {} in flight for throughput)\n{table}",
        args.iterations, args.in_flight
    );
    let missed = rows.iter().filter(|r| !r.met).count();
    println!("{} of {} targets met", rows.len() - missed, rows.len());
}
