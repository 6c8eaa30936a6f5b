//! A request id reused with a different body is refused (400) and writes nothing; the
//! same body with the same id stays a retry, answered like the first call.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use serde_json::json;
use sessionbus_api::{EchoExecutor, SessionStateService as _};
use sessionbus_nats::wire::REQUEST_ID;
use sessionbus_nats::{Op, STATE_STREAM, Subjects, TOOLS_STREAM, TRACE_STREAM};

/// Sends `body` to `op` of `session` with request id `id`; the reply's error code.
async fn call(client: &async_nats::Client, session: &str, op: Op, id: &str, body: serde_json::Value) -> Option<u16> {
    let mut headers = HeaderMap::new();
    headers.insert(REQUEST_ID, id);
    let subject = Subjects::default().session_op(session, op);
    let request = async_nats::Request::new()
        .payload(Bytes::from(body.to_string()))
        .headers(headers)
        .timeout(Some(Duration::from_secs(10)));
    let reply = client.send_request(subject, request).await.expect("an answer");
    reply
        .headers
        .as_ref()
        .and_then(|h| h.get(sessionbus_nats::wire::SERVICE_ERROR_CODE))
        .and_then(|v| v.as_str().parse().ok())
}

/// `(messages, last sequence)` of each stream.
async fn streams(client: &async_nats::Client) -> Vec<(u64, u64)> {
    let js = async_nats::jetstream::new(client.clone());
    let mut state = Vec::new();
    for name in [STATE_STREAM, TOOLS_STREAM, TRACE_STREAM] {
        let info = js.get_stream(name).await.expect("stream").info().await.expect("info").state.clone();
        state.push((info.messages, info.last_sequence));
    }
    state
}

fn tools(name: &str) -> serde_json::Value {
    let mut state = sessionbus_api::ToolState::default();
    state.insert(sessionbus_api::ToolManifest::new(format!("tool:{name}"), name, ""));
    serde_json::to_value(state).expect("json")
}

fn message(text: &str) -> serde_json::Value {
    let request = sessionbus_api::AppendSessionNodesRequest {
        nodes: vec![sessionbus_api::SessionAppendNode::message("User", text)],
        requires_ancestor_node_id: None,
    };
    serde_json::to_value(request).expect("json")
}

fn event(name: &str) -> serde_json::Value {
    json!({ "context": {}, "event": serde_json::to_value(sessionbus_api::TraceEvent::Custom {
        name: name.into(),
        payload: json!({}),
        extra: Default::default(),
    })
    .expect("json") })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_reused_with_another_body_is_refused_and_writes_nothing() {
    let server = common::server();
    let _worker = common::serve_jetstream(&server, Arc::new(EchoExecutor)).await;
    let bus = common::client_on(&server).await;
    let server_client = server.client().await.expect("connect");
    let session = common::create_root(&bus).await;

    // (op, first body, the same id's other body)
    let cases = [
        (Op::AppendNodes, message("first"), message("second")),
        (Op::ApplyToolState, tools("bash"), tools("grep")),
        (Op::Trace, event("first"), event("second")),
        (
            Op::Trace,
            json!({ "records": [event("first"), event("first-b")] }),
            json!({ "records": [event("second"), event("second-b")] }),
        ),
    ];
    for (op, first, other) in cases {
        let id = common::new_id();
        assert_eq!(call(&server_client, &session, op, &id, first.clone()).await, None, "{op}: the first call");
        assert_eq!(call(&server_client, &session, op, &id, first).await, None, "{op}: the same body is a retry");
        let before = streams(&server_client).await;
        assert_eq!(call(&server_client, &session, op, &id, other).await, Some(400), "{op}: another body, same id");
        assert_eq!(streams(&server_client).await, before, "{op}: the refused call wrote nothing");
    }
    let snapshot = bus.snapshot_session(&session).await.expect("snapshot");
    let text = serde_json::to_string(&snapshot.session_graph.nodes).expect("json");
    assert!(text.contains("first") && !text.contains("second"), "{text}");
    let state = bus.tool_state(&session).await.expect("tools");
    assert!(state.catalog().iter().all(|tool| tool["name"] != "grep"), "the refused tool state was not stored");
}
