//! One test per concurrency invariant of the JetStream host (numbered as in the tests'
//! comments: fenced turns, serialised lifecycle, chained appends, retries applied once,
//! real conflicts only, leader reads, leases), each written so that it
//! fails when the invariant is broken. Real nats-server, real JetStream.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt as _;
use sessionbus_api::conformance::GatedExecutor;
use sessionbus_api::{
    AppendSessionNodesRequest, AppendSessionNodesResult, EchoExecutor, ErrorKind, PluginError, SessionAppendNode,
    SessionCreateRequest, SessionGraphService, SessionLifecycleService, SessionStateService, SessionTurnRequest,
    ToolManifest, ToolState, TurnInput,
};
use sessionbus_nats::request_context::with_request_id;
use sessionbus_nats::{JetStreamHostConfig, STATE_STREAM};
use sessionbus_testkit::subscribe_confirmed;

const BOUND: Duration = Duration::from_secs(60);

fn turn(session_id: &str, turn_id: &str, text: &str) -> SessionTurnRequest {
    SessionTurnRequest::for_turn(session_id, turn_id, TurnInput::text(text)).expect("valid turn")
}

fn message(text: &str) -> AppendSessionNodesRequest {
    AppendSessionNodesRequest { nodes: vec![SessionAppendNode::message("User", text)], requires_ancestor_node_id: None }
}

fn short_lease() -> JetStreamHostConfig {
    JetStreamHostConfig::default()
        .with_lease_ttl(Duration::from_secs(2))
        .with_lease_renew_every(Duration::from_millis(300))
}

/// 1 (fenced turns) and 8 (leases): a worker that cannot renew its lease loses the turn
/// to another worker after the TTL; its own commit is then refused and nothing it
/// wrote becomes visible. The turn commits exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_lost_its_lease_cannot_commit() {
    let server = common::server();
    let stalled_gate = GatedExecutor::new();
    // The stalled worker "renews" far less often than its TTL: it behaves like a worker
    // paused by SIGSTOP or a partition.
    let stalled = common::jetstream_host_with(
        &server,
        stalled_gate.clone(),
        JetStreamHostConfig::default()
            .with_lease_ttl(Duration::from_secs(2))
            .with_lease_renew_every(Duration::from_secs(3600)),
    )
    .await;
    let healthy = common::jetstream_host_with(&server, Arc::new(EchoExecutor), short_lease()).await;
    let session = common::create_root(&stalled).await;

    let first = tokio::spawn({
        let stalled = stalled.clone();
        let request = turn(&session, "t1", "hello");
        async move { stalled.start_turn(request).await }
    });
    stalled_gate.wait_started(1).await;
    // While the lease is live, another worker attaches instead of running the turn.
    let takeover = tokio::time::timeout(BOUND, healthy.start_turn(turn(&session, "t1", "hello")))
        .await
        .expect("takeover within bound")
        .expect("the healthy worker takes over after the TTL and commits");
    // Now let the stalled worker try to commit.
    stalled_gate.release();
    let refused = tokio::time::timeout(BOUND, first).await.expect("bounded").expect("join");
    let err = refused.expect_err("the stalled worker's commit must be refused");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.message().contains("lost its lease"), "{err}");

    let snapshot = healthy.snapshot_session(&session).await.expect("snapshot");
    assert_eq!(snapshot.turn_index, 1, "the turn committed exactly once");
    assert_eq!(snapshot.session_graph.nodes.len(), 2, "no node of the fenced worker is visible");
    assert_eq!(snapshot.session_graph, takeover.state.session_graph);
    let again = stalled.start_turn(turn(&session, "t1", "hello")).await.expect("completed turn id");
    assert_eq!(again.state.session_graph, takeover.state.session_graph);
}

/// 8 (leases): a turn that runs longer than the lease TTL keeps its lease by renewing
/// it; another turn, started once the first lease write is older than the TTL, is
/// refused, and the long turn commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_lease_outlives_its_ttl() {
    let server = common::server();
    let ttl = short_lease().lease_ttl;
    let host =
        common::jetstream_host_with(&server, Arc::new(common::SlowExecutor(Duration::from_secs(8))), short_lease())
            .await;
    let other = common::jetstream_host_with(&server, Arc::new(EchoExecutor), short_lease()).await;
    let session = common::create_root(&host).await;
    // Every stored lease write of the session, as republished.
    let watcher = server.client().await.expect("connect");
    let token = sessionbus_nats::subjects::session_token(&session).expect("token");
    let mut lease_writes =
        subscribe_confirmed(&watcher, format!("sessionbus.v1.events.{token}.lease")).await.expect("subscribe");
    let long = tokio::spawn({
        let host = host.clone();
        let request = turn(&session, "long", "slow");
        async move { host.start_turn(request).await }
    });
    // The lease is taken: from here its first write expires after the TTL unless renewed.
    tokio::time::timeout(Duration::from_secs(10), lease_writes.next())
        .await
        .expect("the lease is taken")
        .expect("a write");
    let taken = tokio::time::Instant::now();
    // Renewals keep coming past the TTL of the first write.
    let mut renewals = 0;
    while taken.elapsed() <= ttl + Duration::from_millis(500) {
        tokio::time::timeout(Duration::from_secs(10), lease_writes.next()).await.expect("a renewal").expect("a write");
        renewals += 1;
    }
    assert!(!long.is_finished(), "the long turn ended before its lease outlived its TTL");
    let refused = other.start_turn(turn(&session, "other", "x")).await.expect_err("the session is busy");
    assert_eq!(refused.kind(), ErrorKind::Conflict, "{refused} (after {renewals} renewals)");
    let result = tokio::time::timeout(BOUND, long).await.expect("bounded").expect("join").expect("long turn commits");
    assert_eq!(result.state.turn_index, 1);
}

/// 3 (serialised lifecycle): close racing start_turn leaves either a closed session
/// with no turn committed after the close, or a committed turn on a session closed
/// after it; never a running lease on a closed session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_racing_start_turn_is_serialised() {
    let server = common::server();
    let a = common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await;
    let b = common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await;
    let js = jetstream::new(server.client().await.expect("connect"));
    let stream = js.get_stream(STATE_STREAM).await.expect("state stream");
    for round in 0..20 {
        let session = common::create_root(&a).await;
        let (turned, closed) =
            tokio::join!(a.start_turn(turn(&session, &format!("t{round}"), "x")), b.close_session(&session));
        let lease_subject = format!("sessionbus.v1.state.{session}.lease");
        let lease = stream.get_last_raw_message_by_subject(&lease_subject).await.expect("lease written");
        let lease_body: serde_json::Value = serde_json::from_slice(&lease.payload).expect("json");
        assert_ne!(lease_body["state"], "held", "round {round}: a lease is left held: {lease_body}");
        match (&turned, &closed) {
            (Ok(_), Ok(())) => {
                // Both succeeded: the turn must have committed before the close.
                let ledger = stream
                    .get_last_raw_message_by_subject(&format!("sessionbus.v1.state.{session}.turn.t{round}"))
                    .await
                    .expect("ledger");
                assert!(ledger.sequence < lease.sequence, "round {round}: a turn committed after the close");
                assert_eq!(lease_body["state"], "closed");
            }
            (Ok(_), Err(err)) => {
                assert_eq!(err.kind(), ErrorKind::Conflict, "round {round}: {err}");
            }
            (Err(err), Ok(())) => {
                assert!(err.message().contains("closed"), "round {round}: {err}");
                let snapshot = a.snapshot_session(&session).await.expect("snapshot");
                assert_eq!(snapshot.turn_index, 0, "round {round}: a refused turn left a commit");
            }
            (Err(t), Err(c)) => panic!("round {round}: both failed: {t} / {c}"),
        }
    }
}

/// 4 (appends chain without forks): two workers append to one session at once; every
/// acknowledged append is in the chain exactly once, and the chain never forks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_from_two_workers_form_one_chain() {
    let server = common::server();
    let hosts = [
        common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await,
        common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await,
    ];
    let session = common::create_root(&hosts[0]).await;
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks = (0..8).map(|task| {
        let host = hosts[task % 2].clone();
        let session = session.clone();
        let acknowledged = Arc::clone(&acknowledged);
        async move {
            for n in 0..15 {
                match host.append_session_nodes(&session, message(&format!("{task}-{n}"))).await.expect("append") {
                    AppendSessionNodesResult::Appended { node_ids, .. } => {
                        acknowledged.lock().unwrap().extend(node_ids)
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    });
    tokio::time::timeout(BOUND, futures::future::join_all(tasks)).await.expect("bounded");
    let snapshot = hosts[1].snapshot_session(&session).await.expect("snapshot");
    let nodes = &snapshot.session_graph.nodes;
    for (i, node) in nodes.iter().enumerate() {
        let expected_parent = i.checked_sub(1).map(|p| nodes[p].node_id.clone());
        assert_eq!(node.parent_node_id, expected_parent, "fork at node {i}");
    }
    let stored: Vec<String> = nodes.iter().map(|n| n.node_id.clone()).collect();
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "a node is stored twice");
    let mut acknowledged = acknowledged.lock().unwrap().clone();
    acknowledged.sort();
    let mut stored_sorted = stored.clone();
    stored_sorted.sort();
    assert_eq!(acknowledged, stored_sorted, "acknowledged appends and stored nodes differ");
}

/// 5 (retries apply once and answer the same): the same append request id, retried on
/// the same worker and on another one with a cold cache, returns the same node ids and
/// stores the nodes once; a request that makes two writes (create with initial nodes)
/// stores both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_writes_apply_once_and_answer_the_same() {
    let server = common::server();
    let a = common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await;
    let b = common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await;
    let session = common::new_id();
    let mut create = SessionCreateRequest::root(Some(session.clone()));
    create.initial_nodes = vec![SessionAppendNode::message("System", "be brief")];
    let request_id = common::new_id();
    let handle = with_request_id(request_id.clone(), a.create_session(create.clone())).await.expect("create");
    let retried =
        with_request_id(request_id.clone(), b.create_session(create)).await.expect("a retried create answers the same");
    assert_eq!(handle, retried);
    let snapshot = a.snapshot_session(&session).await.expect("snapshot");
    assert_eq!(snapshot.session_graph.nodes.len(), 1, "both writes of the create (meta and graph) are stored");

    let append_id = common::new_id();
    let first =
        with_request_id(append_id.clone(), a.append_session_nodes(&session, message("once"))).await.expect("append");
    let again =
        with_request_id(append_id.clone(), a.append_session_nodes(&session, message("once"))).await.expect("retry");
    let elsewhere =
        with_request_id(append_id.clone(), b.append_session_nodes(&session, message("once"))).await.expect("retry");
    assert_eq!(first, again);
    assert_eq!(first, elsewhere);
    let snapshot = b.snapshot_session(&session).await.expect("snapshot");
    assert_eq!(snapshot.session_graph.nodes.len(), 2, "the retried append is stored once");

    let mut tools = ToolState::default();
    tools.insert(ToolManifest::new("tool:bash", "bash", "Run a shell command."));
    let apply_id = common::new_id();
    let generation =
        with_request_id(apply_id.clone(), a.apply_tool_state(&session, tools.clone())).await.expect("apply");
    let retried = with_request_id(apply_id, b.apply_tool_state(&session, tools))
        .await
        .expect("a retried apply is not a conflict");
    assert_eq!(generation, retried);
}

/// 6 (conflicts are real conflicts): many writers on one tool state at once; every
/// success has a distinct generation, and every `Conflict` names an actual generation
/// different from the expected one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_real_conflicts_are_reported() {
    let server = common::server();
    let hosts = [
        common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await,
        common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await,
    ];
    let session = common::new_id();
    let mut tools = ToolState::default();
    tools.insert(ToolManifest::new("tool:bash", "bash", ""));
    let start = hosts[0].apply_tool_state(&session, tools.clone()).await.expect("create");
    let successes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let conflicts = Arc::new(AtomicUsize::new(0));
    let tasks = (0..16).map(|task| {
        let host = hosts[task % 2].clone();
        let session = session.clone();
        let successes = Arc::clone(&successes);
        let conflicts = Arc::clone(&conflicts);
        let mut state = tools.clone();
        async move {
            for _ in 0..10 {
                state.generation = host.tool_state(&session).await.expect("read").generation;
                match host.apply_tool_state(&session, state.clone()).await {
                    Ok(generation) => successes.lock().unwrap().push(generation),
                    Err(err) => {
                        let PluginError::GenerationMismatch { expected, actual } = err else {
                            panic!("a lost write must be a generation mismatch: {err:?}")
                        };
                        assert_ne!(expected, actual, "a conflict was reported for a matching generation: {err}");
                        conflicts.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }
    });
    tokio::time::timeout(BOUND, futures::future::join_all(tasks)).await.expect("bounded");
    let mut successes = successes.lock().unwrap().clone();
    let distinct: HashSet<u64> = successes.iter().copied().collect();
    assert_eq!(distinct.len(), successes.len(), "a generation was acknowledged twice");
    assert!(conflicts.load(Ordering::SeqCst) > 0, "16 writers on one key met no conflict: the test raced nothing");
    // Every write stored after `start` was acknowledged as a success: a write reported
    // as a conflict but stored anyway would leave a revision nobody was told about.
    successes.sort();
    let last = hosts[0].tool_state(&session).await.expect("read").generation;
    assert_eq!(successes, (start + 1..=last).collect::<Vec<_>>(), "stored revisions and acknowledged successes differ");
}

/// 7 (decisions read the leader): a workload of every kind of decision (tool CAS,
/// appends, turns, close) reads every value it decides on through
/// `$JS.API.STREAM.MSG.GET` (the leader). Direct gets, which a lagging replica may
/// answer, only fetch runs of records up to a sequence a leader read reported (decision
/// 0022): here, of the session's graph; never a last value, never another subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_read_the_stream_leader() {
    let server = common::server();
    let host = common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await;
    let watcher = server.client().await.expect("connect");
    let mut direct = subscribe_confirmed(&watcher, "$JS.API.DIRECT.GET.>").await.expect("subscribe");
    let mut leader = subscribe_confirmed(&watcher, "$JS.API.STREAM.MSG.GET.>").await.expect("subscribe");
    let session = common::create_root(&host).await;
    let mut tools = ToolState::default();
    tools.insert(ToolManifest::new("tool:bash", "bash", ""));
    host.apply_tool_state(&session, tools).await.expect("apply");
    host.set_tool_membership(&session, &["bash".into()], false).await.expect("toggle");
    host.append_session_nodes(&session, message("x")).await.expect("append");
    host.start_turn(turn(&session, "t1", "hi")).await.expect("turn");
    host.close_session(&session).await.expect("close");
    let leader_reads = tokio::time::timeout(Duration::from_secs(2), leader.next()).await;
    assert!(matches!(leader_reads, Ok(Some(_))), "decisions must read through MSG.GET");
    let graph =
        format!("sessionbus.v1.state.{}.graph", sessionbus_nats::subjects::session_token(&session).expect("token"));
    while let Ok(Some(read)) = tokio::time::timeout(Duration::from_millis(500), direct.next()).await {
        let request: serde_json::Value = serde_json::from_slice(&read.payload).expect("a JSON request");
        let fields: HashSet<&str> = request.as_object().expect("an object").keys().map(String::as_str).collect();
        assert_eq!(request["next_by_subj"], graph.as_str(), "a direct get of another subject: {request}");
        assert!(request["batch"].as_u64().is_some_and(|batch| batch > 0), "not a batch: {request}");
        assert!(fields.is_subset(&HashSet::from(["seq", "next_by_subj", "batch", "max_bytes"])), "{request}");
    }
}
