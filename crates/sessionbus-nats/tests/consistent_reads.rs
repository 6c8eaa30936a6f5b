//! A snapshot is consistent at one stream sequence: its meta, graph and leaf agree.
//! With the echo executor every turn adds two nodes, so a snapshot taken while turns
//! commit always has exactly `2 x turn_index` nodes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sessionbus_api::{
    EchoExecutor, SessionLifecycleService as _, SessionStateService as _, SessionTurnRequest, TurnInput,
};
use sessionbus_nats::JetStreamHostConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_taken_while_turns_commit_agree_with_their_turn_index() {
    let server = common::server();
    let writer = common::jetstream_host_with(&server, Arc::new(EchoExecutor), JetStreamHostConfig::default()).await;
    // The reader is another host (another worker), with its own view of the session.
    let reader = common::jetstream_host_with(&server, Arc::new(EchoExecutor), JetStreamHostConfig::default()).await;
    let session = common::create_root(&writer).await;
    let done = Arc::new(AtomicBool::new(false));
    let turns = {
        let (writer, session, done) = (writer.clone(), session.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            for index in 0..150 {
                let turn =
                    SessionTurnRequest::for_turn(&session, format!("t{index}"), TurnInput::text("hi")).expect("turn");
                writer.start_turn(turn).await.expect("turn");
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut snapshots = 0;
    while !done.load(Ordering::SeqCst) {
        let snapshot = reader.snapshot_session(&session).await.expect("snapshot");
        let nodes = snapshot.session_graph.nodes.len() as u64;
        assert_eq!(
            nodes,
            2 * snapshot.turn_index,
            "a torn snapshot: {nodes} nodes at turn_index {}",
            snapshot.turn_index
        );
        let leaf = snapshot.session_graph.leaf_node_id.clone();
        assert_eq!(leaf, snapshot.session_graph.nodes.last().map(|n| n.node_id.clone()), "the leaf is the last node");
        snapshots += 1;
    }
    turns.await.expect("turns");
    assert!(snapshots > 50, "the reader raced the writer ({snapshots} snapshots)");
}
