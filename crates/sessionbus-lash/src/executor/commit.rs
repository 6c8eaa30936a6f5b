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
use serde_json::Value;
use sessionbus_api::{AgentFrames, SessionChanges, SessionNode, ToolState};

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
pub(crate) fn appended_by_replacement(known: &[Value], mut graph: Vec<Value>) -> Result<Vec<Value>, CommitRefusal> {
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

pub(crate) fn json(what: &'static str, value: &impl serde::Serialize) -> Result<Value, CommitRefusal> {
    serde_json::to_value(value).map_err(|err| CommitRefusal::Unreadable { what, why: err.to_string() })
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(what: &'static str, value: Value) -> Result<T, CommitRefusal> {
    serde_json::from_value(value).map_err(|err| CommitRefusal::Unreadable { what, why: err.to_string() })
}

fn read<T: serde::de::DeserializeOwned>(what: &'static str, value: &impl serde::Serialize) -> Result<T, CommitRefusal> {
    from_json(what, json(what, value)?)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The three commits lash-runtime made for a real turn (a tool call, then an answer):
    /// two appends, then the whole graph restated with the answer at its end.
    fn tool_turn() -> Vec<Value> {
        include_str!("testdata/tool_turn_commits.jsonl")
            .lines()
            .map(|line| serde_json::from_str(line).expect("a commit"))
            .collect()
    }

    fn commits(values: &[Value]) -> Vec<RuntimeCommit> {
        values.iter().map(|value| serde_json::from_value(value.clone()).expect("lash reads the commit")).collect()
    }

    fn ids(changes: &SessionChanges) -> Vec<String> {
        changes.verbatim_nodes.iter().map(|node| node.node_id.clone()).collect()
    }

    fn replaced_ids(values: &[Value]) -> Vec<String> {
        let nodes = values[2]["graph"]["ReplaceFull"]["nodes"].as_array().expect("the whole graph");
        nodes.iter().map(|node| node["node_id"].as_str().expect("an id").to_owned()).collect()
    }

    #[test]
    fn a_tool_turn_s_commits_become_its_nodes_frames_usage_and_stamp() {
        let values = tool_turn();
        let changes = session_changes(&commits(&values), &TurnStart::default()).expect("changes");
        assert_eq!(ids(&changes), replaced_ids(&values), "every node once, in lash's order");
        assert_eq!(changes.leaf_node_id, None, "the leaf is the last node");
        let frames = changes.agent_frames.expect("frames");
        assert_eq!(frames.frames, values[2]["agent_frames"].as_array().cloned().expect("frames"));
        assert_eq!(frames.current.as_deref(), values[2]["current_agent_frame_id"].as_str());
        assert_eq!(changes.usage_deltas, values[2]["usage_deltas"].as_array().cloned().expect("deltas"));
        assert_eq!(
            changes.last_prompt_usage.as_ref(),
            Some(&values[2]["checkpoint"]["turn_state"]["last_prompt_usage"])
        );
        assert_eq!(
            changes.protocol_turn_options.as_ref(),
            Some(&values[2]["checkpoint"]["turn_state"]["protocol_turn_options"])
        );
        assert_eq!(changes.turn_commit_hash.as_deref(), values[2]["turn_commit"]["turn_commit_hash"].as_str());
    }

    #[test]
    fn commits_are_refused_when_the_bus_has_no_place_for_them() {
        type Edit = fn(&mut Vec<Value>);
        let rows: [(&str, Edit, CommitRefusal); 5] = [
            ("no commit", |values| values.clear(), CommitRefusal::NoCommit),
            (
                "a replacement that changes a node",
                |values| values[2]["graph"]["ReplaceFull"]["nodes"][0]["timestamp"] = json!("2000-01-01T00:00:00Z"),
                CommitRefusal::ReplaceFull,
            ),
            (
                "a replacement that drops a node",
                |values| {
                    let nodes = values[2]["graph"]["ReplaceFull"]["nodes"].as_array_mut().expect("nodes");
                    nodes.remove(1);
                },
                CommitRefusal::ReplaceFull,
            ),
            (
                "a plugin snapshot with an artifact",
                |values| {
                    let plugin = &mut values[1]["checkpoint"]["plugin_snapshot"]["plugins"]["standard_protocol"];
                    plugin["artifacts"] = json!([{"name": "state", "data": [1]}]);
                },
                CommitRefusal::UnstoredCheckpoint("plugin snapshot with artifacts"),
            ),
            (
                "execution state",
                |values| values[2]["checkpoint"]["execution_state"] = json!([1, 2, 3]),
                CommitRefusal::UnstoredCheckpoint("execution state"),
            ),
        ];
        for (name, edit, expected) in rows {
            let mut values = tool_turn();
            edit(&mut values);
            let parsed: Result<Vec<RuntimeCommit>, _> =
                values.iter().map(|value| serde_json::from_value(value.clone())).collect();
            let Ok(parsed) = parsed else {
                // An edit lash itself cannot read is no test of the mapping.
                panic!("{name}: lash does not read the edited commits");
            };
            assert_eq!(session_changes(&parsed, &TurnStart::default()), Err(expected), "{name}");
        }
    }

    #[test]
    fn a_replacement_extends_the_graph_the_turn_started_from() {
        let values = tool_turn();
        let all = replaced_ids(&values);
        let graph = values[2]["graph"]["ReplaceFull"]["nodes"].as_array().cloned().expect("nodes");
        // The session already had the first two nodes; lash restates them and adds the rest.
        let start = TurnStart { nodes: graph[..2].to_vec(), ..TurnStart::default() };
        let changes = session_changes(&commits(&values[2..]), &start).expect("changes");
        assert_eq!(ids(&changes), all[2..].to_vec());
        // A start the replacement does not begin with is history rewritten.
        let start = TurnStart { nodes: graph[1..3].to_vec(), ..TurnStart::default() };
        assert_eq!(session_changes(&commits(&values[2..]), &start), Err(CommitRefusal::ReplaceFull));
    }

    #[test]
    fn the_tool_state_is_written_only_when_the_turn_changed_it() {
        let values = tool_turn();
        let lash_state = values[2]["checkpoint"]["tool_state"].clone();
        let mut other = lash_state.clone();
        other["tools"].as_object_mut().expect("tools").remove("tool:add");
        let rows = [
            ("no starting state", None, Some(7)),
            (
                "the same tools at another generation",
                Some(json!({"generation": 9, "tools": lash_state["tools"]})),
                None,
            ),
            ("other tools", Some(other), Some(7)),
        ];
        for (name, tool_state, expected) in rows {
            let start = TurnStart { tool_state, tool_generation: 7, ..TurnStart::default() };
            let changes = session_changes(&commits(&values), &start).expect("changes");
            assert_eq!(changes.tool_state.map(|state| state.generation), expected, "{name}");
        }
    }
}
