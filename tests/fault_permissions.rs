//! Permissions end to end: `deploy/nats/accounts.conf` on a real nats-server, the
//! layout made by `sessionbus setup` as admin, a real `sessionbus worker` process under
//! the `worker` user and a BusClient as the `app_a` application (inbox prefix
//! `_INBOX_app_a`, in the APPS account).
//!
//! `tests/deploy_files.rs` proves each refusal of the accounts config. This test adds
//! what only the real system shows:
//! - the real worker (leader reads, consumers, republished events, progress messages
//!   across accounts) and the real BusClient work under these rights, with no
//!   permission violation;
//! - against real session data, every direct write or read a client attempts (KV, the
//!   state and trace streams through their subjects and the JetStream API, forged events)
//!   is refused, and after each refusal the streams (message count, last sequence) and
//!   the session (snapshot, tool state) are unchanged;
//! - a client subscribing to the request subjects or to other users' inboxes receives
//!   nothing while the worker serves calls, and the calls are still answered.

mod auth;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::Client;
use auth::{WAIT, connect, setup_as_admin, start_server};
use futures::StreamExt as _;
use serde_json::json;
use sessionbus_api::{
    AppendSessionNodesRequest, SessionAppendNode, SessionCreateRequest, SessionGraphService, SessionLifecycleService,
    SessionStateService, SessionTurnRequest, ToolManifest, ToolState, TraceContext, TraceEvent, TurnInput,
};
use sessionbus_nats::subjects::session_token;
use sessionbus_nats::{BusClient, BusClientConfig, STATE_STREAM, TOOLS_STREAM, TRACE_STREAM};

/// What must not change when a refused client tries to write: the three streams and
/// the session as the bus serves it.
async fn observed(admin: &Client, bus: &BusClient, session: &str) -> (BTreeMap<&'static str, (u64, u64)>, String) {
    let mut streams = BTreeMap::new();
    for stream in [STATE_STREAM, TOOLS_STREAM, TRACE_STREAM] {
        streams.insert(stream, support::stream_state(admin, stream).await);
    }
    let snapshot = bus.snapshot_session(session).await.expect("snapshot");
    let tools = bus.tool_state(session).await.expect("tool state");
    let view = json!({
        "nodes": snapshot.session_graph.nodes.iter().map(|n| n.node_id.clone()).collect::<Vec<_>>(),
        "turn_index": snapshot.turn_index,
        "tools": tools,
    });
    (streams, view.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_worker_and_client_work_under_deploy_permissions_and_nothing_else_does() {
    let (server, credentials) = start_server();
    setup_as_admin(&server.url(), &credentials, 1);
    let worker = auth::worker_as_worker_user(&server, &credentials).await;
    let admin = connect(&server, &credentials, "admin", None).await.client;
    let auth::Conn { client: client_nats, errors: mut client_errors } =
        connect(&server, &credentials, "app_a", Some("_INBOX_app_a")).await;
    let bus = BusClient::new(client_nats.clone(), BusClientConfig::default());

    // --- Everything a client does works, with no permission violation.
    let session = support::new_id();
    let token = session_token(&session).expect("token");
    let mut events = bus.events(&session).await.expect("events");
    client_nats.flush().await.expect("flush");
    bus.create_session(SessionCreateRequest::root(Some(session.clone()))).await.expect("create");
    let mut tools = ToolState::default();
    tools.insert(ToolManifest::new("tool:bash", "bash", ""));
    bus.apply_tool_state(&session, tools).await.expect("apply tool state");
    bus.set_tool_membership(&session, &["bash".into()], false).await.expect("toggle");
    for n in 0..20 {
        let request = AppendSessionNodesRequest {
            nodes: vec![SessionAppendNode::message("User", format!("message {n}"))],
            requires_ancestor_node_id: None,
        };
        bus.append_session_nodes(&session, request).await.expect("append");
    }
    let turn = SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("hello")).expect("turn");
    bus.start_turn(turn).await.expect("a turn (with progress messages on the client's inbox)");
    let traced = bus.bound(session.clone());
    traced.emit_trace_event(TraceContext::default(), TraceEvent::turn_started()).await.expect("trace");
    let catalog = bus.shared_tool_catalog(&session).await.expect("catalog");
    assert!(catalog.is_empty(), "the only tool was toggled off");
    let event = tokio::time::timeout(WAIT, events.next()).await.expect("an event in time").expect("an event");
    assert_eq!(event.session_id, session);
    assert!(client_errors.try_recv().is_err(), "a permission violation while using the bus");
    assert!(!worker.stderr().to_lowercase().contains("permissions violation"), "{}", worker.stderr());

    // --- Direct writes and reads of the streams: refused, nothing changes.
    let mut hostile = connect(&server, &credentials, "app_a", Some("_INBOX_app_a")).await;
    let before = observed(&admin, &bus, &session).await;
    let mut refused = 0;
    for subject in [
        format!("sessionbus.v1.state.{token}.graph"),
        format!("sessionbus.v1.state.{token}.lease"),
        format!("sessionbus.v1.state.{token}.meta"),
        format!("sessionbus.v1.state.{token}.turn.t1"),
        format!("$KV.SESSIONBUS_TOOLS.{token}"),
        format!("sessionbus.v1.trace.{token}"),
        format!("sessionbus.v1.events.{token}.graph"),
        format!("$JS.API.STREAM.MSG.GET.{STATE_STREAM}"),
        format!("$JS.API.DIRECT.GET.{STATE_STREAM}.sessionbus.v1.state.{token}.meta"),
        format!("$JS.API.STREAM.PURGE.{STATE_STREAM}"),
        format!("$JS.API.STREAM.DELETE.{TOOLS_STREAM}"),
    ] {
        let forged = json!({"nodes": [], "leaf": null, "request_id": "forged", "state": "free"}).to_string();
        hostile.client.publish(subject.clone(), forged.into()).await.expect("publish is queued");
        hostile.client.flush().await.expect("flush");
        hostile.expect_violation("Publish", &subject).await;
        assert_eq!(
            observed(&admin, &bus, &session).await,
            before,
            "something changed after a refused write to {subject}"
        );
        refused += 1;
    }

    // --- Stealing requests or replies: refused, nothing arrives, calls still answered.
    let mut thieves = Vec::new();
    for subject in ["sessionbus.v1.session.*.*", "sessionbus.v1.session.>", "_INBOX.>", "_INBOX_app_b.>"] {
        let subscriber = hostile.client.subscribe(subject.to_owned()).await.expect("subscribe is queued");
        hostile.client.flush().await.expect("flush");
        hostile.expect_violation("Subscription", subject).await;
        thieves.push((subject, subscriber));
    }
    let after_calls = bus.snapshot_session(&session).await.expect("the worker still answers");
    bus.append_session_nodes(
        &session,
        AppendSessionNodesRequest {
            nodes: vec![SessionAppendNode::message("User", "after")],
            requires_ancestor_node_id: None,
        },
    )
    .await
    .expect("appends still work");
    assert!(!after_calls.session_graph.nodes.is_empty());
    for (subject, subscriber) in &mut thieves {
        if let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(500), subscriber.next()).await {
            panic!("a refused subscription to {subject} received {}", message.subject);
        }
    }
    assert!(client_errors.try_recv().is_err(), "the legitimate client saw a permission violation");

    support::report(
        "permissions_e2e",
        json!({
            "real_worker_and_bus_client_violations": 0,
            "refused_direct_writes_and_reads": refused,
            "streams_or_session_changed_after_a_refusal": 0,
            "refused_subscriptions_receiving_messages": 0,
            "refused_subscriptions": thieves.len(),
        }),
    );
}
