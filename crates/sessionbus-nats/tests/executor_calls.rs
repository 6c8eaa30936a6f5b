//! An executor's own calls to the host are writes of their own: they do not inherit
//! the idempotency key of the `start_turn` request that runs them (two appends made
//! by one turn are two appends, not a write and its "retry").

mod common;

use std::sync::{Arc, OnceLock};

use sessionbus_api::{
    AppendSessionNodesRequest, PluginError, SessionAppendNode, SessionGraphService as _, SessionLifecycleService as _,
    SessionStateService as _, SessionTurnRequest, TurnContext, TurnExecutor, TurnInput, TurnOutput,
};
use sessionbus_nats::{JetStreamHost, JetStreamHostConfig};

/// Appends two nodes through the host, one call each, then echoes.
struct AppendsTwice {
    host: Arc<OnceLock<JetStreamHost>>,
}

#[async_trait::async_trait]
impl TurnExecutor for AppendsTwice {
    async fn run(&self, context: TurnContext) -> Result<TurnOutput, PluginError> {
        let host = self.host.get().expect("the host is set before any turn");
        for text in ["first tool result", "second tool result"] {
            let request = AppendSessionNodesRequest {
                nodes: vec![SessionAppendNode::message("Tool", text)],
                requires_ancestor_node_id: None,
            };
            host.append_session_nodes(&context.turn.session_id, request).await?;
        }
        sessionbus_api::EchoExecutor.run(context).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_s_own_calls_are_separate_writes() {
    let server = common::server();
    let cell = Arc::new(OnceLock::new());
    let executor = Arc::new(AppendsTwice { host: Arc::clone(&cell) });
    let host = common::jetstream_host_with(&server, executor, JetStreamHostConfig::default()).await;
    cell.set(host.clone()).unwrap_or_else(|_| panic!("set once"));
    let _worker = common::jetstream_worker_on(&server, Arc::new(host)).await;
    let bus = common::client_on(&server).await;
    let session = common::create_root(&bus).await;
    let turn = SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("use two tools")).expect("turn");
    bus.start_turn(turn).await.expect("the turn");
    let nodes = bus.snapshot_session(&session).await.expect("snapshot").session_graph.nodes;
    let text = serde_json::to_string(&nodes).expect("json");
    assert!(text.contains("first tool result"), "the first append is stored: {text}");
    assert!(text.contains("second tool result"), "the second append is stored, not taken for a retry: {text}");
}
