//! The session graph: stored nodes, and the nodes a caller appends.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A message a plugin or runtime appends (lash's `PluginMessage`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PluginMessage {
    /// The message id; becomes the node id when it is unique in the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `User`, `Assistant`, `System`, ...
    pub role: String,
    /// The message text.
    pub content: String,
    /// Every other field (origin, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl PluginMessage {
    /// A message with a role and text and no id.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { id: None, role: role.into(), content: content.into(), extra: Map::new() }
    }
}

/// A protocol plugin's event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProtocolEvent {
    /// The protocol plugin that produced the event.
    pub plugin_id: String,
    /// The event itself.
    pub payload: Value,
}

/// One node to append (lash's `SessionAppendNode`, tagged by `kind`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionAppendNode {
    /// A conversation message.
    Message {
        /// The message.
        message: PluginMessage,
        /// What caused it (a lash `CausalRef`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caused_by: Option<Value>,
    },
    /// A protocol plugin event.
    ProtocolEvent {
        /// The event.
        event: ProtocolEvent,
        /// What caused it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caused_by: Option<Value>,
    },
    /// A plugin-defined node.
    Plugin {
        /// The plugin's node type (`todo.snapshot`).
        plugin_type: String,
        /// The node's body.
        body: Value,
        /// What caused it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caused_by: Option<Value>,
    },
}

impl SessionAppendNode {
    /// A message node with no id and no cause.
    pub fn message(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self::Message { message: PluginMessage::new(role, content), caused_by: None }
    }

    /// What caused this node, if recorded.
    pub fn caused_by(&self) -> Option<&Value> {
        match self {
            Self::Message { caused_by, .. }
            | Self::ProtocolEvent { caused_by, .. }
            | Self::Plugin { caused_by, .. } => caused_by.as_ref(),
        }
    }
}

/// What a stored node holds (tagged by `kind`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionNodeBody {
    /// A session history event (`{"Conversation": ..}`, `{"Protocol": ..}`, ...).
    Event {
        /// The event, in lash's externally tagged form.
        event: Value,
    },
    /// A plugin node.
    Plugin {
        /// The plugin's node type.
        plugin_type: String,
        /// The node's body.
        body: Value,
    },
}

/// One stored node of a session graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionNode {
    /// Unique within the session.
    pub node_id: String,
    /// The node this one follows; `None` for a root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_node_id: Option<String>,
    /// What caused the node (a lash `CausalRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caused_by: Option<Value>,
    /// The agent frame the node belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_frame_id: Option<String>,
    /// RFC 3339 time the node was stored.
    pub timestamp: String,
    /// The node's content.
    #[serde(flatten)]
    pub body: SessionNodeBody,
}

impl SessionNode {
    /// Turns an appended node into a stored one with the given id, parent and time; a
    /// message becomes the conversation record lash stores for it (see
    /// `conversation_record`).
    pub fn from_append(
        node: SessionAppendNode,
        node_id: String,
        parent_node_id: Option<String>,
        timestamp: String,
    ) -> Self {
        let (caused_by, body) = match node {
            SessionAppendNode::Message { message, caused_by } => {
                let (conversation, origin_cause) = conversation_record(message, &node_id);
                let event = serde_json::json!({ "Conversation": conversation });
                (caused_by.or(origin_cause), SessionNodeBody::Event { event })
            }
            SessionAppendNode::ProtocolEvent { event, caused_by } => {
                let event = serde_json::json!({ "Protocol": event });
                (caused_by, SessionNodeBody::Event { event })
            }
            SessionAppendNode::Plugin { plugin_type, body, caused_by } => {
                (caused_by, SessionNodeBody::Plugin { plugin_type, body })
            }
        };
        Self { node_id, parent_node_id, caused_by, agent_frame_id: None, timestamp, body }
    }

    /// The text of a conversation node, when it is one.
    pub fn conversation_text(&self) -> Option<String> {
        let SessionNodeBody::Event { event } = &self.body else { return None };
        let parts = event.get("Conversation")?.get("parts")?.as_array()?;
        Some(parts.iter().filter_map(|p| p.get("content")?.as_str()).collect())
    }
}

/// The conversation record lash stores for an appended message (lash-core
/// `plugin_message_to_message` and its graph's append builder), and the cause a process
/// origin implies:
/// - the message keeps its own id (`node_id` only when it has none), also when its node
///   id had to change to stay unique;
/// - its parts are its `parts`, or one text part of its `content` when it has no parts
///   (none when the content is empty too), followed by one attachment part per
///   `attachments` entry; every part id becomes `<message id>.p<n>`;
/// - its origin defaults to `{"kind": "plugin", "plugin_id": "plugin"}`;
/// - a `process` origin causes the node (`process_event` with its process and sequence)
///   unless the node names its cause.
fn conversation_record(message: PluginMessage, node_id: &str) -> (Map<String, Value>, Option<Value>) {
    let PluginMessage { id, role, content, mut extra } = message;
    let message_id = id.filter(|id| !id.is_empty()).unwrap_or_else(|| node_id.to_owned());
    let mut parts = match extra.remove("parts") {
        Some(Value::Array(parts)) if !parts.is_empty() => parts,
        _ if content.is_empty() => Vec::new(),
        _ => vec![serde_json::json!({ "kind": "Text", "content": content, "prune_state": "Intact" })],
    };
    if let Some(Value::Array(attachments)) = extra.remove("attachments") {
        parts.extend(attachments.into_iter().map(|source| {
            serde_json::json!({
                "kind": "Attachment",
                "content": "",
                "attachment": { "source": source },
                "prune_state": "Intact",
            })
        }));
    }
    for (index, part) in parts.iter_mut().enumerate() {
        if let Value::Object(part) = part {
            part.insert("id".into(), Value::String(format!("{message_id}.p{index}")));
        }
    }
    let origin = match extra.remove("origin") {
        Some(origin) if !origin.is_null() => origin,
        _ => serde_json::json!({ "kind": "plugin", "plugin_id": "plugin" }),
    };
    let origin_cause = (origin.get("kind").and_then(Value::as_str) == Some("process")).then(|| {
        serde_json::json!({
            "type": "process_event",
            "process_id": origin.get("process_id").cloned().unwrap_or(Value::Null),
            "sequence": origin.get("sequence").cloned().unwrap_or(Value::Null),
        })
    });
    let mut conversation = Map::with_capacity(4 + extra.len());
    conversation.insert("id".into(), Value::String(message_id));
    conversation.insert("role".into(), Value::String(role));
    conversation.insert("parts".into(), Value::Array(parts));
    conversation.insert("origin".into(), origin);
    conversation.extend(extra);
    (conversation, origin_cause)
}

/// A session's graph: its nodes and the leaf the next append chains onto.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionGraph {
    /// Every node, in append order.
    #[serde(default)]
    pub nodes: Vec<SessionNode>,
    /// The active leaf; `None` for an empty graph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_node_id: Option<String>,
}

impl SessionGraph {
    /// True when `node_id` is on the active path (root..leaf inclusive).
    pub fn is_on_active_path(&self, node_id: &str) -> bool {
        let mut parents = std::collections::HashMap::with_capacity(self.nodes.len());
        for node in &self.nodes {
            parents.insert(node.node_id.as_str(), node.parent_node_id.as_deref());
        }
        let mut cursor = self.leaf_node_id.as_deref();
        while let Some(id) = cursor {
            if id == node_id {
                return true;
            }
            cursor = parents.get(id).copied().flatten();
        }
        false
    }
}

/// `append_session_nodes` request (lash's `AppendSessionNodesRequest`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppendSessionNodesRequest {
    /// Nodes to chain onto the current leaf, in order.
    pub nodes: Vec<SessionAppendNode>,
    /// When set, must be on the active path, else the answer is `StaleBranch`.
    #[serde(default)]
    pub requires_ancestor_node_id: Option<String>,
}

/// `append_session_nodes` result (lash's `AppendSessionNodesResult`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AppendSessionNodesResult {
    /// The nodes were stored with these ids; the leaf is now `leaf_node_id`.
    Appended {
        /// Ids of the stored nodes, in order.
        node_ids: Vec<String>,
        /// The new leaf.
        leaf_node_id: String,
    },
    /// The required ancestor is not on the active path; nothing was written.
    StaleBranch {
        /// The leaf at the time of the refusal.
        current_leaf_node_id: Option<String>,
    },
}

/// Assigns node ids by the contract's rules: a message node takes its message id when
/// that id is unused, else `message:<id>`, `message:<id>:2`, ...; a message without id
/// gets `m<uuid>`; plugin nodes `plugin:<uuid>`; protocol nodes `protocol:<uuid>`.
///
/// `is_taken` answers whether an id is already in the session; ids assigned earlier in
/// the same batch count as taken. `uuid_for(i)` gives the uuid of the `i`-th node, so
/// a host can derive ids from a request id and make retries produce the same ids.
pub fn assign_node_ids(
    nodes: &[SessionAppendNode],
    is_taken: impl Fn(&str) -> bool,
    mut uuid_for: impl FnMut(usize) -> uuid::Uuid,
) -> Vec<String> {
    let mut assigned: Vec<String> = Vec::with_capacity(nodes.len());
    let taken = |id: &str, assigned: &[String]| is_taken(id) || assigned.iter().any(|a| a == id);
    for (index, node) in nodes.iter().enumerate() {
        let id = match node {
            SessionAppendNode::Message { message, .. } => match message.id.as_ref().filter(|id| !id.is_empty()) {
                Some(id) if !taken(id, &assigned) => id.clone(),
                Some(id) => {
                    let mut candidate = format!("message:{id}");
                    let mut n = 2u64;
                    while taken(&candidate, &assigned) {
                        candidate = format!("message:{id}:{n}");
                        n += 1;
                    }
                    candidate
                }
                None => format!("m{}", uuid_for(index).simple()),
            },
            SessionAppendNode::Plugin { .. } => format!("plugin:{}", uuid_for(index).simple()),
            SessionAppendNode::ProtocolEvent { .. } => format!("protocol:{}", uuid_for(index).simple()),
        };
        assigned.push(id);
    }
    assigned
}
