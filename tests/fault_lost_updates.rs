//! No lost update on an R3 cluster: 16 clients toggle their own tool of one shared
//! session with `set_tool_membership` while 8 clients append to the same session's graph,
//! through two `sessionbus worker` processes on a 3-node JetStream cluster.
//!
//! Checked against what JetStream stored, not against what the clients believe:
//! - every acknowledged generation is distinct, and is a stored revision of the tool
//!   state that holds the acknowledging client's toggle;
//! - no stored revision reverts another client's toggle (consecutive revisions differ in
//!   at most one tool: a write made from a stale read would differ in two or more);
//! - the final tool state equals each client's last acknowledged toggle;
//! - every acknowledged append is in the graph exactly once, in one chain.
//!
//! The full history of the tool state is kept by an audit that records the tools bucket's
//! republished events (the bucket itself keeps only 64 revisions per key).

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::{Value, json};
use sessionbus_api::sync::lock;
use sessionbus_api::{
    AppendSessionNodesRequest, AppendSessionNodesResult, ErrorKind, SessionAppendNode, SessionCreateRequest,
    SessionGraphService, SessionLifecycleService, SessionStateService, ToolManifest, ToolState,
};
use sessionbus_nats::BusClientConfig;
use sessionbus_nats::subjects::session_token;
use support::audit::{self, is_member};
use support::{bounded, report, scaled};

const TOGGLERS: usize = 16;
const APPENDERS: usize = 8;

fn tool_name(client: usize) -> String {
    format!("tool-{client:02}")
}

#[derive(Default)]
struct Tally {
    /// (client, toggle index, present, generation) of every acknowledged toggle.
    acknowledged: Vec<(usize, usize, bool, u64)>,
    /// Failed calls by error kind (each was retried until acknowledged).
    failed: BTreeMap<String, u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_togglers_and_appenders_lose_nothing_on_r3() {
    let toggles = scaled(200, 2000);
    let appends = scaled(40, 400);
    let cluster = support::cluster().await;
    let url = cluster.nats_url();
    let _workers = [
        support::worker(&cluster.url(0), &["--replicas", "3"]).await,
        support::worker(&format!("{},{}", cluster.url(1), cluster.url(2)), &["--replicas", "3"]).await,
    ];
    let admin = support::connect(&url).await;
    let session = support::new_id();
    let token = session_token(&session).expect("token");

    // The audit: every revision of this session's tool state, as republished.
    let audited = format!("sessionbus.v1.events.{token}.tools");
    let recorder = audit::Recorder::start(&admin, std::slice::from_ref(&audited)).await;
    let js = jetstream::new(admin.clone());

    let setup = support::bus(&url, BusClientConfig::default()).await;
    support::wait_ready(&setup).await;
    setup.create_session(SessionCreateRequest::root(Some(session.clone()))).await.expect("create");
    let mut tools = ToolState::default();
    for client in 0..TOGGLERS {
        tools.insert(ToolManifest::new(format!("tool:{}", tool_name(client)), tool_name(client), ""));
    }
    let first_generation = setup.apply_tool_state(&session, tools).await.expect("initial tool state");

    let tally = Arc::new(Mutex::new(Tally::default()));
    let appended = Arc::new(Mutex::new(Vec::<(String, Vec<String>)>::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..TOGGLERS {
        let bus = support::bus(&url, BusClientConfig::default()).await;
        let session = session.clone();
        let tally = Arc::clone(&tally);
        tasks.push(tokio::spawn(async move {
            let names = [tool_name(client)];
            for index in 0..toggles {
                // Every tool starts as a member: toggle 0 removes it, toggle 1 adds it back...
                let present = index % 2 == 1;
                loop {
                    match bus.set_tool_membership(&session, &names, present).await {
                        Ok(generation) => {
                            lock(&tally).acknowledged.push((client, index, present, generation));
                            break;
                        }
                        Err(err) => {
                            assert!(
                                matches!(err.kind(), ErrorKind::Conflict | ErrorKind::Unavailable),
                                "an untyped failure: {err}"
                            );
                            *lock(&tally).failed.entry(format!("{:?}", err.kind())).or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
        }));
    }
    for client in 0..APPENDERS {
        let bus = support::bus(&url, BusClientConfig::default()).await;
        let session = session.clone();
        let appended = Arc::clone(&appended);
        tasks.push(tokio::spawn(async move {
            for index in 0..appends {
                let text = format!("append {client}-{index}");
                let request = AppendSessionNodesRequest {
                    nodes: vec![SessionAppendNode::message("User", text.clone())],
                    requires_ancestor_node_id: None,
                };
                match bus.append_session_nodes(&session, request).await.expect("append") {
                    AppendSessionNodesResult::Appended { node_ids, .. } => {
                        lock(&appended).push((text, node_ids));
                    }
                    other => panic!("an append without an ancestor condition was refused: {other:?}"),
                }
            }
        }));
    }
    bounded("the workload", Duration::from_secs(scaled(240, 3000)), async {
        for task in tasks {
            task.await.expect("a client task panicked");
        }
    })
    .await;
    let elapsed = started.elapsed();

    // --- Tool state: distinct, stored, and no stored revision reverts another's toggle.
    let tally = std::mem::take(&mut *lock(&tally));
    assert_eq!(tally.acknowledged.len(), TOGGLERS * toggles);
    let generations: Vec<u64> = tally.acknowledged.iter().map(|(_, _, _, g)| *g).collect();
    let distinct: HashSet<u64> = generations.iter().copied().collect();
    let duplicated_generations = generations.len() - distinct.len();

    // Republished events come right after the bucket stores them; wait (at most 20 s)
    // until the last acknowledged one is there.
    let last = *generations.iter().max().expect("some generations");
    let history: BTreeMap<u64, Value> = bounded(
        "reading the audit",
        Duration::from_secs(120),
        recorder.history(&audited, Duration::from_secs(20), |stored| stored.contains_key(&last)),
    )
    .await
    .into_iter()
    .map(|(revision, event)| (revision, event.body))
    .collect();
    let revisions: Vec<u64> = history.keys().copied().collect();
    assert_eq!(revisions.first().copied(), Some(first_generation), "the audit starts at the first revision");
    let expected: Vec<u64> = (first_generation..=*revisions.last().expect("revisions")).collect();
    assert_eq!(revisions, expected, "the audit misses revisions (it must hold every one to judge)");

    let mut not_stored = 0;
    let mut without_own_toggle = 0;
    for (client, index, present, generation) in &tally.acknowledged {
        match history.get(generation) {
            None => not_stored += 1,
            Some(state) if is_member(state, &tool_name(*client)) != Some(*present) => {
                eprintln!("client {client} toggle {index} acknowledged at {generation} without its toggle");
                without_own_toggle += 1;
            }
            Some(_) => {}
        }
    }
    let all_tools: Vec<String> = (0..TOGGLERS).map(tool_name).collect();
    let reverted = audit::count_reverts(history.values(), &all_tools);
    let final_state = setup.tool_state(&session).await.expect("final tool state");
    let final_json = serde_json::to_value(&final_state).expect("json");
    let mut last_acknowledged: HashMap<usize, (usize, bool)> = HashMap::new();
    for (client, index, present, _) in &tally.acknowledged {
        let entry = last_acknowledged.entry(*client).or_insert((*index, *present));
        if *index >= entry.0 {
            *entry = (*index, *present);
        }
    }
    let lost_toggles = (0..TOGGLERS)
        .filter(|client| is_member(&final_json, &tool_name(*client)) != Some(last_acknowledged[client].1))
        .count();

    // --- Graph: every acknowledged append once, one chain.
    let snapshot = setup.snapshot_session(&session).await.expect("snapshot");
    let nodes = &snapshot.session_graph.nodes;
    let mut forks = 0;
    for (position, node) in nodes.iter().enumerate() {
        let expected_parent = position.checked_sub(1).map(|p| nodes[p].node_id.clone());
        if node.parent_node_id != expected_parent {
            forks += 1;
        }
    }
    let mut stored_ids: HashMap<&str, usize> = HashMap::new();
    for node in nodes {
        *stored_ids.entry(node.node_id.as_str()).or_default() += 1;
    }
    let duplicated_nodes = stored_ids.values().filter(|count| **count > 1).count();
    let appended = lock(&appended).clone();
    let lost_appends =
        appended.iter().flat_map(|(_, ids)| ids).filter(|id| !stored_ids.contains_key(id.as_str())).count();
    let mut texts: HashMap<String, usize> = HashMap::new();
    for node in nodes {
        if let Some(text) = node.conversation_text() {
            *texts.entry(text).or_default() += 1;
        }
    }
    let texts_not_once = appended.iter().filter(|(text, _)| texts.get(text).copied() != Some(1)).count();

    report(
        "lost_updates",
        json!({
            "cluster_nodes": 3,
            "replicas": 3,
            "workers": 2,
            "togglers": TOGGLERS,
            "toggles_per_client": toggles,
            "toggles_acknowledged": tally.acknowledged.len(),
            "failed_calls_retried": tally.failed,
            "generations_distinct": distinct.len(),
            "generations_duplicated": duplicated_generations,
            "acknowledged_not_stored": not_stored,
            "acknowledged_without_own_toggle": without_own_toggle,
            "stored_revisions": history.len(),
            "revisions_reverting_another_toggle": reverted,
            "final_state_lost_toggles": lost_toggles,
            "appenders": APPENDERS,
            "appends_acknowledged": appended.len(),
            "graph_nodes": nodes.len(),
            "appends_lost": lost_appends,
            "appends_not_exactly_once": texts_not_once,
            "graph_nodes_duplicated": duplicated_nodes,
            "graph_forks": forks,
            "elapsed_s": elapsed.as_secs_f64(),
        }),
    );
    assert_eq!(duplicated_generations, 0, "an acknowledged generation was handed out twice");
    assert_eq!(not_stored, 0, "an acknowledged generation is not a stored revision");
    assert_eq!(without_own_toggle, 0, "an acknowledged generation does not hold its toggle");
    assert_eq!(reverted, 0, "a stored revision reverted another client's toggle (a lost update)");
    assert_eq!(lost_toggles, 0, "the final state differs from a client's last acknowledged toggle");
    assert_eq!(nodes.len(), APPENDERS * appends, "the graph holds exactly the acknowledged appends");
    assert_eq!(lost_appends, 0, "an acknowledged append is missing");
    assert_eq!(texts_not_once, 0, "an acknowledged append is not in the graph exactly once");
    assert_eq!(duplicated_nodes, 0, "a node is stored twice");
    assert_eq!(forks, 0, "the graph forked");

    // The check has teeth: a write made from a stale read (an old revision that differs
    // from the last one in several tools, stored without a condition) is flagged.
    let last = history.values().next_back().expect("revisions").clone();
    let stale = history
        .values()
        .find(|old| all_tools.iter().filter(|tool| is_member(old, tool) != is_member(&last, tool)).count() > 1)
        .expect("an old revision that differs in several tools")
        .clone();
    let subject = format!("$KV.SESSIONBUS_TOOLS.{token}");
    js.publish(subject, serde_json::to_vec(&stale).expect("json").into())
        .await
        .expect("publish")
        .await
        .expect("a stale write without a condition is stored");
    let with_stale = recorder.history(&audited, Duration::from_secs(10), |stored| stored.len() > history.len()).await;
    assert_eq!(
        audit::count_reverts(with_stale.values().map(|r| &r.body), &all_tools),
        1,
        "the checker must flag a write made from a stale read"
    );
}
