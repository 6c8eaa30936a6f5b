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
//! | frames, turn state; lash's token ledger | the meta, rewritten whole (created when the bus has none) |

use lash_core::RuntimeCommit;
use lash_core::store::GraphCommitDelta;
use serde_json::Value;
use sessionbus_api::{SessionHandle, SessionNode, TokenUsage, default_policy};
use sessionbus_nats::jetstream::records::{GraphRecord, MetaRecord, chunk_nodes};

use crate::executor::commit::{CommitRefusal, appended_by_replacement, from_json, json};

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
    /// The bus session the commit is written onto (the store's key).
    pub(crate) session_id: &'a str,
    /// The session's nodes (lash's JSON, in graph order); read only for a `ReplaceFull`.
    pub(crate) nodes: &'a [Value],
    /// The session's meta on the bus, when it has one.
    pub(crate) meta: Option<MetaRecord>,
    /// The parent session (lash's relation), for a session the commit creates.
    pub(crate) parent_session_id: Option<String>,
    /// lash's token ledger after the commit (lash's JSON): the meta's is made from it,
    /// not added to, so a meta that was not written is made whole by the next commit.
    pub(crate) ledger: &'a [Value],
}

/// The bus records of `commit`, written by request `request_id` at `now` (RFC 3339).
pub(crate) fn project(
    commit: &RuntimeCommit,
    before: Before<'_>,
    request_id: &str,
    now: &str,
) -> Result<Projection, ProjectionRefusal> {
    let session_id = before.session_id;
    let created = before.meta.is_none();
    let mut meta = before.meta.unwrap_or_else(|| {
        MetaRecord::new(
            SessionHandle {
                session_id: session_id.to_owned(),
                parent_session_id: before.parent_session_id,
                policy: default_policy(session_id),
            },
            now.to_owned(),
        )
    });
    if meta.closed {
        return Err(ProjectionRefusal::Closed(session_id.to_owned()));
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
    let mut chunks = chunk_nodes(nodes);
    if chunks.is_empty() {
        // A commit without new nodes still writes one record: the graph subject moves.
        chunks.push(Vec::new());
    }
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
    meta.token_ledger = Vec::new();
    meta.add_usage_deltas(before.ledger);
    meta.last_prompt_usage =
        turn_state.last_prompt_usage.as_ref().map(|usage| json("prompt usage", usage)).transpose()?;
    meta.protocol_turn_options = Some(json("protocol turn options", &turn_state.protocol_turn_options)?);
    Ok(Projection { graph, meta, created })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sessionbus_nats::jetstream::records::RECORD_BYTES;

    use super::*;

    /// The three commits lash-runtime made for a real turn: an append of the user's
    /// message, an append of the tool call and its result, then the whole graph
    /// restated with the answer at its end.
    fn tool_turn() -> Vec<Value> {
        include_str!("../executor/testdata/tool_turn_commits.jsonl")
            .lines()
            .map(|line| serde_json::from_str(line).expect("a commit"))
            .collect()
    }

    fn commit(value: &Value) -> RuntimeCommit {
        serde_json::from_value(value.clone()).expect("lash reads the commit")
    }

    fn ids(nodes: &[SessionNode]) -> Vec<String> {
        nodes.iter().map(|node| node.node_id.clone()).collect()
    }

    fn graph_ids(value: &Value, delta: &str) -> Vec<String> {
        let nodes = value["graph"][delta]["nodes"].as_array().expect("nodes");
        nodes.iter().map(|node| node["node_id"].as_str().expect("an id").to_owned()).collect()
    }

    fn bus_meta(closed: bool) -> MetaRecord {
        let handle = SessionHandle { session_id: "s".into(), parent_session_id: None, policy: json!({"p": 1}) };
        MetaRecord { closed, ..MetaRecord::new(handle, "2026-01-01T00:00:00Z".into()) }
    }

    fn before(nodes: &[Value], meta: Option<MetaRecord>) -> Before<'_> {
        with_ledger(nodes, meta, &[])
    }

    fn with_ledger<'a>(nodes: &'a [Value], meta: Option<MetaRecord>, ledger: &'a [Value]) -> Before<'a> {
        Before {
            session_id: "88f70732-7156-4d6e-ab7e-1470f20486d8",
            nodes,
            meta,
            parent_session_id: Some("parent".into()),
            ledger,
        }
    }

    #[test]
    fn each_kind_of_graph_delta_becomes_its_graph_records() {
        let values = tool_turn();
        let replaced: Vec<Value> = values[2]["graph"]["ReplaceFull"]["nodes"].as_array().cloned().expect("nodes");
        let mut changed = values[2].clone();
        changed["graph"]["ReplaceFull"]["nodes"][0]["timestamp"] = json!("2000-01-01T00:00:00Z");
        let unchanged = {
            let mut value = values[1].clone();
            value["graph"] = json!({"Unchanged": {"leaf_node_id": "m-leaf"}});
            value
        };
        let leaf_of = |value: &Value, delta: &str| value["graph"][delta]["leaf_node_id"].as_str().map(str::to_owned);
        let rows = [
            Row {
                name: "an append",
                commit: values[1].clone(),
                known: Vec::new(),
                ids: graph_ids(&values[1], "Append"),
                leaf: leaf_of(&values[1], "Append"),
                replace: false,
            },
            Row {
                name: "a restatement of the graph so far plus an answer",
                commit: values[2].clone(),
                known: replaced[..4].to_vec(),
                ids: graph_ids(&values[2], "ReplaceFull")[4..].to_vec(),
                leaf: leaf_of(&values[2], "ReplaceFull"),
                replace: false,
            },
            Row {
                name: "a whole graph that changes a node",
                commit: changed.clone(),
                known: replaced[..4].to_vec(),
                ids: graph_ids(&changed, "ReplaceFull"),
                leaf: leaf_of(&changed, "ReplaceFull"),
                replace: true,
            },
            Row {
                name: "no graph change",
                commit: unchanged,
                known: Vec::new(),
                ids: Vec::new(),
                leaf: Some("m-leaf".into()),
                replace: false,
            },
        ];
        for row in rows {
            let name = row.name;
            let projection = project(&commit(&row.commit), before(&row.known, None), "lash/x", "now").expect(name);
            assert_eq!(projection.graph.len(), 1, "{name}: one record");
            let record = &projection.graph[0];
            assert_eq!(ids(&record.nodes), row.ids, "{name}: the nodes, verbatim and in order");
            assert_eq!(record.leaf, row.leaf, "{name}: the leaf");
            assert_eq!(record.replace, row.replace, "{name}: whether readers drop what they had");
            assert_eq!(record.request_id, "lash/x", "{name}: marked as a lash commit's record");
        }
    }

    /// One row of [`each_kind_of_graph_delta_becomes_its_graph_records`]: a commit, the
    /// graph before it, and the record expected.
    struct Row {
        name: &'static str,
        commit: Value,
        known: Vec<Value>,
        ids: Vec<String>,
        leaf: Option<String>,
        replace: bool,
    }

    #[test]
    fn the_meta_carries_lash_s_frames_turn_state_and_usage_and_creates_the_session_once() {
        let values = tool_turn();
        let last = commit(&values[2]);
        let ledger = values[2]["usage_deltas"].as_array().cloned().expect("lash's ledger");
        let created = project(&last, with_ledger(&[], None, &ledger), "lash/x", "now").expect("projection");
        assert!(created.created, "no meta on the bus: the commit creates the session there");
        assert_eq!(created.meta.handle.parent_session_id.as_deref(), Some("parent"), "lash's relation");
        assert_eq!(created.meta.created_at, "now");
        assert_eq!(Value::Array(created.meta.agent_frames.clone()), values[2]["agent_frames"]);
        assert_eq!(created.meta.current_agent_frame_id.as_deref(), values[2]["current_agent_frame_id"].as_str());
        assert_eq!(created.meta.turn_index, values[2]["checkpoint"]["turn_state"]["turn_index"].as_u64().expect("n"));
        assert_eq!(Value::Array(created.meta.token_ledger.clone()), values[2]["usage_deltas"]);
        assert_eq!(created.graph[0].turn_id.as_deref(), Some("turn-1"), "the turn that committed");

        let mut stale = created.meta.clone();
        stale.token_ledger = vec![json!({"source": "lost", "model": "m"})];
        let again = project(&last, with_ledger(&[], Some(stale), &ledger), "lash/y", "later").expect("projection");
        assert!(!again.created, "a session the bus has is not created again");
        assert_eq!(again.meta.created_at, "now", "its creation time stays");
        assert_eq!(
            again.meta.token_ledger, created.meta.token_ledger,
            "the ledger is lash's, made whole, not added to"
        );
    }

    #[test]
    fn a_session_closed_through_the_bus_takes_no_commit() {
        let values = tool_turn();
        let refused = project(&commit(&values[1]), before(&[], Some(bus_meta(true))), "lash/x", "now");
        assert_eq!(refused, Err(ProjectionRefusal::Closed("88f70732-7156-4d6e-ab7e-1470f20486d8".into())));
        let open = project(&commit(&values[1]), before(&[], Some(bus_meta(false))), "lash/x", "now");
        assert_eq!(open.expect("projection").meta.handle.policy, json!({"p": 1}), "the bus's handle stays");
    }

    #[test]
    fn a_large_graph_is_split_and_only_its_first_record_replaces() {
        let values = tool_turn();
        let mut big = values[2].clone();
        let text = &mut big["graph"]["ReplaceFull"]["nodes"][0]["event"]["Conversation"]["parts"][0]["content"];
        *text = json!("x".repeat(RECORD_BYTES + 1));
        // The bus holds a graph this one does not start with: it is replaced.
        let known = [json!({"node_id": "gone"})];
        let projection = project(&commit(&big), before(&known, None), "lash/x", "now").expect("projection");
        assert!(projection.graph.len() > 1, "split into several records");
        let replaced: Vec<bool> = projection.graph.iter().map(|record| record.replace).collect();
        assert!(replaced[0] && replaced[1..].iter().all(|replace| !replace), "only the first replaces: {replaced:?}");
        let all: Vec<String> = projection.graph.iter().flat_map(|record| ids(&record.nodes)).collect();
        assert_eq!(all, graph_ids(&big, "ReplaceFull"), "every node once, in order");
        let leaf = big["graph"]["ReplaceFull"]["leaf_node_id"].as_str().map(str::to_owned);
        assert_eq!(
            projection.graph.last().and_then(|record| record.leaf.clone()),
            leaf,
            "the last record has the leaf"
        );
    }
}
