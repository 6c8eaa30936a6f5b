//! Replies larger than one message arrive complete and consistent: a turn on a
//! 20,000-node session returns through BusClient in full (its graph paged like a
//! snapshot's), the pages of a snapshot stop at the graph the first page was cut from,
//! even while other writers append, and the pages after the first are sliced from that
//! graph instead of a whole snapshot read per page.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use sessionbus_api::memory::InMemoryHost;
use sessionbus_api::{
    AppendSessionNodesRequest, AppendSessionNodesResult, EchoExecutor, PluginError, SessionAppendNode,
    SessionCreateRequest, SessionGraphService, SessionHandle, SessionLifecycleService, SessionRegistryService,
    SessionSnapshot, SessionStateService, SessionTurnRequest, TurnInput,
};
use sessionbus_nats::wire::{GraphPage, GraphPageRequest};
use sessionbus_nats::{BusClient, BusClientConfig, Op, Subjects};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_on_a_twenty_thousand_node_session_returns_in_full() {
    let bus = common::bus_over_jetstream(Arc::new(EchoExecutor), 1).await;
    let session = common::twenty_thousand_node_session(&bus.host).await;
    let turn = SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("hello")).expect("turn");
    let result = bus.host.start_turn(turn).await.expect("the turn's reply arrives, paged");
    let nodes = &result.state.session_graph.nodes;
    assert_eq!(nodes.len(), 20_002, "every node, the turn's two included");
    for (i, node) in nodes.iter().take(20_000).enumerate() {
        assert!(node.conversation_text().expect("text").starts_with(&format!("{i:05} ")), "node {i} out of order");
    }
    assert!(!result.state.extra.contains_key("graph_next_seq"), "the client completed the pages");
    // Asked again, the completed turn is answered from the ledger, paged the same way.
    let again = SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("hello")).expect("turn");
    assert_eq!(bus.host.start_turn(again).await.expect("stored result").state.session_graph.nodes.len(), 20_002);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_pages_stop_at_the_graph_of_the_first_page() {
    let server = common::server();
    let _worker = common::serve_jetstream(&server, Arc::new(EchoExecutor)).await;
    let client = common::client_on(&server).await;
    let session = common::twenty_thousand_node_session(&client).await;
    let raw = server.client().await.expect("connect");
    let subjects = Subjects::default();
    let first =
        raw.request(subjects.session_op(&session, Op::Snapshot), Bytes::from_static(b"{}")).await.expect("first");
    let first: serde_json::Value = serde_json::from_slice(&first.payload).expect("json");
    let as_of = first["graph_as_of"].as_u64().expect("the first page says which graph it was cut from");
    assert_eq!(as_of, 20_000);
    let mut read = first["session_graph"]["nodes"].as_array().expect("nodes").len() as u64;
    // Another writer appends while the caller pages.
    client
        .append_session_nodes(
            &session,
            AppendSessionNodesRequest {
                nodes: vec![SessionAppendNode::message("User", "appended after the first page")],
                requires_ancestor_node_id: None,
            },
        )
        .await
        .expect("append");
    let mut next = first["graph_next_seq"].as_u64();
    while let Some(after_seq) = next {
        let request = GraphPageRequest { after_seq, limit: 5000, as_of: Some(as_of) };
        let reply = raw
            .request(subjects.session_op(&session, Op::GraphPage), serde_json::to_vec(&request).expect("json").into())
            .await
            .expect("page");
        let page: GraphPage = serde_json::from_slice(&reply.payload).expect("a page");
        read += page.nodes.len() as u64;
        next = page.next_seq;
    }
    assert_eq!(read, 20_000, "the pages end where the first page's graph ended");
}

/// An in-memory host that counts the snapshots read from it (and serves only what the
/// paging test calls).
struct CountingHost {
    inner: InMemoryHost,
    snapshots: AtomicUsize,
}

#[async_trait::async_trait]
impl SessionStateService for CountingHost {
    async fn snapshot_session(&self, session_id: &str) -> Result<SessionSnapshot, PluginError> {
        self.snapshots.fetch_add(1, Ordering::SeqCst);
        self.inner.snapshot_session(session_id).await
    }
}

#[async_trait::async_trait]
impl SessionLifecycleService for CountingHost {
    async fn create_session(&self, request: SessionCreateRequest) -> Result<SessionHandle, PluginError> {
        self.inner.create_session(request).await
    }
}

impl SessionRegistryService for CountingHost {}
impl sessionbus_api::TurnCancelService for CountingHost {}

#[async_trait::async_trait]
impl SessionGraphService for CountingHost {
    async fn append_session_nodes(
        &self,
        session_id: &str,
        request: AppendSessionNodesRequest,
    ) -> Result<AppendSessionNodesResult, PluginError> {
        self.inner.append_session_nodes(session_id, request).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_a_snapshot_reads_the_hosts_graph_once_not_once_per_page() {
    let server = common::server();
    let host =
        Arc::new(CountingHost { inner: InMemoryHost::new(Arc::new(EchoExecutor)), snapshots: AtomicUsize::new(0) });
    let _worker = common::worker_on(&server, Arc::clone(&host)).await;
    // One attempt, with room for an 8 MiB graph on a loaded machine: a resend would
    // read the host again.
    let config = BusClientConfig::default().with_timeout(Duration::from_secs(60)).with_attempts(1);
    let client = BusClient::new(server.client().await.expect("connect"), config);
    let session = common::twenty_thousand_node_session(&client).await;
    host.snapshots.store(0, Ordering::SeqCst);
    let snapshot = client.snapshot_session(&session).await.expect("snapshot");
    assert_eq!(snapshot.session_graph.nodes.len(), 20_000, "every page arrived");
    assert_eq!(
        host.snapshots.load(Ordering::SeqCst),
        1,
        "one read for the first page; the next pages are sliced from the graph it was cut from"
    );
}
