//! `sessionbus demo`: a realistic multi-session workload with a progress bar and a
//! closing summary table.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use sessionbus_api::sync::lock;
use sessionbus_api::{
    AppendSessionNodesRequest, ErrorKind, PluginError, SessionAppendNode, SessionCreateRequest, SessionGraphService,
    SessionLifecycleService, SessionStartPoint, SessionStateService, SessionTurnRequest, ToolManifest, ToolState,
    TraceContext, TraceEvent, TurnInput,
};
use sessionbus_launch::NatsServer;
use sessionbus_nats::{BusClient, BusClientConfig};

use super::lash::DEMO_QUESTIONS;
use super::worker::{ExecutorKind, WorkerArgs, start_worker};
use crate::connect::{CliError, ConnectionArgs};
use crate::output;

/// Options of `demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Root sessions.
    #[arg(long, default_value_t = 8)]
    pub sessions: usize,
    /// Child sessions per root.
    #[arg(long, default_value_t = 2)]
    pub children: usize,
    /// Turns per session.
    #[arg(long, default_value_t = 3)]
    pub turns: usize,
    /// Membership toggles per tool (all tools of a session toggle concurrently).
    #[arg(long, default_value_t = 6)]
    pub toggles: usize,
    /// Appends per session.
    #[arg(long, default_value_t = 10)]
    pub appends: usize,
    /// Sessions worked on at once.
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// Print the summary as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The executor of the embedded worker (when NATS_URL is unset). With `lash`, turns
    /// are real lash turns on the shipped scripted provider (offline), asking questions
    /// the agent answers with a tool call.
    #[arg(long, value_enum, default_value_t = ExecutorKind::Echo)]
    pub executor: ExecutorKind,
}

/// Ops whose `Conflict` the demo answers by re-reading and retrying.
const RETRIED_ON_CONFLICT: [&str; 1] = ["apply_tool_state"];

const TOOLS: [&str; 5] = ["bash", "read_file", "write_file", "grep", "web_search"];

#[derive(Default)]
struct OpStats {
    latencies_us: Vec<u64>,
    errors: u64,
    conflicts_retried: u64,
    last_error: Option<String>,
}

#[derive(Clone, Default)]
struct Stats(Arc<Mutex<BTreeMap<&'static str, OpStats>>>);

impl Stats {
    /// Times one call; a `Conflict` the caller retries is counted as such, not as an error.
    async fn time<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, PluginError>>,
    ) -> Result<T, PluginError> {
        let started = Instant::now();
        let result = call.await;
        let elapsed = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut stats = lock(&self.0);
        let entry = stats.entry(op).or_default();
        entry.latencies_us.push(elapsed);
        match &result {
            Err(err) if err.kind() == ErrorKind::Conflict && RETRIED_ON_CONFLICT.contains(&op) => {
                entry.conflicts_retried += 1
            }
            Err(err) => {
                entry.errors += 1;
                entry.last_error = Some(err.to_string());
            }
            Ok(_) => {}
        }
        result
    }
}

/// Calls one session makes in the demo (for the progress bar).
fn calls_per_root(args: &DemoArgs) -> u64 {
    let per_session = 1 + 1 + TOOLS.len() * args.toggles + args.appends + args.turns * 2 + 2 + 1;
    (per_session * (1 + args.children)) as u64
}

/// Runs the workload against NATS_URL, or against an embedded bus when it is unset.
pub async fn run(connection: &ConnectionArgs, args: DemoArgs) -> Result<(), CliError> {
    let mut embedded = None;
    let mut embedded_worker = None;
    let url = match connection.url() {
        Some(url) => url.to_owned(),
        None => {
            // A throw-away server: a free loopback port, a store deleted when the demo ends.
            let server = NatsServer::start()?;
            let url = server.url();
            let client = connection.connect_to(&url, "sessionbus-demo-worker").await?;
            let worker_args = WorkerArgs { setup: true, executor: args.executor, ..WorkerArgs::default() };
            embedded_worker = Some(start_worker(client, &worker_args, connection.subjects()).await?.0);
            eprintln!("NATS_URL is not set: running against an embedded bus at {url}");
            embedded = Some(server);
            url
        }
    };
    let nats = connection.connect_to(&url, "sessionbus-demo").await?;
    let client = BusClient::new(nats, BusClientConfig::default().with_subjects(connection.subjects()));
    let ready = client.ping().await?;
    eprintln!("worker {} (sessionbus {}) answers", ready.worker_id, ready.version);

    let stats = Stats::default();
    let bar = output::progress(calls_per_root(&args) * args.sessions as u64, "demo");
    let started = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(args.parallel.max(1)));
    let roots = (0..args.sessions).map(|index| {
        let (client, stats, bar, args, limit) =
            (client.clone(), stats.clone(), bar.clone(), args.clone(), Arc::clone(&limit));
        async move {
            let _permit = limit.acquire().await;
            run_root(&client, &stats, &bar, &args, index).await;
        }
    });
    futures::future::join_all(roots).await;
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let errors = print_summary(&stats, elapsed, args.json);
    if let Some(worker) = embedded_worker {
        worker.shutdown(Duration::from_secs(10)).await;
    }
    drop(embedded);
    if errors > 0 {
        return Err(CliError::Other(format!("{errors} calls failed (see the summary above)")));
    }
    Ok(())
}

async fn run_root(client: &BusClient, stats: &Stats, bar: &indicatif::ProgressBar, args: &DemoArgs, index: usize) {
    let root = format!("demo-{}-{index}", uuid::Uuid::new_v4().simple());
    let create = SessionCreateRequest::root(Some(root.clone()));
    if stats.time("create_session", client.create_session(create)).await.is_err() {
        bar.inc(calls_per_root(args));
        return;
    }
    bar.inc(1);
    let mut sessions = vec![root.clone()];
    for child in 0..args.children {
        let id = format!("{root}-child-{child}");
        let request = SessionCreateRequest::child(Some(id.clone()), root.clone(), SessionStartPoint::Empty);
        if stats.time("create_session", client.create_session(request)).await.is_ok() {
            sessions.push(id);
        }
        bar.inc(1);
    }
    let work = sessions.iter().map(|session| run_session(client, stats, bar, args, session));
    futures::future::join_all(work).await;
    for child in &sessions[1..] {
        let _ = stats.time("close_session", client.close_session(child)).await;
        bar.inc(1);
    }
}

async fn run_session(client: &BusClient, stats: &Stats, bar: &indicatif::ProgressBar, args: &DemoArgs, session: &str) {
    let mut tools = ToolState::default();
    for name in TOOLS {
        tools.insert(ToolManifest::new(format!("tool:{name}"), name, format!("The {name} tool.")));
    }
    let _ = stats.time("apply_tool_state", client.apply_tool_state(session, tools)).await;
    bar.inc(1);
    // Every tool is toggled by its own task at the same time: set_tool_membership for
    // most, a hand-written compare-and-set loop for one (its conflicts are counted).
    let togglers = TOOLS.iter().enumerate().map(|(i, name)| async move {
        for toggle in 0..args.toggles {
            let present = toggle % 2 == 1;
            if i == 0 {
                cas_toggle(client, stats, session, name, present).await;
            } else {
                let names = [name.to_string()];
                let _ = stats.time("set_tool_membership", client.set_tool_membership(session, &names, present)).await;
            }
            bar.inc(1);
        }
    });
    futures::future::join_all(togglers).await;
    for n in 0..args.appends {
        let node = if n % 2 == 0 {
            SessionAppendNode::message("User", format!("note {n} for {session}"))
        } else {
            SessionAppendNode::Plugin {
                plugin_type: "todo.snapshot".into(),
                body: json!({"items": [{"done": false, "text": format!("step {n}")}]}),
                caused_by: None,
            }
        };
        let request = AppendSessionNodesRequest { nodes: vec![node], requires_ancestor_node_id: None };
        let _ = stats.time("append_session_nodes", client.append_session_nodes(session, request)).await;
        bar.inc(1);
    }
    for turn in 0..args.turns {
        let turn_id = format!("turn-{turn}");
        let context = TraceContext {
            session_id: Some(session.to_owned()),
            turn_id: Some(turn_id.clone()),
            ..TraceContext::default()
        };
        let event = TraceEvent::Custom {
            name: "demo.turn_requested".into(),
            payload: json!({"turn": turn}),
            extra: Default::default(),
        };
        let _ = stats.time("emit_trace_event", client.emit_trace_event(context, event)).await;
        bar.inc(1);
        let question = match args.executor {
            ExecutorKind::Lash => DEMO_QUESTIONS[turn % DEMO_QUESTIONS.len()].to_owned(),
            ExecutorKind::Echo | ExecutorKind::Slow => format!("question {turn}"),
        };
        if let Ok(request) = SessionTurnRequest::for_turn(session, turn_id, TurnInput::text(question)) {
            let _ = stats.time("start_turn", client.start_turn(request)).await;
        }
        bar.inc(1);
    }
    let _ = stats.time("shared_tool_catalog", client.shared_tool_catalog(session)).await;
    let _ = stats.time("shared_tool_catalog", client.shared_tool_catalog(session)).await;
    bar.inc(2);
    let _ = stats.time("snapshot_session", client.snapshot_session(session)).await;
    bar.inc(1);
}

/// Toggles one tool with an explicit read / compare-and-set loop, counting conflicts.
async fn cas_toggle(client: &BusClient, stats: &Stats, session: &str, name: &str, present: bool) {
    for _ in 0..64 {
        let Ok(mut state) = stats.time("tool_state", client.tool_state(session)).await else { return };
        if sessionbus_api::toggle_membership(&mut state, &[name.to_owned()], present).is_err() {
            return;
        }
        match stats.time("apply_tool_state", client.apply_tool_state(session, state)).await {
            Err(err) if err.kind() == ErrorKind::Conflict => continue,
            _ => return,
        }
    }
}

/// Prints the summary; returns the number of failed calls.
fn print_summary(stats: &Stats, elapsed: Duration, json: bool) -> u64 {
    let stats = lock(&stats.0);
    let mut rows = Vec::new();
    let (mut calls, mut errors, mut conflicts) = (0u64, 0u64, 0u64);
    for (op, entry) in stats.iter() {
        let mut sorted = entry.latencies_us.clone();
        sorted.sort_unstable();
        calls += sorted.len() as u64;
        errors += entry.errors;
        conflicts += entry.conflicts_retried;
        rows.push((
            *op,
            sorted.len(),
            entry.errors,
            entry.conflicts_retried,
            output::percentile_ms(&sorted, 50.0),
            output::percentile_ms(&sorted, 99.0),
            entry.last_error.clone(),
        ));
    }
    if json {
        let ops: Vec<_> = rows
            .iter()
            .map(|(op, n, e, c, p50, p99, last)| json!({"op": op, "calls": n, "errors": e, "conflicts_retried": c, "p50_ms": p50, "p99_ms": p99, "last_error": last}))
            .collect();
        println!(
            "{}",
            json!({"calls": calls, "errors": errors, "conflicts_retried": conflicts, "seconds": elapsed.as_secs_f64(), "ops": ops})
        );
        return errors;
    }
    let mut table = output::table(["op", "calls", "errors", "conflicts retried", "p50 ms", "p99 ms"]);
    for (op, n, e, c, p50, p99, _) in &rows {
        table.add_row(vec![
            op.to_string(),
            n.to_string(),
            e.to_string(),
            c.to_string(),
            format!("{p50:.2}"),
            format!("{p99:.2}"),
        ]);
    }
    table.add_row(vec![
        "total".to_owned(),
        calls.to_string(),
        errors.to_string(),
        conflicts.to_string(),
        String::new(),
        String::new(),
    ]);
    println!("{table}");
    println!(
        "{calls} calls in {:.2} s ({:.0} calls/s), {errors} errors, {conflicts} conflicts retried",
        elapsed.as_secs_f64(),
        calls as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    for (op, _, _, _, _, _, last) in &rows {
        if let Some(last) = last {
            println!("last error of {op}: {last}");
        }
    }
    errors
}
