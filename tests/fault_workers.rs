//! Worker loss and zombie workers, with real `sessionbus worker` processes.
//!
//! - Worker loss: SIGKILL the worker while it runs a turn; the client's retry with the same
//!   turn id completes on another worker; the ledger records one completed result; the
//!   graph holds the turn's nodes once.
//! - Zombie: SIGSTOP the worker running a turn past its lease TTL; another worker takes the
//!   turn over and commits; SIGCONT the first: it goes straight to its commit (it renews
//!   its lease only every 10 minutes, so it never learns of the takeover by a renewal), the
//!   commit is refused (fenced on the lease sequence it held) and nothing it writes
//!   becomes visible.
//!
//! The ledger is read back from the state stream (every record of the turn), not from
//! events that might still be in flight.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use sessionbus_api::{
    AssembledTurn, PluginError, SessionCreateRequest, SessionLifecycleService, SessionStateService, SessionTurnRequest,
    TurnInput,
};
use sessionbus_nats::subjects::session_token;
use sessionbus_nats::{BusClient, BusClientConfig, LiveEvent, STATE_STREAM};
use sessionbus_testkit::{NatsServer, WorkerConfig, WorkerProcess};

const SLOW: [&str; 6] = ["--executor", "slow", "--turn-delay-ms", "3000", "--lease-ttl-secs", "2"];
/// A worker that never renews a lease within a turn (every 10 minutes): after a SIGCONT
/// its turn goes straight from the executor to the commit.
const SLOW_NO_RENEWAL: [&str; 8] =
    ["--executor", "slow", "--turn-delay-ms", "3000", "--lease-ttl-secs", "2", "--lease-renew-ms", "600000"];
/// What the worker logs when a turn's commit is refused because another worker took its
/// lease (crates/sessionbus-nats/src/jetstream/turns.rs).
const COMMIT_FENCED: &str = "commit refused: the turn lost its lease to another worker";
/// What it logs when a renewal is refused (the run stops before any commit).
const RENEWAL_REFUSED: &str = "lease renewal refused";
/// What it logs when the release that follows a failed commit is refused too.
const RELEASE_REFUSED: &str = "could not record a failed turn";

fn client_config() -> BusClientConfig {
    // Progress comes every 2 s from a live worker; 3 s of silence means it is gone.
    BusClientConfig::default().with_turn_idle_timeout(Duration::from_secs(3)).with_attempts(10)
}

/// Ledger statuses of `turn_id`, as republished for every stored write.
async fn ledger_events(nats: &async_nats::Client, session: &str, turn_id: &str) -> async_nats::Subscriber {
    let subject = format!("sessionbus.v1.events.{session}.turn.{turn_id}");
    sessionbus_testkit::subscribe_confirmed(nats, subject).await.expect("subscribe")
}

async fn next_status(events: &mut async_nats::Subscriber, limit: Duration) -> Option<String> {
    let message = tokio::time::timeout(limit, events.next()).await.ok()??;
    let body: serde_json::Value = serde_json::from_slice(&message.payload).ok()?;
    body["status"].as_str().map(str::to_owned)
}

/// A turn running on a worker of `server`: its connection, client and session, and the
/// task awaiting the turn's answer.
struct RunningTurn {
    nats: async_nats::Client,
    client: BusClient,
    session: String,
    turn: tokio::task::JoinHandle<Result<AssembledTurn, PluginError>>,
    /// The session's live output, subscribed before the turn started.
    live: async_nats::Subscriber,
}

/// Creates a session named `<name>-<uuid>` and starts its turn `t1` with `input` on the
/// workers of `server`; returns once the ledger says the turn runs.
async fn running_turn(server: &NatsServer, name: &str, input: &str) -> RunningTurn {
    let nats = server.client().await.expect("connect");
    let client = BusClient::new(nats.clone(), client_config());
    let session = format!("{name}-{}", uuid::Uuid::new_v4().simple());
    client.create_session(SessionCreateRequest::root(Some(session.clone()))).await.expect("create");
    let mut events = ledger_events(&nats, &session, "t1").await;
    let live_subject = format!("sessionbus.v1.live.{}", session_token(&session).expect("token"));
    let live = sessionbus_testkit::subscribe_confirmed(&nats, live_subject).await.expect("subscribe");
    let turn = tokio::spawn({
        let client = client.clone();
        let request = SessionTurnRequest::for_turn(&session, "t1", TurnInput::text(input)).expect("turn");
        async move { client.start_turn(request).await }
    });
    assert_eq!(next_status(&mut events, Duration::from_secs(10)).await.as_deref(), Some("running"));
    RunningTurn { nats, client, session, turn, live }
}

/// Every ledger record of `turn_id` stored in the state stream: their statuses, in order.
async fn stored_statuses(nats: &async_nats::Client, session: &str, turn_id: &str) -> Vec<String> {
    let token = session_token(session).expect("token");
    support::read_all(nats, STATE_STREAM, &format!("sessionbus.v1.state.{token}.turn.{turn_id}"))
        .await
        .iter()
        .map(|m| m.json()["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Waits, within `limit`, until the woken zombie's commit attempt is over: it logged the
/// refused commit and the refused release that follows, or a second `completed` ledger
/// record is stored (its commit went through). Returns its log.
async fn wait_for_zombie_commit(
    zombie: &WorkerProcess,
    nats: &async_nats::Client,
    session: &str,
    limit: Duration,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let log = zombie.stderr();
        if (log.contains(COMMIT_FENCED) && log.contains(RELEASE_REFUSED))
            || stored_statuses(nats, session, "t1").await.iter().filter(|s| *s == "completed").count() > 1
        {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "the woken worker neither logged a refused commit nor committed within {limit:?}; its log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let RunningTurn { nats, client, session, turn, .. } = running_turn(&server, "loss", "survive").await;
    let _second = WorkerProcess::start(&server.url(), &SLOW).await.expect("worker");
    first.kill();
    let killed_at = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(60), turn).await.expect("bounded").expect("join");
    let result = result.expect("the retry with the same turn id completes on the other worker");
    let completed_after = killed_at.elapsed();
    println!("worker loss: the turn completed {completed_after:?} after the SIGKILL");
    assert_eq!(result.state.turn_index, 1);
    let statuses = stored_statuses(&nats, &session, "t1").await;
    support::report(
        "worker_loss",
        serde_json::json!({
            "completed_after_kill_s": completed_after.as_secs_f64(),
            "lease_ttl_s": 2,
            "turn_delay_s": 3,
            "stored_ledger_statuses": statuses,
            "graph_nodes": result.state.session_graph.nodes.len(),
        }),
    );
    assert_eq!(statuses.iter().filter(|s| *s == "completed").count(), 1, "stored ledger records: {statuses:?}");
    assert_committed_once(&client, &session).await;
    let again = client
        .start_turn(SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("survive")).expect("turn"))
        .await
        .expect("a completed turn id answers from the ledger");
    assert_eq!(again.state.session_graph, result.state.session_graph);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_woken_after_a_takeover_has_its_commit_refused() {
    let server = NatsServer::start().expect("nats-server");
    // Debug logs of the JetStream host: a failure shows which path the woken worker took.
    let config = WorkerConfig::default().with_args(SLOW_NO_RENEWAL).with_env("RUST_LOG", "warn,sessionbus_nats=debug");
    let zombie = WorkerProcess::start_with(&server.url(), &config).await.expect("worker");
    let RunningTurn { nats, client, session, turn, mut live } = running_turn(&server, "zombie", "who commits?").await;
    // Stopped inside its executor, not before: a worker stopped while it still reads the
    // snapshot fails that read when it wakes and never reaches the commit this tests.
    let started = tokio::time::timeout(Duration::from_secs(10), live.next()).await.expect("bounded");
    assert!(started.as_ref().and_then(LiveEvent::of).is_some(), "the slow executor says it started: {started:?}");
    zombie.stop().expect("SIGSTOP");
    let stopped_at = Instant::now();
    let _healthy = WorkerProcess::start(&server.url(), &SLOW).await.expect("worker");
    let result = tokio::time::timeout(Duration::from_secs(90), turn).await.expect("bounded").expect("join");
    let result = result.expect("another worker takes the turn over and commits");
    let committed = client.snapshot_session(&session).await.expect("snapshot");
    assert_eq!(stored_statuses(&nats, &session, "t1").await.iter().filter(|s| *s == "completed").count(), 1);
    // The zombie slept through the whole 3 s turn: its executor is done the moment it
    // wakes, and its next renewal is minutes away, so it commits at once.
    assert!(stopped_at.elapsed() > Duration::from_secs(3), "the zombie was stopped for less than its turn");
    zombie.cont().expect("SIGCONT");
    let woke_at = Instant::now();
    let log = wait_for_zombie_commit(&zombie, &nats, &session, Duration::from_secs(30)).await;
    let attempt_ended = woke_at.elapsed();
    println!("zombie: its commit attempt ended {attempt_ended:?} after the SIGCONT");
    let statuses = stored_statuses(&nats, &session, "t1").await;
    let after = client.snapshot_session(&session).await.expect("snapshot");
    support::report(
        "zombie",
        serde_json::json!({
            "commit_attempt_ended_after_sigcont_s": attempt_ended.as_secs_f64(),
            "zombie_logged_fenced_commit": log.contains(COMMIT_FENCED),
            "zombie_logged_refused_renewal": log.contains(RENEWAL_REFUSED),
            "stored_ledger_statuses": statuses,
            "graph_unchanged_after_wake": after.session_graph == committed.session_graph,
            "turn_index": after.turn_index,
        }),
    );
    assert_eq!(statuses.iter().filter(|s| *s == "completed").count(), 1, "stored ledger records: {statuses:?}");
    assert_eq!(statuses.last().map(String::as_str), Some("completed"), "stored ledger records: {statuses:?}");
    assert_eq!(after.session_graph, committed.session_graph, "nothing the zombie wrote is visible");
    assert_eq!(after.turn_index, 1);
    assert_eq!(result.state.session_graph, after.session_graph);
    assert_committed_once(&client, &session).await;
    assert!(log.contains(COMMIT_FENCED), "the woken worker's commit was not refused as fenced: {log}");
    assert!(!log.contains(RENEWAL_REFUSED), "the zombie stopped at a renewal, not at its commit: {log}");
    println!("zombie: takeover committed; the woken worker's commit was refused (fenced); ledger: {statuses:?}");
}
