//! Retried calls apply once and answer the same, on a
//! single server (R1: JetStream checks a write's condition before its message id) and on
//! a 3-node cluster (R3: the message id wins). BusClient resends a call with the same
//! `Sessionbus-Request-Id` when a reply is lost; here the resend comes after another
//! client has written in between, so a stale condition meets an already-stored write.

mod support;

use std::time::Duration;

use async_nats::{Client, HeaderMap};
use serde_json::{Value, json};
use sessionbus_api::{
    AppendSessionNodesRequest, SessionAppendNode, SessionCreateRequest, SessionNode, ToolManifest, ToolState,
};
use sessionbus_nats::subjects::session_token;
use sessionbus_nats::wire::{MembershipRequest, REQUEST_ID};
use sessionbus_nats::{STATE_STREAM, TOOLS_STREAM, TRACE_STREAM};
use sessionbus_testkit::NatsServer;
use support::{RawReply, report};

const WAIT: Duration = Duration::from_secs(15);

/// A call with an explicit request id (as BusClient sends it, and resends it).
async fn call(client: &Client, subject: &str, request_id: &str, body: &impl serde::Serialize) -> RawReply {
    let mut headers = HeaderMap::new();
    headers.insert(REQUEST_ID, request_id);
    let payload = serde_json::to_vec(body).expect("json").into();
    support::raw_request(client, subject, headers, payload, WAIT).await.expect("a reply")
}

fn ok(reply: &RawReply, what: &str) -> Value {
    assert!(reply.code.is_none(), "{what} failed: {:?} {}", reply.code, String::from_utf8_lossy(&reply.payload));
    reply.json()
}

fn op(session: &str, op: &str) -> String {
    format!("sessionbus.v1.session.{}.{op}", session_token(session).expect("token"))
}

fn message(text: &str) -> AppendSessionNodesRequest {
    AppendSessionNodesRequest { nodes: vec![SessionAppendNode::message("User", text)], requires_ancestor_node_id: None }
}

/// Every mutating call resent with its request id after another write: same answer,
/// one effect. Returns the figures.
async fn retried_calls_apply_once(client: &Client) -> Value {
    let session = support::new_id();
    let token = session_token(&session).expect("token");

    // create (with an initial node), an append by someone else, the create again.
    let mut create = SessionCreateRequest::root(Some(session.clone()));
    create.initial_nodes = vec![SessionAppendNode::message("System", "be brief")];
    let create_id = support::new_id();
    // Each resent call whose answer differs from the first one's.
    let mut answered_differently: Vec<&str> = Vec::new();
    let first = ok(&call(client, "sessionbus.v1.create", &create_id, &create).await, "create");
    ok(&call(client, &op(&session, "append_nodes"), &support::new_id(), &message("between")).await, "append");
    let again = ok(&call(client, "sessionbus.v1.create", &create_id, &create).await, "the resent create");
    if first != again {
        answered_differently.push("create");
    }

    // apply_tool_state: create the state, another apply on top, the first apply again.
    let mut tools = ToolState::default();
    tools.insert(ToolManifest::new("tool:a", "a", ""));
    tools.insert(ToolManifest::new("tool:b", "b", ""));
    let apply_id = support::new_id();
    let applied = ok(&call(client, &op(&session, "apply_tool_state"), &apply_id, &tools).await, "apply");
    let generation = applied["generation"].as_u64().expect("generation");
    let mut on_top = tools.clone();
    on_top.generation = generation;
    on_top.insert(ToolManifest::new("tool:c", "c", ""));
    let second = ok(&call(client, &op(&session, "apply_tool_state"), &support::new_id(), &on_top).await, "apply");
    let second_generation = second["generation"].as_u64().expect("generation");
    assert!(second_generation > generation, "the apply on top got a later generation: {second}");
    let resent = call(client, &op(&session, "apply_tool_state"), &apply_id, &tools).await;
    assert!(
        resent.code.is_none(),
        "a resent apply_tool_state whose write is stored must answer its generation, not an error: {:?} {}",
        resent.code,
        String::from_utf8_lossy(&resent.payload)
    );
    if resent.json() != applied {
        answered_differently.push("apply_tool_state");
    }
    // The resent apply wrote nothing: the stored state is still the one applied on top,
    // at its generation, with its third tool.
    let key = format!("$KV.SESSIONBUS_TOOLS.{token}");
    let stored = support::get_last(client, TOOLS_STREAM, &key).await.expect("the tool state");
    assert_eq!(stored.seq, second_generation, "the last stored tool state is the apply on top");
    assert!(stored.json()["tools"].get("tool:c").is_some(), "the apply on top is what is stored: {}", stored.json());

    // set_tool_membership: toggle a, someone toggles b, toggle a again with the same id.
    let toggle_id = support::new_id();
    let off = MembershipRequest { tool_names: vec!["a".into()], present: false };
    let toggled = ok(&call(client, &op(&session, "set_tool_membership"), &toggle_id, &off).await, "toggle");
    let other = MembershipRequest { tool_names: vec!["b".into()], present: false };
    ok(&call(client, &op(&session, "set_tool_membership"), &support::new_id(), &other).await, "toggle");
    let toggled_again = ok(&call(client, &op(&session, "set_tool_membership"), &toggle_id, &off).await, "toggle");
    if toggled != toggled_again {
        answered_differently.push("set_tool_membership");
    }
    let revisions = support::read_all(client, TOOLS_STREAM, &key).await.len();

    // append: an append, another one, the first again.
    let append_id = support::new_id();
    let appended = ok(&call(client, &op(&session, "append_nodes"), &append_id, &message("once")).await, "append");
    ok(&call(client, &op(&session, "append_nodes"), &support::new_id(), &message("after")).await, "append");
    let appended_again =
        ok(&call(client, &op(&session, "append_nodes"), &append_id, &message("once")).await, "append again");
    if appended != appended_again {
        answered_differently.push("append_nodes");
    }

    // trace: a record, another one, the first again.
    let trace_id = support::new_id();
    let record = json!({ "context": { "marker": "resent" }, "event": { "type": "turn_started" } });
    let traced = ok(&call(client, &op(&session, "trace"), &trace_id, &record).await, "trace");
    let other_record = json!({ "context": { "marker": "other" }, "event": { "type": "turn_started" } });
    ok(&call(client, &op(&session, "trace"), &support::new_id(), &other_record).await, "trace");
    let traced_again = ok(&call(client, &op(&session, "trace"), &trace_id, &record).await, "the resent trace");
    if traced != traced_again {
        answered_differently.push("trace");
    }

    // What is stored.
    let graph = support::read_all(client, STATE_STREAM, &format!("sessionbus.v1.state.{token}.graph")).await;
    let texts: Vec<String> = graph
        .iter()
        .flat_map(|m| m.json()["nodes"].as_array().cloned().unwrap_or_default())
        .filter_map(|node| serde_json::from_value::<SessionNode>(node).ok()?.conversation_text())
        .collect();
    let traces = support::read_all(client, TRACE_STREAM, &format!("sessionbus.v1.trace.{token}")).await;
    let resent_traces = traces.iter().filter(|m| m.json()["context"]["marker"] == "resent").count();
    let initial_nodes = texts.iter().filter(|t| *t == "be brief").count();
    let resent_appends = texts.iter().filter(|t| *t == "once").count();
    // Each resent call's effect stored more than once (a revision more than create,
    // apply on top and two toggles means the resent apply or toggle stored one).
    let stored_twice = [initial_nodes > 1, resent_appends > 1, resent_traces > 1, revisions > 4]
        .iter()
        .filter(|twice| **twice)
        .count();
    let figures = json!({
        "resent_calls": 5,
        "answered_differently": answered_differently,
        "stored_twice": stored_twice,
        "tool_revisions": revisions,
        "trace_records_of_the_resent_event": resent_traces,
    });
    assert!(answered_differently.is_empty(), "resent calls answered differently: {answered_differently:?}");
    assert_eq!(initial_nodes, 1, "the initial node is stored once: {texts:?}");
    assert_eq!(resent_appends, 1, "the resent append is stored once: {texts:?}");
    assert_eq!(revisions, 4, "create, apply on top, two toggles: the resent apply and toggle store nothing");
    assert_eq!(resent_traces, 1, "a resent trace event is stored once");
    assert_eq!(stored_twice, 0);
    figures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_calls_apply_once_on_a_single_server() {
    let server = NatsServer::start().expect("nats-server");
    let _worker = support::worker(&server.url(), &[]).await;
    let client = support::connect(&server.url()).await;
    let figures = retried_calls_apply_once(&client).await;
    report("retries_r1", figures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_calls_apply_once_on_an_r3_cluster() {
    let cluster = support::cluster().await;
    let _worker = support::worker(&cluster.nats_url(), &["--replicas", "3"]).await;
    let client = support::connect(&cluster.nats_url()).await;
    let figures = retried_calls_apply_once(&client).await;
    report("retries_r3", figures);
}
