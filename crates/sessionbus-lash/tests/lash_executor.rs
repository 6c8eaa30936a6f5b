//! The `LashExecutor` on a worker: a real nats-server, a `JetStreamHost` whose executor
//! runs lash turns (lash-runtime 0.1.0-alpha.113) with the scripted provider and the
//! demo tools, and a `BusClient`.

use serde_json::Value;
use sessionbus_api::{
    SessionCreateRequest, SessionLifecycleService as _, SessionStateService as _, SessionTurnRequest, TurnInput,
};
use sessionbus_lash::provider::scripted::ScriptedProvider;

mod lash_bus;

use lash_bus::{lash_bus, script, stored_trace_records};

/// The roles and block kinds of a lash `LlmRequest`'s messages, e.g. `User:Text`.
fn shape(request: &Value) -> Vec<String> {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    messages
        .iter()
        .flat_map(|message| {
            let role = message["role"].as_str().unwrap_or_default().to_owned();
            let blocks = message["blocks"].as_array().cloned().unwrap_or_default();
            blocks.into_iter().map(move |block| {
                format!("{role}:{}", block.as_object().and_then(|b| b.keys().next().cloned()).unwrap_or_default())
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lash_turn_runs_its_tool_in_the_worker_commits_lash_s_records_and_the_next_turn_sees_them() {
    let provider = ScriptedProvider::new(script("add_then_answer.json"));
    let bus = lash_bus(&provider, &["worker-a"]).await;
    let session_id = uuid::Uuid::new_v4().to_string();
    bus.client.create_session(SessionCreateRequest::root(Some(session_id.clone()))).await.expect("create");

    let turn = SessionTurnRequest::for_turn(&session_id, "turn-1", TurnInput::text("What is 2 + 3?")).expect("turn");
    let first = serde_json::to_value(bus.client.start_turn(turn).await.expect("turn 1")).expect("json");
    assert_eq!(first["outcome"], serde_json::json!({"finished": {"assistant_message": {"text": "2 + 3 = 5."}}}));
    // The script never says 5: the sum is the demo tool's, run in the worker.
    let tool_calls = first["tool_calls"].as_array().expect("tool calls");
    assert_eq!(tool_calls.len(), 1, "{tool_calls:?}");
    assert_eq!(tool_calls[0]["tool"], "add");
    assert_eq!(tool_calls[0]["output"]["outcome"]["payload"]["sum"], 5.0);
    assert_eq!(first["token_usage"]["input_tokens"], 32, "both model calls' usage");

    // The committed session is lash's: lash reads the snapshot and writes the same JSON.
    let snapshot =
        serde_json::to_value(bus.client.snapshot_session(&session_id).await.expect("snapshot")).expect("json");
    let lash: lash_core::SessionSnapshot = serde_json::from_value(snapshot.clone()).expect("lash reads the snapshot");
    assert_eq!(serde_json::to_value(&lash).expect("json"), snapshot, "lash writes the snapshot back unchanged");
    let roles: Vec<&str> = lash
        .session_graph
        .nodes
        .iter()
        .filter_map(|node| serde_json::to_value(node).ok())
        .map(|node| match node["event"]["Conversation"]["role"].as_str() {
            Some("User") => "User",
            Some("Assistant") => "Assistant",
            _ => "other",
        })
        .collect();
    assert_eq!(roles, ["User", "User", "Assistant", "User", "Assistant"], "lash's own graph of a tool turn");
    assert!(lash.agent_frames.len() == 1 && !lash.current_agent_frame_id.is_empty(), "lash's initial frame committed");
    assert_eq!(lash.turn_index, 1);
    assert!(!lash.token_ledger.is_empty(), "the turn's usage reached the ledger");

    let turn = SessionTurnRequest::for_turn(&session_id, "turn-2", TurnInput::text("And doubled?")).expect("turn");
    let second = serde_json::to_value(bus.client.start_turn(turn).await.expect("turn 2")).expect("json");
    assert_eq!(
        second["outcome"],
        serde_json::json!({"finished": {"assistant_message": {"text": "Doubled, that is 10."}}})
    );

    let requests = provider.requests();
    let shapes: Vec<Vec<String>> = requests.iter().map(shape).collect();
    assert_eq!(
        shapes,
        [
            vec!["System:Text", "User:Text"],
            vec!["System:Text", "User:Text", "Assistant:ToolCall", "User:ToolResult"],
            vec!["System:Text", "User:Text", "Assistant:ToolCall", "User:ToolResult", "Assistant:Text", "User:Text"],
        ],
        "turn 2's model sees turn 1, rebuilt from the bus"
    );
    let third = requests[2].to_string();
    assert!(third.contains(r#"{\"sum\":5.0}"#) && third.contains("2 + 3 = 5."), "{third}");

    // lash's own trace records reached the bus's trace store, in the turn.
    let records = stored_trace_records(&bus.raw, &session_id).await;
    let kinds: Vec<String> = records
        .iter()
        .filter(|record| record.context.turn_id.as_deref() == Some("turn-1"))
        .filter_map(|record| serde_json::to_value(&record.event).ok())
        .filter_map(|event| event["type"].as_str().map(str::to_owned))
        .collect();
    for kind in ["turn_started", "llm_call_completed", "tool_call_completed", "turn_completed"] {
        assert!(kinds.iter().any(|k| k == kind), "no `{kind}` among turn 1's trace records: {kinds:?}");
    }
}
