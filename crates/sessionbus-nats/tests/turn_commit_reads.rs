//! A turn decides, and commits, on the worker's view of the session, and takes its
//! snapshot from it once the leader shows that nothing but the turn's lease and ledger
//! was written since (decision 0027). A write from elsewhere makes the turn read the
//! session again and keep it; a refusal is answered only on a view the leader confirms
//! current.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use sessionbus_api::{
    AppendSessionNodesRequest, EchoExecutor, SessionAppendNode, SessionGraphService as _, SessionLifecycleService as _,
    SessionStateService as _, SessionTurnRequest, TurnInput,
};
use sessionbus_testkit::subscribe_confirmed;

/// The leader reads (`STREAM.MSG.GET`) `sniffer` sees until it has been quiet for
/// 500 ms, by the last token of the subject each asked for.
async fn leader_reads(sniffer: &mut async_nats::Subscriber) -> BTreeMap<String, usize> {
    common::count_until_quiet(sniffer, |message| {
        let request: serde_json::Value = serde_json::from_slice(&message.payload).expect("a JSON read request");
        let subject = request["last_by_subj"].as_str().or(request["next_by_subj"].as_str()).unwrap_or("?");
        subject.rsplit('.').next().unwrap_or(subject).to_owned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_turn_reads_its_ledger_its_cancel_request_and_two_proofs_that_its_view_is_current() {
    let server = common::server();
    let _worker = common::serve_jetstream(&server, Arc::new(EchoExecutor)).await;
    let bus = common::client_on(&server).await;
    let session = common::create_root(&bus).await;
    let turn = |id: &str| SessionTurnRequest::for_turn(&session, id, TurnInput::text("hello")).expect("a turn");
    bus.start_turn(turn("warm-up")).await.expect("the first turn");
    let sniffing = server.client().await.expect("connect");
    let mut sniffer = subscribe_confirmed(&sniffing, "$JS.API.STREAM.MSG.GET.>").await.expect("watch leader reads");

    bus.start_turn(turn("measured")).await.expect("the second turn");
    let reads = leader_reads(&mut sniffer).await;
    // The worker's view of the session is current after the first turn's commit: the
    // decision takes the meta and lease from it, and the snapshot the view once the
    // session's next two writes after it (`<sid>.>`) are shown to be the turn's lease
    // and ledger. The turn's own ledger and cancel request are not in the view.
    assert_eq!(reads.get("measured"), Some(&2), "the ledger and the cancel request: {reads:?}");
    assert_eq!(reads.get(">"), Some(&2), "the writes after the view's sequence and after the lease: {reads:?}");
    assert_eq!(reads.values().sum::<usize>(), 4, "{reads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_started_on_a_stale_view_sees_what_another_host_wrote_since() {
    let server = common::server();
    let gate = common::Gated::default();
    let host = common::jetstream_host_on(&server, Arc::new(gate.clone())).await;
    let other = common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await;
    let session = common::create_root(&host).await;
    gate.release.notify_one();
    host.start_turn(SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("one")).expect("a turn"))
        .await
        .expect("the first turn, which leaves the host's view current");
    let append = AppendSessionNodesRequest {
        nodes: vec![SessionAppendNode::message("User", "written by another host")],
        requires_ancestor_node_id: None,
    };
    other.append_session_nodes(&session, append).await.expect("an append from another host");

    gate.release.notify_one();
    host.start_turn(SessionTurnRequest::for_turn(&session, "t2", TurnInput::text("two")).expect("a turn"))
        .await
        .expect("the second turn");
    let seen = gate.seen.lock().expect("lock").clone();
    assert!(
        seen.last().is_some_and(|nodes| nodes.iter().any(|text| text.contains("written by another host"))),
        "the second turn's snapshot holds the other host's append: {seen:?}"
    );
    let snapshot = host.snapshot_session(&session).await.expect("snapshot");
    let nodes = &snapshot.session_graph.nodes;
    for pair in nodes.windows(2) {
        assert_eq!(pair[1].parent_node_id.as_deref(), Some(pair[0].node_id.as_str()), "one chain: {nodes:?}");
    }
    assert_eq!(snapshot.turn_index, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_is_not_refused_for_a_turn_that_ended_after_this_host_last_looked() {
    let server = common::server();
    let gate = common::Gated::default();
    let runner = common::jetstream_host_on(&server, Arc::new(gate.clone())).await;
    let host = common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await;
    let session = common::create_root(&host).await;
    let running = common::start_gated_turn(&runner, &gate, &session, "t1").await;
    // This host's view now holds the first turn's lease, alive.
    host.snapshot_session(&session).await.expect("snapshot while the first turn runs");
    gate.release.notify_one();
    running.await.expect("the first turn's task").expect("the first turn commits");

    host.start_turn(SessionTurnRequest::for_turn(&session, "t2", TurnInput::text("two")).expect("a turn"))
        .await
        .expect("the second turn runs: the first one's lease is free");
    assert_eq!(host.snapshot_session(&session).await.expect("snapshot").turn_index, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_that_lands_while_a_turn_runs_is_kept_and_the_turn_commits_after_it() {
    let server = common::server();
    let gate = common::Gated::default();
    let _worker = common::serve_jetstream(&server, Arc::new(gate.clone())).await;
    let bus = common::client_on(&server).await;
    let session = common::create_root(&bus).await;

    let running = common::start_gated_turn(&bus, &gate, &session, "question").await;
    // Another host (a second worker) appends while the turn runs: the turn's worker
    // does not see it in its view.
    let other = common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await;
    let append = AppendSessionNodesRequest {
        nodes: vec![SessionAppendNode::message("User", "appended during the turn")],
        requires_ancestor_node_id: None,
    };
    other.append_session_nodes(&session, append).await.expect("an append while the turn runs");
    gate.release.notify_one();
    running.await.expect("the turn's task").expect("the turn commits");

    let snapshot = bus.snapshot_session(&session).await.expect("snapshot");
    let nodes = &snapshot.session_graph.nodes;
    let text = |i: usize| serde_json::to_string(&nodes[i]).expect("json");
    let appended =
        (0..nodes.len()).find(|&i| text(i).contains("appended during the turn")).expect("the append is kept");
    let answered = (0..nodes.len()).find(|&i| text(i).contains("question")).expect("the turn's nodes are committed");
    assert!(appended < answered, "the turn commits after the append: {nodes:?}");
    for pair in nodes.windows(2) {
        assert_eq!(pair[1].parent_node_id.as_deref(), Some(pair[0].node_id.as_str()), "one chain: {nodes:?}");
    }
    assert_eq!(snapshot.turn_index, 1);
}
