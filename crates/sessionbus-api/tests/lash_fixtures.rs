//! Every JSON value in `tests/fixtures/lash/` (written by the lash runtime's own serde
//! code) goes through a typed round trip, text to text: fixture -> T -> JSON -> T ->
//! JSON. Both values of T are equal, both JSON texts are equal, and the JSON written is
//! the fixture's (compared as JSON values, so key order and whitespace do not matter).
//!
//! Lash values that sessionbus carries as opaque JSON (causal refs, agent frame records,
//! tool call records) have no sessionbus type: each is round-tripped inside the typed
//! value that carries it (an appended node's `caused_by`, a snapshot's `agent_frames`, an
//! assembled turn's `tool_calls`).

use std::fmt::Debug;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sessionbus_api::*;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lash").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

/// `text` -> T -> JSON -> T -> JSON: the two T are equal, the two JSON texts are equal,
/// and the first JSON is `text`'s value.
fn round_trip_text<T: Serialize + DeserializeOwned + PartialEq + Debug>(name: &str, text: &str) -> T {
    let typed: T = serde_json::from_str(text).unwrap_or_else(|err| panic!("{name} does not deserialize: {err}"));
    let written = serde_json::to_string(&typed).expect("serialize");
    let again: T =
        serde_json::from_str(&written).unwrap_or_else(|err| panic!("{name} as written does not deserialize: {err}"));
    assert_eq!(again, typed, "{name}: the value read back from its own JSON differs");
    let rewritten = serde_json::to_string(&again).expect("serialize");
    assert_eq!(rewritten, written, "{name}: writing the value read back gives other JSON");
    let original: Value = serde_json::from_str(text).expect("fixture is JSON");
    let written: Value = serde_json::from_str(&written).expect("written JSON");
    assert_eq!(written, original, "{name} does not serialize back to the same JSON");
    typed
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(name: &str) -> T {
    round_trip_text(name, &fixture(name))
}

/// A fixture of an opaque lash value placed into a typed carrier: `carrier` (a fixture
/// of `T`) with the value at `pointer` (whose last step is an object key or `-` for
/// appending to an array) set to the fixture `name`. Returns the carrier's text.
fn carried(name: &str, carrier: &str, pointer: &str) -> String {
    let value: Value = serde_json::from_str(&fixture(name)).expect("fixture is JSON");
    let mut carrier: Value = serde_json::from_str(&fixture(carrier)).expect("carrier is JSON");
    let (parent, last) = pointer.rsplit_once('/').expect("a pointer");
    let slot = carrier.pointer_mut(parent).unwrap_or_else(|| panic!("{pointer} in the carrier"));
    match (slot, last) {
        (Value::Array(items), "-") => items.push(value),
        (Value::Object(fields), key) => {
            fields.insert(key.to_owned(), value);
        }
        (other, _) => panic!("cannot place {name} at {pointer} in {other}"),
    }
    serde_json::to_string(&carrier).expect("json")
}

macro_rules! fixture_tests {
    (
        typed { $($test:ident: $ty:ty = $file:literal;)* }
        opaque { $($otest:ident: $file_o:literal in $carrier_ty:ty = $carrier:literal at $pointer:literal;)* }
    ) => {
        $(
            #[test]
            fn $test() {
                round_trip::<$ty>($file);
            }
        )*
        $(
            #[test]
            fn $otest() {
                let text = carried($file_o, $carrier, $pointer);
                let name = concat!($file_o, " in ", $carrier);
                let carrier: $carrier_ty = round_trip_text(name, &text);
                let placed: Value = serde_json::to_value(&carrier).expect("json");
                let (parent, last) = $pointer.rsplit_once('/').expect("a pointer");
                let carried = if last == "-" {
                    placed.pointer(parent).and_then(Value::as_array).and_then(|items| items.last()).cloned()
                } else {
                    placed.pointer($pointer).cloned()
                };
                let original: Value = serde_json::from_str(&fixture($file_o)).expect("json");
                assert_eq!(carried, Some(original), "{name}: the carried value changed");
            }
        )*
        /// Every fixture file is covered by a test above (the trace records separately).
        #[test]
        fn every_fixture_is_covered() {
            let covered = [$($file,)* $($file_o,)* "trace_records.jsonl", "README.md"];
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lash");
            for entry in std::fs::read_dir(dir).expect("fixture dir") {
                let name = entry.expect("entry").file_name().into_string().expect("utf-8 name");
                assert!(covered.contains(&name.as_str()), "fixture {name} has no round-trip test");
            }
        }
    };
}

fixture_tests! {
    typed {
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
    tool_manifest: ToolManifest = "tool_manifest.json";
    tool_manifest_minimal: ToolManifest = "tool_manifest_minimal.json";
    tool_state_two_tools: ToolState = "tool_state_two_tools.json";
    tool_state_two_tools_one_nonmember: ToolState = "tool_state_two_tools_one_nonmember.json";
    tool_state_roundtrip_orphaned: ToolState = "tool_state_roundtrip_orphaned.json";
    }
    // Carried as opaque JSON inside a typed value.
    opaque {
    agent_frame_record: "agent_frame_record.json" in SessionSnapshot = "session_snapshot_small.json" at "/agent_frames/-";
    causal_ref_turn: "causal_ref_turn.json" in AppendSessionNodesRequest = "append_request_message.json" at "/nodes/0/caused_by";
    causal_ref_effect: "causal_ref_effect.json" in AppendSessionNodesRequest = "append_request_message.json" at "/nodes/0/caused_by";
    causal_ref_effect_no_turn: "causal_ref_effect_no_turn.json" in AppendSessionNodesRequest = "append_request_message.json" at "/nodes/0/caused_by";
    causal_ref_tool_call: "causal_ref_tool_call.json" in AppendSessionNodesRequest = "append_request_message.json" at "/nodes/0/caused_by";
    causal_ref_process: "causal_ref_process.json" in AppendSessionNodesRequest = "append_request_message.json" at "/nodes/0/caused_by";
    causal_ref_process_event: "causal_ref_process_event.json" in AppendSessionNodesRequest = "append_request_message.json" at "/nodes/0/caused_by";
    causal_ref_trigger_occurrence: "causal_ref_trigger_occurrence.json" in AppendSessionNodesRequest = "append_request_message.json" at "/nodes/0/caused_by";
    causal_ref_session_node: "causal_ref_session_node.json" in AppendSessionNodesRequest = "append_request_message.json" at "/nodes/0/caused_by";
    tool_call_record_success: "tool_call_record_success.json" in AssembledTurn = "assembled_turn_finished.json" at "/tool_calls/-";
    }
}

#[test]
fn trace_records_round_trip() {
    let text = fixture("trace_records.jsonl");
    let mut kinds = Vec::new();
    for (line_number, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let record: TraceRecord = round_trip_text(&format!("trace_records.jsonl:{}", line_number + 1), line);
        assert_eq!(record.schema_version, TRACE_SCHEMA_VERSION);
        kinds.push(record.event.kind().to_owned());
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
    round_trip_text::<ToolManifest>("manifest with an unknown field", &manifest.to_string());
    let mut snapshot: Value = serde_json::from_str(&fixture("session_snapshot_small.json")).expect("json");
    snapshot["future_field"] = serde_json::json!([1, 2]);
    round_trip_text::<SessionSnapshot>("snapshot with an unknown field", &snapshot.to_string());
    let mut record: Value =
        serde_json::from_str(fixture("trace_records.jsonl").lines().nth(1).expect("line")).expect("json");
    record["context"]["future_field"] = serde_json::json!("x");
    record["future_event_field"] = serde_json::json!(3);
    round_trip_text::<TraceRecord>("trace record with unknown fields", &record.to_string());
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
