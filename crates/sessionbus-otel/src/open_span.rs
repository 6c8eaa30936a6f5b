//! The persisted state of a long span whose end record has not arrived yet.

use std::time::SystemTime;

use opentelemetry::InstrumentationScope;
use opentelemetry::trace::{SpanId, Status, TraceId};
use opentelemetry_sdk::trace::SpanData;
use serde::{Deserialize, Serialize};

use crate::attrs::Attributes;
use crate::ids::{hex_span_id, hex_span_id_opt, hex_trace_id, node_span_id};
use crate::mapping::LongSpanKind;
use crate::span_data::SpanParts;
use crate::timestamp::from_unix_nanos;

/// Identifies a long span across processes: the session and the graph node it describes.
/// Its span id is [`node_span_id`] of the two.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SpanKey {
    /// The session.
    pub session_id: String,
    /// The graph node the span describes (`turn:<sid>:<tid>`, `llm:<id>`, `tool:<id>`).
    pub graph_node_id: String,
}

impl SpanKey {
    /// The key of a session's graph node.
    pub fn new(session_id: impl Into<String>, graph_node_id: impl Into<String>) -> Self {
        Self { session_id: session_id.into(), graph_node_id: graph_node_id.into() }
    }

    /// The span id every process derives for this key.
    pub fn span_id(&self) -> SpanId {
        node_span_id(&self.session_id, &self.graph_node_id)
    }

    /// A key for a NATS KV bucket (16 lowercase hex digits of the span id): only
    /// characters KV keys allow, and the same in every process.
    pub fn kv_key(&self) -> String {
        format!("{:016x}", self.span_id())
    }
}

/// An event recorded on an open span (a provider or stream event of an LLM call).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenEvent {
    /// The event name (`lash.llm.provider_event`, `lash.llm.stream_event`).
    pub name: String,
    /// When it happened, in nanoseconds since the Unix epoch.
    pub time_unix_nanos: u64,
    /// The id of the record it came from (a redelivered record is not added twice).
    pub record_id: String,
    /// Its attributes.
    pub attributes: Attributes,
}

/// A link from an open span to another span (a turn to its session's `lash.session` span).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenLink {
    /// The linked span's trace.
    #[serde(with = "hex_trace_id")]
    pub trace_id: TraceId,
    /// The linked span.
    #[serde(with = "hex_span_id")]
    pub span_id: SpanId,
    /// Its attributes.
    pub attributes: Attributes,
}

/// A long span whose start (or an event) was seen and whose end was not: everything needed
/// to emit it later, in another process if need be. Serialises to self-describing JSON
/// (ids as hex), so it can be kept in a KV bucket and restored after a restart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenSpan {
    /// Turn, LLM call or tool call.
    pub kind: LongSpanKind,
    /// The session.
    pub session_id: String,
    /// The graph node the span describes.
    pub graph_node_id: String,
    /// The turn, when the span belongs to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<String>,
    /// The trace.
    #[serde(with = "hex_trace_id")]
    pub trace_id: TraceId,
    /// True when the trace id came from outside (a `traceparent`), not derived.
    #[serde(default)]
    pub external_trace: bool,
    /// The span id (always `SpanKey::span_id` of this span's key).
    #[serde(with = "hex_span_id")]
    pub span_id: SpanId,
    /// The parent span, if any.
    #[serde(default, with = "hex_span_id_opt")]
    pub parent_span_id: Option<SpanId>,
    /// True when the parent lives in another process (the worker span of a `traceparent`).
    #[serde(default)]
    pub parent_is_remote: bool,
    /// The start, in nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// True once the start record itself was seen (otherwise the start is the earliest
    /// event seen).
    pub start_seen: bool,
    /// The latest record time seen for this span, in nanoseconds since the Unix epoch.
    pub last_seen_unix_nanos: u64,
    /// The attributes so far.
    pub attributes: Attributes,
    /// The events so far (at most the assembler's per-span limit).
    #[serde(default)]
    pub events: Vec<OpenEvent>,
    /// Events not kept because of the per-span limit.
    #[serde(default)]
    pub dropped_events: u32,
    /// Links to other spans.
    #[serde(default)]
    pub links: Vec<OpenLink>,
}

impl OpenSpan {
    /// This span's key.
    pub fn key(&self) -> SpanKey {
        SpanKey::new(self.session_id.clone(), self.graph_node_id.clone())
    }

    /// The start time.
    pub fn start_time(&self) -> SystemTime {
        from_unix_nanos(self.start_unix_nanos)
    }

    /// Closes the span at `end_unix_nanos` (moved up to the start if earlier) with `status`.
    pub(crate) fn finish(self, end_unix_nanos: u64, status: Status, scope: &InstrumentationScope) -> SpanData {
        SpanParts {
            name: self.kind.span_name(),
            kind: self.kind.span_kind(),
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            parent_is_remote: self.parent_is_remote,
            start_unix_nanos: self.start_unix_nanos,
            end_unix_nanos,
            attributes: self.attributes,
            events: self.events,
            dropped_events: self.dropped_events,
            links: self.links,
            status,
        }
        .into_span_data(scope)
    }
}
