//! Every value the bus produces is a lash value: lash's own types (lash-core / lash-trace
//! 0.1.0-alpha.113) read it and write back the same JSON value. The values are produced
//! for real: through `InMemoryHost`, and through a `BusClient` talking to a worker that
//! serves a `JetStreamHost` on a nats-server the test starts (plus raw NATS requests for
//! the wire's own bodies: error replies and first pages).
//!
//! Covered: session handles, append results (appended and stale branch), tool states,
//! tool catalogs (checked against lash's projection of its own manifests), snapshots
//! (small, from a lash snapshot start point, and paged ones once the client completed
//! them), assembled turns (fresh and stored), the trace records the bus stores (lash's
//! own events emitted through it, and the executor's), and error bodies.

mod lash_bus;
mod support;

use std::sync::Arc;

use lash_bus::{LashBus, bus_of, stored_trace_records};
use serde_json::{Value, json};
use sessionbus_api::memory::InMemoryHost;
use sessionbus_api::{
    AppendSessionNodesRequest, EchoExecutor, SessionAppendNode, SessionCreateRequest, SessionHost, SessionStartPoint,
    SessionTurnRequest, ToolState, TraceContext, TraceEvent, TraceRecord, TurnInput,
};
use sessionbus_api::{SessionGraphService as _, SessionLifecycleService as _, SessionStateService as _};
use sessionbus_nats::{Op, Subjects};
use support::{Findings, fixture};

/// The trace events lash-trace writes that a session bus must carry, made by lash-trace
/// itself: every kind the fixture of trace records lacks, tool calls without a call id,
/// and a completed turn with its reason and agent frame switch.
fn lash_trace_events(session_id: &str) -> Vec<lash_trace::TraceEvent> {
    use lash_trace::*;
    let identity = TraceLashlangExecutionIdentity {
        scope: TraceRuntimeScope::new(session_id),
        subject: TraceRuntimeSubject::Process { process_id: "p1".into() },
        module_ref: "module:1".into(),
        entry_kind: "function".into(),
        entry_ref: None,
        entry_name: "main".into(),
    };
    vec![
        TraceEvent::ProviderRequest {
            event: TraceProviderRequestEvent {
                provider: "openai".into(),
                sequence: 1,
                elapsed_ms: 3,
                endpoint: "/v1/chat/completions".into(),
                body_len: 17,
                body_sha256: "ab".repeat(32),
                body_json: Some(json!({"model": "m"})),
                body_json_omitted_reason: None,
            },
        },
        TraceEvent::ProviderStreamEvent {
            event: TraceProviderStreamEvent {
                provider: "openai".into(),
                sequence: 2,
                elapsed_ms: 5,
                event_name: "delta".into(),
                item_id: Some("item-1".into()),
                output_index: Some(0),
                raw_len: 9,
                raw_sha256: "cd".repeat(32),
                raw_json: Some(json!({"delta": "hi"})),
            },
        },
        TraceEvent::RuntimeStreamEvent {
            event: TraceRuntimeStreamEvent {
                sequence: 3,
                elapsed_ms: 6,
                event_name: "text_delta".into(),
                raw_text: Some("hi".into()),
                visible_text: Some("hi".into()),
                item_id: None,
                output_index: None,
                call_id: None,
                tool_name: None,
                input_json: None,
                usage: Some(TraceTokenUsage { input_tokens: 1, output_tokens: 2, ..TraceTokenUsage::default() }),
            },
        },
        TraceEvent::EffectEnvelopeDiff {
            event: TraceEffectEnvelopeDiffEvent {
                recorded_envelope_hash: "h1".into(),
                reconstructed_envelope_hash: "h2".into(),
                divergent_paths: vec![TraceEffectEnvelopeDiffEntry {
                    path: "/messages/0".into(),
                    recorded: TraceEffectEnvelopeDiffValue::Missing,
                    reconstructed: TraceEffectEnvelopeDiffValue::Present {
                        json_len: 2,
                        json_sha256: "ef".repeat(32),
                        value_json: Some(json!({})),
                        value_json_omitted_reason: None,
                    },
                }],
            },
        },
        TraceEvent::LashlangExecution {
            event: TraceLashlangExecutionEvent::NodeStarted {
                event_key: "k1".into(),
                identity,
                node_id: "n1".into(),
                node_kind: "call".into(),
                label: "call tool".into(),
                occurrence: 1,
            },
        },
        TraceEvent::ToolCallStarted { call_id: None, name: "read_file".into(), args: json!({"path": "a"}) },
        TraceEvent::ToolCallCompleted {
            call_id: None,
            name: "read_file".into(),
            args: json!({"path": "a"}),
            output: TraceToolCallOutput { outcome: TraceToolCallOutcome::Success(json!("text")), control: None },
            duration_ms: 4,
        },
        TraceEvent::TurnCompleted {
            status: "completed".into(),
            done_reason: "agent_frame_switch".into(),
            agent_frame_switch: Some(TraceAgentFrameSwitch { frame_id: "frame-2".into() }),
        },
    ]
}

/// A lash event as the value a sessionbus host takes, or a finding when it refuses it.
fn as_sessionbus_event(findings: &mut Findings, event: &lash_trace::TraceEvent) -> Option<TraceEvent> {
    let value = serde_json::to_value(event).expect("lash writes its event");
    match serde_json::from_value(value) {
        Ok(event) => Some(event),
        Err(err) => {
            findings.note(format!("sessionbus refuses lash's `{}` trace event: {err}", event.kind()));
            None
        }
    }
}

fn value_of(what: &str, value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_else(|err| panic!("{what}: sessionbus cannot write it: {err}"))
}

/// The catalog lash projects from its own reading of `state` (lash-core
/// `tool_registry::project_tool_catalog`, for the member tools that are not orphaned).
fn lash_catalog(state: &Value) -> Vec<Value> {
    let state: lash_core::ToolState = serde_json::from_value(state.clone()).expect("lash reads the tool state");
    let state = serde_json::to_value(&state).expect("json");
    let mut catalog = Vec::new();
    for entry in state["tools"].as_object().expect("tools").values() {
        if entry.get("orphaned") == Some(&Value::Bool(true)) || entry.get("member") == Some(&Value::Bool(false)) {
            continue;
        }
        let manifest: lash_core::ToolManifest =
            serde_json::from_value(entry["manifest"].clone()).expect("lash reads the manifest");
        let mut projected = json!({
            "id": manifest.id,
            "name": manifest.name,
            "description": manifest.description,
            "bindings": manifest.bindings,
            "activation": manifest.activation,
        });
        if let Some(contract) = manifest.compact_contract {
            projected["contract"] = json!(contract);
        }
        catalog.push(projected);
    }
    catalog
}

/// Runs one session's life on `host` and checks every value it answers with against lash.
/// Returns the session id.
async fn check_session_values(host: &impl SessionHost, findings: &mut Findings) -> String {
    let session_id = uuid::Uuid::new_v4().to_string();
    let handle = host.create_session(SessionCreateRequest::root(Some(session_id.clone()))).await.expect("create");
    findings.lash_reads::<lash_core::SessionHandle>("a root session's handle", &value_of("handle", &handle));
    let child = SessionCreateRequest::child(
        Some(uuid::Uuid::new_v4().to_string()),
        &session_id,
        SessionStartPoint::ExistingSession { session_id: session_id.clone() },
    );
    let child = host.create_session(child).await.expect("create a child");
    findings.lash_reads::<lash_core::SessionHandle>("a child session's handle", &value_of("handle", &child));

    // Appends of every node kind lash writes, then one on a stale branch.
    for fixture_name in
        ["append_request_message.json", "append_request_protocol_event.json", "append_request_plugin.json"]
    {
        let request: AppendSessionNodesRequest = serde_json::from_value(fixture(fixture_name)).expect("request");
        let result = host.append_session_nodes(&session_id, request).await.expect("append");
        findings.lash_reads::<lash_core::AppendSessionNodesResult>(
            &format!("the result of appending {fixture_name}"),
            &value_of("append result", &result),
        );
    }
    let stale = AppendSessionNodesRequest {
        nodes: vec![SessionAppendNode::message("User", "late")],
        requires_ancestor_node_id: Some("no-such-node".into()),
    };
    let result = host.append_session_nodes(&session_id, stale).await.expect("stale append");
    findings.lash_reads::<lash_core::AppendSessionNodesResult>(
        "the result of an append on a stale branch",
        &value_of("append result", &result),
    );

    // Tool state as lash exports it, written and read back; the catalog it gives.
    let mut tools: ToolState =
        serde_json::from_value(fixture("tool_state_two_tools_one_nonmember.json")).expect("tools");
    tools.generation = 0;
    // A tool without description: lash leaves the empty description out of its manifest.
    tools.insert(sessionbus_api::ToolManifest::new("tool:noop", "noop", ""));
    host.apply_tool_state(&session_id, tools).await.expect("apply tool state");
    let state = value_of("tool state", &host.tool_state(&session_id).await.expect("tool state"));
    findings.lash_reads::<lash_core::ToolState>("a stored tool state", &state);
    let catalog = host.tool_catalog(&session_id).await.expect("catalog");
    if catalog != lash_catalog(&state) {
        findings.note(format!(
            "the tool catalog differs from lash's projection of the same tool state: ours {}, lash's {}",
            json!(catalog),
            json!(lash_catalog(&state))
        ));
    }

    // A turn, and the same turn asked again (its stored result).
    let turn = || SessionTurnRequest::for_turn(&session_id, "turn-1", TurnInput::text("hello")).expect("turn");
    let assembled = host.start_turn(turn()).await.expect("turn");
    findings.lash_reads::<lash_core::AssembledTurn>("an assembled turn", &value_of("turn", &assembled));
    let stored = host.start_turn(turn()).await.expect("stored turn");
    findings.lash_reads::<lash_core::AssembledTurn>("a completed turn asked again", &value_of("turn", &stored));

    let snapshot = host.snapshot_session(&session_id).await.expect("snapshot");
    findings.lash_reads::<lash_core::SessionSnapshot>("a snapshot after a turn", &value_of("snapshot", &snapshot));

    // Lash's trace events, emitted through the host.
    let context = TraceContext { session_id: Some(session_id.clone()), ..TraceContext::default() };
    for event in lash_trace_events(&session_id) {
        if let Some(event) = as_sessionbus_event(findings, &event) {
            host.emit_trace_event(context.clone(), event).await.expect("emit");
        }
    }

    // A session started from lash's fullest snapshot (agent frames, ledger, refs).
    let mut create = SessionCreateRequest::root(Some(uuid::Uuid::new_v4().to_string()));
    create.start = SessionStartPoint::Snapshot {
        snapshot: Box::new(serde_json::from_value(fixture("session_snapshot_full.json")).expect("snapshot")),
    };
    let child = host.create_session(create).await.expect("create from a snapshot");
    let snapshot = host.snapshot_session(&child.session_id).await.expect("snapshot");
    findings.lash_reads::<lash_core::SessionSnapshot>(
        "the snapshot of a session started from lash's full snapshot",
        &value_of("snapshot", &snapshot),
    );

    // Errors, as values (their wire bodies are checked on the bus).
    let errors = [
        host.snapshot_session("no-such-session").await.expect_err("unknown session"),
        host.apply_tool_state(&session_id, ToolState { generation: 999, ..ToolState::default() })
            .await
            .expect_err("stale generation"),
        host.create_session(SessionCreateRequest::root(Some(session_id.clone()))).await.expect_err("exists"),
    ];
    for error in errors {
        findings.lash_reads::<lash_core::PluginError>(&format!("the error `{error}`"), &value_of("error", &error));
    }
    session_id
}

fn check_trace_records(findings: &mut Findings, what: &str, records: &[TraceRecord]) {
    assert!(records.len() > 2, "{what}: the turn's and lash's records are stored");
    for record in records {
        findings.lash_reads::<lash_trace::TraceRecord>(
            &format!("{what}: a stored `{}` record", record.event.kind()),
            &value_of("record", record),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_the_in_memory_host_produces_is_read_back_by_lash_unchanged() {
    let host = InMemoryHost::new(Arc::new(EchoExecutor));
    let mut findings = Findings::default();
    check_session_values(&host, &mut findings).await;
    check_trace_records(&mut findings, "InMemoryHost", &host.trace_records());
    findings.assert_none();
}

async fn bus() -> LashBus {
    bus_with(Arc::new(EchoExecutor)).await
}

async fn bus_with(executor: Arc<dyn sessionbus_api::TurnExecutor>) -> LashBus {
    bus_of(vec![("worker-a", executor)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_the_bus_produces_is_read_back_by_lash_unchanged() {
    let bus = bus().await;
    let mut findings = Findings::default();
    let session_id = check_session_values(&bus.client, &mut findings).await;
    check_trace_records(&mut findings, "the bus", &stored_trace_records(&bus.raw, &session_id).await);
    findings.assert_none();
}

/// The body of the error reply to a raw request, which must carry the error code `code`.
async fn error_body(raw: &async_nats::Client, subject: String, body: Vec<u8>, code: &str) -> Value {
    let reply = raw.request(subject.clone(), body.into()).await.expect("a reply");
    let headers = reply.headers.as_ref().expect("an error reply has headers");
    let got = headers.get("Nats-Service-Error-Code").map(|value| value.as_str().to_owned());
    assert_eq!(got.as_deref(), Some(code), "{subject}: the error code");
    serde_json::from_slice(&reply.payload).expect("the error body is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_on_the_wire_are_read_back_by_lash_unchanged() {
    let bus = bus().await;
    let subjects = Subjects::default();
    let session_id = uuid::Uuid::new_v4().to_string();
    let create = SessionCreateRequest::root(Some(session_id.clone()));
    bus.client.create_session(create.clone()).await.expect("create");
    let mut findings = Findings::default();
    let cases = [
        ("unknown session", subjects.session_op("no-such-session", Op::Snapshot), b"{}".to_vec(), "404"),
        ("malformed body", subjects.session_op(&session_id, Op::AppendNodes), b"{\"nodes\": 3}".to_vec(), "400"),
        (
            "stale generation",
            subjects.session_op(&session_id, Op::ApplyToolState),
            b"{\"generation\": 5, \"tools\": {}}".to_vec(),
            "409",
        ),
        ("existing session", subjects.create(), serde_json::to_vec(&create).expect("json"), "409"),
    ];
    for (what, subject, body, code) in cases {
        let body = error_body(&bus.raw, subject, body, code).await;
        findings.lash_reads::<lash_core::PluginError>(&format!("the error body of {what} ({code})"), &body);
    }
    findings.assert_none();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_snapshot_and_turn_completed_by_the_client_are_read_back_by_lash_unchanged() {
    let bus = bus().await;
    let session_id = uuid::Uuid::new_v4().to_string();
    bus.client.create_session(SessionCreateRequest::root(Some(session_id.clone()))).await.expect("create");
    // 20,000 nodes of about 420 bytes: over 8 MiB, so replies come in pages.
    let filler = "z".repeat(400);
    for batch in 0..40 {
        let nodes =
            (0..500).map(|n| SessionAppendNode::message("User", format!("{:05} {filler}", batch * 500 + n))).collect();
        bus.client
            .append_session_nodes(&session_id, AppendSessionNodesRequest { nodes, requires_ancestor_node_id: None })
            .await
            .expect("append");
    }
    let raw_first = bus
        .raw
        .request(Subjects::default().session_op(&session_id, Op::Snapshot), bytes::Bytes::from_static(b"{}"))
        .await
        .expect("first page");
    let raw_first: Value = serde_json::from_slice(&raw_first.payload).expect("json");
    assert!(raw_first.get("graph_next_seq").is_some(), "the snapshot is paged on the wire");

    let mut findings = Findings::default();
    let snapshot = bus.client.snapshot_session(&session_id).await.expect("snapshot");
    assert_eq!(snapshot.session_graph.nodes.len(), 20_000);
    findings.lash_reads::<lash_core::SessionSnapshot>("a paged snapshot, completed", &value_of("snapshot", &snapshot));
    let turn = SessionTurnRequest::for_turn(&session_id, "t1", TurnInput::text("hello")).expect("turn");
    let assembled = bus.client.start_turn(turn).await.expect("turn");
    assert_eq!(assembled.state.session_graph.nodes.len(), 20_002);
    findings.lash_reads::<lash_core::AssembledTurn>("a paged assembled turn, completed", &value_of("turn", &assembled));
    findings.assert_none();
}

/// An executor whose turn stops without an assistant output (as a cancelled lash turn
/// does): nodes and usage only.
struct StoppedExecutor;

#[async_trait::async_trait]
impl sessionbus_api::TurnExecutor for StoppedExecutor {
    async fn run(
        &self,
        context: sessionbus_api::TurnContext,
    ) -> Result<sessionbus_api::TurnOutput, sessionbus_api::PluginError> {
        let mut output = EchoExecutor.run(context).await?;
        output.outcome = sessionbus_api::TurnOutcome::Stopped(sessionbus_api::TurnStop::Cancelled);
        output.assistant_output = sessionbus_api::AssistantOutput::default();
        Ok(output)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_that_stopped_without_assistant_output_is_read_back_by_lash_unchanged() {
    let bus = bus_with(Arc::new(StoppedExecutor)).await;
    let memory = InMemoryHost::new(Arc::new(StoppedExecutor));
    let mut findings = Findings::default();
    for (what, host) in [("InMemoryHost", &memory as &dyn SessionHost), ("the bus", &bus.client as &dyn SessionHost)] {
        let session_id = uuid::Uuid::new_v4().to_string();
        host.create_session(SessionCreateRequest::root(Some(session_id.clone()))).await.expect("create");
        let turn = SessionTurnRequest::for_turn(&session_id, "t1", TurnInput::text("stop")).expect("turn");
        let assembled = host.start_turn(turn).await.expect("turn");
        findings.lash_reads::<lash_core::AssembledTurn>(
            &format!("{what}: a stopped turn's result"),
            &value_of("turn", &assembled),
        );
    }
    findings.assert_none();
}

/// A lash append of messages the way lash's plugins write them: parts (a tool call) and
/// an attachment, a process origin, no id, and an id already taken.
fn lash_message_append() -> Value {
    let request = json!({"nodes": [
        {"kind": "message", "message": {
            "id": "msg-tool", "role": "Assistant", "content": "",
            "origin": {"kind": "process", "process_id": "proc-1", "event_type": "output", "sequence": 4},
            "parts": [{"id": "x", "kind": "ToolCall", "content": "{\"command\":\"ls\"}",
                       "tool_call_id": "call-1", "tool_name": "bash", "prune_state": "Intact"}],
            "attachments": [{"source": "external_url", "media_type": "image/png", "url": "https://example.com/a.png"}]}},
        {"kind": "message", "message": {"id": "msg-tool", "role": "User", "content": "again"}},
    ], "requires_ancestor_node_id": null});
    lash_round_trip_or_panic::<lash_core::AppendSessionNodesRequest>(&request);
    request
}

fn lash_round_trip_or_panic<T: serde::de::DeserializeOwned + serde::Serialize>(value: &Value) {
    support::lash_round_trip::<T>(value).unwrap_or_else(|problem| panic!("not a lash value: {problem}"));
}

/// The nodes lash's runtime stores for `lash_message_append` (lash-core
/// `plugin_message_to_message` and the graph's append builder): parts kept, attachments
/// become parts, part ids `<message id>.p<n>`, a default plugin origin, `caused_by` from a
/// process origin, and the message id kept when the node id had to change.
fn lash_stored_messages() -> Vec<(String, Value, Option<Value>)> {
    vec![
        (
            "msg-tool".into(),
            json!({"id": "msg-tool", "role": "Assistant", "parts": [
                {"id": "msg-tool.p0", "kind": "ToolCall", "content": "{\"command\":\"ls\"}",
                 "tool_call_id": "call-1", "tool_name": "bash", "prune_state": "Intact"},
                {"id": "msg-tool.p1", "kind": "Attachment", "content": "", "prune_state": "Intact",
                 "attachment": {"source": {"source": "external_url", "media_type": "image/png", "url": "https://example.com/a.png"}}}],
                "origin": {"kind": "process", "process_id": "proc-1", "event_type": "output", "sequence": 4}}),
            Some(json!({"type": "process_event", "process_id": "proc-1", "sequence": 4})),
        ),
        (
            "message:msg-tool".into(),
            json!({"id": "msg-tool", "role": "User", "parts": [
                {"id": "msg-tool.p0", "kind": "Text", "content": "again", "prune_state": "Intact"}],
                "origin": {"kind": "plugin", "plugin_id": "plugin"}}),
            None,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_lash_messages_are_stored_as_lash_stores_them() {
    let bus = bus().await;
    let memory = InMemoryHost::new(Arc::new(EchoExecutor));
    let mut findings = Findings::default();
    for (what, host) in [("InMemoryHost", &memory as &dyn SessionHost), ("the bus", &bus.client as &dyn SessionHost)] {
        let session_id = uuid::Uuid::new_v4().to_string();
        host.create_session(SessionCreateRequest::root(Some(session_id.clone()))).await.expect("create");
        let request: AppendSessionNodesRequest = serde_json::from_value(lash_message_append()).expect("request");
        host.append_session_nodes(&session_id, request).await.expect("append");
        let snapshot = value_of("snapshot", &host.snapshot_session(&session_id).await.expect("snapshot"));
        findings.lash_reads::<lash_core::SessionSnapshot>(&format!("{what}: the snapshot"), &snapshot);
        let nodes = snapshot["session_graph"]["nodes"].as_array().expect("nodes");
        for (node, (node_id, conversation, caused_by)) in nodes.iter().zip(lash_stored_messages()) {
            let stored =
                (node["node_id"].clone(), node["event"]["Conversation"].clone(), node.get("caused_by").cloned());
            let expected = (json!(node_id), conversation, caused_by);
            if stored != expected {
                findings.note(format!("{what}: stored {stored:?}\n  lash stores {expected:?}"));
            }
        }
    }
    findings.assert_none();
}

/// Commits lash's own full snapshot fixture as a lash turn would: its graph's nodes
/// verbatim, its frames, its ledger (as usage deltas), prompt usage and protocol options.
struct CommitsLashSnapshot;

#[async_trait::async_trait]
impl sessionbus_api::TurnExecutor for CommitsLashSnapshot {
    async fn run(
        &self,
        context: sessionbus_api::TurnContext,
    ) -> Result<sessionbus_api::TurnOutput, sessionbus_api::PluginError> {
        let lash = fixture("session_snapshot_full.json");
        let graph: sessionbus_api::SessionGraph =
            serde_json::from_value(lash["session_graph"].clone()).expect("the fixture's graph");
        let mut output = EchoExecutor.run(context).await?;
        output.nodes.clear();
        output.changes = sessionbus_api::SessionChanges {
            verbatim_nodes: graph.nodes,
            leaf_node_id: graph.leaf_node_id,
            agent_frames: Some(sessionbus_api::AgentFrames {
                frames: lash["agent_frames"].as_array().cloned().unwrap_or_default(),
                current: lash["current_agent_frame_id"].as_str().map(str::to_owned),
            }),
            usage_deltas: lash["token_ledger"].as_array().cloned().unwrap_or_default(),
            last_prompt_usage: Some(lash["last_prompt_usage"].clone()),
            protocol_turn_options: Some(lash["protocol_turn_options"].clone()),
            ..Default::default()
        };
        Ok(output)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_a_lash_turn_committed_reads_back_as_lash_s_snapshot() {
    let bus = bus_with(Arc::new(CommitsLashSnapshot)).await;
    let memory = InMemoryHost::new(Arc::new(CommitsLashSnapshot));
    let lash = fixture("session_snapshot_full.json");
    let mut findings = Findings::default();
    for (what, host) in [("InMemoryHost", &memory as &dyn SessionHost), ("the bus", &bus.client as &dyn SessionHost)] {
        let session_id = uuid::Uuid::new_v4().to_string();
        host.create_session(SessionCreateRequest::root(Some(session_id.clone()))).await.expect("create");
        let turn = SessionTurnRequest::for_turn(&session_id, "t1", TurnInput::text("commit")).expect("turn");
        host.start_turn(turn).await.expect("turn");
        let snapshot = value_of("snapshot", &host.snapshot_session(&session_id).await.expect("snapshot"));
        findings.lash_reads::<lash_core::SessionSnapshot>(&format!("{what}: a lash-committed snapshot"), &snapshot);
        for field in [
            "session_graph",
            "agent_frames",
            "current_agent_frame_id",
            "token_ledger",
            "last_prompt_usage",
            "protocol_turn_options",
        ] {
            if snapshot[field] != lash[field] {
                findings.note(format!("{what}: `{field}` is {} where lash committed {}", snapshot[field], lash[field]));
            }
        }
    }
    findings.assert_none();
}
