//! [`SpanAssembler`]: trace records in, finished spans out, one record at a time.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use opentelemetry::InstrumentationScope;
use opentelemetry::trace::{SpanId, Status, TraceId};
use opentelemetry_sdk::trace::SpanData;
use sessionbus_api::{TRACE_SCHEMA_VERSION, TraceEvent, TraceRecord};

use crate::attrs::AttrValue;
use crate::error::AssembleError;
use crate::ids::{
    derived_trace_id, llm_node_id, node_span_id, record_span_id, session_node_id, tool_node_id, turn_node_id,
};
use crate::mapping::{Contribution, InstantKind, LongSpanKind, Role, context_attributes, contribution, role_of};
use crate::open_span::{OpenEvent, OpenLink, OpenSpan, SpanKey};
use crate::recent::BoundedMap;
use crate::span_data::SpanParts;
use crate::timestamp::{parse_rfc3339, to_unix_nanos};
use crate::traceparent::TraceParent;

/// Name of the instrumentation scope every span carries.
pub const SCOPE_NAME: &str = "sessionbus-otel";

/// Attribute set on spans closed by [`SpanAssembler::finish_stale`] instead of an end record.
pub const INCOMPLETE_ATTRIBUTE: &str = "lash.span.incomplete";

/// Limits of a [`SpanAssembler`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AssemblerConfig {
    /// How many finished span ids are remembered to drop duplicates (default 65,536).
    pub recent_capacity: usize,
    /// How many events an open span keeps; later ones are counted as dropped (default 256).
    pub max_events_per_span: usize,
    /// How many turns' external trace parents are remembered (default 4,096).
    pub turn_trace_capacity: usize,
}

impl Default for AssemblerConfig {
    fn default() -> Self {
        Self { recent_capacity: 65_536, max_events_per_span: 256, turn_trace_capacity: 4_096 }
    }
}

/// What [`SpanAssembler::push`] did with a record, so a caller can mirror the open-span
/// state into a store (put on `Opened`/`Updated`, delete on `Finished { closed: Some }`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A new open span was created under this key.
    Opened(SpanKey),
    /// The open span under this key changed.
    Updated(SpanKey),
    /// A span was finished and queued for [`SpanAssembler::take_finished`]; `closed` is
    /// the key of the open span it came from, if there was one.
    Finished {
        /// The finished span's id.
        span_id: SpanId,
        /// The open span that was removed, if any.
        closed: Option<SpanKey>,
    },
    /// Nothing changed: the record is a duplicate, or its span was already finished.
    Skipped(SpanId),
}

/// Turns [`TraceRecord`]s into OpenTelemetry spans, sans I/O.
///
/// Guarantees:
/// - ids are a pure function of the records (and the `traceparent` passed in), so any
///   number of assemblers, in any processes, produce the same trace and span ids;
/// - a long span is emitted once, when its end record arrives, even if its start was never
///   seen here (its start is then taken from a restored open span, its events, the
///   duration the end reports, or the end itself);
/// - a span id is not emitted twice while it is among the last
///   [`AssemblerConfig::recent_capacity`] finished ones;
/// - the open spans are plain data ([`OpenSpan`]) that can be persisted and restored.
#[derive(Debug)]
pub struct SpanAssembler {
    config: AssemblerConfig,
    scope: InstrumentationScope,
    open: BTreeMap<SpanKey, OpenSpan>,
    recent: BoundedMap<SpanId, ()>,
    turn_traces: BoundedMap<(String, String), TraceParent>,
    finished: Vec<SpanData>,
}

impl Default for SpanAssembler {
    fn default() -> Self {
        Self::new()
    }
}

impl SpanAssembler {
    /// An empty assembler with the default limits.
    pub fn new() -> Self {
        Self::with_config(AssemblerConfig::default())
    }

    /// An empty assembler with these limits.
    pub fn with_config(config: AssemblerConfig) -> Self {
        Self {
            config,
            scope: InstrumentationScope::builder(SCOPE_NAME).with_version(env!("CARGO_PKG_VERSION")).build(),
            open: BTreeMap::new(),
            recent: BoundedMap::new(config.recent_capacity),
            turn_traces: BoundedMap::new(config.turn_trace_capacity),
            finished: Vec::new(),
        }
    }

    /// Applies one record. `origin` is the turn's `traceparent` when known (from the
    /// turn's ledger record): it then gives the trace id of the turn's records, and the
    /// `lash.turn` span becomes a child of its parent span. It is remembered per turn, so
    /// later records of the turn may pass `None`; it is ignored for records without a turn.
    /// Without it the trace id is derived from session and turn id. An open span keeps the
    /// trace it was opened with.
    ///
    /// On error nothing changes.
    pub fn push(&mut self, record: &TraceRecord, origin: Option<&TraceParent>) -> Result<Applied, AssembleError> {
        if record.schema_version != TRACE_SCHEMA_VERSION {
            return Err(AssembleError::UnsupportedSchema {
                record_id: record.id.clone(),
                found: record.schema_version,
                expected: TRACE_SCHEMA_VERSION,
            });
        }
        let session_id = record
            .context
            .session_id
            .clone()
            .ok_or_else(|| AssembleError::MissingSessionId { record_id: record.id.clone() })?;
        let at = parse_rfc3339(&record.timestamp).map(to_unix_nanos).ok_or_else(|| {
            AssembleError::InvalidTimestamp { record_id: record.id.clone(), timestamp: record.timestamp.clone() }
        })?;
        let target = match role_of(&record.event) {
            Role::Start(kind) => Target::Start(kind, long_node(record, &session_id, kind)?),
            Role::End(kind) => Target::End(kind, long_node(record, &session_id, kind)?),
            Role::LlmEvent(name) => Target::LlmEvent(name, long_node(record, &session_id, LongSpanKind::Llm)?),
            Role::Instant(kind) => Target::Instant(kind),
        };
        if let (Some(origin), Some(turn_id)) = (origin, &record.context.turn_id) {
            self.turn_traces.insert((session_id.clone(), turn_id.clone()), *origin);
        }
        let origin = match &record.context.turn_id {
            Some(turn_id) => origin.copied().or_else(|| self.remembered_origin(&session_id, turn_id)),
            None => None,
        };
        let record = Located { record, session_id, at, origin };
        Ok(match target {
            Target::Start(kind, node) => self.start(&record, kind, node),
            Target::End(kind, node) => self.end(&record, kind, node),
            Target::LlmEvent(name, node) => self.llm_event(&record, name, node),
            Target::Instant(kind) => self.instant(&record, kind),
        })
    }

    /// Drains the spans finished so far, oldest first, ready for `SpanExporter::export`.
    pub fn take_finished(&mut self) -> Vec<SpanData> {
        std::mem::take(&mut self.finished)
    }

    /// How many finished spans wait for [`take_finished`](Self::take_finished).
    pub fn finished_len(&self) -> usize {
        self.finished.len()
    }

    /// The open spans (start or event seen, end not yet), in key order.
    pub fn open_spans(&self) -> impl Iterator<Item = (&SpanKey, &OpenSpan)> {
        self.open.iter()
    }

    /// The open span under `key`.
    pub fn open_span(&self, key: &SpanKey) -> Option<&OpenSpan> {
        self.open.get(key)
    }

    /// Restores an open span persisted earlier (e.g. read back from a KV bucket after a
    /// restart), replacing any open state under its key. An external trace parent of a
    /// turn span is remembered for the turn's later records.
    pub fn restore(&mut self, span: OpenSpan) {
        if let Some((turn_id, origin)) = turn_origin(&span) {
            self.turn_traces.insert((span.session_id.clone(), turn_id), origin);
        }
        self.open.insert(span.key(), span);
    }

    /// The ids of recently finished spans, oldest first (for persisting the duplicate filter).
    pub fn recently_finished(&self) -> impl Iterator<Item = SpanId> + '_ {
        self.recent.keys().copied()
    }

    /// Marks a span id as finished (e.g. restored from a store, or finished by another
    /// instance), so records of it are skipped from now on.
    pub fn remember_finished(&mut self, span_id: SpanId) {
        self.recent.insert(span_id, ());
    }

    /// Closes every open span whose latest record is older than `cutoff` (its end record is
    /// presumed lost): each is emitted ending at its latest record, with status unset and
    /// [`INCOMPLETE_ATTRIBUTE`] = true. Returns the keys closed.
    pub fn finish_stale(&mut self, cutoff: SystemTime) -> Vec<SpanKey> {
        let cutoff = to_unix_nanos(cutoff);
        let stale: Vec<SpanKey> = self
            .open
            .iter()
            .filter(|(_, span)| span.last_seen_unix_nanos < cutoff)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &stale {
            if let Some(mut span) = self.open.remove(key) {
                span.attributes.insert(INCOMPLETE_ATTRIBUTE.to_owned(), AttrValue::Bool(true));
                let end = span.last_seen_unix_nanos;
                self.recent.insert(span.span_id, ());
                self.finished.push(span.finish(end, Status::Unset, &self.scope));
            }
        }
        stale
    }

    fn remembered_origin(&self, session_id: &str, turn_id: &str) -> Option<TraceParent> {
        self.turn_traces.get(&(session_id.to_owned(), turn_id.to_owned())).copied()
    }

    fn start(&mut self, record: &Located<'_>, kind: LongSpanKind, node: String) -> Applied {
        let key = SpanKey::new(record.session_id.clone(), node);
        let span_id = key.span_id();
        if self.recent.contains(&span_id) {
            return Applied::Skipped(span_id);
        }
        let contribution = contribution(record.record);
        match self.open.get_mut(&key) {
            Some(open) if open.start_seen => Applied::Skipped(span_id),
            Some(open) => {
                open.start_seen = true;
                open.start_unix_nanos = record.at;
                open.last_seen_unix_nanos = open.last_seen_unix_nanos.max(record.at);
                open.attributes.extend(contribution.attributes);
                Applied::Updated(key)
            }
            None => {
                let mut open = self.new_open(record, kind, &key);
                open.start_seen = true;
                open.attributes = contribution.attributes;
                self.open.insert(key.clone(), open);
                Applied::Opened(key)
            }
        }
    }

    fn end(&mut self, record: &Located<'_>, kind: LongSpanKind, node: String) -> Applied {
        let key = SpanKey::new(record.session_id.clone(), node);
        let span_id = key.span_id();
        if self.recent.contains(&span_id) {
            return Applied::Skipped(span_id);
        }
        let Contribution { attributes, error, reported_duration } = contribution(record.record);
        let (mut open, closed) = match self.open.remove(&key) {
            Some(open) => (open, Some(key)),
            None => (self.new_open(record, kind, &key), None),
        };
        if !open.start_seen {
            let reported_start = record.at.saturating_sub(reported_duration.map_or(0, duration_nanos));
            open.start_unix_nanos = open.start_unix_nanos.min(reported_start);
        }
        open.attributes.extend(attributes);
        let status = error.map_or(Status::Unset, Status::error);
        self.recent.insert(span_id, ());
        self.finished.push(open.finish(record.at, status, &self.scope));
        Applied::Finished { span_id, closed }
    }

    fn llm_event(&mut self, record: &Located<'_>, name: &'static str, node: String) -> Applied {
        let key = SpanKey::new(record.session_id.clone(), node);
        let span_id = key.span_id();
        if self.recent.contains(&span_id) {
            return Applied::Skipped(span_id);
        }
        let mut attributes = contribution(record.record).attributes;
        attributes.retain(|key, _| !key.starts_with("lash.context."));
        let event = OpenEvent {
            name: name.to_owned(),
            time_unix_nanos: record.at,
            record_id: record.record.id.clone(),
            attributes,
        };
        let max_events = self.config.max_events_per_span;
        let (applied, open) = match self.open.get_mut(&key) {
            Some(open) => {
                if open.events.iter().any(|e| e.record_id == event.record_id) {
                    return Applied::Skipped(span_id);
                }
                (Applied::Updated(key), open)
            }
            None => {
                let mut open = self.new_open(record, LongSpanKind::Llm, &key);
                open.attributes = context_attributes(&record.record.context);
                self.open.insert(key.clone(), open);
                let open = self.open.get_mut(&key).expect("just inserted");
                (Applied::Opened(key), open)
            }
        };
        if !open.start_seen {
            open.start_unix_nanos = open.start_unix_nanos.min(record.at);
        }
        open.last_seen_unix_nanos = open.last_seen_unix_nanos.max(record.at);
        if open.events.len() < max_events {
            open.events.push(event);
        } else {
            open.dropped_events = open.dropped_events.saturating_add(1);
        }
        applied
    }

    fn instant(&mut self, record: &Located<'_>, kind: InstantKind) -> Applied {
        let context = &record.record.context;
        let session_id = record.session_id.as_str();
        let span_id = match kind {
            InstantKind::Session => {
                let node = context.graph_node_id.clone().unwrap_or_else(|| session_node_id(session_id));
                node_span_id(session_id, &node)
            }
            _ => record_span_id(session_id, &record.record.id),
        };
        if self.recent.contains(&span_id) {
            return Applied::Skipped(span_id);
        }
        let parent_node = match kind {
            InstantKind::Session => None,
            _ => context
                .parent_graph_node_id
                .clone()
                .or_else(|| context.graph_node_id.clone())
                .or_else(|| context.turn_id.as_deref().map(|turn| turn_node_id(session_id, turn))),
        };
        let (trace_id, _) = record.trace();
        let span = SpanParts {
            name: kind.span_name(),
            kind: kind.span_kind(),
            trace_id,
            span_id,
            parent_span_id: parent_node.map(|node| node_span_id(session_id, &node)),
            parent_is_remote: false,
            start_unix_nanos: record.at,
            end_unix_nanos: record.at,
            attributes: contribution(record.record).attributes,
            events: Vec::new(),
            dropped_events: 0,
            links: Vec::new(),
            status: Status::Unset,
        };
        self.recent.insert(span_id, ());
        self.finished.push(span.into_span_data(&self.scope));
        Applied::Finished { span_id, closed: None }
    }

    /// A fresh open span for `key`, started at the record's time, with its trace, parent
    /// and links resolved but no attributes yet.
    fn new_open(&self, record: &Located<'_>, kind: LongSpanKind, key: &SpanKey) -> OpenSpan {
        let context = &record.record.context;
        let session_id = record.session_id.as_str();
        let (trace_id, external_trace) = record.trace();
        let (parent_span_id, parent_is_remote, links) = match kind {
            LongSpanKind::Turn => {
                let links = context
                    .parent_graph_node_id
                    .iter()
                    .map(|node| OpenLink {
                        trace_id: derived_trace_id(session_id, None),
                        span_id: node_span_id(session_id, node),
                        attributes: Default::default(),
                    })
                    .collect();
                match record.origin {
                    Some(origin) => (Some(origin.parent_span_id), true, links),
                    None => (None, false, links),
                }
            }
            LongSpanKind::Llm | LongSpanKind::Tool => {
                let parent = context
                    .parent_graph_node_id
                    .clone()
                    .or_else(|| context.turn_id.as_deref().map(|turn| turn_node_id(session_id, turn)));
                (parent.map(|node| node_span_id(session_id, &node)), false, Vec::new())
            }
        };
        OpenSpan {
            kind,
            session_id: key.session_id.clone(),
            graph_node_id: key.graph_node_id.clone(),
            turn_id: context.turn_id.clone(),
            trace_id,
            external_trace,
            span_id: key.span_id(),
            parent_span_id,
            parent_is_remote,
            start_unix_nanos: record.at,
            start_seen: false,
            last_seen_unix_nanos: record.at,
            attributes: Default::default(),
            events: Vec::new(),
            dropped_events: 0,
            links,
        }
    }
}

/// A record's role with the graph node of its long span resolved.
enum Target {
    Start(LongSpanKind, String),
    End(LongSpanKind, String),
    LlmEvent(&'static str, String),
    Instant(InstantKind),
}

/// A record with what `push` resolved about it.
struct Located<'a> {
    record: &'a TraceRecord,
    session_id: String,
    at: u64,
    origin: Option<TraceParent>,
}

impl Located<'_> {
    /// The record's trace id, and whether it came from outside.
    fn trace(&self) -> (TraceId, bool) {
        match self.origin {
            Some(origin) => (origin.trace_id, true),
            None => (derived_trace_id(&self.session_id, self.record.context.turn_id.as_deref()), false),
        }
    }
}

/// The graph node a long-span record describes: its own, else the lash convention for its
/// kind (`turn:<sid>:<tid>`, `llm:<llm_call_id>`, `tool:<call_id>`).
fn long_node(record: &TraceRecord, session_id: &str, kind: LongSpanKind) -> Result<String, AssembleError> {
    let context = &record.context;
    if let Some(node) = &context.graph_node_id {
        return Ok(node.clone());
    }
    let derived = match kind {
        LongSpanKind::Turn => context.turn_id.as_deref().map(|turn| turn_node_id(session_id, turn)),
        LongSpanKind::Llm => context.llm_call_id.as_deref().map(llm_node_id),
        LongSpanKind::Tool => match &record.event {
            TraceEvent::ToolCallStarted { call_id, .. } | TraceEvent::ToolCallCompleted { call_id, .. } => {
                call_id.as_deref().map(tool_node_id)
            }
            _ => None,
        },
    };
    derived.ok_or_else(|| AssembleError::MissingGraphNode {
        record_id: record.id.clone(),
        kind: record.event.kind().to_owned(),
    })
}

/// The turn id and external `traceparent` an open turn span was opened with, if any.
fn turn_origin(span: &OpenSpan) -> Option<(String, TraceParent)> {
    if span.kind != LongSpanKind::Turn || !span.external_trace || !span.parent_is_remote {
        return None;
    }
    let origin = TraceParent::new(span.trace_id, span.parent_span_id?).ok()?;
    Some((span.turn_id.clone()?, origin))
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
