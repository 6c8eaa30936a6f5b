//! The lash OpenTelemetry mapping: which span a record belongs to, and the attributes and
//! status it contributes. Pure functions of one record; no state.

use std::time::Duration;

use opentelemetry::trace::SpanKind;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sessionbus_api::{TraceContext, TraceEvent, TraceRecord};

use crate::attrs::{AttrValue, Attributes, add_scalars, json};

/// A span that lasts from a start record to an end record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LongSpanKind {
    /// `turn_started` .. `turn_completed`: `lash.turn`.
    Turn,
    /// `llm_call_started` .. `llm_call_completed | llm_call_failed`: `lash.llm`.
    Llm,
    /// `tool_call_started` .. `tool_call_completed`: `lash.tool`.
    Tool,
}

impl LongSpanKind {
    /// The span name (`lash.turn`, `lash.llm`, `lash.tool`).
    pub fn span_name(self) -> &'static str {
        match self {
            Self::Turn => "lash.turn",
            Self::Llm => "lash.llm",
            Self::Tool => "lash.tool",
        }
    }

    /// The span kind: `Client` for an LLM call (a request to a provider, as the GenAI
    /// conventions say), `Internal` otherwise.
    pub fn span_kind(self) -> SpanKind {
        match self {
            Self::Llm => SpanKind::Client,
            Self::Turn | Self::Tool => SpanKind::Internal,
        }
    }
}

/// A span made from one record, starting and ending at the record's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InstantKind {
    /// `session_started`: `lash.session`.
    Session,
    /// `prompt_built`: `lash.prompt`.
    Prompt,
    /// `protocol_step`: `lash.protocol_step`.
    ProtocolStep,
    /// `token_usage`: `lash.token_usage`.
    TokenUsage,
    /// `custom`: `lash.custom`.
    Custom,
    /// `effect_envelope_diff`: `lash.effect_envelope_diff`.
    EffectEnvelopeDiff,
    /// `lashlang_execution`: `lash.lashlang_execution`.
    LashlangExecution,
    /// A kind sessionbus does not name: `lash.event` (its kind is `lash.record.type`).
    Other,
}

impl InstantKind {
    /// The span name (`lash.session`, `lash.prompt`, ...).
    pub fn span_name(self) -> &'static str {
        match self {
            Self::Session => "lash.session",
            Self::Prompt => "lash.prompt",
            Self::ProtocolStep => "lash.protocol_step",
            Self::TokenUsage => "lash.token_usage",
            Self::Custom => "lash.custom",
            Self::EffectEnvelopeDiff => "lash.effect_envelope_diff",
            Self::LashlangExecution => "lash.lashlang_execution",
            Self::Other => "lash.event",
        }
    }

    /// The span kind: always `Internal`.
    pub fn span_kind(self) -> SpanKind {
        SpanKind::Internal
    }
}

/// What a record does to the span tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Opens a long span.
    Start(LongSpanKind),
    /// Closes a long span.
    End(LongSpanKind),
    /// Adds an event with this name to the open `lash.llm` span.
    LlmEvent(&'static str),
    /// Is a span of its own.
    Instant(InstantKind),
}

/// Span event name of an `llm_provider_event` record.
pub const PROVIDER_EVENT_NAME: &str = "lash.llm.provider_event";
/// Span event name of an `llm_stream_event` record.
pub const STREAM_EVENT_NAME: &str = "lash.llm.stream_event";
/// Span event name of a `provider_request` record (lash-trace's OTel mapping).
pub const PROVIDER_REQUEST_NAME: &str = "lash.provider_request";
/// Span event name of a `provider_stream_event` record (lash-trace's OTel mapping).
pub const PROVIDER_STREAM_EVENT_NAME: &str = "lash.provider_stream_event";
/// Span event name of a `runtime_stream_event` record (lash-trace's OTel mapping).
pub const RUNTIME_STREAM_EVENT_NAME: &str = "lash.runtime_stream_event";

/// The role of every [`TraceEvent`] kind; total (a new kind fails to compile here).
pub fn role_of(event: &TraceEvent) -> Role {
    match event {
        TraceEvent::SessionStarted { .. } => Role::Instant(InstantKind::Session),
        TraceEvent::TurnStarted { .. } => Role::Start(LongSpanKind::Turn),
        TraceEvent::PromptBuilt { .. } => Role::Instant(InstantKind::Prompt),
        TraceEvent::LlmCallStarted { .. } => Role::Start(LongSpanKind::Llm),
        TraceEvent::LlmCallCompleted { .. } | TraceEvent::LlmCallFailed { .. } => Role::End(LongSpanKind::Llm),
        TraceEvent::LlmProviderEvent { .. } => Role::LlmEvent(PROVIDER_EVENT_NAME),
        TraceEvent::LlmStreamEvent { .. } => Role::LlmEvent(STREAM_EVENT_NAME),
        TraceEvent::ProviderRequest { .. } => Role::LlmEvent(PROVIDER_REQUEST_NAME),
        TraceEvent::ProviderStreamEvent { .. } => Role::LlmEvent(PROVIDER_STREAM_EVENT_NAME),
        TraceEvent::RuntimeStreamEvent { .. } => Role::LlmEvent(RUNTIME_STREAM_EVENT_NAME),
        TraceEvent::EffectEnvelopeDiff { .. } => Role::Instant(InstantKind::EffectEnvelopeDiff),
        TraceEvent::LashlangExecution { .. } => Role::Instant(InstantKind::LashlangExecution),
        TraceEvent::Other(_) => Role::Instant(InstantKind::Other),
        TraceEvent::ToolCallStarted { .. } => Role::Start(LongSpanKind::Tool),
        TraceEvent::ToolCallCompleted { .. } => Role::End(LongSpanKind::Tool),
        TraceEvent::ProtocolStep { .. } => Role::Instant(InstantKind::ProtocolStep),
        TraceEvent::TokenUsage { .. } => Role::Instant(InstantKind::TokenUsage),
        TraceEvent::TurnCompleted { .. } => Role::End(LongSpanKind::Turn),
        TraceEvent::Custom { .. } => Role::Instant(InstantKind::Custom),
    }
}

/// Turn statuses that are not failures.
const TURN_OK_STATUSES: [&str; 2] = ["completed", "finished"];

/// What one record contributes to its span (or span event).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Contribution {
    /// Attributes to set (later records override earlier ones key by key).
    pub attributes: Attributes,
    /// `Some(description)` when the record makes its span an error.
    pub error: Option<String>,
    /// The duration the record reports for its span (tool `duration_ms`, LLM response
    /// `duration_ms`), used to place the start when the start record was never seen.
    pub reported_duration: Option<Duration>,
}

/// The `lash.context.*` attributes of a record.
pub(crate) fn context_attributes(context: &TraceContext) -> Attributes {
    let mut attributes = Attributes::new();
    let text = [
        ("lash.context.session_id", &context.session_id),
        ("lash.context.turn_id", &context.turn_id),
        ("lash.context.graph_node_id", &context.graph_node_id),
        ("lash.context.parent_graph_node_id", &context.parent_graph_node_id),
        ("lash.context.llm_call_id", &context.llm_call_id),
    ];
    for (key, value) in text {
        if let Some(value) = value {
            attributes.insert(key.to_owned(), AttrValue::Str(value.clone()));
        }
    }
    if let Some(index) = context.turn_index {
        attributes
            .insert("lash.context.turn_index".to_owned(), AttrValue::Int(i64::try_from(index).unwrap_or(i64::MAX)));
    }
    attributes
}

/// The attributes, error and reported duration one record contributes, context included.
pub(crate) fn contribution(record: &TraceRecord) -> Contribution {
    let mut out = Contribution { attributes: context_attributes(&record.context), ..Contribution::default() };
    let attrs = &mut out.attributes;
    match &record.event {
        TraceEvent::SessionStarted { extra } => add_scalars(attrs, "lash.session", extra),
        TraceEvent::TurnStarted { extra } => add_scalars(attrs, "lash.turn", extra),
        TraceEvent::PromptBuilt { prompt_hash, prompt_chars, extra } => {
            add_scalars(attrs, "lash.prompt", extra);
            if let Some(hash) = prompt_hash {
                set(attrs, "lash.prompt.hash", AttrValue::Str(hash.clone()));
            }
            if let Some(chars) = prompt_chars {
                set(attrs, "lash.prompt.chars", int(*chars));
            }
        }
        TraceEvent::LlmCallStarted { request, extra } => {
            add_scalars(attrs, "lash.llm", extra);
            set(attrs, "gen_ai.operation.name", AttrValue::Str("chat".into()));
            if let Some(model) = request.as_ref().and_then(|r| r.get("model")).and_then(Json::as_str) {
                set(attrs, "gen_ai.request.model", AttrValue::Str(model.to_owned()));
                if let Some(system) = gen_ai_system(model) {
                    set(attrs, "gen_ai.system", AttrValue::Str(system.to_owned()));
                }
            }
            if let Some(stream) = request.as_ref().and_then(|r| r.get("stream")).and_then(Json::as_bool) {
                set(attrs, "lash.llm.stream", AttrValue::Bool(stream));
            }
        }
        TraceEvent::LlmCallCompleted { response, usage, extra } => {
            add_scalars(attrs, "lash.llm", extra);
            if let Some(usage) = usage {
                add_usage(attrs, usage);
            }
            if let Some(response) = response {
                if let Some(model) = response.get("model").and_then(Json::as_str) {
                    set(attrs, "gen_ai.response.model", AttrValue::Str(model.to_owned()));
                }
                if let Some(reason) = response.get("terminal_reason").and_then(Json::as_str) {
                    set(attrs, "gen_ai.response.finish_reasons", AttrValue::StrList(vec![reason.to_owned()]));
                }
                if let Some(ms) = response.get("duration_ms").and_then(Json::as_u64) {
                    set(attrs, "lash.llm.duration_ms", int(ms));
                    out.reported_duration = Some(Duration::from_millis(ms));
                }
            }
        }
        TraceEvent::LlmCallFailed { error, extra } => {
            add_scalars(attrs, "lash.llm", extra);
            let message = error.as_ref().and_then(error_message).unwrap_or_else(|| "llm call failed".to_owned());
            let error_type = error
                .as_ref()
                .and_then(|e| e.get("code"))
                .and_then(|code| code.as_str().map(str::to_owned).or_else(|| code.as_i64().map(|c| c.to_string())))
                .unwrap_or_else(|| "llm_call_failed".to_owned());
            set(attrs, "error.type", AttrValue::Str(error_type));
            set(attrs, "lash.llm.error.message", AttrValue::Str(message.clone()));
            if let Some(retryable) = error.as_ref().and_then(|e| e.get("retryable")).and_then(Json::as_bool) {
                set(attrs, "lash.llm.error.retryable", AttrValue::Bool(retryable));
            }
            out.error = Some(message);
        }
        TraceEvent::LlmProviderEvent { extra } | TraceEvent::LlmStreamEvent { extra } => {
            add_scalars(attrs, "lash.event", extra);
            set(attrs, "lash.record.id", AttrValue::Str(record.id.clone()));
        }
        TraceEvent::ProviderRequest { event, extra }
        | TraceEvent::ProviderStreamEvent { event, extra }
        | TraceEvent::RuntimeStreamEvent { event, extra } => {
            add_scalars(attrs, "lash.event", extra);
            if let Json::Object(fields) = event {
                add_scalars(attrs, "lash.event", fields);
            }
            set(attrs, "lash.record.id", AttrValue::Str(record.id.clone()));
        }
        TraceEvent::EffectEnvelopeDiff { event, extra } | TraceEvent::LashlangExecution { event, extra } => {
            add_scalars(attrs, "lash.event", extra);
            if let Json::Object(fields) = event {
                add_scalars(attrs, "lash.event", fields);
            }
        }
        TraceEvent::Other(unknown) => add_scalars(attrs, "lash.event", unknown.fields()),
        TraceEvent::ToolCallStarted { call_id, name, args: _, extra } => {
            add_scalars(attrs, "lash.tool", extra);
            add_tool_identity(attrs, call_id, name);
        }
        TraceEvent::ToolCallCompleted { call_id, name, args: _, output, duration_ms, extra } => {
            add_scalars(attrs, "lash.tool", extra);
            add_tool_identity(attrs, call_id, name);
            if let Some(ms) = duration_ms {
                set(attrs, "lash.tool.duration_ms", int(*ms));
                out.reported_duration = Some(Duration::from_millis(*ms));
            }
            let status = output.pointer("/outcome/status").and_then(Json::as_str);
            if let Some(status) = status {
                set(attrs, "lash.tool.status", AttrValue::Str(status.to_owned()));
            }
            if status != Some("success") {
                let status = status.unwrap_or("missing");
                set(attrs, "error.type", AttrValue::Str(format!("tool_{status}")));
                out.error = Some(format!("tool {name} ended with status {status}"));
            }
        }
        TraceEvent::ProtocolStep { extra } => add_scalars(attrs, "lash.protocol_step", extra),
        TraceEvent::TokenUsage { usage, cumulative, extra } => {
            add_scalars(attrs, "lash.token_usage", extra);
            if let Some(usage) = usage {
                add_usage(attrs, usage);
            }
            if let Some(Json::Object(cumulative)) = cumulative {
                for (field, value) in cumulative {
                    if let Some(n) = value.as_i64() {
                        set(attrs, &format!("lash.usage.cumulative.{field}"), AttrValue::Int(n));
                    }
                }
            }
        }
        TraceEvent::TurnCompleted { status, done_reason, extra } => {
            add_scalars(attrs, "lash.turn", extra);
            if !status.is_empty() {
                set(attrs, "lash.turn.status", AttrValue::Str(status.clone()));
                if !TURN_OK_STATUSES.contains(&status.as_str()) {
                    set(attrs, "error.type", AttrValue::Str(format!("turn_{status}")));
                    out.error = Some(format!("turn ended with status {status}"));
                }
            }
            if !done_reason.is_empty() {
                set(attrs, "lash.turn.done_reason", AttrValue::Str(done_reason.clone()));
            }
        }
        TraceEvent::Custom { name, payload, extra } => {
            add_scalars(attrs, "lash.custom", extra);
            set(attrs, "lash.custom.name", AttrValue::Str(name.clone()));
            if !payload.is_null() {
                set(attrs, "lash.custom.payload", json(payload));
            }
        }
    }
    if matches!(role_of(&record.event), Role::Instant(_)) {
        set(attrs, "lash.record.id", AttrValue::Str(record.id.clone()));
        set(attrs, "lash.record.type", AttrValue::Str(record.event.kind().to_owned()));
    }
    out
}

/// The provider named by a `provider/model` id (`anthropic/claude-sonnet-4.6` ->
/// `anthropic`); `None` when the model has no provider prefix.
pub fn gen_ai_system(model: &str) -> Option<&str> {
    model.split_once('/').map(|(provider, _)| provider).filter(|p| !p.is_empty())
}

fn set(attributes: &mut Attributes, key: &str, value: AttrValue) {
    attributes.insert(key.to_owned(), value);
}

fn int(n: u64) -> AttrValue {
    AttrValue::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn add_tool_identity(attributes: &mut Attributes, call_id: &Option<String>, name: &str) {
    set(attributes, "lash.tool.name", AttrValue::Str(name.to_owned()));
    set(attributes, "gen_ai.operation.name", AttrValue::Str("execute_tool".into()));
    set(attributes, "gen_ai.tool.name", AttrValue::Str(name.to_owned()));
    if let Some(call_id) = call_id {
        set(attributes, "lash.tool.call_id", AttrValue::Str(call_id.clone()));
        set(attributes, "gen_ai.tool.call.id", AttrValue::Str(call_id.clone()));
    }
}

/// `gen_ai.usage.input_tokens` / `output_tokens`, and every other integer field of the
/// usage object as `lash.usage.<field>`.
fn add_usage(attributes: &mut Attributes, usage: &Json) {
    let Json::Object(usage) = usage else { return };
    for (field, value) in usage {
        let Some(n) = value.as_i64() else { continue };
        let key = match field.as_str() {
            "input_tokens" => "gen_ai.usage.input_tokens".to_owned(),
            "output_tokens" => "gen_ai.usage.output_tokens".to_owned(),
            other => format!("lash.usage.{other}"),
        };
        attributes.insert(key, AttrValue::Int(n));
    }
}

fn error_message(error: &Json) -> Option<String> {
    match error {
        Json::String(text) => Some(text.clone()),
        Json::Object(fields) => fields.get("message").and_then(Json::as_str).map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_prefix() {
        assert_eq!(gen_ai_system("anthropic/claude-sonnet-4.6"), Some("anthropic"));
        assert_eq!(gen_ai_system("openai/gpt-5"), Some("openai"));
        assert_eq!(gen_ai_system("gpt-5"), None);
        assert_eq!(gen_ai_system("/x"), None);
    }
}
