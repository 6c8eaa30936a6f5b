//! What the state stream stores, one type per subject: the layout of decision 0008,
//! shared by every writer of a session (bus ops, the lash executor, the lash store).
//!
//! Readers accept records written before a field existed (every later field has a
//! serde default), so a session written by an older worker stays readable.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sessionbus_api::{AssembledTurn, PluginError, SessionHandle, SessionNode, TokenUsage, TurnInput};

/// `<prefix>.state.<sid>.meta`: the latest message wins (written with `Nats-Rollup: sub`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetaRecord {
    /// The session's handle: id, parent, policy (lash's `SessionPolicy` JSON).
    pub handle: SessionHandle,
    /// True once the session is closed.
    pub closed: bool,
    /// Turns committed so far.
    pub turn_index: u64,
    /// Context-window token usage summed over committed turns.
    pub token_usage: TokenUsage,
    /// lash `AgentFrameRecord`s, the whole list, rewritten by every commit.
    #[serde(default)]
    pub agent_frames: Vec<Value>,
    /// The active agent frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_agent_frame_id: Option<String>,
    /// lash `TokenLedgerEntry`s (cost accounting), one per source and model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_ledger: Vec<Value>,
    /// lash's `PromptUsage` of the last prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_prompt_usage: Option<Value>,
    /// lash's `ProtocolTurnOptions` for the next turn (absent: lash's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_turn_options: Option<Value>,
    /// lash's checkpoint blob references.
    #[serde(default, skip_serializing_if = "CheckpointRefs::is_empty")]
    pub checkpoint: CheckpointRefs,
    /// The tool-state generation (KV revision) the last commit produced or started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_state_generation: Option<u64>,
    /// When the session was created (RFC 3339).
    pub created_at: String,
}

impl MetaRecord {
    /// A new open session's meta: no turn, no usage, no frames.
    pub fn new(handle: SessionHandle, created_at: String) -> Self {
        Self {
            handle,
            closed: false,
            turn_index: 0,
            token_usage: TokenUsage::default(),
            agent_frames: Vec::new(),
            current_agent_frame_id: None,
            token_ledger: Vec::new(),
            last_prompt_usage: None,
            protocol_turn_options: None,
            checkpoint: CheckpointRefs::default(),
            tool_state_generation: None,
            created_at,
        }
    }

    /// Adds lash `usage_deltas` (`TokenLedgerEntry` JSON) to the ledger, entry by entry:
    /// an entry of the same `source` and `model` has its counters summed, others are
    /// appended (see [`sessionbus_api::merge_ledger`]).
    pub fn add_usage_deltas(&mut self, deltas: &[Value]) {
        sessionbus_api::merge_ledger(&mut self.token_ledger, deltas);
    }

    /// The fields of lash's `SessionSnapshot` this meta holds that sessionbus's own
    /// snapshot type carries in its `extra` map: `token_ledger`, `last_prompt_usage`,
    /// the checkpoint references and `tool_state_ref`.
    pub fn snapshot_extra(&self, session_id: &str) -> Map<String, Value> {
        let mut extra = Map::new();
        if !self.token_ledger.is_empty() {
            extra.insert("token_ledger".into(), Value::Array(self.token_ledger.clone()));
        }
        if let Some(usage) = &self.last_prompt_usage {
            extra.insert("last_prompt_usage".into(), usage.clone());
        }
        if let Some(generation) = self.tool_state_generation {
            extra.insert("tool_state_ref".into(), Value::String(tool_state_ref(session_id, generation)));
        }
        if let Ok(Value::Object(refs)) = serde_json::to_value(&self.checkpoint) {
            extra.extend(refs);
        }
        extra
    }
}

/// lash's `tool_state_ref` of a session's tool state at KV revision `generation`.
pub fn tool_state_ref(session_id: &str, generation: u64) -> String {
    format!("kv:{}/{session_id}@{generation}", crate::subjects::TOOLS_BUCKET)
}

/// lash's checkpoint references (blob names in `SESSIONBUS_BLOBS`), switched atomically
/// with the meta by a commit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRefs {
    /// The plugin snapshot blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_snapshot_ref: Option<String>,
    /// The plugin snapshot's revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_snapshot_revision: Option<u64>,
    /// The execution state blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_state_ref: Option<String>,
    /// The checkpoint blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_ref: Option<String>,
}

impl CheckpointRefs {
    /// True when no reference is set.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
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
pub enum LeaseRecord {
    /// No turn runs.
    Free,
    /// `turn_id` runs on `holder`, renewed within every `ttl_ms`. `expires_at_ms` (the
    /// holder's clock) is informational: liveness is judged by watching the lease's
    /// sequence (`lease_watch.rs`); `ttl_ms` 0 (records of older workers) means the
    /// observer's own TTL.
    Held {
        /// The running turn.
        turn_id: String,
        /// The lease holder's identity.
        holder: String,
        /// The run (one attempt of the turn) holding the lease.
        run_id: String,
        /// When the lease expires without renewal, by the holder's clock.
        expires_at_ms: u64,
        /// The holder's renewal TTL.
        #[serde(default)]
        ttl_ms: u64,
    },
    /// The session is closed.
    Closed,
}

/// `<prefix>.state.<sid>.graph`: one message per append or turn commit. The graph
/// subject's last sequence is the session's head revision (decision 0008).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphRecord {
    /// The request (append) or run (turn commit) that wrote the record.
    pub request_id: String,
    /// The committed turn, for a turn's record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<String>,
    /// The nodes, verbatim (lash `SessionNodeRecord` JSON).
    pub nodes: Vec<SessionNode>,
    /// The session's leaf after this record.
    pub leaf: Option<String>,
    /// The digest of the append request's body (a retry with another body is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// True on the first record of a whole graph (lash's `ReplaceFull`): readers drop
    /// every node they had before it. The records after it (same writer, split at
    /// about 256 KiB) are plain appends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace: bool,
}

impl GraphRecord {
    /// A new session's start point: `graph` copied as one record of no request.
    pub fn start_point(graph: sessionbus_api::SessionGraph) -> Self {
        Self {
            request_id: String::new(),
            turn_id: None,
            nodes: graph.nodes,
            leaf: graph.leaf_node_id,
            digest: None,
            replace: false,
        }
    }
}

/// Graph records holding many nodes (a copied start point, a whole lash graph) are split
/// at about this many bytes of node JSON (decision 0008).
pub const RECORD_BYTES: usize = 256 * 1024;

/// `nodes` in runs of about [`RECORD_BYTES`], in order (none for no nodes): one graph
/// record each.
pub fn chunk_nodes(nodes: Vec<SessionNode>) -> Vec<Vec<SessionNode>> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for node in nodes {
        let node_size = serde_json::to_vec(&node).map_or(0, |bytes| bytes.len());
        if !current.is_empty() && size + node_size > RECORD_BYTES {
            chunks.push(std::mem::take(&mut current));
            size = 0;
        }
        size += node_size;
        current.push(node);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// `<prefix>.state.<sid>.turn.<tid>`: the turn ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LedgerRecord {
    /// The turn runs under the lease run `run_id`.
    Running {
        /// The turn's input.
        input: TurnInput,
        /// The run holding the lease.
        run_id: String,
        /// The `start_turn` call's trace parent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
        /// The worker (lease holder) running it; absent from records of older workers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker: Option<String>,
    },
    /// The turn committed. `result.state.session_graph` is stored empty and rebuilt
    /// from the graph as of the commit's graph record (`graph_request_id`) when read.
    Completed {
        /// The turn's input.
        input: TurnInput,
        /// The turn's result.
        result: Box<AssembledTurn>,
        /// The request id of the commit's graph record.
        graph_request_id: String,
        /// The `start_turn` call's trace parent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
        /// lash's turn commit stamp (`turn_commit_hash`), when a lash writer committed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        turn_commit_hash: Option<String>,
        /// The worker (lease holder) that committed it; absent from records of older workers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker: Option<String>,
    },
    /// The run failed; nothing was committed and the turn id may be run again.
    Failed {
        /// The turn's input.
        input: TurnInput,
        /// Why it failed.
        error: PluginError,
        /// The worker (lease holder) whose run failed; absent from records of older workers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker: Option<String>,
    },
}

/// A request to cancel a turn (`cancel_turn`), on `state.<sid>.cancel.<tid>`. Kept
/// after the turn so that a rerun of it (its worker died) commits it cancelled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelRecord {
    /// When it was asked, on the asking worker's clock (for people; no decision reads it).
    pub requested_at_ms: u64,
}

impl LedgerRecord {
    /// The trace parent the turn's spans hang under, when the `start_turn` call had one.
    pub fn traceparent(&self) -> Option<&str> {
        match self {
            LedgerRecord::Running { traceparent, .. } | LedgerRecord::Completed { traceparent, .. } => {
                traceparent.as_deref()
            }
            LedgerRecord::Failed { .. } => None,
        }
    }

    /// The worker (lease holder) that wrote the record, when it said.
    pub fn worker(&self) -> Option<&str> {
        match self {
            LedgerRecord::Running { worker, .. }
            | LedgerRecord::Completed { worker, .. }
            | LedgerRecord::Failed { worker, .. } => worker.as_deref(),
        }
    }

    /// The turn's input.
    pub fn input(&self) -> &TurnInput {
        match self {
            LedgerRecord::Running { input, .. }
            | LedgerRecord::Completed { input, .. }
            | LedgerRecord::Failed { input, .. } => input,
        }
    }
}

/// Decodes a stored `what` record; an unreadable one is a `Session` error.
pub fn decode<T: serde::de::DeserializeOwned>(what: &str, payload: &[u8]) -> Result<T, PluginError> {
    serde_json::from_slice(payload)
        .map_err(|err| PluginError::Session(format!("stored {what} record is unreadable: {err}")))
}

/// Encodes a record for storing.
pub fn encode<T: Serialize>(value: &T) -> Result<bytes::Bytes, PluginError> {
    crate::wire::encode(value)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_meta_written_before_the_lash_fields_still_reads_and_writes_back_unchanged() {
        let old = json!({
            "handle": {"session_id": "s1", "policy": {}},
            "closed": false,
            "turn_index": 2,
            "token_usage": {"input_tokens": 3, "output_tokens": 4, "cached_input_tokens": 0},
            "agent_frames": [],
            "created_at": "2026-01-01T00:00:00Z"
        });
        let meta: MetaRecord = serde_json::from_value(old.clone()).unwrap();
        assert!(meta.token_ledger.is_empty() && meta.checkpoint.is_empty());
        assert_eq!(meta.tool_state_generation, None);
        let back = serde_json::to_value(&meta).unwrap();
        assert_eq!(back["turn_index"], 2);
        for absent in ["token_ledger", "last_prompt_usage", "protocol_turn_options", "checkpoint"] {
            assert!(back.get(absent).is_none(), "{absent} is written although empty");
        }
    }

    #[test]
    fn old_graph_and_ledger_records_read_without_replace_or_commit_hash() {
        let graph: GraphRecord = serde_json::from_value(json!({"request_id": "r", "nodes": [], "leaf": null})).unwrap();
        assert!(!graph.replace);
        assert!(serde_json::to_value(&graph).unwrap().get("replace").is_none());
    }

    #[test]
    fn the_snapshot_extra_carries_lash_fields_under_lash_names() {
        let handle = SessionHandle { session_id: "s1".into(), parent_session_id: None, policy: json!({}) };
        let mut meta = MetaRecord::new(handle, "t".into());
        assert!(meta.snapshot_extra("s1").is_empty());
        meta.token_ledger = vec![json!({"source": "turn", "model": "m", "usage": {}})];
        meta.last_prompt_usage = Some(json!({"input_tokens": 9}));
        meta.tool_state_generation = Some(4);
        meta.checkpoint.checkpoint_ref = Some("sha256:ab".into());
        meta.checkpoint.plugin_snapshot_revision = Some(2);
        let extra = Value::Object(meta.snapshot_extra("s1"));
        assert_eq!(
            extra,
            json!({
                "token_ledger": [{"source": "turn", "model": "m", "usage": {}}],
                "last_prompt_usage": {"input_tokens": 9},
                "tool_state_ref": "kv:SESSIONBUS_TOOLS/s1@4",
                "checkpoint_ref": "sha256:ab",
                "plugin_snapshot_revision": 2
            })
        );
    }
}
