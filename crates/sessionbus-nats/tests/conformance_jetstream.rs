//! The conformance suite, unchanged, against JetStreamHost used directly.

mod common;

use std::sync::Arc;

use sessionbus_api::conformance::{ConformanceHost, HostFactory};
use sessionbus_api::{
    AppendSessionNodesRequest, AppendSessionNodesResult, PluginError, SessionCreateRequest, SessionGraphService,
    SessionHandle, SessionLifecycleService, SessionSnapshot, SessionStateService, SessionTurnRequest, ToolState,
    TraceContext, TraceEvent, TurnExecutor,
};
use sessionbus_nats::JetStreamHost;
use sessionbus_testkit::NatsServer;

/// Keeps the server alive as long as the host.
struct Hosted {
    host: JetStreamHost,
    _server: Arc<NatsServer>,
}

impl ConformanceHost for Hosted {
    fn bound_to(&self, session_id: &str) -> Arc<dyn ConformanceHost> {
        Arc::new(Hosted { host: self.host.bound_to(session_id), _server: Arc::clone(&self._server) })
    }
}

#[async_trait::async_trait]
impl SessionStateService for Hosted {
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
impl SessionLifecycleService for Hosted {
    async fn create_session(&self, request: SessionCreateRequest) -> Result<SessionHandle, PluginError> {
        self.host.create_session(request).await
    }
    async fn close_session(&self, session_id: &str) -> Result<(), PluginError> {
        self.host.close_session(session_id).await
    }
    async fn start_turn(&self, request: SessionTurnRequest) -> Result<sessionbus_api::AssembledTurn, PluginError> {
        self.host.start_turn(request).await
    }
}

#[async_trait::async_trait]
impl SessionGraphService for Hosted {
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
}

struct JetStreamFactory;

#[async_trait::async_trait]
impl HostFactory for JetStreamFactory {
    async fn host(&self, executor: Arc<dyn TurnExecutor>) -> Arc<dyn ConformanceHost> {
        let stack = common::jetstream_host(executor).await;
        Arc::new(Hosted { host: stack.host, _server: Arc::new(stack.server) })
    }
}

sessionbus_api::conformance_tests!(JetStreamFactory);
