//! Every lash fixture, read by sessionbus's type and written again, is read by lash's own
//! type (lash-core / lash-trace 0.1.0-alpha.113), which writes back the same JSON value.
//! The fixtures were written by lash; this proves the sessionbus side of the round trip
//! against lash itself, not against a copy of its shapes.

mod support;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use support::{Findings, fixture, fixture_dir, fixture_text};

/// `name` read by sessionbus's `S` and written again, then read by lash's `L`.
fn through_sessionbus<S: DeserializeOwned + Serialize, L: DeserializeOwned + Serialize>(
    findings: &mut Findings,
    name: &str,
) {
    let original = fixture(name);
    findings.lash_reads::<L>(&format!("{name} as lash wrote it"), &original);
    let ours: S = match serde_json::from_value(original.clone()) {
        Ok(ours) => ours,
        Err(err) => return findings.note(format!("{name}: sessionbus refuses it: {err}")),
    };
    let written = serde_json::to_value(&ours).expect("sessionbus writes its own value");
    if written != original {
        findings.note(format!("{name}: sessionbus writes it back differently"));
    }
    findings.lash_reads::<L>(&format!("{name} as sessionbus writes it"), &written);
}

macro_rules! fixtures {
    ($($file:literal: $ours:ty => $lash:ty;)*) => {
        /// Each fixture, through sessionbus's type, is lash's value.
        #[test]
        fn every_lash_fixture_written_by_sessionbus_is_read_back_by_lash_unchanged() {
            let mut findings = Findings::default();
            $( through_sessionbus::<$ours, $lash>(&mut findings, $file); )*
            findings.assert_none();
        }

        /// No fixture is left out of the test above.
        #[test]
        fn every_fixture_file_is_checked_against_lash() {
            let checked = [$($file,)* "trace_records.jsonl", "README.md"];
            for entry in std::fs::read_dir(fixture_dir()).expect("fixture dir") {
                let name = entry.expect("entry").file_name().into_string().expect("utf-8 name");
                assert!(checked.contains(&name.as_str()), "fixture {name} is not checked against lash");
            }
        }
    };
}

fixtures! {
    "plugin_error_registration.json": sessionbus_api::PluginError => lash_core::PluginError;
    "plugin_error_snapshot.json": sessionbus_api::PluginError => lash_core::PluginError;
    "plugin_error_invoke.json": sessionbus_api::PluginError => lash_core::PluginError;
    "plugin_error_session.json": sessionbus_api::PluginError => lash_core::PluginError;
    "session_create_request_root_empty.json": sessionbus_api::SessionCreateRequest => lash_core::SessionCreateRequest;
    "session_create_request_child_existing.json": sessionbus_api::SessionCreateRequest => lash_core::SessionCreateRequest;
    "session_create_request_snapshot.json": sessionbus_api::SessionCreateRequest => lash_core::SessionCreateRequest;
    "session_create_request_child_current_session.json": sessionbus_api::SessionCreateRequest => lash_core::SessionCreateRequest;
    "session_handle.json": sessionbus_api::SessionHandle => lash_core::SessionHandle;
    "session_handle_root.json": sessionbus_api::SessionHandle => lash_core::SessionHandle;
    "session_snapshot_small.json": sessionbus_api::SessionSnapshot => lash_core::SessionSnapshot;
    "session_snapshot_full.json": sessionbus_api::SessionSnapshot => lash_core::SessionSnapshot;
    "session_snapshot_default.json": sessionbus_api::SessionSnapshot => lash_core::SessionSnapshot;
    "session_graph_branched.json": sessionbus_api::SessionGraph => lash_core::SessionGraph;
    "agent_frame_record.json": Value => lash_core::AgentFrameRecord;
    "append_request_message.json": sessionbus_api::AppendSessionNodesRequest => lash_core::AppendSessionNodesRequest;
    "append_request_protocol_event.json": sessionbus_api::AppendSessionNodesRequest => lash_core::AppendSessionNodesRequest;
    "append_request_plugin.json": sessionbus_api::AppendSessionNodesRequest => lash_core::AppendSessionNodesRequest;
    "append_request_with_ancestor.json": sessionbus_api::AppendSessionNodesRequest => lash_core::AppendSessionNodesRequest;
    "append_result_appended.json": sessionbus_api::AppendSessionNodesResult => lash_core::AppendSessionNodesResult;
    "append_result_stale_branch.json": sessionbus_api::AppendSessionNodesResult => lash_core::AppendSessionNodesResult;
    "append_result_stale_branch_no_leaf.json": sessionbus_api::AppendSessionNodesResult => lash_core::AppendSessionNodesResult;
    "turn_input_text.json": sessionbus_api::TurnInput => lash_core::TurnInput;
    "turn_input_full.json": sessionbus_api::TurnInput => lash_core::TurnInput;
    "session_turn_input.json": sessionbus_api::SessionTurnInput => lash_core::SessionTurnInput;
    "execution_scope_turn.json": sessionbus_api::ExecutionScope => lash_core::ExecutionScope;
    "execution_scope_process.json": sessionbus_api::ExecutionScope => lash_core::ExecutionScope;
    "execution_scope_queue_drain.json": sessionbus_api::ExecutionScope => lash_core::ExecutionScope;
    "execution_scope_session_delete.json": sessionbus_api::ExecutionScope => lash_core::ExecutionScope;
    "execution_scope_runtime_operation.json": sessionbus_api::ExecutionScope => lash_core::ExecutionScope;
    "causal_ref_turn.json": Value => lash_core::CausalRef;
    "causal_ref_effect.json": Value => lash_core::CausalRef;
    "causal_ref_effect_no_turn.json": Value => lash_core::CausalRef;
    "causal_ref_tool_call.json": Value => lash_core::CausalRef;
    "causal_ref_process.json": Value => lash_core::CausalRef;
    "causal_ref_process_event.json": Value => lash_core::CausalRef;
    "causal_ref_trigger_occurrence.json": Value => lash_core::CausalRef;
    "causal_ref_session_node.json": Value => lash_core::CausalRef;
    "token_usage.json": sessionbus_api::TokenUsage => lash_core::TokenUsage;
    "direct_completion.json": sessionbus_api::DirectCompletion => lash_core::DirectCompletion;
    "turn_outcome_finished_assistant_message.json": sessionbus_api::TurnOutcome => lash_core::TurnOutcome;
    "turn_outcome_finished_final_value.json": sessionbus_api::TurnOutcome => lash_core::TurnOutcome;
    "turn_outcome_finished_tool_value.json": sessionbus_api::TurnOutcome => lash_core::TurnOutcome;
    "turn_outcome_agent_frame_switch.json": sessionbus_api::TurnOutcome => lash_core::TurnOutcome;
    "turn_outcome_stopped_cancelled.json": sessionbus_api::TurnOutcome => lash_core::TurnOutcome;
    "turn_outcome_stopped_incomplete.json": sessionbus_api::TurnOutcome => lash_core::TurnOutcome;
    "turn_outcome_stopped_invalid_input.json": sessionbus_api::TurnOutcome => lash_core::TurnOutcome;
    "turn_outcome_stopped_max_turns.json": sessionbus_api::TurnOutcome => lash_core::TurnOutcome;
    "turn_outcome_stopped_plugin_abort.json": sessionbus_api::TurnOutcome => lash_core::TurnOutcome;
    "turn_outcome_stopped_provider_error.json": sessionbus_api::TurnOutcome => lash_core::TurnOutcome;
    "turn_outcome_stopped_runtime_error.json": sessionbus_api::TurnOutcome => lash_core::TurnOutcome;
    "turn_outcome_stopped_submitted_error.json": sessionbus_api::TurnOutcome => lash_core::TurnOutcome;
    "turn_outcome_stopped_tool_error.json": sessionbus_api::TurnOutcome => lash_core::TurnOutcome;
    "turn_outcome_stopped_tool_failure.json": sessionbus_api::TurnOutcome => lash_core::TurnOutcome;
    "assembled_turn_finished.json": sessionbus_api::AssembledTurn => lash_core::AssembledTurn;
    "tool_call_record_success.json": Value => lash_core::ToolCallRecord;
    "tool_manifest.json": sessionbus_api::ToolManifest => lash_core::ToolManifest;
    "tool_manifest_minimal.json": sessionbus_api::ToolManifest => lash_core::ToolManifest;
    "tool_state_two_tools.json": sessionbus_api::ToolState => lash_core::ToolState;
    "tool_state_two_tools_one_nonmember.json": sessionbus_api::ToolState => lash_core::ToolState;
    "tool_state_roundtrip_orphaned.json": sessionbus_api::ToolState => lash_core::ToolState;
}

/// Every trace record of the fixture, through sessionbus's `TraceRecord`, is lash-trace's.
#[test]
fn lash_trace_records_written_by_sessionbus_are_read_back_by_lash_trace_unchanged() {
    let mut findings = Findings::default();
    for (number, line) in fixture_text("trace_records.jsonl").lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let original: Value = serde_json::from_str(line).expect("a JSON line");
        let what = format!("trace_records.jsonl:{}", number + 1);
        findings.lash_reads::<lash_trace::TraceRecord>(&what, &original);
        match serde_json::from_value::<sessionbus_api::TraceRecord>(original) {
            Ok(ours) => findings.lash_reads::<lash_trace::TraceRecord>(
                &format!("{what} as sessionbus writes it"),
                &serde_json::to_value(&ours).expect("json"),
            ),
            Err(err) => findings.note(format!("{what}: sessionbus refuses it: {err}")),
        }
    }
    findings.assert_none();
}
