//! The bus on the wire: errors, hostile input, sizes, long turns, paging, events,
//! worker loss. Real nats-server, real workers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use sessionbus_api::memory::InMemoryHost;
use sessionbus_api::{
    AppendSessionNodesRequest, EchoExecutor, ErrorKind, PluginError, SessionAppendNode, SessionCreateRequest,
    SessionGraphService, SessionLifecycleService, SessionStateService, SessionTurnRequest, ToolManifest, ToolState,
    TurnInput,
};
use sessionbus_nats::wire::{self, ErrorCode};
use sessionbus_nats::{BusClient, BusClientConfig, EventKind, Op, Subjects};
use sessionbus_testkit::subscribe_confirmed;

fn message(text: &str) -> AppendSessionNodesRequest {
    AppendSessionNodesRequest { nodes: vec![SessionAppendNode::message("User", text)], requires_ancestor_node_id: None }
}

#[tokio::test]
async fn no_worker_answers_a_clear_no_responders_error() {
    let server = common::server();
    let client = common::client_on(&server).await;
    let err = client.snapshot_session("chat-42").await.expect_err("nobody listens");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(
        err.message(),
        "no sessionbus worker is listening on sessionbus.v1.session.*.snapshot: start one with `sessionbus worker`"
    );
    let err = client.create_session(SessionCreateRequest::root(None)).await.expect_err("nobody listens");
    assert!(err.message().contains("sessionbus.v1.create"), "{err}");
}

/// Every op answers a malformed body with a 400 and an `InvalidRequest` body; the worker
/// keeps serving afterwards.
#[tokio::test]
async fn malformed_bodies_on_every_op_are_invalid_requests() {
    let server = common::server();
    let host = Arc::new(common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await);
    let _worker = common::worker_on(&server, host).await;
    let raw = server.client().await.expect("connect");
    let subjects = Subjects::default();
    // Not JSON at all, for every op.
    let garbage: [&[u8]; 3] = [b"not json", b"{\"nodes\":", b"\xff\xfe\x00"];
    // Well-formed JSON of the wrong shape, for ops whose body has required fields.
    let wrong_shape: [&[u8]; 2] = [b"{\"turn_id\": 5}", b"[1,2,3]"];
    let with_fields =
        [Op::GraphPage, Op::ApplyToolState, Op::SetToolMembership, Op::StartTurn, Op::AppendNodes, Op::Trace];
    let mut cases: Vec<(String, &[u8])> = Vec::new();
    for op in Op::ALL {
        let subject = subjects.session_op("chat-42", op);
        cases.extend(garbage.iter().map(|b| (subject.clone(), *b)));
        if with_fields.contains(&op) {
            cases.extend(wrong_shape.iter().map(|b| (subject.clone(), *b)));
        }
    }
    cases.extend(garbage.iter().chain(&wrong_shape).map(|b| (subjects.create(), *b)));
    // Every op with every garbage body, the ops with required fields with every wrong
    // shape, and create with both (counted independently of the loop below).
    assert_eq!(cases.len(), 3 * Op::ALL.len() + 2 * with_fields.len() + 5);
    for (subject, body) in &cases {
        let reply =
            tokio::time::timeout(Duration::from_secs(5), raw.request(subject.clone(), Bytes::copy_from_slice(body)))
                .await
                .expect("a reply within the timeout")
                .expect("a reply");
        let code = reply.headers.as_ref().and_then(|h| h.get(wire::SERVICE_ERROR_CODE)).map(|v| v.as_str().to_owned());
        assert_eq!(code.as_deref(), Some("400"), "{subject} with {body:?}");
        let error: PluginError = serde_json::from_slice(&reply.payload).expect("a PluginError body");
        assert!(error.message().contains("malformed"), "{subject}: {error}");
    }
    let client = common::client_on(&server).await;
    client.create_session(SessionCreateRequest::root(Some("still-serving".into()))).await.expect("worker still serves");
}

/// Ids with `.`, `*`, `>`, spaces and non-ASCII work end to end and stay isolated;
/// CR/LF and non-canonical tokens are refused; nothing panics the worker.
#[tokio::test]
async fn hostile_session_ids_are_encoded_or_refused() {
    let server = common::server();
    let host = Arc::new(common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await);
    let _worker = common::worker_on(&server, host).await;
    let client = common::client_on(&server).await;
    let odd = ["a.b", "a", "a*b", "a>b", "sessionbus.v1.session.a.close", "with space", "grüße-✓", ">"];
    for id in odd {
        client
            .create_session(SessionCreateRequest::root(Some(id.into())))
            .await
            .unwrap_or_else(|e| panic!("{id:?}: {e}"));
        client.append_session_nodes(id, message(id)).await.unwrap_or_else(|e| panic!("{id:?}: {e}"));
    }
    for id in odd {
        let snapshot = client.snapshot_session(id).await.expect("snapshot");
        let texts: Vec<String> = snapshot.session_graph.nodes.iter().filter_map(|n| n.conversation_text()).collect();
        assert_eq!(texts, [id], "session {id:?} sees another session's nodes");
    }
    for bad in ["line\r\nbreak", "nul\0", "", "  "] {
        let err = client.snapshot_session(bad).await.expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{bad:?}: {err}");
    }
    let raw = server.client().await.expect("connect");
    for token in ["=YQ", "=Y2hhdC00Mg", "=!!"] {
        let reply = raw
            .request(format!("sessionbus.v1.session.{token}.snapshot"), Bytes::from_static(b"{}"))
            .await
            .expect("reply");
        let code = reply.headers.as_ref().and_then(|h| h.get(wire::SERVICE_ERROR_CODE)).map(|v| v.as_str().to_owned());
        assert_eq!(code.as_deref(), Some("400"), "{token}");
    }
    let unknown = client.snapshot_session("never-created").await.expect_err("unknown");
    assert!(unknown.is_unknown_session(), "{unknown}");
}

fn big_tool_state(bytes: usize) -> ToolState {
    let mut state = ToolState::default();
    let mut manifest = ToolManifest::new("tool:big", "big", "x".repeat(bytes));
    manifest.extra.insert("note".into(), serde_json::json!("a large description"));
    state.insert(manifest);
    state
}

#[tokio::test]
async fn large_values_round_trip_and_too_large_ones_are_refused() {
    let server = common::server();
    let host = Arc::new(common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await);
    let _worker = common::worker_on(&server, host).await;
    let client = common::client_on(&server).await;
    let session = common::create_root(&client).await;
    let three_mb = big_tool_state(3 * 1024 * 1024);
    let generation = client.apply_tool_state(&session, three_mb.clone()).await.expect("3 MB tool state");
    let stored = client.tool_state(&session).await.expect("read back");
    assert_eq!(stored.generation, generation);
    assert_eq!(stored.tools, three_mb.tools);

    let ten_mb = big_tool_state(10 * 1024 * 1024);
    let err = client.apply_tool_state(&session, ten_mb).await.expect_err("10 MB is refused");
    assert!(err.is_payload_too_large(), "{err}");
    assert!(err.message().contains("8388608"), "names the limit: {err}");
    // A value that fits the request but not the stored message is refused by the worker with 413.
    let raw = server.client().await.expect("connect");
    let nearly = serde_json::to_vec(&big_tool_state(8 * 1024 * 1024 - 300)).expect("json");
    let reply = raw
        .request(Subjects::default().session_op(&session, Op::ApplyToolState), Bytes::from(nearly))
        .await
        .expect("reply");
    let code = reply.headers.as_ref().and_then(|h| h.get(wire::SERVICE_ERROR_CODE)).map(|v| v.as_str().to_owned());
    assert_eq!(
        code.as_deref(),
        Some("413"),
        "{:?}",
        String::from_utf8_lossy(&reply.payload[..reply.payload.len().min(300)])
    );
    assert_eq!(client.tool_state(&session).await.expect("read").generation, generation, "nothing was written");
    assert_eq!(ErrorCode::for_error(&err), ErrorCode::TooLarge);
}

/// A turn longer than the client's idle timeout completes, kept alive by progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thirty_second_turn_completes_through_a_five_second_idle_timeout() {
    let server = common::server();
    let host =
        Arc::new(common::jetstream_host_on(&server, Arc::new(common::SlowExecutor(Duration::from_secs(30)))).await);
    let _worker = common::worker_on(&server, host).await;
    let config = BusClientConfig::default().with_turn_idle_timeout(Duration::from_secs(5)).with_attempts(1);
    let client = BusClient::new(server.client().await.expect("connect"), config);
    let session = common::create_root(&client).await;
    let request = SessionTurnRequest::for_turn(&session, "long", TurnInput::text("take your time")).expect("turn");
    let result = tokio::time::timeout(Duration::from_secs(60), client.start_turn(request))
        .await
        .expect("bounded")
        .expect("turn");
    assert_eq!(result.state.turn_index, 1);
}

/// A 20,000-node graph larger than one message arrives complete through paging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twenty_thousand_node_snapshot_arrives_complete() {
    let server = common::server();
    let host = Arc::new(common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await);
    let _worker = common::worker_on(&server, host).await;
    let client = common::client_on(&server).await;
    let session = common::twenty_thousand_node_session(&client).await;
    let raw = server.client().await.expect("connect");
    let first = raw
        .request(Subjects::default().session_op(&session, Op::Snapshot), Bytes::from_static(b"{}"))
        .await
        .expect("reply");
    let first: serde_json::Value = serde_json::from_slice(&first.payload).expect("json");
    assert!(first["graph_next_seq"].is_u64(), "the first reply must be a page");
    let snapshot = client.snapshot_session(&session).await.expect("snapshot");
    assert_eq!(snapshot.session_graph.nodes.len(), 20_000);
    for (i, node) in snapshot.session_graph.nodes.iter().enumerate() {
        let text = node.conversation_text().expect("text");
        assert!(text.starts_with(&format!("{i:05} ")), "node {i} out of order");
    }
    assert!(!snapshot.extra.contains_key("graph_next_seq"));
}

/// One of two workers stops in the middle of a workload; the workload goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_survives_a_worker_stopping_midway() {
    let server = common::server();
    let first =
        common::worker_on(&server, Arc::new(common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await)).await;
    let _second =
        common::worker_on(&server, Arc::new(common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await)).await;
    let client = common::client_on(&server).await;
    let session = common::create_root(&client).await;
    for n in 0..20 {
        client.append_session_nodes(&session, message(&format!("before {n}"))).await.expect("append");
    }
    first.shutdown(Duration::from_secs(5)).await;
    for n in 0..20 {
        client
            .append_session_nodes(&session, message(&format!("after {n}")))
            .await
            .expect("append after a worker left");
    }
    let request = SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("still here?")).expect("turn");
    client.start_turn(request).await.expect("turn after a worker left");
    let snapshot = client.snapshot_session(&session).await.expect("snapshot");
    assert_eq!(snapshot.session_graph.nodes.len(), 42);
}

/// A fast op the worker is serving when `shutdown` starts is answered before the worker
/// stops: the shutdown waits for it (a cold snapshot of a 20,000-node graph, written by
/// another host, takes the worker many JetStream reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_the_fast_ops_in_flight() {
    let server = common::server();
    let writer = common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await;
    let session = common::twenty_thousand_node_session(&writer).await;
    let worker =
        common::worker_on(&server, Arc::new(common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await)).await;
    let watcher = server.client().await.expect("connect");
    let mut reads = subscribe_confirmed(&watcher, "$JS.API.STREAM.MSG.GET.>").await.expect("subscribe");
    let caller = server.client().await.expect("connect");
    let subject = Subjects::default().session_op(&session, Op::Snapshot);
    let call = tokio::spawn(async move {
        let request =
            async_nats::Request::new().payload(Bytes::from_static(b"{}")).timeout(Some(Duration::from_secs(30)));
        caller.send_request(subject, request).await
    });
    tokio::time::timeout(Duration::from_secs(10), reads.next())
        .await
        .expect("the worker reads JetStream for the snapshot")
        .expect("a read");
    worker.shutdown(Duration::from_secs(20)).await;
    let reply = call.await.expect("the call's task").expect("a reply, not a timeout");
    let code = reply.headers.as_ref().and_then(|h| h.get(wire::SERVICE_ERROR_CODE)).map(|v| v.as_str().to_owned());
    assert_eq!(code, None, "the snapshot in flight was answered with an error");
    let first: serde_json::Value = serde_json::from_slice(&reply.payload).expect("json");
    assert!(first["graph_next_seq"].is_u64(), "the first page of the snapshot: {first}");
}

/// Every stored write yields its event, typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_report_every_stored_write() {
    let server = common::server();
    let _worker =
        common::worker_on(&server, Arc::new(common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await)).await;
    let client = common::client_on(&server).await;
    let session = common::new_id();
    let mut events = client.events(&session).await.expect("subscribe");
    client.nats().flush().await.expect("flush");
    client.create_session(SessionCreateRequest::root(Some(session.clone()))).await.expect("create");
    let mut tools = ToolState::default();
    tools.insert(ToolManifest::new("tool:bash", "bash", ""));
    client.apply_tool_state(&session, tools).await.expect("tools");
    client.append_session_nodes(&session, message("hi")).await.expect("append");
    client
        .start_turn(SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("x")).expect("turn"))
        .await
        .expect("turn");
    let mut kinds = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(2), events.next()).await {
        assert_eq!(event.session_id, session);
        assert!(event.sequence > 0, "an event carries its stream sequence");
        kinds.push(event.kind);
    }
    for expected in [
        EventKind::Meta,
        EventKind::Tools,
        EventKind::Graph,
        EventKind::Lease,
        EventKind::Turn { turn_id: "t1".into() },
        EventKind::Trace,
    ] {
        assert!(kinds.contains(&expected), "missing {expected:?} in {kinds:?}");
    }
}

/// A worker over the in-memory host answers the same errors on the wire, typed detail
/// included.
#[tokio::test]
async fn errors_keep_their_kind_across_the_wire() {
    let server = common::server();
    let _worker = common::worker_on(&server, Arc::new(InMemoryHost::new(Arc::new(EchoExecutor)))).await;
    let client = common::client_on(&server).await;
    let session = common::create_root(&client).await;
    let err =
        client.apply_tool_state(&session, ToolState { generation: 7, ..Default::default() }).await.expect_err("stale");
    assert_eq!(err, PluginError::GenerationMismatch { expected: 7, actual: 0 }, "typed detail crosses the wire");
    assert_eq!(err.message(), "generation mismatch: expected 7, actual 0");
    let err = client.create_session(SessionCreateRequest::root(Some(session.clone()))).await.expect_err("exists");
    assert_eq!(err, PluginError::session_exists(&session), "409 on the wire, restored as a conflict");
}

/// An unchanged catalog costs one small round trip: the worker answers `unchanged`
/// without reading JetStream, and the client reuses its `Arc`. A change made through
/// another worker is seen at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_catalog_costs_no_jetstream_read() {
    let server = common::server();
    let first = common::serve_jetstream(&server, Arc::new(EchoExecutor)).await;
    let client = common::client_on(&server).await;
    let session = common::create_root(&client).await;
    let mut tools = ToolState::default();
    tools.insert(ToolManifest::new("tool:bash", "bash", ""));
    tools.insert(ToolManifest::new("tool:grep", "grep", ""));
    client.apply_tool_state(&session, tools).await.expect("apply");
    let catalog = client.shared_tool_catalog(&session).await.expect("catalog");
    let watcher = server.client().await.expect("connect");
    // Every JetStream API request (leader and direct gets, infos, consumers, ...).
    let mut api = subscribe_confirmed(&watcher, "$JS.API.>").await.expect("subscribe");
    for _ in 0..20 {
        let again = client.shared_tool_catalog(&session).await.expect("catalog");
        assert!(Arc::ptr_eq(&catalog, &again));
    }
    // A marker request after the calls: the watcher sees it after anything they sent.
    let marker = "$JS.API.INFO";
    watcher.request(marker, "".into()).await.expect("JetStream account info");
    let first_seen =
        tokio::time::timeout(Duration::from_secs(5), api.next()).await.expect("the marker").expect("a message");
    assert_eq!(first_seen.subject.as_str(), marker, "a JetStream API request for an unchanged catalog");

    let _second = common::serve_jetstream(&server, Arc::new(EchoExecutor)).await;
    first.shutdown(Duration::from_secs(5)).await;
    client.set_tool_membership(&session, &["grep".into()], false).await.expect("toggle through the other worker");
    let changed = client.shared_tool_catalog(&session).await.expect("catalog");
    assert!(!Arc::ptr_eq(&catalog, &changed));
    assert_eq!(changed.len(), 1);
}

/// The body of the next catalog request `asks` sees.
async fn next_ask(asks: &mut async_nats::Subscriber) -> serde_json::Value {
    let message =
        tokio::time::timeout(Duration::from_secs(5), asks.next()).await.expect("a catalog request").expect("ask");
    serde_json::from_slice(&message.payload).expect("json")
}

/// A client's own tool write drops the catalog it made stale: its next
/// `shared_tool_catalog` asks for the full catalog (no `if_generation`), whatever the
/// worker serving it knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_own_tool_write_drops_its_cached_catalog() {
    let server = common::server();
    let _worker = common::serve_jetstream(&server, Arc::new(EchoExecutor)).await;
    let client = common::client_on(&server).await;
    let session = common::create_root(&client).await;
    let mut tools = ToolState::default();
    tools.insert(ToolManifest::new("tool:bash", "bash", ""));
    tools.insert(ToolManifest::new("tool:grep", "grep", ""));
    let generation = client.apply_tool_state(&session, tools).await.expect("apply");
    client.shared_tool_catalog(&session).await.expect("catalog");

    let watcher = server.client().await.expect("connect");
    let mut asks = subscribe_confirmed(&watcher, "sessionbus.v1.session.*.tool_catalog").await.expect("subscribe");
    client.shared_tool_catalog(&session).await.expect("catalog");
    assert_eq!(next_ask(&mut asks).await["if_generation"], generation, "asks with the cached generation");

    let toggled = client.set_tool_membership(&session, &["grep".into()], false).await.expect("toggle");
    let catalog = client.shared_tool_catalog(&session).await.expect("catalog");
    assert_eq!(next_ask(&mut asks).await.get("if_generation"), None, "a write of its own dropped the cache");
    assert_eq!(catalog.len(), 1);

    let mut tools = client.tool_state(&session).await.expect("state");
    tools.set_membership("tool:grep", true).expect("known tool");
    assert_eq!(tools.generation, toggled);
    client.apply_tool_state(&session, tools).await.expect("apply");
    let catalog = client.shared_tool_catalog(&session).await.expect("catalog");
    assert_eq!(next_ask(&mut asks).await.get("if_generation"), None, "apply_tool_state dropped it too");
    assert_eq!(catalog.len(), 2);
}
