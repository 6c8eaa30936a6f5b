//! Building the SDK's `SpanData` from the parts the assembler knows.

use std::borrow::Cow;

use opentelemetry::InstrumentationScope;
use opentelemetry::trace::{Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::attrs::{Attributes, to_key_values};
use crate::open_span::{OpenEvent, OpenLink};
use crate::timestamp::from_unix_nanos;

/// Everything one exported span is made of.
pub(crate) struct SpanParts {
    pub name: &'static str,
    pub kind: SpanKind,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub parent_is_remote: bool,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Attributes,
    pub events: Vec<OpenEvent>,
    pub dropped_events: u32,
    pub links: Vec<OpenLink>,
    pub status: Status,
}

impl SpanParts {
    /// The sampled `SpanData`; the end is moved up to the start if it is earlier.
    pub(crate) fn into_span_data(self, scope: &InstrumentationScope) -> SpanData {
        let mut events = SpanEvents::default();
        events.events = self
            .events
            .into_iter()
            .map(|e| Event::new(e.name, from_unix_nanos(e.time_unix_nanos), to_key_values(e.attributes), 0))
            .collect();
        events.dropped_count = self.dropped_events;
        let mut links = SpanLinks::default();
        links.links = self
            .links
            .into_iter()
            .map(|l| {
                let context = SpanContext::new(l.trace_id, l.span_id, TraceFlags::SAMPLED, false, TraceState::NONE);
                Link::new(context, to_key_values(l.attributes), 0)
            })
            .collect();
        SpanData {
            span_context: SpanContext::new(self.trace_id, self.span_id, TraceFlags::SAMPLED, false, TraceState::NONE),
            parent_span_id: self.parent_span_id.unwrap_or(SpanId::INVALID),
            parent_span_is_remote: self.parent_is_remote,
            span_kind: self.kind,
            name: Cow::Borrowed(self.name),
            start_time: from_unix_nanos(self.start_unix_nanos),
            end_time: from_unix_nanos(self.end_unix_nanos.max(self.start_unix_nanos)),
            attributes: to_key_values(self.attributes),
            dropped_attributes_count: 0,
            events,
            links,
            status: self.status,
            instrumentation_scope: scope.clone(),
        }
    }
}
