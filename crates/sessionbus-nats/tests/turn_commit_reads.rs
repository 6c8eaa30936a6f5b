//! A turn's commit is conditioned on the meta and graph its snapshot read (the session's
//! view, current under the turn's lease), so it reads neither again before committing;
//! a write that lands while the turn runs refuses that first batch, and the commit then
//! reads the leader and keeps the write.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sessionbus_api::{
    AppendSessionNodesRequest, EchoExecutor, PluginError, SessionAppendNode, SessionGraphService as _,
    SessionLifecycleService as _, SessionStateService as _, SessionTurnRequest, TurnContext, TurnExecutor, TurnInput,
    TurnOutput,
};
use sessionbus_testkit::subscribe_confirmed;
use tokio::sync::Notify;

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
async fn a_turn_commits_on_what_its_snapshot_read_without_reading_meta_and_graph_again() {
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
    // Before the lease: meta, lease and ledger. Under it, the snapshot: the session's
    // last sequence, then meta, lease and graph (the lease and ledger writes moved it).
    assert_eq!(reads.get("meta"), Some(&2), "{reads:?}");
    assert_eq!(reads.get("graph"), Some(&1), "{reads:?}");
    assert_eq!(reads.values().sum::<usize>(), 8, "{reads:?}");
}

/// Says it started, then waits to be released before it echoes.
struct Gated {
    started: Arc<Notify>,
    release: Arc<Notify>,
}

#[async_trait::async_trait]
impl TurnExecutor for Gated {
    async fn run(&self, context: TurnContext) -> Result<TurnOutput, PluginError> {
        self.started.notify_one();
        self.release.notified().await;
        EchoExecutor.run(context).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_that_lands_while_a_turn_runs_is_kept_and_the_turn_commits_after_it() {
    let server = common::server();
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let executor = Gated { started: Arc::clone(&started), release: Arc::clone(&release) };
    let _worker = common::serve_jetstream(&server, Arc::new(executor)).await;
    let bus = common::client_on(&server).await;
    let session = common::create_root(&bus).await;

    let turn = SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("question")).expect("a turn");
    let running = tokio::spawn({
        let bus = bus.clone();
        async move { bus.start_turn(turn).await }
    });
    tokio::time::timeout(Duration::from_secs(10), started.notified()).await.expect("the turn starts");
    // Another host (a second worker) appends while the turn runs: the turn's worker
    // does not see it in its view.
    let other = common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await;
    let append = AppendSessionNodesRequest {
        nodes: vec![SessionAppendNode::message("User", "appended during the turn")],
        requires_ancestor_node_id: None,
    };
    other.append_session_nodes(&session, append).await.expect("an append while the turn runs");
    release.notify_one();
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
