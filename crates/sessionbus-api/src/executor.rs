//! The pluggable agent logic of a turn ([`TurnExecutor`]) and the deterministic
//! [`EchoExecutor`] shipped for demos and tests.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::{
    AssistantOutput, CancellationToken, PluginError, SessionAppendNode, SessionChanges, SessionSnapshot,
    SessionTurnInput, TokenUsage, TraceContext, TraceEvent, TurnFinish, TurnOutcome,
};

/// Where a turn's trace events go; hosts provide it (durable on the bus, in memory, ...).
#[async_trait::async_trait]
pub trait TraceSink: Send + Sync {
    /// Records one event; `Ok` means it is recorded as durably as the host promises.
    async fn emit(&self, context: TraceContext, event: TraceEvent) -> Result<(), PluginError>;
}

/// Where a running turn's live output goes (text deltas, tool starts and ends: lash's
/// stream events, as JSON). Hosts provide it; it never blocks the turn, and live events
/// are not stored: the committed turn is the record.
pub trait LiveSink: Send + Sync {
    /// Passes on one event, in order; may drop it when the reader falls behind.
    fn send(&self, event: Value);
}

/// Everything an executor gets for one run of a turn.
pub struct TurnContext {
    /// The turn: session, stable turn id, input.
    pub turn: SessionTurnInput,
    /// The session as it was when the turn started.
    pub snapshot: SessionSnapshot,
    trace: Arc<dyn TraceSink>,
    cancel: CancellationToken,
    live: Option<Arc<dyn LiveSink>>,
}

impl TurnContext {
    /// A context whose trace events go to `trace`.
    pub fn new(turn: SessionTurnInput, snapshot: SessionSnapshot, trace: Arc<dyn TraceSink>) -> Self {
        Self { turn, snapshot, trace, cancel: CancellationToken::new(), live: None }
    }

    /// This context, cancelled through `cancel` (the host's handle on `cancel_turn`).
    pub fn with_cancellation(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// This context, its live output sent to `live`.
    pub fn with_live(mut self, live: Arc<dyn LiveSink>) -> Self {
        self.live = Some(live);
        self
    }

    /// Sends one live event of the turn (a text delta, a tool start or end) to whoever
    /// watches it; returns at once, and does nothing where the host streams nothing.
    pub fn live(&self, event: Value) {
        if let Some(live) = &self.live {
            live.send(event);
        }
    }

    /// Fires when the turn is cancelled (`cancel_turn`, from any client). An executor
    /// that watches it returns soon after with what it had and the outcome
    /// `Stopped(Cancelled)`; one that does not is stopped after [`crate::CANCEL_GRACE`].
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The trace context of this turn (session, turn, turn index, the turn's graph node).
    pub fn trace_context(&self) -> TraceContext {
        TraceContext {
            session_id: Some(self.turn.session_id.clone()),
            turn_id: Some(self.turn.turn_id.clone()),
            graph_node_id: Some(format!("turn:{}:{}", self.turn.session_id, self.turn.turn_id)),
            parent_graph_node_id: Some(format!("session:{}", self.turn.session_id)),
            turn_index: Some(self.snapshot.turn_index),
            ..TraceContext::default()
        }
    }

    /// Emits a trace event of this turn.
    pub async fn emit(&self, context: TraceContext, event: TraceEvent) -> Result<(), PluginError> {
        self.trace.emit(context, event).await
    }
}

/// What a turn produced; the host commits it atomically (nodes, ledger, turn index,
/// usage) or not at all.
#[derive(Clone, Debug, PartialEq)]
pub struct TurnOutput {
    /// Nodes to chain onto the session's leaf at commit.
    pub nodes: Vec<SessionAppendNode>,
    /// How the turn ended.
    pub outcome: TurnOutcome,
    /// Tokens the turn used.
    pub token_usage: TokenUsage,
    /// The assistant's visible output ([`AssistantOutput::default`] when there is none).
    pub assistant_output: AssistantOutput,
    /// LLM call records.
    pub llm_calls: Vec<Value>,
    /// Tool call records.
    pub tool_calls: Vec<Value>,
    /// Errors met.
    pub errors: Vec<Value>,
    /// What the turn changed besides `nodes` (lash's records committed verbatim, frames,
    /// ledger, tool state); [`SessionChanges::default`] for executors that only append.
    pub changes: SessionChanges,
}

/// The agent logic behind `start_turn`, supplied by the host application.
///
/// A turn runs at least once (a retry after a worker's death runs it again) and
/// commits at most once, so an executor's side effects outside the session should be
/// idempotent by turn id.
#[async_trait::async_trait]
pub trait TurnExecutor: Send + Sync {
    /// Runs one turn.
    async fn run(&self, context: TurnContext) -> Result<TurnOutput, PluginError>;
}

/// A deterministic executor: appends the user's message and an assistant reply
/// `echo: <text>`, emits `turn_started` and `turn_completed`, and finishes with that
/// reply. Token usage counts words.
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoExecutor;

impl EchoExecutor {
    /// The reply the executor gives to `text`.
    pub fn reply_to(text: &str) -> String {
        format!("echo: {text}")
    }
}

#[async_trait::async_trait]
impl TurnExecutor for EchoExecutor {
    async fn run(&self, context: TurnContext) -> Result<TurnOutput, PluginError> {
        let trace_context = context.trace_context();
        context.emit(trace_context.clone(), TraceEvent::turn_started()).await?;
        let text = context.turn.input.joined_text();
        let reply = Self::reply_to(&text);
        let words = |s: &str| s.split_whitespace().count() as u64;
        let token_usage =
            TokenUsage { input_tokens: words(&text), output_tokens: words(&reply), ..TokenUsage::default() };
        let caused_by = json!({
            "type": "turn",
            "session_id": context.turn.session_id,
            "turn_id": context.turn.turn_id,
        });
        let nodes = vec![
            with_cause(SessionAppendNode::message("User", text), &caused_by),
            with_cause(SessionAppendNode::message("Assistant", reply.clone()), &caused_by),
        ];
        context.emit(trace_context, TraceEvent::turn_completed("completed", "assistant_message")).await?;
        Ok(TurnOutput {
            nodes,
            outcome: TurnOutcome::Finished(TurnFinish::AssistantMessage { text: reply.clone() }),
            token_usage,
            assistant_output: AssistantOutput::usable(reply.clone()),
            llm_calls: Vec::new(),
            tool_calls: Vec::new(),
            errors: Vec::new(),
            changes: SessionChanges::default(),
        })
    }
}

fn with_cause(mut node: SessionAppendNode, cause: &Value) -> SessionAppendNode {
    if let SessionAppendNode::Message { caused_by, .. } = &mut node {
        *caused_by = Some(cause.clone());
    }
    node
}

impl TurnOutput {
    /// The `AssembledTurn` of this output, once committed: `state` is the session after
    /// the commit.
    pub fn assemble(self, state: SessionSnapshot, started_at_ms: u64, duration_ms: u64) -> crate::AssembledTurn {
        crate::AssembledTurn {
            state,
            outcome: self.outcome,
            assistant_output: self.assistant_output,
            execution: json!({
                "had_tool_calls": !self.tool_calls.is_empty(),
                "had_code_execution": false,
                "started_at_ms": started_at_ms,
                "duration_ms": duration_ms,
            }),
            token_usage: self.token_usage,
            children_usage: Vec::new(),
            llm_calls: self.llm_calls,
            tool_calls: self.tool_calls,
            errors: self.errors,
            extra: serde_json::Map::new(),
        }
    }
}
