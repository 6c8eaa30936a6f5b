//! Every JSON value in `tests/fixtures/lash/` (written by the lash runtime's own serde
//! code) deserializes into the matching sessionbus type and serializes back to the
//! same JSON value.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sessionbus_api::*;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lash").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

fn round_trip_value<T: Serialize + DeserializeOwned>(name: &str, original: Value) -> T {
    let typed: T =
        serde_json::from_value(original.clone()).unwrap_or_else(|err| panic!("{name} does not deserialize: {err}"));
    let written = serde_json::to_value(&typed).expect("serialize");
    assert_eq!(written, original, "{name} does not serialize back to the same JSON");
    typed
}

fn round_trip<T: Serialize + DeserializeOwned>(name: &str) -> T {
    let original: Value = serde_json::from_str(&fixture(name)).expect("fixture is JSON");
    round_trip_value(name, original)
}

macro_rules! fixture_tests {
    ($($test:ident: $ty:ty = $file:literal;)*) => {
        $(
            #[test]
            fn $test() {
                round_trip::<$ty>($file);
            }
        )*
        /// Every fixture file is covered by a test above (the trace records separately).
        #[test]
        fn every_fixture_is_covered() {
            let covered = [$($file,)* "trace_records.jsonl", "README.md"];
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lash");
            for entry in std::fs::read_dir(dir).expect("fixture dir") {
                let name = entry.expect("entry").file_name().into_string().expect("utf-8 name");
                assert!(covered.contains(&name.as_str()), "fixture {name} has no round-trip test");
            }
        }
    };
}

fixture_tests! {
    plugin_error_registration: PluginError = "plugin_error_registration.json";
    plugin_error_snapshot: PluginError = "plugin_error_snapshot.json";
    plugin_error_invoke: PluginError = "plugin_error_invoke.json";
    plugin_error_session: PluginError = "plugin_error_session.json";
    session_create_request_root_empty: SessionCreateRequest = "session_create_request_root_empty.json";
    session_create_request_child_existing: SessionCreateRequest = "session_create_request_child_existing.json";
    session_create_request_snapshot: SessionCreateRequest = "session_create_request_snapshot.json";
    session_create_request_child_current_session: SessionCreateRequest = "session_create_request_child_current_session.json";
    session_handle: SessionHandle = "session_handle.json";
    session_handle_root: SessionHandle = "session_handle_root.json";
    session_snapshot_small: SessionSnapshot = "session_snapshot_small.json";
    session_snapshot_full: SessionSnapshot = "session_snapshot_full.json";
    session_snapshot_default: SessionSnapshot = "session_snapshot_default.json";
    session_graph_branched: SessionGraph = "session_graph_branched.json";
    agent_frame_record: Value = "agent_frame_record.json";
    append_request_message: AppendSessionNodesRequest = "append_request_message.json";
    append_request_protocol_event: AppendSessionNodesRequest = "append_request_protocol_event.json";
    append_request_plugin: AppendSessionNodesRequest = "append_request_plugin.json";
    append_request_with_ancestor: AppendSessionNodesRequest = "append_request_with_ancestor.json";
    append_result_appended: AppendSessionNodesResult = "append_result_appended.json";
    append_result_stale_branch: AppendSessionNodesResult = "append_result_stale_branch.json";
    append_result_stale_branch_no_leaf: AppendSessionNodesResult = "append_result_stale_branch_no_leaf.json";
    turn_input_text: TurnInput = "turn_input_text.json";
    turn_input_full: TurnInput = "turn_input_full.json";
    session_turn_input: SessionTurnInput = "session_turn_input.json";
    execution_scope_turn: ExecutionScope = "execution_scope_turn.json";
    execution_scope_process: ExecutionScope = "execution_scope_process.json";
    execution_scope_queue_drain: ExecutionScope = "execution_scope_queue_drain.json";
    execution_scope_session_delete: ExecutionScope = "execution_scope_session_delete.json";
    execution_scope_runtime_operation: ExecutionScope = "execution_scope_runtime_operation.json";
    causal_ref_turn: Value = "causal_ref_turn.json";
    causal_ref_effect: Value = "causal_ref_effect.json";
    causal_ref_effect_no_turn: Value = "causal_ref_effect_no_turn.json";
    causal_ref_tool_call: Value = "causal_ref_tool_call.json";
    causal_ref_process: Value = "causal_ref_process.json";
    causal_ref_process_event: Value = "causal_ref_process_event.json";
    causal_ref_trigger_occurrence: Value = "causal_ref_trigger_occurrence.json";
    causal_ref_session_node: Value = "causal_ref_session_node.json";
    token_usage: TokenUsage = "token_usage.json";
    direct_completion: DirectCompletion = "direct_completion.json";
    turn_outcome_finished_assistant_message: TurnOutcome = "turn_outcome_finished_assistant_message.json";
    turn_outcome_finished_final_value: TurnOutcome = "turn_outcome_finished_final_value.json";
    turn_outcome_finished_tool_value: TurnOutcome = "turn_outcome_finished_tool_value.json";
    turn_outcome_agent_frame_switch: TurnOutcome = "turn_outcome_agent_frame_switch.json";
    turn_outcome_stopped_cancelled: TurnOutcome = "turn_outcome_stopped_cancelled.json";
    turn_outcome_stopped_incomplete: TurnOutcome = "turn_outcome_stopped_incomplete.json";
    turn_outcome_stopped_invalid_input: TurnOutcome = "turn_outcome_stopped_invalid_input.json";
    turn_outcome_stopped_max_turns: TurnOutcome = "turn_outcome_stopped_max_turns.json";
    turn_outcome_stopped_plugin_abort: TurnOutcome = "turn_outcome_stopped_plugin_abort.json";
    turn_outcome_stopped_provider_error: TurnOutcome = "turn_outcome_stopped_provider_error.json";
    turn_outcome_stopped_runtime_error: TurnOutcome = "turn_outcome_stopped_runtime_error.json";
    turn_outcome_stopped_submitted_error: TurnOutcome = "turn_outcome_stopped_submitted_error.json";
    turn_outcome_stopped_tool_error: TurnOutcome = "turn_outcome_stopped_tool_error.json";
    turn_outcome_stopped_tool_failure: TurnOutcome = "turn_outcome_stopped_tool_failure.json";
    assembled_turn_finished: AssembledTurn = "assembled_turn_finished.json";
    tool_call_record_success: Value = "tool_call_record_success.json";
    tool_manifest: ToolManifest = "tool_manifest.json";
    tool_manifest_minimal: ToolManifest = "tool_manifest_minimal.json";
    tool_state_two_tools: ToolState = "tool_state_two_tools.json";
    tool_state_two_tools_one_nonmember: ToolState = "tool_state_two_tools_one_nonmember.json";
    tool_state_roundtrip_orphaned: ToolState = "tool_state_roundtrip_orphaned.json";
}

#[test]
fn trace_records_round_trip() {
    let text = fixture("trace_records.jsonl");
    let mut kinds = Vec::new();
    for (line_number, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let original: Value = serde_json::from_str(line).expect("trace line is JSON");
        let record: TraceRecord = round_trip_value(&format!("trace_records.jsonl:{}", line_number + 1), original);
        assert_eq!(record.schema_version, TRACE_SCHEMA_VERSION);
        kinds.push(record.event.kind());
    }
    assert_eq!(
        kinds,
        [
            "session_started",
            "turn_started",
            "prompt_built",
            "llm_call_started",
            "llm_call_completed",
            "tool_call_started",
            "tool_call_completed",
            "llm_call_started",
            "llm_call_failed",
            "token_usage",
            "custom",
            "turn_completed"
        ]
    );
}

#[test]
fn extra_error_variants_are_written_as_lash_session_errors() {
    for err in [
        PluginError::Conflict("generation mismatch: expected 1, actual 2".into()),
        PluginError::Unavailable("no worker".into()),
        PluginError::InvalidRequest("bad id".into()),
    ] {
        let json = serde_json::to_value(&err).expect("serialize");
        assert_eq!(json, serde_json::json!({"type": "session", "message": err.message()}));
        let back: PluginError = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, PluginError::Session(err.message().to_string()));
    }
}

#[test]
fn unknown_fields_are_tolerated_and_kept() {
    let mut manifest: Value = serde_json::from_str(&fixture("tool_manifest_minimal.json")).expect("json");
    manifest["future_field"] = serde_json::json!({"x": 1});
    round_trip_value::<ToolManifest>("manifest with an unknown field", manifest);
    let mut snapshot: Value = serde_json::from_str(&fixture("session_snapshot_small.json")).expect("json");
    snapshot["future_field"] = serde_json::json!([1, 2]);
    round_trip_value::<SessionSnapshot>("snapshot with an unknown field", snapshot);
    let mut record: Value =
        serde_json::from_str(fixture("trace_records.jsonl").lines().nth(1).expect("line")).expect("json");
    record["context"]["future_field"] = serde_json::json!("x");
    record["future_event_field"] = serde_json::json!(3);
    round_trip_value::<TraceRecord>("trace record with unknown fields", record);
}

#[test]
fn tool_state_accessors() {
    let state: ToolState = round_trip("tool_state_two_tools_one_nonmember.json");
    let members: Vec<String> = state.tool_manifests().into_iter().map(|m| m.name).collect();
    assert_eq!(members.len(), state.iter().count() - 1);
    assert!(!members.contains(&"bash".to_string()));
    let mut orphaned: ToolState = round_trip("tool_state_roundtrip_orphaned.json");
    assert!(orphaned.tool_manifests().iter().all(|m| m.name != "bash"), "orphaned tools are never listed");
    assert_eq!(orphaned.set_membership("tool:bash", true), Err(ToolStateError::Orphaned("tool:bash".into())));
    assert_eq!(orphaned.set_membership("tool:nope", true), Err(ToolStateError::UnknownTool("tool:nope".into())));
    orphaned.set_membership("tool:read_file", false).expect("toggle");
    assert!(orphaned.tool_manifests().is_empty());
}
