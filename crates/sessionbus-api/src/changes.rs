//! [`SessionChanges`]: what a turn changed besides appending messages, for executors
//! that keep their own records (lash): nodes committed verbatim, agent frames, the token
//! ledger, prompt usage, protocol options and tool state (decision 0008).

use serde_json::Value;

use crate::{PluginError, SessionNode, ToolState};

/// What a turn changed beyond [`crate::TurnOutput::nodes`]. The default changes nothing,
/// so executors that only append messages (echo) leave it so.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionChanges {
    /// Nodes committed exactly as given (ids, parents, frames, timestamps): lash's
    /// `SessionNodeRecord`s of the turn. See [`check_verbatim_nodes`] for what a commit
    /// accepts. A turn gives these or `TurnOutput::nodes`, not both.
    pub verbatim_nodes: Vec<SessionNode>,
    /// The leaf after the commit, when it is not the last verbatim node.
    pub leaf_node_id: Option<String>,
    /// The agent frames after the turn (the whole list) and the current frame, when the
    /// turn changed them.
    pub agent_frames: Option<AgentFrames>,
    /// lash `TokenLedgerEntry`s the turn used, summed into the session's ledger.
    pub usage_deltas: Vec<Value>,
    /// lash's `PromptUsage` of the turn's last prompt.
    pub last_prompt_usage: Option<Value>,
    /// lash's `ProtocolTurnOptions` for the next turn.
    pub protocol_turn_options: Option<Value>,
    /// The tool state after the turn, when the turn changed it; written compare-and-set
    /// on its `generation` (the generation the turn started from) before the commit.
    pub tool_state: Option<ToolState>,
    /// lash's turn commit stamp, stored in the turn's ledger record.
    pub turn_commit_hash: Option<String>,
}

/// A session's agent frames (lash `AgentFrameRecord` JSON) and its current frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentFrames {
    /// Every frame, in lash's order.
    pub frames: Vec<Value>,
    /// The active frame.
    pub current: Option<String>,
}

/// Why verbatim nodes cannot be committed onto a graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerbatimRefusal {
    /// The first node's parent is not a node of the session.
    UnknownParent(Option<String>),
    /// A node id is already in the session (or twice in the nodes).
    TakenId(String),
    /// A node after the first names a parent that is neither in the session nor earlier
    /// in the nodes.
    DanglingParent(String),
    /// The leaf is neither a node of the session nor one of the nodes.
    UnknownLeaf(String),
}

impl VerbatimRefusal {
    /// The error a commit refused for this reason answers (a permanent `Session` error:
    /// the executor produced records that do not fit the session).
    pub fn into_error(self, turn_id: &str) -> PluginError {
        let why = match self {
            Self::UnknownParent(Some(parent)) => format!("its first node's parent `{parent}` is not in the session"),
            Self::UnknownParent(None) => "its first node has no parent but the session is not empty".to_owned(),
            Self::TakenId(id) => format!("node id `{id}` is already taken"),
            Self::DanglingParent(id) => format!("node `{id}` names a parent that is not in the session"),
            Self::UnknownLeaf(id) => format!("its leaf `{id}` is not a node of the session"),
        };
        PluginError::Session(format!(
            "turn `{turn_id}` produced nodes that do not fit the session ({why}); nothing was committed"
        ))
    }
}

/// Checks that `nodes` can be stored verbatim on a graph where `known` says which ids
/// exist and `empty` whether it has none: the first node's parent is a node of the graph
/// (none only on an empty graph), each later parent is known or earlier in `nodes`, no
/// id is taken, and `leaf` (when given) is known or in `nodes`.
pub fn check_verbatim_nodes(
    nodes: &[SessionNode],
    leaf: Option<&str>,
    empty: bool,
    known: impl Fn(&str) -> bool,
) -> Result<(), VerbatimRefusal> {
    let mut added = std::collections::HashSet::new();
    for (position, node) in nodes.iter().enumerate() {
        if known(&node.node_id) || !added.insert(node.node_id.as_str()) {
            return Err(VerbatimRefusal::TakenId(node.node_id.clone()));
        }
        let parent = node.parent_node_id.as_deref();
        let parent_known = match parent {
            None => empty && position == 0,
            Some(parent) => known(parent) || added.contains(parent) && parent != node.node_id,
        };
        if !parent_known {
            return Err(match position {
                0 => VerbatimRefusal::UnknownParent(node.parent_node_id.clone()),
                _ => VerbatimRefusal::DanglingParent(node.node_id.clone()),
            });
        }
    }
    match leaf {
        Some(leaf) if !known(leaf) && !added.contains(leaf) => Err(VerbatimRefusal::UnknownLeaf(leaf.to_owned())),
        _ => Ok(()),
    }
}

/// Sums lash `TokenLedgerEntry` JSON `deltas` into `ledger`, keyed by `source` and
/// `model`. Counters are the numeric fields of `usage`; a counter missing on one side
/// counts as 0.
pub fn merge_ledger(ledger: &mut Vec<Value>, deltas: &[Value]) {
    let key = |entry: &Value| (entry.get("source").cloned(), entry.get("model").cloned());
    for delta in deltas {
        match ledger.iter_mut().find(|entry| key(entry) == key(delta)) {
            Some(entry) => sum_usage(entry, delta),
            None => ledger.push(delta.clone()),
        }
    }
}

fn sum_usage(entry: &mut Value, delta: &Value) {
    let (Some(Value::Object(into)), Some(Value::Object(from))) = (entry.get_mut("usage"), delta.get("usage").cloned())
    else {
        return;
    };
    for (name, value) in from {
        let Some(add) = value.as_u64() else { continue };
        let sum = into.get(&name).and_then(Value::as_u64).unwrap_or(0).saturating_add(add);
        into.insert(name, Value::from(sum));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::SessionAppendNode;

    fn node(id: &str, parent: Option<&str>) -> SessionNode {
        SessionNode::from_append(SessionAppendNode::message("User", id), id.into(), parent.map(Into::into), "t".into())
    }

    #[test]
    fn verbatim_nodes_fit_only_onto_known_parents_with_fresh_ids() {
        let graph = ["a", "b"];
        let known = |id: &str| graph.contains(&id);
        type Row<'a> = (&'a str, Vec<SessionNode>, Option<&'a str>, bool, Result<(), VerbatimRefusal>);
        let rows: Vec<Row> = vec![
            ("chain onto the leaf", vec![node("c", Some("b")), node("d", Some("c"))], None, false, Ok(())),
            ("branch from an older node", vec![node("c", Some("a"))], None, false, Ok(())),
            ("leaf inside the graph", vec![node("c", Some("b"))], Some("a"), false, Ok(())),
            ("root of an empty graph", vec![node("c", None)], None, true, Ok(())),
            (
                "root of a non-empty graph",
                vec![node("c", None)],
                None,
                false,
                Err(VerbatimRefusal::UnknownParent(None)),
            ),
            (
                "unknown first parent",
                vec![node("c", Some("z"))],
                None,
                false,
                Err(VerbatimRefusal::UnknownParent(Some("z".into()))),
            ),
            ("taken id", vec![node("b", Some("a"))], None, false, Err(VerbatimRefusal::TakenId("b".into()))),
            (
                "id twice in the nodes",
                vec![node("c", Some("b")), node("c", Some("b"))],
                None,
                false,
                Err(VerbatimRefusal::TakenId("c".into())),
            ),
            (
                "a later node with a dangling parent",
                vec![node("c", Some("b")), node("d", Some("y"))],
                None,
                false,
                Err(VerbatimRefusal::DanglingParent("d".into())),
            ),
            (
                "a later root",
                vec![node("c", Some("b")), node("d", None)],
                None,
                false,
                Err(VerbatimRefusal::DanglingParent("d".into())),
            ),
            (
                "unknown leaf",
                vec![node("c", Some("b"))],
                Some("q"),
                false,
                Err(VerbatimRefusal::UnknownLeaf("q".into())),
            ),
        ];
        for (name, nodes, leaf, empty, expected) in rows {
            assert_eq!(check_verbatim_nodes(&nodes, leaf, empty, known), expected, "{name}");
        }
    }

    #[test]
    fn usage_deltas_sum_per_source_and_model() {
        let entry = |source: &str, model: &str, input: u64, output: u64| json!({"source": source, "model": model, "usage": {"input_tokens": input, "output_tokens": output}});
        let rows = [
            ("empty ledger takes the delta", vec![], vec![entry("turn", "m", 1, 2)], vec![entry("turn", "m", 1, 2)]),
            (
                "same source and model sum",
                vec![entry("turn", "m", 1, 2)],
                vec![entry("turn", "m", 10, 20)],
                vec![entry("turn", "m", 11, 22)],
            ),
            (
                "another model is a new entry",
                vec![entry("turn", "m", 1, 2)],
                vec![entry("turn", "n", 5, 5)],
                vec![entry("turn", "m", 1, 2), entry("turn", "n", 5, 5)],
            ),
            (
                "another source is a new entry",
                vec![entry("turn", "m", 1, 2)],
                vec![entry("compaction", "m", 5, 5)],
                vec![entry("turn", "m", 1, 2), entry("compaction", "m", 5, 5)],
            ),
        ];
        for (name, mut ledger, deltas, expected) in rows {
            merge_ledger(&mut ledger, &deltas);
            assert_eq!(ledger, expected, "{name}");
        }
    }

    #[test]
    fn a_counter_missing_on_one_side_counts_as_zero() {
        let mut ledger = vec![json!({"source": "turn", "model": "m", "usage": {"input_tokens": 1}})];
        merge_ledger(&mut ledger, &[json!({"source": "turn", "model": "m", "usage": {"cache_read_tokens": 7}})]);
        assert_eq!(ledger[0]["usage"], json!({"input_tokens": 1, "cache_read_tokens": 7}));
    }
}
