//! The subject scheme: every subject sessionbus uses, built in one place.
//!
//! | subject | what |
//! |---|---|
//! | `<prefix>.session.<sid>.<op>` | one request per trait call, served by workers ([`Endpoint`]) |
//! | `<prefix>.create` | `create_session` |
//! | `<prefix>.ping` | readiness |
//! | `<prefix>.sessions` | one page of the session registry |
//! | `<prefix>.events.<sid>.<kind>` | one event per stored write (JetStream republish) |
//! | `<prefix>.state.<sid>.{meta,lease,graph,turn.<tid>}` | the `SESSIONBUS_STATE` stream |
//! | `<prefix>.trace.<sid>` | the `SESSIONBUS_TRACE` stream |
//! | `<prefix>.index.<parent sid or ~>.<sid>` | the `SESSIONBUS_INDEX` stream: one entry per session, in creation order |
//! | `$KV.SESSIONBUS_TOOLS.<sid>` | a session's tool state (the KV bucket's stream) |
//!
//! `<sid>` and `<tid>` are ids encoded by [`sessionbus_api::ids`].
//!
//! ```
//! use sessionbus_nats::{Endpoint, Op, Subjects};
//!
//! let subjects = Subjects::default();
//! let snapshot = Endpoint::Session(Op::Snapshot);
//! assert_eq!(subjects.listen(snapshot), "sessionbus.v1.session.*.snapshot");
//! assert_eq!(subjects.call(snapshot, "chat-42"), "sessionbus.v1.session.chat-42.snapshot");
//! assert_eq!(subjects.template(snapshot), "sessionbus.v1.session.{session_id}.snapshot");
//! assert_eq!(subjects.call(Endpoint::Create, "ignored"), "sessionbus.v1.create");
//! ```

use std::fmt;
use std::str::FromStr;

use sessionbus_api::{PluginError, ids};

/// The default subject prefix.
pub const DEFAULT_PREFIX: &str = "sessionbus.v1";
/// The parent token of a root session's registry entry: no encoded id is `~`.
pub const ROOT_PARENT_TOKEN: &str = "~";
/// The KV bucket holding tool state.
pub const TOOLS_BUCKET: &str = "SESSIONBUS_TOOLS";

/// The per-session operations of the bus, one endpoint each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `snapshot_session` / `snapshot_current`.
    Snapshot,
    /// One page of a session graph.
    GraphPage,
    /// `tool_catalog` / `shared_tool_catalog`.
    ToolCatalog,
    /// `tool_state`.
    ToolState,
    /// `apply_tool_state`.
    ApplyToolState,
    /// `set_tool_membership`.
    SetToolMembership,
    /// `close_session`.
    Close,
    /// `start_turn`.
    StartTurn,
    /// `append_session_nodes`.
    AppendNodes,
    /// `emit_trace_event`.
    Trace,
    /// `cancel_turn`.
    CancelTurn,
}

impl Op {
    /// Every per-session op.
    pub const ALL: [Op; 11] = [
        Op::Snapshot,
        Op::GraphPage,
        Op::ToolCatalog,
        Op::ToolState,
        Op::ApplyToolState,
        Op::SetToolMembership,
        Op::Close,
        Op::StartTurn,
        Op::AppendNodes,
        Op::Trace,
        Op::CancelTurn,
    ];

    /// The op's subject token.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Snapshot => "snapshot",
            Op::GraphPage => "graph_page",
            Op::ToolCatalog => "tool_catalog",
            Op::ToolState => "tool_state",
            Op::ApplyToolState => "apply_tool_state",
            Op::SetToolMembership => "set_tool_membership",
            Op::Close => "close",
            Op::StartTurn => "start_turn",
            Op::AppendNodes => "append_nodes",
            Op::Trace => "trace",
            Op::CancelTurn => "cancel_turn",
        }
    }

    /// True for ops that change state (retried with the same request id).
    pub fn is_mutation(self) -> bool {
        matches!(
            self,
            Op::ApplyToolState
                | Op::SetToolMembership
                | Op::Close
                | Op::StartTurn
                | Op::AppendNodes
                | Op::Trace
                | Op::CancelTurn
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Op {
    type Err = PluginError;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        Op::ALL
            .into_iter()
            .find(|op| op.as_str() == token)
            .ok_or_else(|| PluginError::InvalidRequest(format!("unknown operation `{token}`")))
    }
}

/// Every endpoint a worker serves: the one table that the client, the worker, `$SRV`
/// and the docs take their subjects and names from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A per-session op on `<prefix>.session.<sid>.<op>`.
    Session(Op),
    /// `create_session` on `<prefix>.create`.
    Create,
    /// Readiness on `<prefix>.ping`.
    Ping,
    /// One page of the session registry on `<prefix>.sessions`.
    Sessions,
}

impl Endpoint {
    /// Every endpoint, in the order workers add them.
    pub const ALL: [Endpoint; 14] = [
        Endpoint::Session(Op::Snapshot),
        Endpoint::Session(Op::GraphPage),
        Endpoint::Session(Op::ToolCatalog),
        Endpoint::Session(Op::ToolState),
        Endpoint::Session(Op::ApplyToolState),
        Endpoint::Session(Op::SetToolMembership),
        Endpoint::Session(Op::Close),
        Endpoint::Session(Op::StartTurn),
        Endpoint::Session(Op::AppendNodes),
        Endpoint::Session(Op::Trace),
        Endpoint::Session(Op::CancelTurn),
        Endpoint::Create,
        Endpoint::Ping,
        Endpoint::Sessions,
    ];

    /// The endpoint's name (in `$SRV`, spans and errors).
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Session(op) => op.as_str(),
            Endpoint::Create => "create",
            Endpoint::Ping => "ping",
            Endpoint::Sessions => "sessions",
        }
    }

    /// True for endpoints that change state (resent with the same request id).
    pub fn writes(self) -> bool {
        match self {
            Endpoint::Session(op) => op.is_mutation(),
            Endpoint::Create => true,
            Endpoint::Ping | Endpoint::Sessions => false,
        }
    }
}

/// Builds and parses the subjects under one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

impl Subjects {
    /// The subjects under `prefix` (e.g. `sessionbus.v1`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The subject of one call of `endpoint` (per-session endpoints on the session's
    /// encoded token; create, ping and sessions ignore it).
    pub fn call(&self, endpoint: Endpoint, session_token: &str) -> String {
        self.endpoint_subject(endpoint, session_token)
    }

    /// What a worker's `endpoint` listens on (`<prefix>.session.*.<op>` for a session op).
    pub fn listen(&self, endpoint: Endpoint) -> String {
        self.endpoint_subject(endpoint, "*")
    }

    /// The subject template of `endpoint`, for span names
    /// (`<prefix>.session.{session_id}.<op>`).
    pub fn template(&self, endpoint: Endpoint) -> String {
        self.endpoint_subject(endpoint, "{session_id}")
    }

    /// `<prefix>.session.<sid>.<op>`: shorthand for [`Subjects::call`] of a session op.
    pub fn session_op(&self, session_token: &str, op: Op) -> String {
        self.call(Endpoint::Session(op), session_token)
    }

    /// `<prefix>.create`: shorthand for [`Subjects::listen`] of [`Endpoint::Create`].
    pub fn create(&self) -> String {
        self.listen(Endpoint::Create)
    }

    fn endpoint_subject(&self, endpoint: Endpoint, session: &str) -> String {
        match endpoint {
            Endpoint::Session(op) => format!("{}.session.{session}.{}", self.prefix, op.as_str()),
            Endpoint::Create => format!("{}.create", self.prefix),
            Endpoint::Ping => format!("{}.ping", self.prefix),
            Endpoint::Sessions => format!("{}.sessions", self.prefix),
        }
    }

    /// Decodes the session id and op of a request subject.
    pub fn parse_session_op(&self, subject: &str) -> Result<(String, Op), PluginError> {
        let invalid = || PluginError::InvalidRequest(format!("`{subject}` is not a sessionbus session subject"));
        let rest = subject
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix(".session."))
            .ok_or_else(invalid)?;
        let (token, op) = rest.split_once('.').ok_or_else(invalid)?;
        let session_id = ids::decode_id("session id", token)?;
        Ok((session_id, op.parse()?))
    }

    /// `<prefix>.events.<sid>.>` for an encoded session token, or every session.
    pub fn events(&self, session_token: Option<&str>) -> String {
        format!("{}.events.{}.>", self.prefix, session_token.unwrap_or("*"))
    }

    /// `<prefix>.events.`: what every event subject starts with.
    pub fn events_prefix(&self) -> String {
        format!("{}.events.", self.prefix)
    }

    /// `<prefix>.events.*.tools`: the tool-state events of every session.
    pub fn tool_events(&self) -> String {
        format!("{}.events.*.tools", self.prefix)
    }

    /// `<prefix>.events.*.cancel.*`: every stored cancel request, as workers watch them.
    pub fn cancel_events(&self) -> String {
        format!("{}.events.*.cancel.*", self.prefix)
    }

    /// `<prefix>.events.<sid>.turn.<tid>`: the events of one turn's ledger.
    pub fn turn_events(&self, session_token: &str, turn_token: &str) -> String {
        format!("{}.events.{session_token}.turn.{turn_token}", self.prefix)
    }

    /// The republish rules of the three streams, as (source, destination): every stored
    /// write becomes an event on `<prefix>.events.<sid>.<kind>`.
    pub fn republish_tools(&self) -> (String, String) {
        (self.tool_key("*"), format!("{}.events.{{{{wildcard(1)}}}}.tools", self.prefix))
    }

    /// See [`Subjects::republish_tools`]: the state stream's rule.
    pub fn republish_state(&self) -> (String, String) {
        (format!("{}.state.*.>", self.prefix), format!("{}.events.{{{{wildcard(1)}}}}.>", self.prefix))
    }

    /// See [`Subjects::republish_tools`]: the trace stream's rule.
    pub fn republish_trace(&self) -> (String, String) {
        (format!("{}.trace.*", self.prefix), format!("{}.events.{{{{wildcard(1)}}}}.trace", self.prefix))
    }

    /// `$KV.SESSIONBUS_TOOLS.<sid>`: a session's tool state.
    pub fn tool_key(&self, session_token: &str) -> String {
        format!("$KV.{TOOLS_BUCKET}.{session_token}")
    }

    /// `$KV.SESSIONBUS_TOOLS.>`: the subjects of the tools bucket's stream.
    pub fn tools_all(&self) -> String {
        self.tool_key(">")
    }

    /// `$SRV.PING.<service>.<id>`: one micro service instance's ping.
    pub fn service_ping(service: &str, id: &str) -> String {
        format!("$SRV.PING.{service}.{id}")
    }

    /// `$JS.API.STREAM.INFO.<stream>`: a stream's info request.
    pub fn stream_info(stream: &str) -> String {
        format!("$JS.API.STREAM.INFO.{stream}")
    }

    /// `<prefix>.state.*.meta`: every session's meta (the registry).
    pub fn meta_all(&self) -> String {
        self.meta("*")
    }

    /// `<prefix>.state.>`: the subjects of the state stream.
    pub fn state_all(&self) -> String {
        format!("{}.state.>", self.prefix)
    }

    /// `<prefix>.state.<sid>.>`: every state subject of one session.
    pub fn state_session(&self, session_token: &str) -> String {
        format!("{}.state.{session_token}.>", self.prefix)
    }

    /// `<prefix>.state.<sid>.meta`.
    pub fn meta(&self, session_token: &str) -> String {
        format!("{}.state.{session_token}.meta", self.prefix)
    }

    /// `<prefix>.state.<sid>.lease`.
    pub fn lease(&self, session_token: &str) -> String {
        format!("{}.state.{session_token}.lease", self.prefix)
    }

    /// `<prefix>.state.<sid>.graph`.
    pub fn graph(&self, session_token: &str) -> String {
        format!("{}.state.{session_token}.graph", self.prefix)
    }

    /// `<prefix>.state.<sid>.turn.<tid>`.
    pub fn turn(&self, session_token: &str, turn_token: &str) -> String {
        format!("{}.state.{session_token}.turn.{turn_token}", self.prefix)
    }

    /// `<prefix>.live.<sid>`: the live output of the session's running turn (published by
    /// the worker running it, not stored).
    pub fn live(&self, session_token: &str) -> String {
        format!("{}.live.{session_token}", self.prefix)
    }

    /// `<prefix>.state.<sid>.cancel.<tid>`: the cancel request of one turn.
    pub fn cancel(&self, session_token: &str, turn_token: &str) -> String {
        format!("{}.state.{session_token}.cancel.{turn_token}", self.prefix)
    }

    /// `<prefix>.trace.<sid>`.
    pub fn trace(&self, session_token: &str) -> String {
        format!("{}.trace.{session_token}", self.prefix)
    }

    /// `<prefix>.index.<parent>.<sid>`: a session's registry entry (`parent_token` is the
    /// parent's encoded id, `None` for a root session).
    pub fn index(&self, parent_token: Option<&str>, session_token: &str) -> String {
        format!("{}.index.{}.{session_token}", self.prefix, parent_token.unwrap_or(ROOT_PARENT_TOKEN))
    }

    /// `<prefix>.index.<parent>.*`: the registry entries of one parent's children, or
    /// `<prefix>.index.>` (every entry) for `None`.
    pub fn index_filter(&self, parent_token: Option<&str>) -> String {
        match parent_token {
            Some(parent) => format!("{}.index.{parent}.*", self.prefix),
            None => format!("{}.index.>", self.prefix),
        }
    }

    /// `<prefix>.index.*.<sid>`: one session's registry entry, whatever its parent.
    pub fn index_of(&self, session_token: &str) -> String {
        format!("{}.index.*.{session_token}", self.prefix)
    }

    /// `<prefix>.trace.>`: the subjects of the trace stream.
    pub fn trace_all(&self) -> String {
        format!("{}.trace.>", self.prefix)
    }
}

/// Encodes a session id as its subject token (`InvalidRequest` for invalid ids).
pub fn session_token(session_id: &str) -> Result<String, PluginError> {
    ids::encode_id("session id", session_id)
}

/// Encodes a turn id as its subject token (`InvalidRequest` for invalid ids).
pub fn turn_token(turn_id: &str) -> Result<String, PluginError> {
    ids::encode_id("turn id", turn_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_subjects_round_trip() {
        let subjects = Subjects::default();
        for id in ["chat-42", "a.b c", "line\u{e9}", "*>"] {
            let token = session_token(id).expect("valid id");
            for op in Op::ALL {
                let subject = subjects.call(Endpoint::Session(op), &token);
                assert_eq!(subject.split('.').count(), 5, "{subject}");
                assert_eq!(subjects.parse_session_op(&subject).expect("parse"), (id.to_string(), op));
            }
        }
    }

    #[test]
    fn the_endpoint_table_covers_every_op_once() {
        let subjects = Subjects::default();
        let ops: Vec<Op> =
            Endpoint::ALL.iter().filter_map(|e| if let Endpoint::Session(op) = e { Some(*op) } else { None }).collect();
        assert_eq!(ops, Op::ALL);
        let listened: std::collections::HashSet<String> = Endpoint::ALL.iter().map(|e| subjects.listen(*e)).collect();
        assert_eq!(listened.len(), Endpoint::ALL.len(), "every endpoint listens on its own subject");
        assert_eq!(subjects.listen(Endpoint::Ping), "sessionbus.v1.ping");
        assert_eq!(subjects.listen(Endpoint::Sessions), "sessionbus.v1.sessions");
        assert!(Endpoint::Create.writes() && !Endpoint::Ping.writes() && !Endpoint::Sessions.writes());
    }

    #[test]
    fn index_subjects_put_roots_and_children_apart() {
        let subjects = Subjects::default();
        assert_eq!(subjects.index(None, "a"), "sessionbus.v1.index.~.a");
        assert_eq!(subjects.index(Some("p"), "c"), "sessionbus.v1.index.p.c");
        assert_eq!(subjects.index_filter(Some("p")), "sessionbus.v1.index.p.*");
        assert_eq!(subjects.index_filter(None), "sessionbus.v1.index.>");
        assert_eq!(subjects.index_of("c"), "sessionbus.v1.index.*.c");
        assert!(ids::decode_id("session id", ROOT_PARENT_TOKEN).is_err(), "no session's token is the root marker");
    }

    #[test]
    fn malformed_subjects_are_invalid_requests() {
        let subjects = Subjects::default();
        for subject in [
            "sessionbus.v1.session.=Y2hhdC00Mg.snapshot",
            "sessionbus.v1.session.x.nope",
            "other.v1.session.x.snapshot",
            "sessionbus.v1.session.x",
        ] {
            let err = subjects.parse_session_op(subject).expect_err(subject);
            assert_eq!(err.kind(), sessionbus_api::ErrorKind::InvalidRequest, "{subject}: {err:?}");
        }
    }
}
