//! Session events: one per stored write, republished by JetStream from the state
//! stream, the tools bucket and the trace stream onto `<prefix>.events.<sid>.<kind>`.
//! An acknowledged write always yields its event; a watcher that missed some can
//! replay them from the streams.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_nats::Subscriber;
use bytes::Bytes;
use futures::Stream;
use sessionbus_api::ids;

use crate::subjects::Subjects;

/// What kind of write an event reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The session's meta (created, closed, turn committed).
    Meta,
    /// The turn lease (taken, renewed, released, closed).
    Lease,
    /// Nodes appended to the graph.
    Graph,
    /// A turn ledger record (running, completed, failed).
    Turn {
        /// The turn.
        turn_id: String,
    },
    /// A cancel of a turn was requested (`cancel_turn`).
    Cancel {
        /// The turn.
        turn_id: String,
    },
    /// The tool state changed.
    Tools,
    /// A trace record was stored.
    Trace,
}

impl EventKind {
    /// A short name (`meta`, `lease`, `graph`, `turn`, `cancel`, `tools`, `trace`).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Meta => "meta",
            EventKind::Lease => "lease",
            EventKind::Graph => "graph",
            EventKind::Turn { .. } => "turn",
            EventKind::Cancel { .. } => "cancel",
            EventKind::Tools => "tools",
            EventKind::Trace => "trace",
        }
    }
}

/// One event: which session, what kind, where it is stored, and the stored body.
#[derive(Clone, Debug)]
pub struct SessionEvent {
    /// The session.
    pub session_id: String,
    /// What was written.
    pub kind: EventKind,
    /// The stream the write is stored in (`Nats-Stream`).
    pub stream: String,
    /// Its sequence there (`Nats-Sequence`).
    pub sequence: u64,
    /// The stored message body (JSON).
    pub payload: Bytes,
}

impl SessionEvent {
    /// Parses a message JetStream republished; `None` for subjects that are not
    /// session events and for messages without the republish headers (`Nats-Stream`,
    /// `Nats-Sequence`). Those are never events: in an account shared by several
    /// applications, one of them can make a worker's reply arrive on an events subject.
    pub fn parse(subjects: &Subjects, message: &async_nats::Message) -> Option<Self> {
        let rest = message.subject.strip_prefix(subjects.prefix())?.strip_prefix(".events.")?;
        let header = |name: &str| message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
        let (stream, sequence) = (header("Nats-Stream")?, header("Nats-Sequence")?.parse().ok()?);
        Self::from_event_subject(rest, stream, sequence, message.payload.clone())
    }

    /// The event of a message read back from a stream (what a replay delivers): its
    /// stored subject mapped as the republish rule maps it.
    pub fn from_stored(
        subjects: &Subjects,
        stream: &str,
        subject: &str,
        sequence: u64,
        payload: Bytes,
    ) -> Option<Self> {
        let state = format!("{}.state.", subjects.prefix());
        let trace = format!("{}.trace.", subjects.prefix());
        let tools = subjects.tool_key("");
        let rest = if let Some(rest) = subject.strip_prefix(&state) {
            rest.to_owned()
        } else if let Some(token) = subject.strip_prefix(&trace) {
            format!("{token}.trace")
        } else if let Some(token) = subject.strip_prefix(&tools) {
            format!("{token}.tools")
        } else {
            return None;
        };
        Self::from_event_subject(&rest, stream.to_owned(), sequence, payload)
    }

    /// Parses `<sid>.<kind>[.<tid>]`, the end of an event subject.
    fn from_event_subject(rest: &str, stream: String, sequence: u64, payload: Bytes) -> Option<Self> {
        let mut parts = rest.splitn(3, '.');
        let session_id = ids::decode_id("session id", parts.next()?).ok()?;
        let kind = match (parts.next()?, parts.next()) {
            ("meta", None) => EventKind::Meta,
            ("lease", None) => EventKind::Lease,
            ("graph", None) => EventKind::Graph,
            ("tools", None) => EventKind::Tools,
            ("trace", None) => EventKind::Trace,
            ("turn", Some(token)) => EventKind::Turn { turn_id: ids::decode_id("turn id", token).ok()? },
            ("cancel", Some(token)) => EventKind::Cancel { turn_id: ids::decode_id("turn id", token).ok()? },
            _ => return None,
        };
        Some(Self { session_id, kind, stream, sequence, payload })
    }
}

/// A live stream of [`SessionEvent`]s (messages that are not session events are skipped).
pub struct EventStream {
    subjects: Subjects,
    subscriber: Subscriber,
}

impl EventStream {
    pub(crate) fn new(subjects: Subjects, subscriber: Subscriber) -> Self {
        Self { subjects, subscriber }
    }
}

impl Stream for EventStream {
    type Item = SessionEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match Pin::new(&mut self.subscriber).poll_next(cx) {
                Poll::Ready(Some(message)) => {
                    if let Some(event) = SessionEvent::parse(&self.subjects, &message) {
                        return Poll::Ready(Some(event));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_subjects_map_to_the_events_their_republish_makes() {
        let subjects = Subjects::default();
        let cases = [
            ("sessionbus.v1.state.s1.meta", Some(("s1", EventKind::Meta))),
            ("sessionbus.v1.state.s1.lease", Some(("s1", EventKind::Lease))),
            ("sessionbus.v1.state.s1.graph", Some(("s1", EventKind::Graph))),
            ("sessionbus.v1.state.s1.turn.t9", Some(("s1", EventKind::Turn { turn_id: "t9".into() }))),
            ("sessionbus.v1.trace.s1", Some(("s1", EventKind::Trace))),
            ("$KV.SESSIONBUS_TOOLS.s1", Some(("s1", EventKind::Tools))),
            ("sessionbus.v1.index.~.s1", None),
            ("sessionbus.v1.state.s1.nope", None),
            ("other.v1.state.s1.meta", None),
        ];
        for (subject, expected) in cases {
            let event = SessionEvent::from_stored(&subjects, "S", subject, 7, Bytes::new());
            assert_eq!(event.as_ref().map(|e| (e.session_id.as_str(), e.kind.clone())), expected, "{subject}");
            assert!(event.is_none_or(|e| e.stream == "S" && e.sequence == 7));
        }
    }
}
