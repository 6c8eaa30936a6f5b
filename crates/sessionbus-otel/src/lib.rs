//! Lash trace records ([`TraceRecord`](sessionbus_api::TraceRecord)) to OpenTelemetry spans.
//!
//! Sans I/O: a [`SpanAssembler`] takes one record at a time and hands back finished
//! [`SpanData`](opentelemetry_sdk::trace::SpanData) ready for `SpanExporter::export`. Its
//! open spans ([`OpenSpan`]) are plain serde data, so a caller (the bus's trace exporter)
//! can keep them in a KV bucket and resume after a restart.
//!
//! The mapping follows lash's own span names and attributes:
//!
//! | records | span |
//! | --- | --- |
//! | `turn_started` .. `turn_completed` | `lash.turn` (internal) |
//! | `llm_call_started` .. `llm_call_completed` / `llm_call_failed` | `lash.llm` (client) |
//! | `tool_call_started` .. `tool_call_completed` | `lash.tool` (internal) |
//! | `provider_request`, `provider_stream_event`, `runtime_stream_event` (and sessionbus's `llm_provider_event`, `llm_stream_event`) | events on the `lash.llm` span |
//! | `session_started`, `prompt_built`, `protocol_step`, `token_usage`, `custom`, `effect_envelope_diff`, `lashlang_execution` | instant `lash.session`, `lash.prompt`, `lash.protocol_step`, `lash.token_usage`, `lash.custom`, `lash.effect_envelope_diff`, `lash.lashlang_execution` |
//! | any kind sessionbus does not name | instant `lash.event` (its kind in `lash.record.type`) |
//!
//! Identity: a turn's trace id is its `traceparent`'s when the caller knows it, else
//! derived from session and turn id ([`derived_trace_id`]); long spans and the session span
//! take their id from the graph node they describe ([`node_span_id`]), instant spans from
//! their record id ([`record_span_id`]); parents from `parent_graph_node_id` (the turn span's
//! from the `traceparent`). Instant spans without a parent node hang under their own graph
//! node (e.g. `prompt_built` under its turn).

#![deny(missing_docs)]

mod assembler;
mod attrs;
mod error;
pub mod export;
mod ids;
pub mod mapping;
mod open_span;
mod recent;
mod span_data;
pub mod telemetry;
mod timestamp;
mod traceparent;

pub use assembler::{Applied, AssemblerConfig, INCOMPLETE_ATTRIBUTE, SCOPE_NAME, SpanAssembler};
pub use attrs::{AttrValue, Attributes, MAX_JSON_ATTRIBUTE_CHARS};
pub use error::{AssembleError, TraceParentError};
pub use ids::{derived_trace_id, node_span_id, record_span_id};
pub use open_span::{OpenEvent, OpenLink, OpenSpan, SpanKey};
pub use telemetry::Telemetry;
pub use traceparent::TraceParent;
