//! What the state stream stores, one type per subject.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sessionbus_api::{AssembledTurn, PluginError, SessionHandle, SessionNode, TokenUsage, TurnInput};

/// `<prefix>.state.<sid>.meta`: the latest message wins (written with `Nats-Rollup: sub`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct MetaRecord {
    pub(crate) handle: SessionHandle,
    pub(crate) closed: bool,
    pub(crate) turn_index: u64,
    pub(crate) token_usage: TokenUsage,
    #[serde(default)]
    pub(crate) agent_frames: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) current_agent_frame_id: Option<String>,
    pub(crate) created_at: String,
}

/// `<prefix>.index.<parent>.<sid>` in `SESSIONBUS_INDEX`: a session's registry entry,
/// written once at create; its stream sequence is the session's place in creation order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IndexRecord {
    pub(crate) session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) parent_session_id: Option<String>,
    pub(crate) created_at: String,
}

/// `<prefix>.state.<sid>.lease`: who may run a turn. Every turn write is fenced on the
/// sequence of the lease message its writer holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(crate) enum LeaseRecord {
    /// No turn runs.
    Free,
    /// `turn_id` runs on `holder`, renewed within every `ttl_ms`. `expires_at_ms` (the
    /// holder's clock) is informational: liveness is judged by watching the lease's
    /// sequence (`lease_watch.rs`); `ttl_ms` 0 (records of older workers) means the
    /// observer's own TTL.
    Held {
        turn_id: String,
        holder: String,
        run_id: String,
        expires_at_ms: u64,
        #[serde(default)]
        ttl_ms: u64,
    },
    /// The session is closed.
    Closed,
}

/// `<prefix>.state.<sid>.graph`: one message per append or turn commit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct GraphRecord {
    pub(crate) request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) turn_id: Option<String>,
    pub(crate) nodes: Vec<SessionNode>,
    /// The session's leaf after this record.
    pub(crate) leaf: Option<String>,
    /// The digest of the append request's body (a retry with another body is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) digest: Option<String>,
}

impl GraphRecord {
    /// A new session's start point: `graph` copied as one record of no request.
    pub(crate) fn start_point(graph: sessionbus_api::SessionGraph) -> Self {
        Self { request_id: String::new(), turn_id: None, nodes: graph.nodes, leaf: graph.leaf_node_id, digest: None }
    }
}

/// `<prefix>.state.<sid>.turn.<tid>`: the turn ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum LedgerRecord {
    /// The turn runs under the lease run `run_id`.
    Running {
        input: TurnInput,
        run_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    /// The turn committed. `result.state.session_graph` is stored empty and rebuilt
    /// from the graph as of the commit's graph record (`graph_request_id`) when read.
    Completed {
        input: TurnInput,
        result: Box<AssembledTurn>,
        graph_request_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    /// The run failed; nothing was committed and the turn id may be run again.
    Failed { input: TurnInput, error: PluginError },
}

impl LedgerRecord {
    /// The trace parent the turn's spans hang under, when the `start_turn` call had one.
    pub(crate) fn traceparent(&self) -> Option<&str> {
        match self {
            LedgerRecord::Running { traceparent, .. } | LedgerRecord::Completed { traceparent, .. } => {
                traceparent.as_deref()
            }
            LedgerRecord::Failed { .. } => None,
        }
    }

    pub(crate) fn input(&self) -> &TurnInput {
        match self {
            LedgerRecord::Running { input, .. }
            | LedgerRecord::Completed { input, .. }
            | LedgerRecord::Failed { input, .. } => input,
        }
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(what: &str, payload: &[u8]) -> Result<T, PluginError> {
    serde_json::from_slice(payload)
        .map_err(|err| PluginError::Session(format!("stored {what} record is unreadable: {err}")))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<bytes::Bytes, PluginError> {
    crate::wire::encode(value)
}
