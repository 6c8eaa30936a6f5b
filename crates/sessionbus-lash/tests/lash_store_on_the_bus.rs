//! One layout (decision 0024): a session a lash runtime writes through the JetStream
//! store is the session bus ops read (`snapshot_session`, `sessions`, events), and a
//! session bus ops write is the one a lash runtime opens and continues. A real
//! nats-server, a real worker serving the bus ops, and a real `LashCore` on the store
//! (the `lash-on-nats` peer, in process) with the scripted model.

mod lash_bus;
mod store_support;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use lash_core::store::{GraphCommitDelta, PersistedSessionRead};
use lash_core::{RuntimeCommit, SessionCommitStore as _, SessionReadScope, StoreError, SystemClock};
use sessionbus_api::{
    AppendSessionNodesRequest, AppendSessionNodesResult, SessionAppendNode, SessionCreateRequest, SessionGraphService,
    SessionLifecycleService as _, SessionListQuery, SessionStateService,
};
use sessionbus_lash::store::{JetStreamStore, StoreBackend, StoreBackendConfig};
use sessionbus_nats::events::EventKind;

/// The store of `session` opened anew (a new connection), as another process would.
fn fresh_store(bus: &lash_bus::LashBus, session: &str) -> JetStreamStore {
    fresh_store_at(bus.server.url(), session)
}

/// [`fresh_store`] on the server(s) at `url`.
fn fresh_store_at(url: String, session: &str) -> JetStreamStore {
    let backend = StoreBackend::connect(StoreBackendConfig::new(url)).expect("backend");
    JetStreamStore::open(backend, session, Arc::new(SystemClock)).expect("open")
}

/// The node ids of the session's active path, as lash's store holds them.
async fn lash_path(store: &JetStreamStore) -> Vec<String> {
    active_path(store).await.graph.nodes.iter().map(|node| node.node_id.clone()).collect()
}

/// The session as lash's store reads it: its head, and its graph's active path.
async fn active_path(store: &JetStreamStore) -> PersistedSessionRead {
    let read = store.load_session(SessionReadScope::ActivePath { leaf_node_id: None }).await.expect("load");
    read.expect("the session")
}

/// A bus with a session on which a lash runtime ran one turn.
async fn a_session_after_one_lash_turn() -> (lash_bus::LashBus, String) {
    let bus = lash_bus::bus_with_store().await;
    let session = uuid::Uuid::new_v4().to_string();
    let (peer, said) = lash_bus::lash_runtime(&bus.server.url()).await;
    lash_bus::turn(&peer, &said, &session, "Say hello").await;
    (bus, session)
}

/// The node ids of the session's active path, as bus ops read it.
async fn bus_path(bus: &impl SessionStateService, session: &str) -> Vec<String> {
    let snapshot = bus.snapshot_session(session).await.expect("snapshot");
    let graph = snapshot.session_graph;
    let mut path = Vec::new();
    let mut next = graph.leaf_node_id.clone();
    while let Some(id) = next {
        let node = graph.nodes.iter().find(|node| node.node_id == id).expect("the path's node");
        next = node.parent_node_id.clone();
        path.push(id);
    }
    path.reverse();
    path
}

/// A commit changing nothing, on the head and leaf `read` holds.
fn unchanged_commit(read: &PersistedSessionRead) -> RuntimeCommit {
    RuntimeCommit {
        session_id: read.session_id.clone(),
        expected_head_revision: Some(read.head_revision),
        session_execution_lease: None,
        release_session_execution_lease: None,
        config: read.config.clone(),
        agent_frames: read.agent_frames.clone(),
        current_agent_frame_id: read.current_agent_frame_id.clone(),
        graph: GraphCommitDelta::Unchanged { leaf_node_id: read.graph.leaf_node_id.clone() },
        checkpoint: read.checkpoint.clone().unwrap_or_default(),
        usage_deltas: Vec::new(),
        turn_commit: None,
        completed_queue_claims: Vec::new(),
        completed_turn_input_claims: Vec::new(),
        enqueued_queue_batches: Vec::new(),
        interrupted_turn_input_turn_id: None,
        committed_attachment_ids: Vec::new(),
    }
}

async fn append_text(bus: &impl SessionGraphService, session: &str, text: &str) -> Vec<String> {
    let request = AppendSessionNodesRequest {
        nodes: vec![SessionAppendNode::message("User", text)],
        requires_ancestor_node_id: None,
    };
    match bus.append_session_nodes(session, request).await.expect("append") {
        AppendSessionNodesResult::Appended { node_ids, .. } => node_ids,
        other => panic!("the append was not stored: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_a_lash_runtime_writes_is_the_session_bus_ops_read() {
    let bus = lash_bus::bus_with_store().await;
    let session = uuid::Uuid::new_v4().to_string();
    let mut events = bus.client.events(&session).await.expect("watch");
    let (peer, said) = lash_bus::lash_runtime(&bus.server.url()).await;

    lash_bus::turn(&peer, &said, &session, "Say hello").await;

    let lash = lash_path(&fresh_store(&bus, &session)).await;
    assert!(lash.len() >= 2, "the turn stored the user's message and the answer: {lash:?}");
    assert_eq!(bus_path(&bus.client, &session).await, lash, "bus ops read the nodes lash committed, in its order");
    let snapshot = bus.client.snapshot_session(&session).await.expect("snapshot");
    let text = serde_json::to_string(&snapshot.session_graph).expect("json");
    assert!(text.contains("Say hello") && text.contains("Hello."), "the nodes hold the turn's messages: {text}");
    assert!(!snapshot.agent_frames.is_empty(), "the snapshot carries lash's agent frames");

    let page = bus.client.list_sessions(&SessionListQuery::default()).await.expect("sessions");
    assert!(page.sessions.iter().any(|summary| summary.session_id == session), "`sessions` lists the lash session");

    let mut kinds = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(500), events.next()).await {
        kinds.push(event.kind);
    }
    assert!(kinds.contains(&EventKind::Graph), "a watcher saw the graph written: {kinds:?}");
    assert!(kinds.contains(&EventKind::Meta), "a watcher saw the meta written: {kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_bus_ops_write_is_the_session_a_lash_runtime_continues() {
    let bus = lash_bus::bus_with_store().await;
    let session = uuid::Uuid::new_v4().to_string();
    // Created for a lash runtime: the policy names the runtime's provider and model.
    let mut policy = sessionbus_api::default_policy(&session);
    policy["provider_id"] = serde_json::json!(sessionbus_lash::provider::scripted::KIND);
    let model = lash_core::ModelSpec::from_token_limits("scripted", Default::default(), 200_000, None).expect("model");
    policy["model"] = serde_json::to_value(model).expect("model json");
    let mut create = SessionCreateRequest::root(Some(session.clone()));
    create.policy = Some(policy);
    bus.client.create_session(create).await.expect("create");
    let appended = append_text(&bus.client, &session, "a note the bus stored first").await;
    let (peer, said) = lash_bus::lash_runtime(&bus.server.url()).await;

    lash_bus::turn(&peer, &said, &session, "Say hello").await;

    let lash = lash_path(&fresh_store(&bus, &session)).await;
    assert_eq!(lash[..appended.len()], appended[..], "lash's session starts with what bus ops wrote");
    assert!(lash.len() > appended.len(), "and holds the turn after it: {lash:?}");
    assert_eq!(bus_path(&bus.client, &session).await, lash, "both sides read one session");

    // And on again: a bus append after lash's turn, then lash's next turn after it.
    let later = append_text(&bus.client, &session, "another note").await;
    lash_bus::turn(&peer, &said, &session, "Add 2 and 3").await;
    let lash = lash_path(&fresh_store(&bus, &session)).await;
    assert!(lash.contains(&later[0]), "lash's session holds the bus's later append on its path: {lash:?}");
    assert_eq!(bus_path(&bus.client, &session).await, lash, "both sides still read one session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lash_commit_after_a_bus_append_is_refused_by_the_head_and_stores_nothing() {
    let (bus, session) = a_session_after_one_lash_turn().await;
    let store = fresh_store(&bus, &session);
    let read = active_path(&store).await;
    let appended = append_text(&bus.client, &session, "written by a bus op meanwhile").await;
    let stale = store.commit_runtime_state(unchanged_commit(&read)).await;
    assert!(
        matches!(stale, Err(StoreError::HeadRevisionConflict { .. })),
        "a commit on the head from before the bus's append is refused: {stale:?}"
    );
    assert_eq!(bus_path(&bus.client, &session).await.last(), appended.last(), "the refused commit moved nothing");

    let now = active_path(&store).await;
    assert_eq!(now.head_revision, read.head_revision + 1, "the bus's append is one more revision for lash");
    assert_eq!(now.graph.leaf_node_id.as_ref(), appended.last(), "lash reads the bus's append as its leaf");
    let fresh = store.commit_runtime_state(unchanged_commit(&now)).await;
    assert!(fresh.is_ok(), "a commit on the current head is stored: {fresh:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lash_commit_to_a_session_closed_through_the_bus_is_refused() {
    let (bus, session) = a_session_after_one_lash_turn().await;
    let before = bus_path(&bus.client, &session).await;

    bus.client.close_session(&session).await.expect("close through the bus");
    let store = fresh_store(&bus, &session);
    let read = active_path(&store).await;
    let refused = store.commit_runtime_state(unchanged_commit(&read)).await;
    assert!(
        matches!(&refused, Err(StoreError::Backend(why)) if why.contains("closed through the bus")),
        "a commit to a closed session is refused: {refused:?}"
    );
    assert_eq!(bus_path(&bus.client, &session).await, before, "nothing was stored");
    let page = bus.client.list_sessions(&SessionListQuery::default()).await.expect("sessions");
    let summary = page.sessions.iter().find(|summary| summary.session_id == session).expect("listed");
    assert_eq!(summary.status, sessionbus_api::SessionStatus::Closed, "the session stays closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_3_node_cluster_lash_and_bus_ops_write_one_session() {
    let deployment = store_support::Deployment::cluster().await;
    let host = deployment.bus_host().await;
    let session = uuid::Uuid::new_v4().to_string();
    let (peer, said) = lash_bus::lash_runtime(&deployment.url()).await;

    lash_bus::turn(&peer, &said, &session, "Say hello").await;
    let appended = append_text(&host, &session, "a note from a bus op").await;
    lash_bus::turn(&peer, &said, &session, "Add 2 and 3").await;

    let lash = lash_path(&fresh_store_at(deployment.url(), &session)).await;
    assert!(lash.contains(&appended[0]), "lash's session holds the bus's append on its path: {lash:?}");
    assert!(lash.last() != appended.last(), "and lash's second turn after it: {lash:?}");
    assert_eq!(bus_path(&host, &session).await, lash, "bus ops read the session lash's store holds (R3)");
}
