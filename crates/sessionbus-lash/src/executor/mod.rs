//! [`LashExecutor`]: a `TurnExecutor` that runs real lash turns on a sessionbus worker
//! (issue 12; decision 0009).
//!
//! For each turn it builds a lash runtime around the turn's snapshot
//! (`open_with_state(RuntimeSessionState::from_snapshot(..))`), runs the turn under the
//! bus's stable turn id, and returns lash's node records verbatim with what lash
//! changed besides ([`commit::session_changes`]); the bus commits them in one batch.
//! lash itself persists into a [`capture::CapturingStore`] that lives for the turn.
//!
//! - [`capture`]: the capturing `RuntimePersistence`;
//! - [`commit`]: lash's `RuntimeCommit`s -> `SessionChanges` (pure, table-tested);
//! - [`trace`]: lash's synchronous trace sink -> the turn's `TraceSink`, bounded;
//! - [`tools`]: the built-in demo tools;
//! - [`output`]: lash's turn result -> the bus's `TurnOutput`;
//! - `live`: lash's turn activity -> the turn's live output (streamed, not stored);
//! - `timeout`: the per-tool time limit.
//!
//! A cancel of the turn (`cancel_turn`, from any client) fires lash's cancellation
//! token: lash stops the turn and returns what it had, committed as
//! `Stopped(Cancelled)`.

pub mod capture;
pub mod commit;
mod error;
mod live;
pub mod output;
mod timeout;
pub mod tools;
pub mod trace;

use std::sync::Arc;

use lash::CancellationToken;
use lash_core::{
    InMemoryAttachmentStore, InMemoryProcessExecutionEnvStore, InlineEffectHost, ModelSpec, Provider,
    ProviderComponents, ProviderHandle, RuntimeSessionState, ToolProvider,
};
use serde_json::Value;
use sessionbus_api::{PluginError, TurnContext, TurnExecutor, TurnOutput};

pub use error::LashTurnError;
pub use timeout::DEFAULT_TOOL_TIMEOUT;

use capture::CapturingStore;
use timeout::TimedTools;
use trace::TraceBridge;

/// The context window the executor's model spec declares when none is given.
pub const DEFAULT_CONTEXT_TOKENS: usize = 200_000;

/// What a [`LashExecutor`] runs turns with.
pub struct LashExecutorConfig {
    /// The model provider; each turn gets its own clone.
    pub provider: Box<dyn Provider>,
    /// The model lash asks for.
    pub model: ModelSpec,
    /// The tools turns may call (the embedding application's, or
    /// [`tools::demo_tools`]).
    pub tools: Arc<dyn ToolProvider>,
    /// How many trace records a turn may have in flight before they are dropped.
    pub trace_capacity: usize,
    /// The longest one tool call may run; past it the call is stopped and the model is
    /// told so ([`DEFAULT_TOOL_TIMEOUT`] unless set). The whole turn's limit is the
    /// host's (`JetStreamHostConfig::max_turn_duration`).
    pub tool_timeout: std::time::Duration,
}

impl LashExecutorConfig {
    /// A config for `provider` asking for `model` (a context window of
    /// [`DEFAULT_CONTEXT_TOKENS`]), with the demo tools.
    pub fn new(provider: Box<dyn Provider>, model: &str) -> Result<Self, LashTurnError> {
        let model = ModelSpec::from_token_limits(model, Default::default(), DEFAULT_CONTEXT_TOKENS, None)
            .map_err(|err| LashTurnError::Model { model: model.to_owned(), why: err.to_string() })?;
        Ok(Self {
            provider,
            model,
            tools: tools::demo_tools(),
            trace_capacity: trace::DEFAULT_TRACE_CAPACITY,
            tool_timeout: DEFAULT_TOOL_TIMEOUT,
        })
    }

    /// The same config with each tool call limited to `limit`.
    pub fn with_tool_timeout(mut self, limit: std::time::Duration) -> Self {
        self.tool_timeout = limit;
        self
    }

    /// The same config with `tools` instead.
    pub fn with_tools(mut self, tools: Arc<dyn ToolProvider>) -> Self {
        self.tools = tools;
        self
    }
}

/// A `TurnExecutor` running lash turns (see the module docs).
pub struct LashExecutor {
    config: LashExecutorConfig,
}

impl LashExecutor {
    /// An executor running turns as `config` says.
    pub fn new(config: LashExecutorConfig) -> Self {
        Self { config }
    }

    fn core(&self, trace: Arc<TraceBridge>) -> Result<lash::LashCore, LashTurnError> {
        let provider = ProviderHandle::new(ProviderComponents::new(self.config.provider.clone_boxed()));
        lash::LashCore::standard_builder()
            .provider(provider)
            .model(self.config.model.clone())
            .tools(Arc::new(TimedTools::new(Arc::clone(&self.config.tools), self.config.tool_timeout)))
            .effect_host(Arc::new(InlineEffectHost::default()))
            .attachment_store(Arc::new(InMemoryAttachmentStore::new()))
            .process_env_store(Arc::new(InMemoryProcessExecutionEnvStore::default()))
            .trace_sink(trace)
            .build()
            .map_err(LashTurnError::Open)
    }

    /// Runs the turn of `context` in lash under `cancel` and returns what the bus
    /// commits, draining lash's trace records into the turn's sink meanwhile.
    pub async fn run_turn(
        &self,
        context: &TurnContext,
        cancel: CancellationToken,
    ) -> Result<TurnOutput, LashTurnError> {
        let (bridge, mut records) = TraceBridge::new(context.trace_context(), self.config.trace_capacity);
        let bridge = Arc::new(bridge);
        let turn = async {
            let result = self.turn(context, Arc::clone(&bridge), cancel).await;
            bridge.close();
            result
        };
        let drain = async {
            let mut failed = 0u64;
            while let Some((trace_context, event)) = records.recv().await {
                if context.emit(trace_context, event).await.is_err() {
                    failed += 1;
                }
            }
            failed
        };
        let (result, failed) = tokio::join!(turn, drain);
        if failed > 0 || bridge.dropped() > 0 {
            tracing::warn!(
                turn_id = %context.turn.turn_id,
                dropped = bridge.dropped(),
                failed,
                "some of a lash turn's trace records were not stored"
            );
        }
        result
    }

    async fn turn(
        &self,
        context: &TurnContext,
        trace: Arc<TraceBridge>,
        cancel: CancellationToken,
    ) -> Result<TurnOutput, LashTurnError> {
        let mut snapshot: lash_core::SessionSnapshot = convert("snapshot", &context.snapshot)?;
        // A session the bus created without a provider runs on this executor's; one
        // recorded for another provider is refused by lash (`ProviderMismatch`).
        if snapshot.policy.provider_id.trim().is_empty() {
            snapshot.policy.provider_id = self.config.provider.kind().to_owned();
        }
        let input: lash::TurnInput = convert("turn input", &context.turn.input)?;
        let nodes = snapshot.session_graph.nodes.iter().map(serde_json::to_value).collect::<Result<Vec<_>, _>>();
        let nodes = nodes.map_err(|err| LashTurnError::Unreadable { what: "snapshot", why: err.to_string() })?;
        let tool_generation = context.snapshot.tool_state_generation.unwrap_or(0);
        let core = self.core(trace)?;
        let store = CapturingStore::new();
        let session = core
            .session(context.turn.session_id.clone())
            .store(store.clone())
            .open_with_state(RuntimeSessionState::from_snapshot(snapshot))
            .await
            .map_err(LashTurnError::Open)?;
        let tool_state = session.observe().tool_state().and_then(|state| serde_json::to_value(state).ok());
        let start = commit::TurnStart { nodes, tool_state, tool_generation };
        let result = session
            .turn(input)
            .turn_id(context.turn.turn_id.clone())
            .cancel(cancel)
            .stream_to(&live::LiveActivities(context))
            .await
            .map_err(LashTurnError::Turn)?;
        let changes = commit::session_changes(&store.take_commits(), &start)?;
        output::turn_output(&result, changes)
    }
}

#[async_trait::async_trait]
impl TurnExecutor for LashExecutor {
    async fn run(&self, context: TurnContext) -> Result<TurnOutput, PluginError> {
        let cancel = context.cancellation().clone();
        self.run_turn(&context, cancel).await.map_err(|err| err.into_plugin_error(&context.turn.turn_id))
    }
}

/// `value` read as lash's `T` through its JSON.
fn convert<T: serde::de::DeserializeOwned>(
    what: &'static str,
    value: &impl serde::Serialize,
) -> Result<T, LashTurnError> {
    let json: Value =
        serde_json::to_value(value).map_err(|err| LashTurnError::Unreadable { what, why: err.to_string() })?;
    serde_json::from_value(json).map_err(|err| LashTurnError::Unreadable { what, why: err.to_string() })
}
