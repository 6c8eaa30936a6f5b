//! A write whose answer never came is reported as such: the error says the outcome is
//! unknown, names the request id, and resending with that id (through
//! `request_context::with_request_id`) applies the write at most once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use sessionbus_api::{
    AppendSessionNodesRequest, AppendSessionNodesResult, ErrorKind, SessionAppendNode, SessionGraphService as _,
    SessionStateService as _,
};
use sessionbus_nats::request_context::with_request_id;
use sessionbus_nats::{BusClient, BusClientConfig};
use sessionbus_testkit::subscribe_confirmed;

fn append(text: &str) -> AppendSessionNodesRequest {
    AppendSessionNodesRequest { nodes: vec![SessionAppendNode::message("User", text)], requires_ancestor_node_id: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_write_says_its_outcome_is_unknown_and_how_to_resend_it() {
    let server = common::server();
    // A stalled worker: it takes the request and never answers.
    let stalled = server.client().await.expect("connect");
    let mut requests = subscribe_confirmed(&stalled, "sessionbus.v1.session.*.append_nodes").await.expect("subscribe");
    let config = BusClientConfig::default().with_timeout(Duration::from_millis(200)).with_attempts(2);
    let bus = BusClient::new(server.client().await.expect("connect"), config);
    let error = bus.append_session_nodes("s1", append("hello")).await.expect_err("no answer");
    let seen = requests.next().await.expect("the stalled worker got the request");
    let request_id = seen.headers.as_ref().and_then(|h| h.get("Sessionbus-Request-Id")).expect("a request id");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error:?}");
    assert!(error.message().contains("outcome is unknown"), "the error says the write may have happened: {error}");
    assert!(error.message().contains(request_id.as_str()), "the error names the request id to resend with: {error}");

    // A read that timed out is no unknown outcome.
    let mut reads = subscribe_confirmed(&stalled, "sessionbus.v1.session.*.tool_state").await.expect("subscribe");
    let read = bus.tool_state("s1").await.expect_err("no answer");
    let _ = reads.next().await;
    assert!(!read.message().contains("outcome is unknown"), "reads change nothing: {read}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resending_a_write_with_its_request_id_applies_it_once() {
    let bus = common::bus_over_jetstream(Arc::new(sessionbus_api::EchoExecutor), 1).await;
    let session = common::create_root(&bus.host).await;
    let request_id = common::new_id();
    let first = with_request_id(request_id.clone(), bus.host.append_session_nodes(&session, append("once"))).await;
    let again = with_request_id(request_id, bus.host.append_session_nodes(&session, append("once"))).await;
    let (first, again) = (first.expect("append"), again.expect("resend"));
    assert_eq!(first, again, "the resend answers like the first call");
    let AppendSessionNodesResult::Appended { node_ids, .. } = first else { panic!("appended") };
    assert_eq!(node_ids.len(), 1);
    let snapshot = bus.host.snapshot_session(&session).await.expect("snapshot");
    assert_eq!(snapshot.session_graph.nodes.len(), 1, "applied once");
}
