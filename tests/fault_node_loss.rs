//! Node loss: SIGKILL of the node that leads every sessionbus stream of a 3-node
//! cluster, in the middle of a mixed workload (tool toggles, appends, turns, trace
//! events, snapshots) through two `sessionbus worker` processes.
//!
//! - the killed node led the state stream, the tools bucket and the trace stream at the
//!   kill (read from JetStream just before it);
//! - no acknowledged write is lost, judged against what JetStream stored: toggles against
//!   an audit that records every stored revision of the shared session's tool state (its
//!   republished events, through a node that survives; a revision whose event died with
//!   the killed leader is proven stored by the next revision's `Nats-Last-Sequence`),
//!   appends against the session's graph after the workload (which must agree with the
//!   audited graph records), turns against their ledger records, trace records against
//!   the trace stream;
//! - every call either succeeds or fails with a typed error (`Unavailable`, `Conflict`);
//! - the workload resumes without restarting any client or worker (both worker processes
//!   still run at the end, and every client succeeded after the kill);
//! - each client's longest stall stays within 1 s of the longest stall of raw writes, by
//!   the same harness through the same kill, on the streams that client's calls use: raw
//!   KV puts on the tools bucket, raw publishes on the state and trace streams (each
//!   stream elects its own leader, and their elections end up to seconds apart).
//!
//! A stall is the longest time without a successful call after the kill. Clients resend
//! after 3 s (a request or reply in flight through the killed node is lost); the
//! worker's JetStream calls resend every 250 ms while a stream has no leader.

// The report's `json!` has more fields than the default recursion limit allows.
#![recursion_limit = "256"]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use sessionbus_api::sync::lock;
use sessionbus_api::{
    AppendSessionNodesRequest, AppendSessionNodesResult, ErrorKind, PluginError, SessionAppendNode,
    SessionCreateRequest, SessionGraphService, SessionLifecycleService, SessionNode, SessionStateService,
    SessionTurnRequest, ToolManifest, ToolState, TraceContext, TraceEvent, TurnInput,
};
use sessionbus_nats::subjects::session_token;
use sessionbus_nats::{BusClientConfig, STATE_STREAM, TOOLS_STREAM, TRACE_STREAM};
use support::audit::{self, is_member};
use support::{bounded, report, scaled};

/// What the raw probes write (a session no client uses).
const RAW_PROBES: [(&str, &str); 3] = [
    (TOOLS_STREAM, "$KV.SESSIONBUS_TOOLS.raw-probe"),
    (STATE_STREAM, "sessionbus.v1.state.raw-probe.probe"),
    (TRACE_STREAM, "sessionbus.v1.trace.raw-probe"),
];
/// The slack allowed between a client's longest stall and the raw stall of its streams.
const STALL_SLACK: Duration = Duration::from_secs(1);

/// What one workload client saw: when each call ended, and how.
#[derive(Default)]
struct Timeline {
    /// End time of every successful call.
    successes: Vec<Instant>,
    /// Every failed call: its kind and message.
    failures: Vec<(ErrorKind, String)>,
    /// The longest single call.
    longest_call: Duration,
}

impl Timeline {
    fn record<T>(&mut self, started: Instant, result: &Result<T, PluginError>) {
        let now = Instant::now();
        self.longest_call = self.longest_call.max(now - started);
        match result {
            Ok(_) => self.successes.push(now),
            Err(err) => self.failures.push((err.kind(), err.message().into_owned())),
        }
    }

    /// The longest time without a success from `start` to `end` (a gap that began
    /// before `start` counts from `start`): when it began, and how long it lasted.
    fn longest_stall_window(&self, start: Instant, end: Instant) -> (Instant, Duration) {
        let mut previous = start;
        let mut longest = (start, Duration::ZERO);
        for &at in self.successes.iter().chain(std::iter::once(&end)) {
            let gap = at.saturating_duration_since(previous);
            if gap > longest.1 {
                longest = (previous, gap);
            }
            previous = previous.max(at);
        }
        longest
    }

    fn succeeded_after(&self, at: Instant) -> bool {
        self.successes.iter().any(|t| *t > at)
    }
}

/// Everything the clients were told was stored.
#[derive(Default)]
struct Acknowledged {
    /// (client, toggle index, membership set, generation) of every acknowledged toggle.
    toggles: Vec<(usize, usize, bool, u64)>,
    /// Node ids of every acknowledged append.
    appends: Vec<Vec<String>>,
    /// (session, turn id) of acknowledged turns.
    turns: Vec<(String, String)>,
    /// Markers of acknowledged trace events.
    traces: Vec<String>,
}

fn bus_config() -> BusClientConfig {
    // A request or reply in flight through the killed node is lost and costs its caller
    // one per-attempt timeout before the resend (same request id); an answer that comes
    // after its attempt's timeout is dropped, and the next attempt starts after a backoff
    // (0.1 s, 0.2 s, 0.4 s, ...). At 3 s per attempt the first resend overlaps the
    // election, and elections of up to 9 s end in a window or a gap of at most 0.4 s.
    // Turns are watched by progress messages (every 2 s): 5 s of silence means lost.
    BusClientConfig::default()
        .with_timeout(Duration::from_secs(3))
        .with_attempts(6)
        .with_turn_idle_timeout(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_of_every_stream_loses_no_acknowledged_write_and_stalls_near_raw() {
    let after_kill = Duration::from_secs(scaled(20, 120));
    let before_kill = Duration::from_secs(5);
    let mut cluster = support::cluster().await;
    let url = cluster.nats_url();
    let mut workers =
        [support::worker(&url, &["--replicas", "3"]).await, support::worker(&url, &["--replicas", "3"]).await];
    let admin = support::connect(&url).await;

    // One node leads every stream: killing it costs each stream an election.
    let victim = cluster.stream_leader(&admin, STATE_STREAM).await.expect("the state stream has a leader");
    for stream in [TOOLS_STREAM, TRACE_STREAM] {
        assert!(cluster.move_stream_leader(&admin, stream, victim).await, "{stream} moves to node {victim}");
    }

    // The audit (on a node that survives), started before the shared session exists, so
    // it records every revision of its tool state and graph.
    let shared = support::new_id();
    let shared_token = session_token(&shared).expect("token");
    let audited_tools = format!("sessionbus.v1.events.{shared_token}.tools");
    let audited_graph = format!("sessionbus.v1.events.{shared_token}.graph");
    let auditor = support::connect(&cluster.url((victim + 1) % 3)).await;
    let recorder = audit::Recorder::start(&auditor, &[audited_tools.clone(), audited_graph.clone()]).await;

    let setup = support::bus(&url, bus_config()).await;
    support::wait_ready(&setup).await;
    setup.create_session(SessionCreateRequest::root(Some(shared.clone()))).await.expect("create");
    let togglers = 4;
    let mut tools = ToolState::default();
    for client in 0..togglers {
        tools.insert(ToolManifest::new(format!("tool:t{client}"), format!("t{client}"), ""));
    }
    let first_generation = setup.apply_tool_state(&shared, tools).await.expect("tool state");
    let mut turn_sessions = Vec::new();
    for _ in 0..2 {
        let id = support::new_id();
        setup.create_session(SessionCreateRequest::root(Some(id.clone()))).await.expect("create");
        turn_sessions.push(id);
    }

    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    let start = Instant::now();
    let kill_at = start + before_kill;
    let end = kill_at + after_kill;
    let mut tasks: Vec<tokio::task::JoinHandle<(String, Timeline)>> = Vec::new();

    for client in 0..togglers {
        let bus = support::bus(&url, bus_config()).await;
        let (session, acknowledged) = (shared.clone(), Arc::clone(&acknowledged));
        tasks.push(tokio::spawn(async move {
            let mut timeline = Timeline::default();
            let names = [format!("t{client}")];
            // Every tool starts as a member: toggle 0 removes it, toggle 1 adds it back...
            let mut index = 0;
            while Instant::now() < end {
                let present = index % 2 == 1;
                let started = Instant::now();
                let result = bus.set_tool_membership(&session, &names, present).await;
                timeline.record(started, &result);
                if let Ok(generation) = result {
                    lock(&acknowledged).toggles.push((client, index, present, generation));
                    index += 1;
                }
            }
            (format!("toggle-{client}"), timeline)
        }));
    }
    for client in 0..4 {
        let bus = support::bus(&url, bus_config()).await;
        let (session, acknowledged) = (shared.clone(), Arc::clone(&acknowledged));
        tasks.push(tokio::spawn(async move {
            let mut timeline = Timeline::default();
            let mut index = 0;
            while Instant::now() < end {
                let text = format!("append {client}-{index}");
                index += 1;
                let request = AppendSessionNodesRequest {
                    nodes: vec![SessionAppendNode::message("User", text)],
                    requires_ancestor_node_id: None,
                };
                let started = Instant::now();
                let result = bus.append_session_nodes(&session, request).await;
                timeline.record(started, &result);
                match result {
                    Ok(AppendSessionNodesResult::Appended { node_ids, .. }) => {
                        lock(&acknowledged).appends.push(node_ids)
                    }
                    Ok(other) => panic!("an unconditional append was refused: {other:?}"),
                    Err(_) => {}
                }
            }
            (format!("append-{client}"), timeline)
        }));
    }
    for (client, session) in turn_sessions.iter().enumerate() {
        let bus = support::bus(&url, bus_config()).await;
        let (session, acknowledged) = (session.clone(), Arc::clone(&acknowledged));
        tasks.push(tokio::spawn(async move {
            let mut timeline = Timeline::default();
            let mut index = 0;
            while Instant::now() < end {
                let turn_id = format!("turn-{client}-{index}");
                let request =
                    SessionTurnRequest::for_turn(&session, &turn_id, TurnInput::text(format!("hi {turn_id}")))
                        .expect("turn");
                let started = Instant::now();
                let result = bus.start_turn(request).await;
                timeline.record(started, &result);
                if result.is_ok() {
                    lock(&acknowledged).turns.push((session.clone(), turn_id));
                    index += 1;
                }
                // A failed turn id is retried (the same id must not run twice).
            }
            (format!("turn-{client}"), timeline)
        }));
    }
    for client in 0..2 {
        let bus = support::bus(&url, bus_config()).await.bound(shared.clone());
        let acknowledged = Arc::clone(&acknowledged);
        tasks.push(tokio::spawn(async move {
            let mut timeline = Timeline::default();
            let mut index = 0;
            while Instant::now() < end {
                let marker = format!("trace-{client}-{index}");
                index += 1;
                let mut extra = Map::new();
                extra.insert("marker".into(), Value::String(marker.clone()));
                let context = TraceContext { extra, ..TraceContext::default() };
                let started = Instant::now();
                let result = bus.emit_trace_event(context, TraceEvent::turn_started()).await;
                timeline.record(started, &result);
                if result.is_ok() {
                    lock(&acknowledged).traces.push(marker);
                }
            }
            (format!("trace-{client}"), timeline)
        }));
    }
    {
        let bus = support::bus(&url, bus_config()).await;
        let session = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut timeline = Timeline::default();
            while Instant::now() < end {
                let started = Instant::now();
                let result = bus.snapshot_session(&session).await;
                timeline.record(started, &result);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ("snapshot".to_owned(), timeline)
        }));
    }
    // The raw probes: one writer per stream, each through its own connection, each
    // request waiting at most 250 ms.
    let mut raw_probes = Vec::new();
    for (stream, subject) in RAW_PROBES {
        let client = support::connect(&url).await;
        raw_probes.push((
            stream,
            tokio::spawn(async move {
                let mut timeline = Timeline::default();
                let mut n = 0u64;
                while Instant::now() < end {
                    n += 1;
                    let request = async_nats::Request::new()
                        .payload(n.to_string().into())
                        .timeout(Some(Duration::from_millis(250)));
                    let started = Instant::now();
                    let result = match client.send_request(subject.to_owned(), request).await {
                        Ok(reply) if !String::from_utf8_lossy(&reply.payload).contains("\"error\"") => Ok(()),
                        Ok(reply) => {
                            Err(PluginError::Unavailable(String::from_utf8_lossy(&reply.payload).into_owned()))
                        }
                        Err(err) => Err(PluginError::Unavailable(err.to_string())),
                    };
                    timeline.record(started, &result);
                    if result.is_err() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                timeline
            }),
        ));
    }

    tokio::time::sleep_until(kill_at.into()).await;
    // Who leads what, read from JetStream right before the kill.
    let mut leaders_at_kill = BTreeMap::new();
    for stream in [STATE_STREAM, TOOLS_STREAM, TRACE_STREAM] {
        leaders_at_kill.insert(stream, cluster.stream_leader(&admin, stream).await);
    }
    cluster.kill(victim);
    let killed = Instant::now();

    let timelines: Vec<(String, Timeline)> = bounded("the workload", after_kill + Duration::from_secs(90), async {
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.expect("a workload task panicked"));
        }
        out
    })
    .await;
    let mut raw = BTreeMap::new();
    for (stream, probe) in raw_probes {
        raw.insert(stream, probe.await.expect("raw probe"));
    }
    let finished = Instant::now();
    support::keep_worker_logs("node_loss", &workers.iter().collect::<Vec<_>>());
    for worker in &workers {
        assert!(!worker.stderr().contains("panicked"), "a worker panicked:\n{}", worker.stderr());
    }
    let workers_exited: Vec<String> =
        workers.iter_mut().filter_map(|w| (!w.is_running()).then(|| w.id().to_owned())).collect();
    let killed_node_led: Vec<&str> =
        leaders_at_kill.iter().filter(|(_, leader)| **leader == Some(victim)).map(|(stream, _)| *stream).collect();
    let leaders_at_kill: BTreeMap<&str, Option<String>> = leaders_at_kill
        .iter()
        .map(|(stream, leader)| (*stream, leader.map(|index| cluster.name(index).to_owned())))
        .collect();

    // --- Stalls and typed failures. A stall is the longest time without a success
    // after the kill (a gap that began before it counts from the kill): for the raw
    // probes too, so a slow call in flight at the kill does not count against the bus.
    let window_end = end.min(finished);
    let since_kill = |at: Instant| {
        at.saturating_duration_since(killed).as_secs_f64() - killed.saturating_duration_since(at).as_secs_f64()
    };
    let window =
        |from: Instant, stall: Duration| format!("{:+.2} s .. {:+.2} s", since_kill(from), since_kill(from + stall));
    let mut raw_stalls = BTreeMap::new();
    let mut raw_windows = BTreeMap::new();
    for (stream, timeline) in &raw {
        let (from, stall) = timeline.longest_stall_window(killed, window_end);
        raw_stalls.insert(*stream, stall);
        raw_windows.insert(*stream, window(from, stall));
    }
    let raw_longest = raw_stalls.values().copied().max().unwrap_or_default();
    let mut stalls = BTreeMap::new();
    let mut stall_windows = BTreeMap::new();
    let mut excess = BTreeMap::new();
    let mut over_slack = Vec::new();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut untyped = Vec::new();
    let mut not_resumed = Vec::new();
    let mut longest_call = Duration::ZERO;
    for (name, timeline) in &timelines {
        let (from, stall) = timeline.longest_stall_window(killed, window_end);
        stalls.insert(name.clone(), stall.as_secs_f64());
        stall_windows.insert(name.clone(), window(from, stall));
        // The raw stall of the streams this client's calls use.
        let streams: &[&str] = match name.split('-').next().unwrap_or_default() {
            "toggle" => &[TOOLS_STREAM],
            "append" => &[STATE_STREAM],
            "trace" => &[TRACE_STREAM],
            "snapshot" => &[STATE_STREAM, TOOLS_STREAM],
            _ => &[STATE_STREAM, TOOLS_STREAM, TRACE_STREAM],
        };
        let raw_reference = streams.iter().map(|s| raw_stalls[s]).max().unwrap_or_default();
        excess.insert(name.clone(), stall.as_secs_f64() - raw_reference.as_secs_f64());
        if stall > raw_reference + STALL_SLACK {
            over_slack.push(format!(
                "{name}: {:.2} s, raw stall of {streams:?} {:.2} s",
                stall.as_secs_f64(),
                raw_reference.as_secs_f64()
            ));
        }
        longest_call = longest_call.max(timeline.longest_call);
        for (kind, message) in &timeline.failures {
            *failures.entry(format!("{kind:?}")).or_default() += 1;
            if !matches!(kind, ErrorKind::Unavailable | ErrorKind::Conflict) {
                untyped.push(format!("{name}: {kind:?}: {message}"));
            }
        }
        if !timeline.succeeded_after(killed) {
            not_resumed.push(name.clone());
        }
    }
    let bus_stall = stalls.values().copied().fold(0.0, f64::max);
    let failure_samples: Vec<String> = timelines
        .iter()
        .flat_map(|(name, t)| t.failures.iter().map(move |(k, m)| format!("{name}: {k:?}: {m}")))
        .take(12)
        .collect();

    // --- Nothing acknowledged is lost: toggles against the audit of every revision
    // stored. Each revision names its predecessor on its subject (`Nats-Last-Sequence`),
    // so a revision whose republished event died with the killed leader is still proven
    // stored by the next one (`audit::unseen`); only its body is unknown.
    let acknowledged = std::mem::take(&mut *lock(&acknowledged));
    let checker = support::bus(&url, bus_config()).await;
    let tools_key = format!("$KV.SESSIONBUS_TOOLS.{shared_token}");
    let last_tools = support::get_last(&admin, TOOLS_STREAM, &tools_key).await.expect("the tool state").seq;
    let tool_history = recorder.history(&audited_tools, Duration::from_secs(30), |h| h.contains_key(&last_tools)).await;
    let unseen_tools = audit::unseen(&tool_history, first_generation);
    let tool_names: Vec<String> = (0..togglers).map(|client| format!("t{client}")).collect();
    let mut toggles_not_stored = 0;
    let mut toggles_without_own = 0;
    for (client, index, present, generation) in &acknowledged.toggles {
        match tool_history.get(generation) {
            None if !audit::stored(&tool_history, *generation) => toggles_not_stored += 1,
            Some(stored) if is_member(&stored.body, &tool_names[*client]) != Some(*present) => {
                eprintln!("toggler {client}: toggle {index} acknowledged at {generation} without its toggle");
                toggles_without_own += 1;
            }
            _ => {}
        }
    }
    // A revert shows between neighbours in JetStream's chain (not across an unseen one).
    let reverted: usize = audit::chain_runs(&tool_history)
        .iter()
        .map(|run| audit::count_reverts(run.iter().map(|r| &r.body), &tool_names))
        .sum();
    let distinct: HashSet<u64> = acknowledged.toggles.iter().map(|(_, _, _, g)| *g).collect();
    let duplicated_generations = acknowledged.toggles.len() - distinct.len();
    // The final state against each toggler's last acknowledged toggle (a missing tool
    // counts as lost).
    let mut last_toggle: BTreeMap<usize, (usize, bool)> = BTreeMap::new();
    for (client, index, present, _) in &acknowledged.toggles {
        let entry = last_toggle.entry(*client).or_insert((*index, *present));
        if *index >= entry.0 {
            *entry = (*index, *present);
        }
    }
    let final_tools = serde_json::to_value(checker.tool_state(&shared).await.expect("tool state")).expect("json");
    let lost_toggles = last_toggle
        .iter()
        .filter(|(client, (_, present))| is_member(&final_tools, &tool_names[**client]) != Some(*present))
        .count();

    // --- Appends against the stored graph (the session's snapshot after the workload),
    // which must agree with the audit: each run of chain neighbours in the audit is one
    // contiguous stretch of the snapshot, in order, the first at its start and the last
    // at its end; between runs lie only the nodes of unseen records.
    let graph_subject = format!("sessionbus.v1.state.{shared_token}.graph");
    let last_graph = support::get_last(&admin, STATE_STREAM, &graph_subject).await.expect("a graph").seq;
    let graph_history =
        recorder.history(&audited_graph, Duration::from_secs(30), |h| h.contains_key(&last_graph)).await;
    let first_graph = graph_history.values().next().expect("graph revisions");
    assert_eq!(first_graph.previous, 0, "the audit recorded the session's first graph record");
    let unseen_graph = audit::unseen(&graph_history, first_graph.seq);
    let snapshot = checker.snapshot_session(&shared).await.expect("snapshot");
    let stored_nodes = &snapshot.session_graph.nodes;
    let snapshot_ids: Vec<&str> = stored_nodes.iter().map(|n| n.node_id.as_str()).collect();
    let mut position = 0;
    let mut snapshot_matches_audit = true;
    for (run_index, run) in audit::chain_runs(&graph_history).iter().enumerate() {
        let run_nodes: Vec<SessionNode> = run
            .iter()
            .flat_map(|r| {
                serde_json::from_value::<Vec<SessionNode>>(r.body["nodes"].clone()).expect("graph record nodes")
            })
            .collect();
        let run_ids: Vec<&str> = run_nodes.iter().map(|n| n.node_id.as_str()).collect();
        let Some(first_id) = run_ids.first() else { continue };
        let start = if run_index == 0 {
            Some(0)
        } else {
            snapshot_ids[position..].iter().position(|id| id == first_id).map(|offset| position + offset)
        };
        match start {
            Some(start) if snapshot_ids[start..].starts_with(&run_ids) => position = start + run_ids.len(),
            _ => {
                snapshot_matches_audit = false;
                break;
            }
        }
    }
    snapshot_matches_audit &= position == snapshot_ids.len();
    let mut stored_ids: HashMap<&str, usize> = HashMap::new();
    for id in &snapshot_ids {
        *stored_ids.entry(id).or_default() += 1;
    }
    let acknowledged_ids: Vec<&String> = acknowledged.appends.iter().flatten().collect();
    let lost_appends = acknowledged_ids.iter().filter(|id| !stored_ids.contains_key(id.as_str())).count();
    let duplicated_appends = acknowledged_ids.iter().filter(|id| stored_ids.get(id.as_str()) > Some(&1)).count();
    let duplicated_nodes = stored_ids.values().filter(|c| **c > 1).count();
    let graph_forks = stored_nodes
        .iter()
        .enumerate()
        .filter(|(i, node)| node.parent_node_id != i.checked_sub(1).map(|p| stored_nodes[p].node_id.clone()))
        .count();

    let mut lost_turns = 0;
    let mut duplicated_turn_nodes = 0;
    for session in &turn_sessions {
        let snapshot = checker.snapshot_session(session).await.expect("snapshot");
        let acked: Vec<&String> =
            acknowledged.turns.iter().filter(|(s, _)| s == session).map(|(_, turn)| turn).collect();
        assert!(snapshot.turn_index >= acked.len() as u64, "turn index below the acknowledged turns");
        // Echo turns store two nodes (the input and the echo), caused by the turn.
        let mut by_turn: HashMap<String, usize> = HashMap::new();
        for node in &snapshot.session_graph.nodes {
            if let Some(turn) = node.caused_by.as_ref().and_then(|c| c["turn_id"].as_str()) {
                *by_turn.entry(turn.to_owned()).or_default() += 1;
            }
        }
        duplicated_turn_nodes += by_turn.values().filter(|c| **c > 2).count();
        let token = session_token(session).expect("token");
        for turn in acked {
            let ledger =
                support::get_last(&admin, STATE_STREAM, &format!("sessionbus.v1.state.{token}.turn.{turn}")).await;
            let completed = ledger.as_ref().is_some_and(|m| m.json()["status"] == "completed");
            if !completed || by_turn.get(turn.as_str()) != Some(&2) {
                lost_turns += 1;
            }
        }
    }

    let mut stored_markers: HashMap<String, usize> = HashMap::new();
    for message in support::read_all(&admin, TRACE_STREAM, &format!("sessionbus.v1.trace.{shared_token}")).await {
        if let Some(marker) = message.json()["context"]["marker"].as_str() {
            *stored_markers.entry(marker.to_owned()).or_default() += 1;
        }
    }
    let lost_traces = acknowledged.traces.iter().filter(|m| !stored_markers.contains_key(*m)).count();
    let duplicated_traces = stored_markers.values().filter(|c| **c > 1).count();

    report(
        "node_loss",
        json!({
            "killed_node": cluster.name(victim),
            "leaders_at_kill": leaders_at_kill,
            "killed_node_led": killed_node_led,
            "workload_clients": timelines.len(),
            "calls_succeeded": timelines.iter().map(|(_, t)| t.successes.len()).sum::<usize>(),
            "calls_failed_by_kind": failures,
            "failure_samples": failure_samples,
            "untyped_failures": untyped.len(),
            "clients_not_resumed": not_resumed,
            "workers": workers.len(),
            "workers_exited": workers_exited,
            "raw_kv_longest_stall_s": raw_stalls[TOOLS_STREAM].as_secs_f64(),
            "raw_longest_stall_s": raw_longest.as_secs_f64(),
            "raw_stall_by_stream_s": raw_stalls.iter().map(|(k, v)| (k.to_string(), json!(v.as_secs_f64()))).collect::<Map<_, _>>(),
            "raw_stall_windows_since_kill": raw_windows,
            "bus_longest_stall_s": bus_stall,
            "bus_stall_by_client_s": stalls,
            "bus_stall_windows_since_kill": stall_windows,
            "bus_stall_beyond_raw_by_client_s": excess,
            "clients_over_1s_beyond_their_streams_raw_stall": over_slack,
            "bus_longest_single_call_s": longest_call.as_secs_f64(),
            "audited_tool_revisions": tool_history.len(),
            "audited_tool_revisions_unseen_but_chained": unseen_tools,
            "toggles_acknowledged": acknowledged.toggles.len(),
            "toggles_acknowledged_not_stored": toggles_not_stored,
            "toggles_acknowledged_without_own_toggle": toggles_without_own,
            "tool_revisions_reverting_another_toggle": reverted,
            "final_state_lost_toggles": lost_toggles,
            "generations_duplicated": duplicated_generations,
            "audited_graph_records": graph_history.len(),
            "audited_graph_records_unseen_but_chained": unseen_graph,
            "stored_graph_nodes": stored_nodes.len(),
            "appends_acknowledged": acknowledged.appends.len(),
            "appended_nodes_acknowledged": acknowledged_ids.len(),
            "appended_nodes_lost": lost_appends,
            "appended_nodes_duplicated": duplicated_appends,
            "graph_nodes_duplicated": duplicated_nodes,
            "graph_forks": graph_forks,
            "snapshot_matches_audit": snapshot_matches_audit,
            "turns_acknowledged": acknowledged.turns.len(),
            "turns_lost": lost_turns,
            "turn_nodes_duplicated": duplicated_turn_nodes,
            "traces_acknowledged": acknowledged.traces.len(),
            "traces_lost": lost_traces,
            "traces_duplicated": duplicated_traces,
        }),
    );
    assert_eq!(
        killed_node_led,
        [TOOLS_STREAM, STATE_STREAM, TRACE_STREAM], // in the order of their names
        "the killed node led every sessionbus stream at the kill: {leaders_at_kill:?}"
    );
    assert!(workers_exited.is_empty(), "worker processes exited: {workers_exited:?}");
    assert!(untyped.is_empty(), "calls failed with untyped errors: {untyped:?}");
    assert!(not_resumed.is_empty(), "clients never succeeded after the kill: {not_resumed:?}");
    // Only the events the killed leader had in flight may be unseen.
    for (name, unseen, recorded) in
        [("tool", &unseen_tools, tool_history.len()), ("graph", &unseen_graph, graph_history.len())]
    {
        assert!(unseen.len() * 100 <= recorded, "the audit missed {} of {recorded} {name} revisions", unseen.len());
    }
    assert_eq!(toggles_not_stored, 0, "an acknowledged generation is not a stored revision");
    assert_eq!(toggles_without_own, 0, "an acknowledged generation does not hold its toggle");
    assert_eq!(reverted, 0, "a stored revision reverted another client's toggle");
    assert_eq!(lost_toggles, 0, "the final state differs from a toggler's last acknowledged toggle");
    assert_eq!(duplicated_generations, 0, "a generation was acknowledged twice");
    assert_eq!(lost_appends, 0, "an acknowledged append's node is not stored");
    assert_eq!(duplicated_appends, 0, "an acknowledged append's node is stored twice");
    assert_eq!(duplicated_nodes, 0, "a node id is stored twice");
    assert_eq!(graph_forks, 0, "the graph forked");
    assert!(snapshot_matches_audit, "the session's snapshot differs from the audited graph records");
    assert_eq!(lost_turns, 0, "an acknowledged turn is lost or stored twice");
    assert_eq!(duplicated_turn_nodes, 0, "a turn's nodes are stored twice");
    assert_eq!(lost_traces, 0, "an acknowledged trace record is lost");
    assert_eq!(duplicated_traces, 0, "a trace record is stored twice");
    assert!(
        over_slack.is_empty(),
        "clients stalled more than {STALL_SLACK:?} beyond the raw stall of their own streams: {over_slack:?}"
    );
}
