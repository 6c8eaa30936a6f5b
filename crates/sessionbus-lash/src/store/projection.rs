//! A lash commit as the bus's records (decisions 0008 and 0024): a pure function from
//! the commit, the graph before it and the session's meta on the bus, to the graph
//! records and the meta that the commit's atomic batch writes next to its log record.
//!
//! | lash's commit | on the bus |
//! |---|---|
//! | `Append { nodes, leaf }` | graph records holding the nodes verbatim, the last with the leaf |
//! | `Unchanged { leaf }` | one graph record without nodes: every commit moves the graph subject |
//! | `ReplaceFull` whose prefix is the graph so far | an append of the nodes after that prefix |
//! | any other `ReplaceFull` | the whole graph, its first record marked `replace` |
//! | frames, turn state, usage deltas | the meta, rewritten (created when the bus has none) |

use lash_core::RuntimeCommit;
use lash_core::store::GraphCommitDelta;
use serde_json::Value;
use sessionbus_api::{SessionHandle, SessionNode, TokenUsage, default_policy};
use sessionbus_nats::jetstream::records::{GraphRecord, MetaRecord};

use crate::executor::commit::{CommitRefusal, appended_by_replacement, from_json, json};

/// Graph records are split at about this many bytes of node JSON.
const RECORD_BYTES: usize = 256 * 1024;

/// What one lash commit writes on the bus.
#[derive(Debug, PartialEq)]
pub(crate) struct Projection {
    /// The graph records, in order (at least one).
    pub(crate) graph: Vec<GraphRecord>,
    /// The session's meta after the commit.
    pub(crate) meta: MetaRecord,
    /// True when the bus had no meta: the commit creates the session there.
    pub(crate) created: bool,
}

/// Why a commit cannot be written on the bus.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProjectionRefusal {
    /// The session was closed through the bus.
    #[error("session `{0}` was closed through the bus; nothing more can be committed to it")]
    Closed(String),
    /// A lash record the bus's types do not read.
    #[error(transparent)]
    Unreadable(#[from] CommitRefusal),
}

/// The session before a commit, as the projection needs it.
pub(crate) struct Before<'a> {
    /// The session's nodes (lash's JSON, in graph order); read only for a `ReplaceFull`.
    pub(crate) nodes: &'a [Value],
    /// The session's meta on the bus, when it has one.
    pub(crate) meta: Option<MetaRecord>,
    /// The parent session (lash's relation), for a session the commit creates.
    pub(crate) parent_session_id: Option<String>,
}

/// The bus records of `commit`, written by request `request_id` at `now` (RFC 3339).
pub(crate) fn project(
    commit: &RuntimeCommit,
    before: Before<'_>,
    request_id: &str,
    now: &str,
) -> Result<Projection, ProjectionRefusal> {
    let session_id = &commit.session_id;
    let created = before.meta.is_none();
    let mut meta = before.meta.unwrap_or_else(|| {
        MetaRecord::new(
            SessionHandle {
                session_id: session_id.clone(),
                parent_session_id: before.parent_session_id,
                policy: default_policy(session_id),
            },
            now.to_owned(),
        )
    });
    if meta.closed {
        return Err(ProjectionRefusal::Closed(session_id.clone()));
    }
    let turn_id = commit.turn_commit.as_ref().map(|stamp| stamp.turn_id.clone());
    let record = |nodes: Vec<SessionNode>, leaf: Option<String>, replace: bool| GraphRecord {
        request_id: request_id.to_owned(),
        turn_id: turn_id.clone(),
        nodes,
        leaf,
        digest: None,
        replace,
    };
    let (nodes, leaf, replace) = match &commit.graph {
        GraphCommitDelta::Unchanged { leaf_node_id } => (Vec::new(), leaf_node_id.clone(), false),
        GraphCommitDelta::Append { nodes, leaf_node_id } => {
            let nodes = nodes.iter().map(|node| json("node record", node)).collect::<Result<Vec<_>, _>>()?;
            (nodes, leaf_node_id.clone(), false)
        }
        GraphCommitDelta::ReplaceFull(graph) => {
            let nodes = graph.nodes.iter().map(|node| json("node record", node)).collect::<Result<Vec<_>, _>>()?;
            match appended_by_replacement(before.nodes, nodes.clone()) {
                Ok(appended) => (appended, graph.leaf_node_id.clone(), false),
                Err(_) => (nodes, graph.leaf_node_id.clone(), true),
            }
        }
    };
    let nodes = nodes.into_iter().map(|node| from_json("node record", node)).collect::<Result<Vec<_>, _>>()?;
    let leaf = leaf.or_else(|| nodes.last().map(|node: &SessionNode| node.node_id.clone()));
    let chunks = chunk(nodes);
    let last = chunks.len() - 1;
    let graph = chunks
        .into_iter()
        .enumerate()
        .map(|(index, nodes)| {
            let chunk_leaf = if index == last { leaf.clone() } else { nodes.last().map(|n| n.node_id.clone()) };
            record(nodes, chunk_leaf, replace && index == 0)
        })
        .collect();

    meta.agent_frames = commit.agent_frames.iter().map(|frame| json("agent frame", frame)).collect::<Result<_, _>>()?;
    meta.current_agent_frame_id = Some(commit.current_agent_frame_id.clone()).filter(|id| !id.is_empty());
    let turn_state = &commit.checkpoint.turn_state;
    meta.turn_index = turn_state.turn_index as u64;
    meta.token_usage = from_json::<TokenUsage>("token usage", json("token usage", &turn_state.token_usage)?)?;
    let deltas = commit.usage_deltas.iter().map(|delta| json("usage delta", delta)).collect::<Result<Vec<_>, _>>()?;
    meta.add_usage_deltas(&deltas);
    meta.last_prompt_usage =
        turn_state.last_prompt_usage.as_ref().map(|usage| json("prompt usage", usage)).transpose()?;
    meta.protocol_turn_options = Some(json("protocol turn options", &turn_state.protocol_turn_options)?);
    Ok(Projection { graph, meta, created })
}

/// `nodes` in runs of about [`RECORD_BYTES`] (one run, maybe empty, when they are few).
fn chunk(nodes: Vec<SessionNode>) -> Vec<Vec<SessionNode>> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for node in nodes {
        let size = serde_json::to_vec(&node).map_or(0, |encoded| encoded.len());
        if bytes + size > RECORD_BYTES && !current.is_empty() {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(node);
    }
    chunks.push(current);
    chunks
}
