//! What a lash turn committed, as the bus's [`SessionChanges`]: a pure function of the
//! `RuntimeCommit`s lash made through the [`super::capture::CapturingStore`]
//! (decisions 0008 and 0009).
//!
//! | lash's commit | `SessionChanges` |
//! |---|---|
//! | `graph: Append { nodes, leaf }` | `verbatim_nodes` (in commit order), `leaf_node_id` when it is not the last node |
//! | `graph: Unchanged { leaf }` | nothing; its leaf counts when it is the last commit's |
//! | `graph: ReplaceFull` whose prefix is the graph so far, unchanged | `verbatim_nodes`: the nodes after that prefix |
//! | any other `ReplaceFull` | refused: rewriting a graph is the lash store's (issue 13) |
//! | `agent_frames`, `current_agent_frame_id` | `agent_frames` (the last commit's) |
//! | `usage_deltas` | `usage_deltas` (every commit's, in order; the bus sums them) |
//! | `checkpoint.turn_state` | `last_prompt_usage`, `protocol_turn_options` (the last commit's) |
//! | `checkpoint.tool_state` | `tool_state` at the generation the turn started from, when it differs from the starting state |
//! | `checkpoint.plugin_snapshot` without artifacts | nothing: lash rebuilds it when it opens the session |
//! | `checkpoint.plugin_snapshot` with artifacts, `execution_state` | refused: they need `SESSIONBUS_BLOBS` (the lash store's) |
//! | `turn_commit.turn_commit_hash` | `turn_commit_hash` (the last commit's) |

use lash_core::RuntimeCommit;
use lash_core::store::GraphCommitDelta;
use sessionbus_api::{AgentFrames, SessionChanges, SessionNode, ToolState};
use serde_json::Value;

/// Why a lash turn's commits cannot be carried to the bus.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommitRefusal {
    /// lash made no commit: the turn has nothing to store.
    #[error("lash made no commit for the turn; nothing can be stored")]
    NoCommit,
    /// A whole-graph replacement that changes or drops nodes the session has.
    #[error(
        "lash replaced the session's graph with one that changes or drops nodes it had (ReplaceFull); the executor \
         commits appends only, run such sessions on the lash store"
    )]
    ReplaceFull,
    /// A checkpoint part the bus has no place for yet.
    #[error(
        "lash's checkpoint holds a {0}, which needs the SESSIONBUS_BLOBS object store the executor does not write yet; \
         use tools and protocols without plugin or execution state"
    )]
    UnstoredCheckpoint(&'static str),
    /// A lash record the bus's types do not read.
    #[error("lash's {what} does not read as the bus's record: {why}")]
    Unreadable {
        /// Which record.
        what: &'static str,
        /// Why.
        why: String,
    },
}

impl CommitRefusal {
    /// A stable name of the refusal's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoCommit => "no_commit",
            Self::ReplaceFull => "replace_full",
            Self::UnstoredCheckpoint(_) => "unstored_checkpoint",
            Self::Unreadable { .. } => "unreadable",
        }
    }
}

/// What a turn started from: the session's nodes (lash's JSON, in graph order), its
/// tool state (lash's JSON) and that state's generation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TurnStart {
    /// The session graph's nodes when the turn started.
    pub nodes: Vec<Value>,
    /// The tool state lash opened the session with.
    pub tool_state: Option<Value>,
    /// The generation of that tool state (0 when none is stored).
    pub tool_generation: u64,
}

/// The bus's changes for the `commits` one lash turn made, in order, on a session as
/// `start` describes it. A tool state equal to the starting one is not written again.
pub fn session_changes(commits: &[RuntimeCommit], start: &TurnStart) -> Result<SessionChanges, CommitRefusal> {
    let last = commits.last().ok_or(CommitRefusal::NoCommit)?;
    let mut changes = SessionChanges::default();
    let mut known = start.nodes.clone();
    for commit in commits {
        if let Some(snapshot) = &commit.checkpoint.plugin_snapshot
            && holds_artifacts(&json("plugin snapshot", snapshot)?)
        {
            return Err(CommitRefusal::UnstoredCheckpoint("plugin snapshot with artifacts"));
        }
        if commit.checkpoint.execution_state.is_some() {
            return Err(CommitRefusal::UnstoredCheckpoint("execution state"));
        }
        match &commit.graph {
            GraphCommitDelta::Append { nodes, .. } => {
                for node in nodes {
                    known.push(json("node record", node)?);
                    changes.verbatim_nodes.push(read::<SessionNode>("node record", node)?);
                }
            }
            GraphCommitDelta::Unchanged { .. } => {}
            GraphCommitDelta::ReplaceFull(graph) => {
                let nodes = graph.nodes.iter().map(|node| json("node record", node)).collect::<Result<Vec<_>, _>>()?;
                for node in appended_by_replacement(&known, nodes)? {
                    changes.verbatim_nodes.push(from_json("node record", node.clone())?);
                    known.push(node);
                }
            }
        }
        for delta in &commit.usage_deltas {
            changes.usage_deltas.push(json("usage delta", delta)?);
        }
    }
    let last_node = changes.verbatim_nodes.last().map(|node| node.node_id.as_str());
    changes.leaf_node_id = last.graph.leaf_node_id().filter(|leaf| Some(leaf.as_str()) != last_node).cloned();
    changes.agent_frames = Some(AgentFrames {
        frames: last.agent_frames.iter().map(|frame| json("agent frame", frame)).collect::<Result<_, _>>()?,
        current: Some(last.current_agent_frame_id.to_string()).filter(|id| !id.is_empty()),
    });
    let turn_state = &last.checkpoint.turn_state;
    changes.last_prompt_usage =
        turn_state.last_prompt_usage.as_ref().map(|usage| json("prompt usage", usage)).transpose()?;
    changes.protocol_turn_options = Some(json("protocol turn options", &turn_state.protocol_turn_options)?);
    if let Some(tool_state) = &last.checkpoint.tool_state {
        let lash = json("tool state", tool_state)?;
        if !same_tools(Some(&lash), start.tool_state.as_ref()) {
            let mut state: ToolState = from_json("tool state", lash)?;
            state.generation = start.tool_generation;
            changes.tool_state = Some(state);
        }
    }
    changes.turn_commit_hash = last.turn_commit.as_ref().map(|stamp| stamp.turn_commit_hash.clone());
    Ok(changes)
}

/// The nodes a whole-graph commit adds to the `known` graph: lash restates the whole
/// graph at the end of some turns (`ReplaceFull`), which is an append when the known
/// nodes are its prefix, unchanged. Anything else rewrites history and is refused.
fn appended_by_replacement(known: &[Value], mut graph: Vec<Value>) -> Result<Vec<Value>, CommitRefusal> {
    if graph.len() < known.len() || graph[..known.len()] != *known {
        return Err(CommitRefusal::ReplaceFull);
    }
    Ok(graph.split_off(known.len()))
}

/// Whether a plugin snapshot (lash's JSON) holds any plugin artifact. One without
/// artifacts (every plugin at its start, as the standard protocol commits each turn) is
/// what lash rebuilds when it opens the session, so it need not be stored.
fn holds_artifacts(snapshot: &Value) -> bool {
    let plugins = snapshot.get("plugins").and_then(Value::as_object);
    plugins.is_some_and(|plugins| {
        plugins.values().any(|plugin| plugin.get("artifacts").and_then(Value::as_array).is_none_or(|a| !a.is_empty()))
    })
}

/// Whether two tool states (lash's JSON) hold the same tools, whatever their generations.
fn same_tools(a: Option<&Value>, b: Option<&Value>) -> bool {
    let tools = |state: Option<&Value>| state.and_then(|state| state.get("tools")).cloned();
    a.is_some() == b.is_some() && tools(a) == tools(b)
}

fn json(what: &'static str, value: &impl serde::Serialize) -> Result<Value, CommitRefusal> {
    serde_json::to_value(value).map_err(|err| CommitRefusal::Unreadable { what, why: err.to_string() })
}

fn from_json<T: serde::de::DeserializeOwned>(what: &'static str, value: Value) -> Result<T, CommitRefusal> {
    serde_json::from_value(value).map_err(|err| CommitRefusal::Unreadable { what, why: err.to_string() })
}

fn read<T: serde::de::DeserializeOwned>(what: &'static str, value: &impl serde::Serialize) -> Result<T, CommitRefusal> {
    from_json(what, json(what, value)?)
}
