//! A turn commits an executor's own node records verbatim (lash's `SessionNodeRecord`s:
//! ids, parents, frames, timestamps as given) with the metadata it changed: agent
//! frames, token ledger, prompt usage, protocol options, tool state, the turn commit
//! stamp (decision 0008). Records that do not fit the session commit nothing.

mod common;

use std::sync::Arc;

use serde_json::json;
use sessionbus_api::{
    AgentFrames, AppendSessionNodesRequest, EchoExecutor, PluginError, SessionAppendNode, SessionChanges,
    SessionGraphService as _, SessionLifecycleService as _, SessionNode, SessionStateService as _, SessionTurnRequest,
    ToolManifest, TurnContext, TurnExecutor, TurnInput, TurnOutput,
};
use sessionbus_nats::jetstream::records::{LedgerRecord, decode};
use sessionbus_nats::subjects::{session_token, turn_token};
use sessionbus_nats::{STATE_STREAM, Subjects};

/// Writes two nodes of its own making (frame `f1`, fixed timestamps), a new frame list,
/// one ledger delta, prompt usage, protocol options, a tool and a commit stamp.
struct LashLike;

fn own_node(id: &str, parent: Option<String>, text: &str) -> SessionNode {
    let mut node = SessionNode::from_append(
        SessionAppendNode::message("Assistant", text),
        id.into(),
        parent,
        "2026-01-02T03:04:05.000006Z".into(),
    );
    node.agent_frame_id = Some("f1".into());
    node
}

#[async_trait::async_trait]
impl TurnExecutor for LashLike {
    async fn run(&self, context: TurnContext) -> Result<TurnOutput, PluginError> {
        let turn = context.turn.turn_id.clone();
        let turn = turn.as_str();
        let leaf = context.snapshot.session_graph.leaf_node_id.clone();
        let first = own_node(&format!("{turn}-a"), leaf, "thinking");
        let second = own_node(&format!("{turn}-b"), Some(first.node_id.clone()), "done");
        let mut output = EchoExecutor.run(context).await?;
        output.nodes.clear();
        let mut tools = sessionbus_api::ToolState::default();
        tools.insert(ToolManifest::new("read_file", "read_file", "reads a file"));
        output.changes = SessionChanges {
            verbatim_nodes: vec![first, second],
            agent_frames: Some(AgentFrames { frames: vec![json!({"frame_id": "f1"})], current: Some("f1".into()) }),
            usage_deltas: vec![json!({"source": "turn", "model": "m", "usage": {"input_tokens": 10}})],
            last_prompt_usage: Some(json!({"input_tokens": 10})),
            protocol_turn_options: Some(json!({"schema_version": 1, "payload": {"k": turn}})),
            tool_state: (turn == "t1").then_some(tools),
            turn_commit_hash: Some(format!("hash-{turn}")),
            ..SessionChanges::default()
        };
        Ok(output)
    }
}

async fn ledger_of(server: &sessionbus_testkit::NatsServer, session: &str, turn: &str) -> LedgerRecord {
    let client = server.client().await.expect("connect");
    let stream = async_nats::jetstream::new(client).get_stream(STATE_STREAM).await.expect("state stream");
    let subject = Subjects::default().turn(&session_token(session).unwrap(), &turn_token(turn).unwrap());
    let message = stream.get_last_raw_message_by_subject(&subject).await.expect("ledger record");
    decode("ledger", &message.payload).expect("a ledger record")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_s_own_node_records_and_metadata_commit_as_given() {
    let server = common::server();
    let host = common::jetstream_host_on(&server, Arc::new(LashLike)).await;
    let session = common::create_root(&host).await;
    let before = host.snapshot_session(&session).await.expect("snapshot").session_graph;

    let result = host
        .start_turn(SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("go")).expect("turn"))
        .await
        .expect("turn 1");
    let snapshot = host.snapshot_session(&session).await.expect("snapshot");
    let added: Vec<&SessionNode> = snapshot.session_graph.nodes[before.nodes.len()..].iter().collect();
    assert_eq!(
        serde_json::to_value(&added).unwrap(),
        serde_json::to_value([
            own_node("t1-a", before.leaf_node_id.clone(), "thinking"),
            own_node("t1-b", Some("t1-a".into()), "done")
        ])
        .unwrap(),
        "the nodes are stored exactly as the executor made them"
    );
    assert_eq!(snapshot.session_graph.leaf_node_id.as_deref(), Some("t1-b"));
    assert_eq!(snapshot.agent_frames, vec![json!({"frame_id": "f1"})]);
    assert_eq!(snapshot.current_agent_frame_id.as_deref(), Some("f1"));
    assert_eq!(snapshot.protocol_turn_options, json!({"schema_version": 1, "payload": {"k": "t1"}}));
    assert_eq!(snapshot.extra["last_prompt_usage"], json!({"input_tokens": 10}));
    let tools = host.tool_state(&session).await.expect("tool state");
    assert!(tools.tools.contains_key("read_file"), "the turn's tool state is written");
    assert_eq!(snapshot.tool_state_generation, Some(tools.generation));
    assert_eq!(snapshot.extra["tool_state_ref"], json!(format!("kv:SESSIONBUS_TOOLS/{session}@{}", tools.generation)));
    assert_eq!(result.state.agent_frames, snapshot.agent_frames, "the turn's result carries the state after it");

    host.start_turn(SessionTurnRequest::for_turn(&session, "t2", TurnInput::text("again")).expect("turn"))
        .await
        .expect("turn 2");
    let snapshot = host.snapshot_session(&session).await.expect("snapshot");
    assert_eq!(
        snapshot.extra["token_ledger"],
        json!([{"source": "turn", "model": "m", "usage": {"input_tokens": 20}}]),
        "each commit adds its usage deltas to the ledger"
    );
    assert_eq!(snapshot.tool_state_generation, Some(tools.generation), "a turn that left tools alone keeps them");
    let t2_first = snapshot.session_graph.nodes.iter().find(|n| n.node_id == "t2-a").expect("turn 2's node");
    assert_eq!(t2_first.parent_node_id.as_deref(), Some("t1-b"));
    match ledger_of(&server, &session, "t1").await {
        LedgerRecord::Completed { turn_commit_hash, .. } => assert_eq!(turn_commit_hash.as_deref(), Some("hash-t1")),
        other => panic!("turn 1 is not completed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_append_lands_in_the_session_s_current_agent_frame() {
    let server = common::server();
    let host = common::jetstream_host_on(&server, Arc::new(LashLike)).await;
    let session = common::create_root(&host).await;
    host.start_turn(SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("go")).expect("turn"))
        .await
        .expect("turn");
    let request = AppendSessionNodesRequest {
        nodes: vec![SessionAppendNode::message("User", "hi")],
        requires_ancestor_node_id: None,
    };
    host.append_session_nodes(&session, request).await.expect("append");
    let graph = host.snapshot_session(&session).await.expect("snapshot").session_graph;
    assert_eq!(graph.nodes.last().and_then(|n| n.agent_frame_id.as_deref()), Some("f1"));
}

/// Gives nodes whose first parent is not in the session.
struct Orphans;

#[async_trait::async_trait]
impl TurnExecutor for Orphans {
    async fn run(&self, context: TurnContext) -> Result<TurnOutput, PluginError> {
        let mut output = EchoExecutor.run(context).await?;
        output.nodes.clear();
        output.changes.verbatim_nodes = vec![own_node("o1", Some("no-such-node".into()), "lost")];
        Ok(output)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_node_records_that_do_not_fit_the_session_commit_nothing() {
    let server = common::server();
    let host = common::jetstream_host_on(&server, Arc::new(Orphans)).await;
    let session = common::create_root(&host).await;
    let before = host.snapshot_session(&session).await.expect("snapshot");
    let err = host
        .start_turn(SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("go")).expect("turn"))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("no-such-node"), "the error names the parent: {err}");
    let after = host.snapshot_session(&session).await.expect("snapshot");
    assert_eq!(after.session_graph, before.session_graph);
    assert_eq!(after.turn_index, 0);
}
