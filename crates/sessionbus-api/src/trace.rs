//! The lash trace schema (version 2): [`TraceContext`], [`TraceEvent`], [`TraceRecord`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The trace schema version sessionbus reads and writes.
pub const TRACE_SCHEMA_VERSION: u32 = 2;

/// Where a trace event happened: session, turn and graph position.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceContext {
    /// The session; set from the bus subject when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<String>,
    /// The graph node this record describes (span ids derive from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_node_id: Option<String>,
    /// The parent graph node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_graph_node_id: Option<String>,
    /// The turn's index in the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_index: Option<u64>,
    /// The LLM call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_call_id: Option<String>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What happened (tagged by `type`). Each kind keeps fields it does not name in `extra`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TraceEvent {
    /// A session started.
    SessionStarted {
        /// Other fields.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// A turn started.
    TurnStarted {
        /// Other fields.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// A prompt was assembled.
    PromptBuilt {
        /// Hash of the prompt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt_hash: Option<String>,
        /// Prompt length in characters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt_chars: Option<u64>,
        /// Other fields.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// An LLM call started.
    LlmCallStarted {
        /// The request sent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<Value>,
        /// Other fields.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// An LLM call completed.
    LlmCallCompleted {
        /// The response.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response: Option<Value>,
        /// Tokens used.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Value>,
        /// Other fields.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// An LLM call failed.
    LlmCallFailed {
        /// The error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<Value>,
        /// Other fields.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// A provider-level event during an LLM call (retry, rate limit, ...).
    LlmProviderEvent {
        /// Other fields.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// A streaming event during an LLM call.
    LlmStreamEvent {
        /// Other fields.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// A tool call started.
    ToolCallStarted {
        /// The call.
        call_id: String,
        /// The tool.
        name: String,
        /// The arguments.
        #[serde(default)]
        args: Value,
        /// Other fields.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// A tool call completed.
    ToolCallCompleted {
        /// The call.
        call_id: String,
        /// The tool.
        name: String,
        /// The arguments.
        #[serde(default)]
        args: Value,
        /// The output (with its `outcome.status`).
        #[serde(default)]
        output: Value,
        /// Duration in milliseconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_ms: Option<u64>,
        /// Other fields.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// A protocol step.
    ProtocolStep {
        /// Other fields.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// Token usage so far.
    TokenUsage {
        /// This step's usage.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Value>,
        /// The cumulative usage.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cumulative: Option<Value>,
        /// Other fields.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// A turn completed.
    TurnCompleted {
        /// `completed`, `failed`, ...
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
        /// Why it ended.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        done_reason: Option<Value>,
        /// Other fields.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// An application-defined event.
    Custom {
        /// The event's name.
        name: String,
        /// The payload.
        #[serde(default)]
        payload: Value,
        /// Other fields.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
}

impl TraceEvent {
    /// The `type` tag of this event (`turn_started`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SessionStarted { .. } => "session_started",
            Self::TurnStarted { .. } => "turn_started",
            Self::PromptBuilt { .. } => "prompt_built",
            Self::LlmCallStarted { .. } => "llm_call_started",
            Self::LlmCallCompleted { .. } => "llm_call_completed",
            Self::LlmCallFailed { .. } => "llm_call_failed",
            Self::LlmProviderEvent { .. } => "llm_provider_event",
            Self::LlmStreamEvent { .. } => "llm_stream_event",
            Self::ToolCallStarted { .. } => "tool_call_started",
            Self::ToolCallCompleted { .. } => "tool_call_completed",
            Self::ProtocolStep { .. } => "protocol_step",
            Self::TokenUsage { .. } => "token_usage",
            Self::TurnCompleted { .. } => "turn_completed",
            Self::Custom { .. } => "custom",
        }
    }

    /// A `turn_started` event with no extra fields.
    pub fn turn_started() -> Self {
        Self::TurnStarted { extra: Map::new() }
    }

    /// A `turn_completed` event with `status`.
    pub fn turn_completed(status: impl Into<String>) -> Self {
        Self::TurnCompleted { status: Some(status.into()), done_reason: None, extra: Map::new() }
    }
}

/// One stored trace record: an event with its context, id and time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// Always [`TRACE_SCHEMA_VERSION`] for records sessionbus writes.
    pub schema_version: u32,
    /// Unique record id (a UUID).
    pub id: String,
    /// RFC 3339 time.
    pub timestamp: String,
    /// Where it happened.
    pub context: TraceContext,
    /// What happened.
    #[serde(flatten)]
    pub event: TraceEvent,
}

impl TraceRecord {
    /// A new record with a fresh id, stamped now.
    pub fn new(context: TraceContext, event: TraceEvent) -> Self {
        Self {
            schema_version: TRACE_SCHEMA_VERSION,
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: crate::clock::now_rfc3339(),
            context,
            event,
        }
    }
}

/// Applies the trace session rule: `session_id` (from the subject, or the session a
/// service is bound to) is authoritative. A context naming another session is
/// `InvalidRequest`; one naming none gets `session_id` set.
pub fn claim_trace_context(context: &mut TraceContext, session_id: &str) -> Result<(), crate::PluginError> {
    match context.session_id.as_deref() {
        Some(named) if named != session_id => Err(crate::PluginError::InvalidRequest(format!(
            "trace context names session `{named}` but was sent for session `{session_id}`"
        ))),
        Some(_) => Ok(()),
        None => {
            context.session_id = Some(session_id.to_owned());
            Ok(())
        }
    }
}
