//! On a replicated stream, nats-server checks a conditioned write against the stream as
//! applied so far, and holds it back only while a write conditioned on the same subject
//! string is in flight. An append is conditioned on the session's wildcard (`<sid>.>`),
//! so a turn's commit and a close, which write other subjects, must also put one write
//! conditioned on that wildcard in their batch, or an append sent while their batch is
//! in flight is stored after it on the graph it did not see (decision 0028).
//!
//! Each round starts the append the moment the batch's first message reaches the server
//! (a subscriber on its subject sees it), from a host whose view is current just
//! before the batch, on a 3-node cluster with R3 streams.

mod common;

use std::sync::Arc;

use futures::StreamExt as _;
use sessionbus_api::{
    AppendSessionNodesRequest, AppendSessionNodesResult, EchoExecutor, PluginError, SessionAppendNode,
    SessionGraphService as _, SessionLifecycleService as _, SessionSnapshot, SessionStateService as _, TurnExecutor,
};
use sessionbus_nats::jetstream::{JetStreamHost, JetStreamHostConfig, LayoutConfig};
use sessionbus_nats::subjects::session_token;
use sessionbus_testkit::{NatsCluster, subscribe_confirmed};

const ROUNDS: usize = 12;

async fn host_on(cluster: &NatsCluster, node: usize, executor: Arc<dyn TurnExecutor>) -> JetStreamHost {
    let client = cluster.client_to(node).await.expect("connect");
    let config = JetStreamHostConfig::default();
    let layout = LayoutConfig::default().with_replicas(3);
    sessionbus_nats::jetstream::ensure_layout(&async_nats::jetstream::new(client.clone()), &config.subjects, &layout)
        .await
        .expect("the R3 layout");
    JetStreamHost::connect(client, executor, config).await.expect("host")
}

fn one_message(text: &str) -> AppendSessionNodesRequest {
    AppendSessionNodesRequest { nodes: vec![SessionAppendNode::message("User", text)], requires_ancestor_node_id: None }
}

/// Every node of the graph hangs off the one before it: nothing forked.
fn assert_one_chain(snapshot: &SessionSnapshot, round: usize) {
    let nodes = &snapshot.session_graph.nodes;
    for pair in nodes.windows(2) {
        assert_eq!(
            pair[1].parent_node_id.as_deref(),
            Some(pair[0].node_id.as_str()),
            "round {round}: the graph forked: {nodes:#?}"
        );
    }
}

/// Subscribes to `subject` and, when the first message of an atomic batch arrives on it,
/// appends `text` through `appender`. The append's outcome comes back on the handle.
async fn append_when_a_batch_reaches(
    cluster: &NatsCluster,
    subject: String,
    appender: JetStreamHost,
    session: String,
    text: &'static str,
) -> tokio::task::JoinHandle<Result<AppendSessionNodesResult, PluginError>> {
    let watcher = cluster.client_to(0).await.expect("connect");
    let mut batches = subscribe_confirmed(&watcher, &subject).await.expect("watch the batch's subject");
    tokio::spawn(async move {
        let _keep = watcher;
        loop {
            let message = batches.next().await.expect("the batch arrives");
            if message.headers.as_ref().is_some_and(|h| h.get("Nats-Batch-Id").is_some()) {
                break;
            }
        }
        appender.append_session_nodes(&session, one_message(text)).await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_sent_while_a_turn_commits_on_r3_lands_after_it_on_one_chain() {
    let cluster = NatsCluster::start().await.expect("a 3-node cluster");
    let gate = common::Gated::default();
    let runner = host_on(&cluster, 0, Arc::new(gate.clone())).await;
    let appender = host_on(&cluster, 1, Arc::new(EchoExecutor)).await;
    let reader = host_on(&cluster, 2, Arc::new(EchoExecutor)).await;
    let subjects = JetStreamHostConfig::default().subjects;
    for round in 0..ROUNDS {
        let session = common::create_root(&runner).await;
        let turn = common::start_gated_turn(&runner, &gate, &session, "t").await;
        // The appender's view is current just before the commit.
        appender.snapshot_session(&session).await.expect("the appender's view");
        let lease = subjects.lease(&session_token(&session).expect("token"));
        let append = append_when_a_batch_reaches(&cluster, lease, appender.clone(), session.clone(), "racing").await;
        gate.release.notify_one();
        turn.await.expect("the turn's task").expect("the turn commits");
        let appended = append.await.expect("the append's task").expect("the append is acknowledged");
        assert!(matches!(appended, AppendSessionNodesResult::Appended { .. }), "round {round}: {appended:?}");
        let snapshot = reader.snapshot_session(&session).await.expect("snapshot");
        assert_one_chain(&snapshot, round);
        assert_eq!(snapshot.session_graph.nodes.len(), 3, "round {round}: the turn's two nodes and the append");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_sent_while_a_session_closes_on_r3_is_stored_before_the_close_or_refused() {
    let cluster = NatsCluster::start().await.expect("a 3-node cluster");
    let closer = host_on(&cluster, 0, Arc::new(EchoExecutor)).await;
    let appender = host_on(&cluster, 1, Arc::new(EchoExecutor)).await;
    let admin = cluster.client_to(2).await.expect("connect");
    let stream = async_nats::jetstream::new(admin).get_stream("SESSIONBUS_STATE").await.expect("the state stream");
    let subjects = JetStreamHostConfig::default().subjects;
    for round in 0..ROUNDS {
        let session = common::create_root(&closer).await;
        appender.snapshot_session(&session).await.expect("the appender's view");
        let lease = subjects.lease(&session_token(&session).expect("token"));
        let append = append_when_a_batch_reaches(&cluster, lease, appender.clone(), session.clone(), "late").await;
        closer.close_session(&session).await.expect("close");
        let appended = append.await.expect("the append's task");
        let stored = |subject: String| {
            let stream = stream.clone();
            async move { stream.get_last_raw_message_by_subject(&subject).await.map(|m| m.sequence).ok() }
        };
        let token = session_token(&session).expect("token");
        let (closed_at, graph_at) = (stored(subjects.lease(&token)).await, stored(subjects.graph(&token)).await);
        match appended {
            // Appended before the close: its record is stored before the close's.
            Ok(_) => assert!(
                graph_at.is_some_and(|graph| closed_at.is_some_and(|closed| graph < closed)),
                "round {round}: an acknowledged append is stored after the close (graph {graph_at:?}, close {closed_at:?})"
            ),
            Err(err) => {
                assert!(matches!(err, PluginError::SessionClosed { .. }), "round {round}: {err}");
                assert_eq!(graph_at, None, "round {round}: a refused append stored nothing");
            }
        }
    }
}
