//! Worker loss and zombie workers, with real `sessionbus worker` processes.
//!
//! - Worker loss: SIGKILL the worker while it runs a turn; the client's retry with the same
//!   turn id completes on another worker; the ledger records one completed result; the
//!   graph holds the turn's nodes once.
//! - Zombie: SIGSTOP the worker running a turn past its lease TTL; another worker takes the
//!   turn over and commits; SIGCONT the first: its commit is refused (fenced) and nothing it
//!   writes becomes visible.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use sessionbus_api::{
    SessionCreateRequest, SessionLifecycleService, SessionStateService, SessionTurnRequest, TurnInput,
};
use sessionbus_nats::{BusClient, BusClientConfig};
use sessionbus_testkit::{NatsServer, WorkerProcess};

const SLOW: [&str; 6] = ["--executor", "slow", "--turn-delay-ms", "3000", "--lease-ttl-secs", "2"];

fn client_config() -> BusClientConfig {
    // Progress comes every 2 s from a live worker; 3 s of silence means it is gone.
    BusClientConfig { turn_idle_timeout: Duration::from_secs(3), attempts: 10, ..BusClientConfig::default() }
}

/// Ledger statuses of `turn_id`, as republished for every stored write.
async fn ledger_events(nats: &async_nats::Client, session: &str, turn_id: &str) -> async_nats::Subscriber {
    let subscriber = nats.subscribe(format!("sessionbus.v1.events.{session}.turn.{turn_id}")).await.expect("subscribe");
    nats.flush().await.expect("flush");
    subscriber
}

async fn next_status(events: &mut async_nats::Subscriber, limit: Duration) -> Option<String> {
    let message = tokio::time::timeout(limit, events.next()).await.ok()??;
    let body: serde_json::Value = serde_json::from_slice(&message.payload).ok()?;
    body["status"].as_str().map(str::to_owned)
}

/// Collects every status until `limit` passes without one.
async fn drain_statuses(events: &mut async_nats::Subscriber, quiet: Duration) -> Vec<String> {
    let mut statuses = Vec::new();
    while let Some(status) = next_status(events, quiet).await {
        statuses.push(status);
    }
    statuses
}

async fn assert_committed_once(client: &BusClient, session: &str) {
    let snapshot = client.snapshot_session(session).await.expect("snapshot");
    assert_eq!(snapshot.turn_index, 1, "the turn committed once");
    let ids: Vec<&str> = snapshot.session_graph.nodes.iter().map(|n| n.node_id.as_str()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "a node is stored twice");
    assert_eq!(ids.len(), 2, "the echo turn's two nodes, once: {ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_turn_completes_once_on_another() {
    let server = NatsServer::start().expect("nats-server");
    let mut first = WorkerProcess::start(&server.url(), &SLOW).await.expect("worker");
    let nats = server.client().await.expect("connect");
    let client = BusClient::new(nats.clone(), client_config());
    let session = format!("loss-{}", uuid::Uuid::new_v4().simple());
    client.create_session(SessionCreateRequest::root(Some(session.clone()))).await.expect("create");
    let mut events = ledger_events(&nats, &session, "t1").await;
    let turn = tokio::spawn({
        let client = client.clone();
        let request = SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("survive")).expect("turn");
        async move { client.start_turn(request).await }
    });
    assert_eq!(next_status(&mut events, Duration::from_secs(10)).await.as_deref(), Some("running"));
    let _second = WorkerProcess::start(&server.url(), &SLOW).await.expect("worker");
    first.kill();
    let killed_at = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(60), turn).await.expect("bounded").expect("join");
    let result = result.expect("the retry with the same turn id completes on the other worker");
    println!("worker loss: the turn completed {:?} after the SIGKILL", killed_at.elapsed());
    assert_eq!(result.state.turn_index, 1);
    let statuses = drain_statuses(&mut events, Duration::from_secs(2)).await;
    assert_eq!(statuses.iter().filter(|s| *s == "completed").count(), 1, "ledger writes after the kill: {statuses:?}");
    assert_committed_once(&client, &session).await;
    let again = client
        .start_turn(SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("survive")).expect("turn"))
        .await
        .expect("a completed turn id answers from the ledger");
    assert_eq!(again.state.session_graph, result.state.session_graph);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_woken_after_a_takeover_cannot_commit() {
    let server = NatsServer::start().expect("nats-server");
    let zombie = WorkerProcess::start(&server.url(), &SLOW).await.expect("worker");
    let nats = server.client().await.expect("connect");
    let client = BusClient::new(nats.clone(), client_config());
    let session = format!("zombie-{}", uuid::Uuid::new_v4().simple());
    client.create_session(SessionCreateRequest::root(Some(session.clone()))).await.expect("create");
    let mut events = ledger_events(&nats, &session, "t1").await;
    let turn = tokio::spawn({
        let client = client.clone();
        let request = SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("who commits?")).expect("turn");
        async move { client.start_turn(request).await }
    });
    assert_eq!(next_status(&mut events, Duration::from_secs(10)).await.as_deref(), Some("running"));
    zombie.stop().expect("SIGSTOP");
    let _healthy = WorkerProcess::start(&server.url(), &SLOW).await.expect("worker");
    let result = tokio::time::timeout(Duration::from_secs(90), turn).await.expect("bounded").expect("join");
    let result = result.expect("another worker takes the turn over and commits");
    let committed = client.snapshot_session(&session).await.expect("snapshot");
    // Wake the zombie: its executor's sleep is long over, so it tries to commit now.
    zombie.cont().expect("SIGCONT");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = client.snapshot_session(&session).await.expect("snapshot");
    assert_eq!(after.session_graph, committed.session_graph, "nothing the zombie wrote is visible");
    assert_eq!(after.turn_index, 1);
    assert_eq!(result.state.session_graph, after.session_graph);
    let statuses = drain_statuses(&mut events, Duration::from_secs(1)).await;
    assert_eq!(statuses.iter().filter(|s| *s == "completed").count(), 1, "{statuses:?}");
    assert_committed_once(&client, &session).await;
    let log = zombie.stderr();
    assert!(log.contains("lost its lease") || log.contains("renewal refused"), "the zombie was not fenced: {log}");
    println!("zombie: takeover committed; the woken worker's commit was refused (fenced)");
}
