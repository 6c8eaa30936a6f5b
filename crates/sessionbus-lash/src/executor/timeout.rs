//! A per-tool time limit: a tool call that runs longer than it is stopped and answers
//! the model with an error, so one stuck tool cannot hold a turn (and its lease) for
//! the whole turn limit.

use std::sync::Arc;
use std::time::Duration;

use lash_core::{
    PreparedToolCall, ProgressSender, ToolCall, ToolContext, ToolContract, ToolExecutionGrant, ToolId, ToolManifest,
    ToolPrepareCall, ToolProvider, ToolResult,
};

/// The time limit of one tool call when the embedding application sets none.
pub const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(300);

/// `inner`'s tools, each call stopped after `limit`.
pub(super) struct TimedTools {
    inner: Arc<dyn ToolProvider>,
    limit: Duration,
}

impl TimedTools {
    pub(super) fn new(inner: Arc<dyn ToolProvider>, limit: Duration) -> Self {
        Self { inner, limit }
    }

    async fn limited(&self, tool: &str, call: impl std::future::Future<Output = ToolResult>) -> ToolResult {
        match tokio::time::timeout(self.limit, call).await {
            Ok(result) => result,
            Err(_) => ToolResult::err_fmt(format_args!(
                "tool `{tool}` ran longer than its limit of {:?} and was stopped",
                self.limit
            )),
        }
    }
}

#[async_trait::async_trait]
impl ToolProvider for TimedTools {
    fn tool_manifests(&self) -> Vec<ToolManifest> {
        self.inner.tool_manifests()
    }

    fn resolve_manifest(&self, name: &str) -> Option<ToolManifest> {
        self.inner.resolve_manifest(name)
    }

    fn resolve_manifest_by_id(&self, id: &ToolId) -> Option<ToolManifest> {
        self.inner.resolve_manifest_by_id(id)
    }

    fn resolve_contract(&self, name: &str) -> Option<Arc<ToolContract>> {
        self.inner.resolve_contract(name)
    }

    fn resolve_contract_by_id(&self, id: &ToolId) -> Option<Arc<ToolContract>> {
        self.inner.resolve_contract_by_id(id)
    }

    async fn prepare_tool_call(&self, call: ToolPrepareCall<'_>) -> Result<PreparedToolCall, ToolResult> {
        self.inner.prepare_tool_call(call).await
    }

    async fn prepare_granted_tool_call(
        &self,
        grant: &ToolExecutionGrant,
        call: ToolPrepareCall<'_>,
    ) -> Result<PreparedToolCall, ToolResult> {
        self.inner.prepare_granted_tool_call(grant, call).await
    }

    async fn execute(&self, call: ToolCall<'_>) -> ToolResult {
        let tool = call.name.to_owned();
        self.limited(&tool, self.inner.execute(call)).await
    }

    async fn execute_granted(
        &self,
        grant: &ToolExecutionGrant,
        args: &serde_json::Value,
        context: &ToolContext<'_>,
        progress: Option<&ProgressSender>,
    ) -> ToolResult {
        let tool = grant.manifest.name.clone();
        self.limited(&tool, self.inner.execute_granted(grant, args, context, progress)).await
    }

    async fn execute_by_id(
        &self,
        tool_id: &ToolId,
        args: &serde_json::Value,
        context: &ToolContext<'_>,
        progress: Option<&ProgressSender>,
    ) -> ToolResult {
        let tool = self.inner.resolve_manifest_by_id(tool_id).map_or_else(|| tool_id.to_string(), |m| m.name);
        self.limited(&tool, self.inner.execute_by_id(tool_id, args, context, progress)).await
    }
}
