//! Shared test setup: real nats-servers and the stacks the conformance suite runs on.

#![allow(dead_code)]

use std::any::Any;
use std::sync::Arc;

use sessionbus_api::conformance::ConformanceHost;
use sessionbus_api::memory::InMemoryHost;
use sessionbus_api::{
    AppendSessionNodesRequest, AppendSessionNodesResult, AssembledTurn, PluginError, SessionCreateRequest,
    SessionGraphService, SessionHandle, SessionHost, SessionLifecycleService, SessionListPage, SessionListQuery,
    SessionRegistryService, SessionSnapshot, SessionStateService, SessionTurnRequest, ToolState, TraceContext,
    TraceEvent, TurnExecutor,
};
use sessionbus_api::{SessionHistoryService, ToolHistory, TurnListPage, TurnListQuery};
use sessionbus_nats::{BusClient, BusClientConfig, JetStreamHost, JetStreamHostConfig, Worker, WorkerConfig};
use sessionbus_testkit::NatsServer;

/// A host that can be bound to a session.
pub trait Bindable: SessionHost + Sized + 'static {
    fn bind(&self, session_id: &str) -> Self;
}

impl Bindable for JetStreamHost {
    fn bind(&self, session_id: &str) -> Self {
        self.bound_to(session_id)
    }
}

impl Bindable for BusClient {
    fn bind(&self, session_id: &str) -> Self {
        self.bound(session_id)
    }
}

/// A host plus everything it needs kept alive (servers, workers).
pub struct Kept<H> {
    pub host: H,
    pub keep: Arc<dyn Any + Send + Sync>,
}

impl<H: Bindable> ConformanceHost for Kept<H> {
    fn bound_to(&self, session_id: &str) -> Arc<dyn ConformanceHost> {
        Arc::new(Kept { host: self.host.bind(session_id), keep: Arc::clone(&self.keep) })
    }
}

#[async_trait::async_trait]
impl<H: Bindable> SessionStateService for Kept<H> {
    async fn snapshot_current(&self) -> Result<SessionSnapshot, PluginError> {
        self.host.snapshot_current().await
    }
    async fn snapshot_session(&self, session_id: &str) -> Result<SessionSnapshot, PluginError> {
        self.host.snapshot_session(session_id).await
    }
    async fn tool_catalog(&self, session_id: &str) -> Result<Vec<serde_json::Value>, PluginError> {
        self.host.tool_catalog(session_id).await
    }
    async fn shared_tool_catalog(&self, session_id: &str) -> Result<Arc<Vec<serde_json::Value>>, PluginError> {
        self.host.shared_tool_catalog(session_id).await
    }
    async fn tool_state(&self, session_id: &str) -> Result<ToolState, PluginError> {
        self.host.tool_state(session_id).await
    }
    async fn apply_tool_state(&self, session_id: &str, snapshot: ToolState) -> Result<u64, PluginError> {
        self.host.apply_tool_state(session_id, snapshot).await
    }
    async fn set_tool_membership(&self, session_id: &str, names: &[String], present: bool) -> Result<u64, PluginError> {
        self.host.set_tool_membership(session_id, names, present).await
    }
}

#[async_trait::async_trait]
impl<H: Bindable> SessionLifecycleService for Kept<H> {
    async fn create_session(&self, request: SessionCreateRequest) -> Result<SessionHandle, PluginError> {
        self.host.create_session(request).await
    }
    async fn close_session(&self, session_id: &str) -> Result<(), PluginError> {
        self.host.close_session(session_id).await
    }
    async fn start_turn(&self, request: SessionTurnRequest) -> Result<AssembledTurn, PluginError> {
        self.host.start_turn(request).await
    }
}

#[async_trait::async_trait]
impl<H: Bindable> SessionGraphService for Kept<H> {
    async fn append_session_nodes(
        &self,
        session_id: &str,
        request: AppendSessionNodesRequest,
    ) -> Result<AppendSessionNodesResult, PluginError> {
        self.host.append_session_nodes(session_id, request).await
    }
    async fn emit_trace_event(&self, context: TraceContext, event: TraceEvent) -> Result<(), PluginError> {
        self.host.emit_trace_event(context, event).await
    }
    async fn emit_trace_events(&self, records: Vec<(TraceContext, TraceEvent)>) -> Result<(), PluginError> {
        self.host.emit_trace_events(records).await
    }
}

#[async_trait::async_trait]
impl<H: Bindable> sessionbus_api::TurnCancelService for Kept<H> {
    async fn cancel_turn(&self, session_id: &str, turn_id: &str) -> Result<sessionbus_api::CancelReply, PluginError> {
        self.host.cancel_turn(session_id, turn_id).await
    }
}

#[async_trait::async_trait]
impl<H: Bindable> SessionRegistryService for Kept<H> {
    async fn list_sessions(&self, query: &SessionListQuery) -> Result<SessionListPage, PluginError> {
        self.host.list_sessions(query).await
    }
}

#[async_trait::async_trait]
impl<H: Bindable> SessionHistoryService for Kept<H> {
    async fn list_turns(&self, session_id: &str, query: &TurnListQuery) -> Result<TurnListPage, PluginError> {
        self.host.list_turns(session_id, query).await
    }
    async fn tool_history(&self, session_id: &str) -> Result<ToolHistory, PluginError> {
        self.host.tool_history(session_id).await
    }
}

/// The messages `sniffer` receives until it has been quiet for 500 ms, counted by what
/// `key` says each one is.
pub async fn count_until_quiet(
    sniffer: &mut async_nats::Subscriber,
    key: impl Fn(&async_nats::Message) -> String,
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(std::time::Duration::from_millis(500), futures::StreamExt::next(sniffer)).await
    {
        *counts.entry(key(&message)).or_insert(0) += 1;
    }
    counts
}

pub fn server() -> NatsServer {
    NatsServer::start().expect("start nats-server")
}

pub async fn jetstream_host_on(server: &NatsServer, executor: Arc<dyn TurnExecutor>) -> JetStreamHost {
    jetstream_host_with(server, executor, JetStreamHostConfig::default()).await
}

pub async fn worker_on<H: SessionHost + 'static>(server: &NatsServer, host: Arc<H>) -> Worker {
    let client = server.client().await.expect("connect");
    Worker::start(client, host, WorkerConfig::default()).await.expect("worker")
}

/// A JetStream host on its own connection, served by a worker that learns tool
/// generations from JetStream events.
pub async fn serve_jetstream(server: &NatsServer, executor: Arc<dyn TurnExecutor>) -> Worker {
    jetstream_worker_on(server, Arc::new(jetstream_host_on(server, executor).await)).await
}

/// A worker that learns tool generations from JetStream events (for JetStream hosts).
pub async fn jetstream_worker_on(server: &NatsServer, host: Arc<JetStreamHost>) -> Worker {
    let client = server.client().await.expect("connect");
    Worker::start(client, host, WorkerConfig::default().with_tool_events(true)).await.expect("worker")
}

pub async fn client_on(server: &NatsServer) -> BusClient {
    BusClient::new(server.client().await.expect("connect"), BusClientConfig::default())
}

/// What a bus stack keeps alive.
pub struct BusParts {
    pub workers: Vec<Worker>,
    pub server: NatsServer,
}

/// BusClient -> `workers` x Worker -> JetStreamHost (one host per worker).
pub async fn bus_over_jetstream(executor: Arc<dyn TurnExecutor>, workers: usize) -> Kept<BusClient> {
    let server = server();
    let mut started = Vec::new();
    for _ in 0..workers {
        let host = Arc::new(jetstream_host_on(&server, Arc::clone(&executor)).await);
        started.push(jetstream_worker_on(&server, host).await);
    }
    let client = client_on(&server).await;
    Kept { host: client, keep: Arc::new(BusParts { workers: started, server }) }
}

/// BusClient -> Worker -> InMemoryHost.
pub async fn bus_over_memory(executor: Arc<dyn TurnExecutor>) -> Kept<BusClient> {
    let server = server();
    let worker = worker_on(&server, Arc::new(InMemoryHost::new(executor))).await;
    let client = client_on(&server).await;
    Kept { host: client, keep: Arc::new(BusParts { workers: vec![worker], server }) }
}

/// A JetStreamHost with its own connection and config.
pub async fn jetstream_host_with(
    server: &NatsServer,
    executor: Arc<dyn TurnExecutor>,
    config: JetStreamHostConfig,
) -> JetStreamHost {
    let client = server.client().await.expect("connect");
    let layout = sessionbus_nats::jetstream::LayoutConfig::default();
    sessionbus_nats::jetstream::ensure_layout(&async_nats::jetstream::new(client.clone()), &config.subjects, &layout)
        .await
        .expect("the JetStream layout (as `sessionbus setup` makes it)");
    JetStreamHost::connect(client, executor, config).await.expect("host")
}

/// An executor that sleeps, then echoes.
pub struct SlowExecutor(pub std::time::Duration);

#[async_trait::async_trait]
impl TurnExecutor for SlowExecutor {
    async fn run(&self, context: sessionbus_api::TurnContext) -> Result<sessionbus_api::TurnOutput, PluginError> {
        tokio::time::sleep(self.0).await;
        sessionbus_api::EchoExecutor.run(context).await
    }
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub async fn create_root(host: &impl SessionLifecycleService) -> String {
    let id = new_id();
    host.create_session(SessionCreateRequest::root(Some(id.clone()))).await.expect("create session");
    id
}

/// A session of 20,000 nodes of about 420 bytes each (over 8 MiB of graph), node `i`'s
/// text starting with `i` as five digits.
pub async fn twenty_thousand_node_session(host: &(impl SessionLifecycleService + SessionGraphService)) -> String {
    let session = create_root(host).await;
    let filler = "z".repeat(400);
    for batch in 0..40 {
        let nodes = (0..500)
            .map(|n| sessionbus_api::SessionAppendNode::message("User", format!("{:05} {filler}", batch * 500 + n)))
            .collect();
        host.append_session_nodes(&session, AppendSessionNodesRequest { nodes, requires_ancestor_node_id: None })
            .await
            .expect("append");
    }
    session
}

/// A turn executor that says it started, keeps the text of the nodes its snapshot
/// holds, then waits to be released before it echoes. Clones share their gates.
#[derive(Clone, Default)]
pub struct Gated {
    pub started: Arc<tokio::sync::Notify>,
    pub release: Arc<tokio::sync::Notify>,
    pub seen: Arc<std::sync::Mutex<Vec<Vec<String>>>>,
}

#[async_trait::async_trait]
impl TurnExecutor for Gated {
    async fn run(&self, context: sessionbus_api::TurnContext) -> Result<sessionbus_api::TurnOutput, PluginError> {
        let nodes = context.snapshot.session_graph.nodes.iter().map(|node| format!("{node:?}")).collect();
        self.seen.lock().expect("lock").push(nodes);
        self.started.notify_one();
        self.release.notified().await;
        sessionbus_api::EchoExecutor.run(context).await
    }
}

/// Starts a turn of `session` through `host` in a task of its own, and waits until the
/// gated executor says it runs. The handle gives the turn's outcome once released.
pub async fn start_gated_turn<H: SessionLifecycleService + Clone + 'static>(
    host: &H,
    gate: &Gated,
    session: &str,
    turn_id: &str,
) -> tokio::task::JoinHandle<Result<AssembledTurn, PluginError>> {
    let turn = SessionTurnRequest::for_turn(session, turn_id, sessionbus_api::TurnInput::text(turn_id)).expect("turn");
    let host = host.clone();
    let running = tokio::spawn(async move { host.start_turn(turn).await });
    tokio::time::timeout(std::time::Duration::from_secs(10), gate.started.notified()).await.expect("the turn starts");
    running
}
