//! The lash trace schema (version 2): [`TraceContext`], [`TraceEvent`], [`TraceRecord`].
//!
//! Every event lash-trace writes is read and written back unchanged, and every event
//! sessionbus writes is one lash-trace reads. Kinds this version does not name (a newer
//! lash's) are carried verbatim as [`TraceEvent::Other`], never refused.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
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

/// Defines [`TraceEvent`] and, from the same variant list, the private mirror that reads
/// its named kinds (serde's `remote` derive), so the two cannot drift apart.
macro_rules! trace_events {
    ($($variants:tt)*) => {
        /// What happened (tagged by `type`). Each kind keeps fields it does not name in `extra`;
        /// a kind not named here is kept whole in [`TraceEvent::Other`]. A named kind must have
        /// the fields lash-trace requires of it, else it is refused.
        #[derive(Clone, Debug, PartialEq, Serialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum TraceEvent {
            $($variants)*
            /// A kind this version does not name, carried verbatim.
            #[serde(untagged)]
            Other(UnknownTraceEvent),
        }

        /// Reads the kinds [`TraceEvent`] names (every variant but `Other`), with their fields
        /// checked.
        #[derive(Deserialize)]
        #[serde(remote = "TraceEvent", tag = "type", rename_all = "snake_case")]
        enum NamedTraceEvent {
            $($variants)*
        }
    };
}

trace_events! {
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
    /// The request a provider was sent (lash-trace `provider_request`).
    ProviderRequest {
        /// The request (lash `TraceProviderRequestEvent`).
        event: Value,
        /// Other fields.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// One event of a provider's response stream (lash-trace `provider_stream_event`).
    ProviderStreamEvent {
        /// The event (lash `TraceProviderStreamEvent`).
        event: Value,
        /// Other fields.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// One event of the runtime's stream to its caller (lash-trace `runtime_stream_event`).
    RuntimeStreamEvent {
        /// The event (lash `TraceRuntimeStreamEvent`).
        event: Value,
        /// Other fields.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// A durable replay found a recorded effect envelope differing from the rebuilt one
    /// (lash-trace `effect_envelope_diff`).
    EffectEnvelopeDiff {
        /// The differences (lash `TraceEffectEnvelopeDiffEvent`).
        event: Value,
        /// Other fields.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// A step of a Lashlang program's execution (lash-trace `lashlang_execution`).
    LashlangExecution {
        /// The step (lash `TraceLashlangExecutionEvent`).
        event: Value,
        /// Other fields.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// A tool call started.
    ToolCallStarted {
        /// The call; lash writes `null` for a call without id, and so does sessionbus.
        call_id: Option<String>,
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
        /// The call; lash writes `null` for a call without id, and so does sessionbus.
        call_id: Option<String>,
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
        /// `completed`, `failed`, ... Always written (lash-trace requires it); read as
        /// empty from records of writers that left it out.
        #[serde(default)]
        status: String,
        /// Why it ended (`assistant_message`, `max_turns`, ...). Always written (lash-trace
        /// requires it); read as empty from records of writers that left it out.
        #[serde(default)]
        done_reason: String,
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

/// An event of a kind sessionbus does not name: its `type` and every other field, kept
/// as they came and written back unchanged.
#[derive(Clone, Debug, PartialEq)]
pub struct UnknownTraceEvent {
    kind: String,
    fields: Map<String, Value>,
}

impl UnknownTraceEvent {
    /// The event's `type`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Every field but `type`.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }
}

impl Serialize for UnknownTraceEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(self.fields.len() + 1))?;
        map.serialize_entry("type", &self.kind)?;
        for (key, value) in &self.fields {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// The kinds [`TraceEvent`] names; their fields are checked, every other kind is kept
/// whole.
const NAMED_KINDS: [&str; 19] = [
    "session_started",
    "turn_started",
    "prompt_built",
    "llm_call_started",
    "llm_call_completed",
    "llm_call_failed",
    "llm_provider_event",
    "llm_stream_event",
    "provider_request",
    "provider_stream_event",
    "runtime_stream_event",
    "effect_envelope_diff",
    "lashlang_execution",
    "tool_call_started",
    "tool_call_completed",
    "protocol_step",
    "token_usage",
    "turn_completed",
    "custom",
];

impl<'de> Deserialize<'de> for TraceEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut fields = Map::<String, Value>::deserialize(deserializer)?;
        let kind = match fields.get("type") {
            Some(Value::String(kind)) => kind.clone(),
            Some(other) => return Err(D::Error::custom(format_args!("trace event `type` is {other}, not a string"))),
            None => return Err(D::Error::missing_field("type")),
        };
        if NAMED_KINDS.contains(&kind.as_str()) {
            return NamedTraceEvent::deserialize(Value::Object(fields)).map_err(D::Error::custom);
        }
        fields.remove("type");
        Ok(Self::Other(UnknownTraceEvent { kind, fields }))
    }
}

impl TraceEvent {
    /// The `type` tag of this event (`turn_started`, ...).
    pub fn kind(&self) -> &str {
        match self {
            Self::SessionStarted { .. } => "session_started",
            Self::TurnStarted { .. } => "turn_started",
            Self::PromptBuilt { .. } => "prompt_built",
            Self::LlmCallStarted { .. } => "llm_call_started",
            Self::LlmCallCompleted { .. } => "llm_call_completed",
            Self::LlmCallFailed { .. } => "llm_call_failed",
            Self::LlmProviderEvent { .. } => "llm_provider_event",
            Self::LlmStreamEvent { .. } => "llm_stream_event",
            Self::ProviderRequest { .. } => "provider_request",
            Self::ProviderStreamEvent { .. } => "provider_stream_event",
            Self::RuntimeStreamEvent { .. } => "runtime_stream_event",
            Self::EffectEnvelopeDiff { .. } => "effect_envelope_diff",
            Self::LashlangExecution { .. } => "lashlang_execution",
            Self::ToolCallStarted { .. } => "tool_call_started",
            Self::ToolCallCompleted { .. } => "tool_call_completed",
            Self::ProtocolStep { .. } => "protocol_step",
            Self::TokenUsage { .. } => "token_usage",
            Self::TurnCompleted { .. } => "turn_completed",
            Self::Custom { .. } => "custom",
            Self::Other(unknown) => unknown.kind(),
        }
    }

    /// A `turn_started` event with no extra fields.
    pub fn turn_started() -> Self {
        Self::TurnStarted { extra: Map::new() }
    }

    /// A `turn_completed` event with `status` and `done_reason`, both of which lash-trace
    /// requires.
    pub fn turn_completed(status: impl Into<String>, done_reason: impl Into<String>) -> Self {
        Self::TurnCompleted { status: status.into(), done_reason: done_reason.into(), extra: Map::new() }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_kind_sessionbus_does_not_name_is_carried_verbatim() {
        let value = json!({"type": "from_a_newer_lash", "event": {"n": 1}, "note": "kept"});
        let event: TraceEvent = serde_json::from_value(value.clone()).expect("carried, not refused");
        assert_eq!(event.kind(), "from_a_newer_lash");
        assert_eq!(serde_json::to_value(&event).expect("json"), value);
    }

    #[test]
    fn a_named_kind_without_the_fields_lash_requires_is_refused_not_carried() {
        let err = serde_json::from_value::<TraceEvent>(json!({"type": "tool_call_started", "args": {}}))
            .expect_err("a tool call needs its name");
        assert!(err.to_string().contains("name"), "{err}");
    }

    #[test]
    fn every_named_kind_is_read_as_its_own_variant() {
        for kind in NAMED_KINDS {
            // Without fields a kind either is its variant or is refused; never `Other`.
            if let Ok(event) = serde_json::from_value::<TraceEvent>(json!({"type": kind})) {
                assert!(!matches!(event, TraceEvent::Other(_)), "{kind}");
                assert_eq!(event.kind(), kind);
            }
        }
    }
}
