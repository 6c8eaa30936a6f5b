//! Sessions: creation requests, handles and snapshots.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{SessionAppendNode, SessionGraph, TokenUsage};

/// How a new session relates to others.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionRelation {
    /// A top-level session.
    Root,
    /// A sub-session of `parent_session_id`.
    Child {
        /// The parent session.
        parent_session_id: String,
        /// What caused the child (a lash `CausalRef`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caused_by: Option<Value>,
    },
}

/// Where a new session's history starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionStartPoint {
    /// An empty graph.
    Empty,
    /// A copy of the session the caller is bound to.
    CurrentSession,
    /// A copy of another session.
    ExistingSession {
        /// The session to copy.
        session_id: String,
    },
    /// The graph of a snapshot.
    Snapshot {
        /// The snapshot to start from.
        snapshot: Box<SessionSnapshot>,
    },
}

fn default_plugin_source() -> String {
    "current_host_fresh".to_owned()
}

/// `create_session` request (lash's `SessionCreateRequest`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionCreateRequest {
    /// The id to create; a new UUID when `None`.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Root or child.
    pub relation: SessionRelation,
    /// Where history starts.
    pub start: SessionStartPoint,
    /// The session policy (model, limits, ...); a default one when `None`.
    #[serde(default)]
    pub policy: Option<Value>,
    /// How plugins are instantiated (`current_host_fresh`, `current_session_fork`).
    #[serde(default = "default_plugin_source")]
    pub plugin_source: String,
    /// Nodes appended right after creation.
    #[serde(default)]
    pub initial_nodes: Vec<SessionAppendNode>,
    /// Tool visibility (`hidden_tools`, ...).
    #[serde(default)]
    pub tool_access: Map<String, Value>,
    /// Sub-agent settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subagent: Option<Value>,
    /// Per-plugin options.
    #[serde(default)]
    pub plugin_options: Map<String, Value>,
    /// Whose usage this session counts as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_source: Option<String>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl SessionCreateRequest {
    /// A root session starting empty, with a default policy (lash's `SessionCreateRequest::root`).
    pub fn root(session_id: Option<String>) -> Self {
        Self {
            session_id,
            relation: SessionRelation::Root,
            start: SessionStartPoint::Empty,
            policy: None,
            plugin_source: default_plugin_source(),
            initial_nodes: Vec::new(),
            tool_access: Map::new(),
            subagent: None,
            plugin_options: Map::new(),
            usage_source: None,
            extra: Map::new(),
        }
    }

    /// A child of `parent_session_id` starting from `start`.
    pub fn child(session_id: Option<String>, parent_session_id: impl Into<String>, start: SessionStartPoint) -> Self {
        Self {
            relation: SessionRelation::Child { parent_session_id: parent_session_id.into(), caused_by: None },
            start,
            ..Self::root(session_id)
        }
    }
}

/// What `create_session` answers (lash's `SessionHandle`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionHandle {
    /// The session's id.
    pub session_id: String,
    /// The parent, for a child session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_session_id: Option<String>,
    /// The session's policy.
    pub policy: Value,
}

/// The policy of a session created without one: lash's default policy, bound to the id.
pub fn default_policy(session_id: &str) -> Value {
    serde_json::json!({
        "model": { "id": "", "variant": "provider_default", "limits": { "context_window_tokens": 1 } },
        "provider_id": "",
        "session_id": session_id,
        "autonomous": false,
        "max_turns": null,
    })
}

fn default_protocol_turn_options() -> Value {
    serde_json::json!({ "schema_version": 1, "payload": {} })
}

/// A session's full state at one moment (lash's `SessionSnapshot`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionSnapshot {
    /// The session's id.
    pub session_id: String,
    /// The session's policy.
    pub policy: Value,
    /// Agent frames (lash `AgentFrameRecord`s).
    #[serde(default)]
    pub agent_frames: Vec<Value>,
    /// The active agent frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_agent_frame_id: Option<String>,
    /// The session graph.
    pub session_graph: SessionGraph,
    /// Turns committed so far.
    pub turn_index: u64,
    /// Token usage summed over committed turns.
    pub token_usage: TokenUsage,
    /// The tool state revision the snapshot was taken at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_state_generation: Option<u64>,
    /// Protocol options for the next turn.
    #[serde(default = "default_protocol_turn_options")]
    pub protocol_turn_options: Value,
    /// Every other field (blob refs, token ledger, checkpoint, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl SessionSnapshot {
    /// An empty snapshot of session `session_id` with `policy`.
    pub fn new(session_id: impl Into<String>, policy: Value) -> Self {
        Self {
            session_id: session_id.into(),
            policy,
            agent_frames: Vec::new(),
            current_agent_frame_id: None,
            session_graph: SessionGraph::default(),
            turn_index: 0,
            token_usage: TokenUsage::default(),
            tool_state_generation: None,
            protocol_turn_options: default_protocol_turn_options(),
            extra: Map::new(),
        }
    }
}
