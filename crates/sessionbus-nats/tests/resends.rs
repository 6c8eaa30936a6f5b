//! Writes whose JetStream ack was lost, on a single-replica stream (where the server
//! checks a write's condition before its message id): the resend is recognised as the
//! write itself, never taken for a lost race. A protocol-aware proxy between the host
//! and the server drops exactly one ack while the connection stays up.

mod common;

use std::sync::Arc;
use std::time::Duration;

use sessionbus_api::{SessionLifecycleService as _, SessionStateService as _, SessionTurnRequest, TurnInput};
use sessionbus_nats::jetstream::{LayoutConfig, ensure_layout};
use sessionbus_nats::{JetStreamHost, JetStreamHostConfig};
use sessionbus_testkit::AckDropper;

/// A host whose connection goes through `proxy`; one-second JetStream calls, so a lost
/// ack is resent quickly.
async fn host_behind(server: &sessionbus_testkit::NatsServer, proxy: &AckDropper, turn: Duration) -> JetStreamHost {
    let admin = server.client().await.expect("connect");
    ensure_layout(&async_nats::jetstream::new(admin), &Default::default(), &LayoutConfig::default())
        .await
        .expect("layout");
    let client = async_nats::connect(proxy.url()).await.expect("connect through the proxy");
    let config = JetStreamHostConfig::default()
        .with_lease_ttl(Duration::from_secs(5))
        .with_lease_renew_every(Duration::from_millis(300))
        .with_api_timeout(Duration::from_secs(1));
    JetStreamHost::connect(client, Arc::new(common::SlowExecutor(turn)), config).await.expect("host")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_renewal_whose_ack_was_lost_does_not_stop_a_healthy_turn() {
    let server = common::server();
    let proxy = AckDropper::start(server.port()).await.expect("proxy");
    let host = host_behind(&server, &proxy, Duration::from_secs(3)).await;
    let session = common::create_root(&host).await;
    proxy.drop_reply_to(|publish| {
        publish.subject.ends_with(".lease") && publish.header("Nats-Msg-Id").is_some_and(|id| id.ends_with("/renew/1"))
    });
    let turn = SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("hello")).expect("turn");
    host.start_turn(turn).await.expect("the turn goes on after its renewal's ack was lost");
    assert_eq!(proxy.dropped().len(), 1, "the renewal's ack was dropped");
    assert_eq!(host.snapshot_session(&session).await.expect("snapshot").turn_index, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_ack_was_lost_is_answered_as_committed_once() {
    let server = common::server();
    let proxy = AckDropper::start(server.port()).await.expect("proxy");
    let host = host_behind(&server, &proxy, Duration::from_millis(10)).await;
    let session = common::create_root(&host).await;
    proxy.drop_reply_to(|publish| publish.header("Nats-Batch-Commit") == Some("1"));
    let turn = SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("hello")).expect("turn");
    let result = host.start_turn(turn).await.expect("a commit whose ack was lost is reported committed");
    assert_eq!(proxy.dropped().len(), 1, "the commit's ack was dropped");
    let snapshot = host.snapshot_session(&session).await.expect("snapshot");
    assert_eq!(snapshot.turn_index, 1, "committed once");
    assert_eq!(snapshot.session_graph.nodes.len(), 2, "the turn's nodes, once");
    assert_eq!(result.state.turn_index, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_write_whose_ack_was_lost_starts_the_turn_without_waiting_out_its_own_lease() {
    let server = common::server();
    let proxy = AckDropper::start(server.port()).await.expect("proxy");
    let host = host_behind(&server, &proxy, Duration::from_millis(10)).await;
    let session = common::create_root(&host).await;
    // The lease write is its run's first message (`<run>/0`); its resend meets it stored.
    proxy.drop_reply_to(|publish| {
        publish.subject.ends_with(".lease") && publish.header("Nats-Msg-Id").is_some_and(|id| id.ends_with("/0"))
    });
    let turn = SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("hello")).expect("turn");
    let started = std::time::Instant::now();
    host.start_turn(turn).await.expect("the turn runs");
    let took = started.elapsed();
    assert_eq!(proxy.dropped().len(), 1, "the lease write's ack was dropped");
    // The resend comes after the 1 s call timeout; waiting out the lease takes its 5 s TTL.
    assert!(took < Duration::from_secs(4), "the turn waited {took:?}, as if its own lease were another caller's");
    assert_eq!(host.snapshot_session(&session).await.expect("snapshot").turn_index, 1);
}
