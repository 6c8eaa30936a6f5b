//! Turns: their input, scope, request, outcome and result.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{PluginError, SessionAppendNode, SessionSnapshot};

/// Token counters (lash's `TokenUsage`); all five are always written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Prompt tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Completion tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Prompt tokens read from the provider's cache.
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    /// Prompt tokens written to the provider's cache.
    #[serde(default)]
    pub cache_write_input_tokens: u64,
    /// Completion tokens spent reasoning.
    #[serde(default)]
    pub reasoning_output_tokens: u64,
}

impl TokenUsage {
    /// Adds `other` to `self`, saturating.
    pub fn add(&mut self, other: &TokenUsage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_read_input_tokens = self.cache_read_input_tokens.saturating_add(other.cache_read_input_tokens);
        self.cache_write_input_tokens = self.cache_write_input_tokens.saturating_add(other.cache_write_input_tokens);
        self.reasoning_output_tokens = self.reasoning_output_tokens.saturating_add(other.reasoning_output_tokens);
    }
}

/// One item of a turn's input (tagged by `type`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InputItem {
    /// Text typed by the user.
    Text {
        /// The text.
        text: String,
    },
    /// An attachment (image, file) by reference.
    Attachment {
        /// Where the attachment is (lash `AttachmentSource`).
        source: Value,
    },
}

/// What a turn is asked to do (lash's `TurnInput`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TurnInput {
    /// The input items, in order.
    pub items: Vec<InputItem>,
    /// Protocol options for this turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_turn_options: Option<Value>,
    /// The turn id traces are recorded under; set to the turn id by [`SessionTurnRequest::new`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_turn_id: Option<String>,
}

impl TurnInput {
    /// One text item (lash's `TurnInput::text`).
    pub fn text(text: impl Into<String>) -> Self {
        Self { items: vec![InputItem::Text { text: text.into() }], protocol_turn_options: None, trace_turn_id: None }
    }

    /// The text items joined by newlines.
    pub fn joined_text(&self) -> String {
        let texts: Vec<&str> = self
            .items
            .iter()
            .filter_map(|item| match item {
                InputItem::Text { text } => Some(text.as_str()),
                InputItem::Attachment { .. } => None,
            })
            .collect();
        texts.join("\n")
    }
}

/// A turn's input bound to its session and stable turn id (lash's `SessionTurnInput`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionTurnInput {
    /// The session the turn runs in.
    pub session_id: String,
    /// The stable turn id: the idempotency key of `start_turn`.
    pub turn_id: String,
    /// The input.
    pub input: TurnInput,
}

/// The serialisable part of lash's `ScopedEffectController`: what an effect runs for.
/// A worker rebuilds its own local effect context from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecutionScope {
    /// A turn of a session.
    Turn {
        /// The session.
        session_id: String,
        /// The turn.
        turn_id: String,
    },
    /// A background process.
    Process {
        /// The process.
        process_id: String,
    },
    /// Draining a session's queue.
    QueueDrain {
        /// The session.
        session_id: String,
        /// The drain.
        drain_id: String,
    },
    /// Deleting a session.
    SessionDelete {
        /// The session.
        session_id: String,
    },
    /// A runtime-wide operation.
    RuntimeOperation {
        /// The operation.
        operation_id: String,
    },
}

impl ExecutionScope {
    /// The turn scope for `turn_id` of `session_id`.
    pub fn turn(session_id: impl Into<String>, turn_id: impl Into<String>) -> Self {
        Self::Turn { session_id: session_id.into(), turn_id: turn_id.into() }
    }

    /// The turn this scope belongs to, if any.
    pub fn turn_id(&self) -> Option<&str> {
        match self {
            Self::Turn { turn_id, .. } => Some(turn_id),
            _ => None,
        }
    }

    /// The session this scope belongs to, if any.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            Self::Turn { session_id, .. }
            | Self::QueueDrain { session_id, .. }
            | Self::SessionDelete { session_id } => Some(session_id),
            Self::Process { .. } | Self::RuntimeOperation { .. } => None,
        }
    }
}

/// A validated `start_turn` request: built only through [`SessionTurnRequest::new`], so
/// every instance has a non-empty turn id, a turn scope of that turn in that session,
/// and `input.trace_turn_id == Some(turn_id)`.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionTurnRequest {
    turn: SessionTurnInput,
    scope: ExecutionScope,
}

impl SessionTurnRequest {
    /// Checks the request as lash's `SessionTurnRequest::new` does.
    pub fn new(
        session_id: impl Into<String>,
        turn_id: impl Into<String>,
        mut input: TurnInput,
        scope: ExecutionScope,
    ) -> Result<Self, PluginError> {
        let session_id = session_id.into();
        let turn_id = turn_id.into();
        if turn_id.trim().is_empty() {
            return Err(PluginError::InvalidRequest("session turns require a non-empty stable turn id".to_string()));
        }
        if scope.turn_id() != Some(turn_id.as_str()) {
            return Err(PluginError::InvalidRequest(format!(
                "session turn `{turn_id}` requires an effect turn scope with the same id"
            )));
        }
        if scope.session_id() != Some(session_id.as_str()) {
            return Err(PluginError::InvalidRequest(format!(
                "session turn `{turn_id}` requires an execution scope for session `{session_id}`"
            )));
        }
        if let Some(input_turn_id) = input.trace_turn_id.as_deref()
            && input_turn_id != turn_id
        {
            return Err(PluginError::InvalidRequest(format!(
                "input trace_turn_id `{input_turn_id}` does not match turn id `{turn_id}`"
            )));
        }
        input.trace_turn_id = Some(turn_id.clone());
        Ok(Self { turn: SessionTurnInput { session_id, turn_id, input }, scope })
    }

    /// A request for `turn_id` of `session_id` with its own turn scope.
    pub fn for_turn(
        session_id: impl Into<String>,
        turn_id: impl Into<String>,
        input: TurnInput,
    ) -> Result<Self, PluginError> {
        let session_id = session_id.into();
        let turn_id = turn_id.into();
        let scope = ExecutionScope::turn(session_id.clone(), turn_id.clone());
        Self::new(session_id, turn_id, input, scope)
    }

    /// The session the turn runs in.
    pub fn session_id(&self) -> &str {
        &self.turn.session_id
    }

    /// The stable turn id.
    pub fn turn_id(&self) -> &str {
        &self.turn.turn_id
    }

    /// The input, with `trace_turn_id` set to the turn id.
    pub fn input(&self) -> &TurnInput {
        &self.turn.input
    }

    /// The execution scope.
    pub fn scope(&self) -> &ExecutionScope {
        &self.scope
    }

    /// Splits the request into its turn input and scope.
    pub fn into_parts(self) -> (SessionTurnInput, ExecutionScope) {
        (self.turn, self.scope)
    }
}

/// How a turn that finished normally ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnFinish {
    /// With an assistant message.
    AssistantMessage {
        /// The message text.
        text: String,
    },
    /// With a final value.
    FinalValue {
        /// The value.
        value: Value,
    },
    /// With a tool's value.
    ToolValue {
        /// The tool.
        tool_name: String,
        /// The value.
        value: Value,
    },
}

/// Why a turn stopped early.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnStop {
    /// Cancelled by the caller.
    Cancelled,
    /// Ended before completing.
    Incomplete,
    /// The input was refused.
    InvalidInput,
    /// The turn budget ran out.
    MaxTurns,
    /// A tool failed.
    ToolFailure,
    /// The model provider failed.
    ProviderError,
    /// A plugin aborted the turn.
    PluginAbort,
    /// The runtime failed.
    RuntimeError,
    /// The agent submitted an error value.
    SubmittedError {
        /// The value.
        value: Value,
    },
    /// A tool returned an error value.
    ToolError {
        /// The tool.
        tool_name: String,
        /// The value.
        value: Value,
    },
}

/// How a turn ended (lash's `TurnOutcome`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnOutcome {
    /// Finished normally.
    Finished(TurnFinish),
    /// Stopped early.
    Stopped(TurnStop),
    /// Switched to another agent frame.
    AgentFrameSwitch {
        /// The new frame.
        frame_id: String,
        /// The task handed to it.
        task: String,
        /// Nodes it starts with.
        #[serde(default)]
        initial_nodes: Vec<SessionAppendNode>,
    },
}

/// How usable a turn's visible output is (lash's `OutputState`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputState {
    /// The output can be shown as it is.
    Usable,
    /// There is no output.
    #[default]
    EmptyOutput,
    /// The output is only a traceback.
    TracebackOnly,
    /// The output was recovered after an error.
    RecoveredFromError,
}

/// The assistant's visible output of a turn (lash's `AssistantOutput`). The default is
/// lash's empty output: no text, `empty_output`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssistantOutput {
    /// The text safe to show.
    pub safe_text: String,
    /// The text as the model wrote it.
    pub raw_text: String,
    /// How usable it is.
    pub state: OutputState,
}

impl AssistantOutput {
    /// A usable output of `text` (safe and raw alike).
    pub fn usable(text: impl Into<String>) -> Self {
        let text = text.into();
        Self { safe_text: text.clone(), raw_text: text, state: OutputState::Usable }
    }
}

/// A turn's result (lash's `AssembledTurn`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssembledTurn {
    /// The session after the turn committed.
    pub state: SessionSnapshot,
    /// How the turn ended.
    pub outcome: TurnOutcome,
    /// The assistant's visible output; always written (lash requires it), read as the
    /// empty output from records of writers that left it out.
    #[serde(default)]
    pub assistant_output: AssistantOutput,
    /// Execution facts (timing, tool use).
    #[serde(default)]
    pub execution: Value,
    /// Tokens the turn used.
    #[serde(default)]
    pub token_usage: TokenUsage,
    /// Usage of child sessions.
    #[serde(default)]
    pub children_usage: Vec<Value>,
    /// LLM call records.
    #[serde(default)]
    pub llm_calls: Vec<Value>,
    /// Tool call records.
    #[serde(default)]
    pub tool_calls: Vec<Value>,
    /// Errors met during the turn.
    #[serde(default)]
    pub errors: Vec<Value>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A one-shot completion (lash's `DirectCompletion`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DirectCompletion {
    /// The completion text.
    pub text: String,
    /// Tokens used.
    pub usage: TokenUsage,
    /// Every other field (the LLM call record, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A one-shot completion with the provider's full response (lash's `DirectLlmCompletion`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DirectLlmCompletion {
    /// The provider response (lash `LlmResponse`).
    pub response: Value,
    /// Tokens used.
    pub usage: TokenUsage,
}
