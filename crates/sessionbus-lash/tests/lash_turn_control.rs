//! Controlling a running lash turn across the cluster: a cancel from a second client
//! stops it on the worker that runs it, and a streaming client receives its live output
//! in order before the final reply. Real nats-server, two workers whose executors run
//! lash turns with the scripted provider and the demo tools.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};
use sessionbus_api::{
    CancelReply, ErrorKind, SessionLifecycleService as _, SessionStateService as _, SessionTurnRequest,
    TurnCancelService as _, TurnInput, TurnOutcome, TurnStop,
};
use sessionbus_lash::executor::DEFAULT_TOOL_TIMEOUT;
use sessionbus_lash::provider::scripted::ScriptedProvider;
use sessionbus_nats::subjects::session_token;
use sessionbus_nats::{BusClient, BusClientConfig, JetStreamHostConfig, Subjects};
use sessionbus_testkit::subscribe_confirmed;

mod lash_bus;

use lash_bus::{in_memory_lash, lash_bus, lash_bus_with, new_session, open_in_memory, script};

/// The holders of `session_id`'s lease records (as `watch` received them) that held it
/// for `turn_id`.
async fn lease_holders(watch: &mut async_nats::Subscriber, turn_id: &str) -> Vec<String> {
    let mut holders = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(200), watch.next()).await {
        let lease: Value = serde_json::from_slice(&message.payload).expect("a lease record");
        if lease["state"] == "held" && lease["turn_id"] == turn_id {
            holders.extend(lease["holder"].as_str().map(str::to_owned));
        }
    }
    holders.dedup();
    holders
}

/// Cancels a lash turn as soon as its live output says a tool started.
struct CancelAtToolStart(lash::CancellationToken);

#[async_trait::async_trait]
impl lash_core::TurnActivitySink for CancelAtToolStart {
    async fn emit(&self, activity: lash_core::TurnActivity) {
        if serde_json::to_value(&activity).is_ok_and(|event| event["type"] == "tool_call_started") {
            self.0.cancel();
        }
    }
}

/// The graph lash's own in-memory runtime has after `text`'s turn of `session_id` (on
/// `script`) is cancelled inside its first tool.
async fn lash_graph_cancelled_in_a_tool(script_name: &str, session_id: &str, text: &str) -> Vec<Value> {
    let core = in_memory_lash(ScriptedProvider::new(script(script_name))).build().expect("lash's in-memory runtime");
    let session = open_in_memory(&core, session_id).await;
    let cancel = lash::CancellationToken::new();
    let result = session
        .turn(lash::TurnInput::text(text))
        .turn_id("t1")
        .cancel(cancel.clone())
        .stream_to(&CancelAtToolStart(cancel))
        .await
        .expect("lash's turn");
    let result = serde_json::to_value(&result).expect("json");
    assert_eq!(result["outcome"], json!({"stopped": "cancelled"}), "lash's own run was cancelled");
    result["state"]["session_graph"]["nodes"].as_array().cloned().unwrap_or_default()
}

/// A graph's nodes as (role, parts without their ids, the parent's position): what
/// lash recorded, free of node ids, frame ids and times.
fn shape(nodes: &[Value]) -> Vec<Value> {
    let position = |id: &Value| nodes.iter().position(|node| node["node_id"] == *id);
    nodes
        .iter()
        .map(|node| {
            let conversation = &node["event"]["Conversation"];
            let mut parts = conversation["parts"].as_array().cloned().unwrap_or_default();
            for part in &mut parts {
                if let Some(part) = part.as_object_mut() {
                    part.remove("id");
                }
            }
            json!({"role": conversation["role"], "parts": parts, "parent": position(&node["parent_node_id"])})
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_a_second_client_stops_a_lash_turn_inside_its_slow_tool_on_its_worker_and_commits_what_it_had_once()
 {
    // The tool sleeps a minute; the turn must end long before.
    const TOOL_DURATION: Duration = Duration::from_secs(60);
    const TEXT: &str = "Wait a minute, then say done.";
    let provider = ScriptedProvider::new(script("sleep_then_answer.json"));
    let cluster = lash_bus(&provider, &["worker-a", "worker-b"]).await;
    let session_id = new_session(&cluster.client).await;
    let token = session_token(&session_id).expect("token");
    let mut lease_watch =
        subscribe_confirmed(&cluster.raw, Subjects::default().lease(&token)).await.expect("watch the lease subject");
    let request = SessionTurnRequest::for_turn(&session_id, "t1", TurnInput::text(TEXT)).expect("turn");
    let (sender, mut live) = tokio::sync::mpsc::unbounded_channel();
    let turn = tokio::spawn({
        let client = cluster.client.clone();
        async move { client.start_turn_live(request, sender).await }
    });

    // The turn is inside the slow tool once its live output says the tool started.
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = live.recv().await {
            if event.event["type"] == "tool_call_started" {
                assert_eq!(event.event["name"], "sleep", "{}", event.event);
                return;
            }
        }
        panic!("the turn ended before its tool started");
    })
    .await
    .expect("the turn reached the slow tool");

    // A second client, on its own connection, whose cancel any worker may take.
    let canceller = BusClient::new(cluster.server.client().await.expect("connect"), BusClientConfig::default());
    let cancelled_at = Instant::now();
    let reply = canceller.cancel_turn(&session_id, "t1").await.expect("cancel");
    let result = tokio::time::timeout(Duration::from_secs(20), turn)
        .await
        .expect("the cancelled turn ends")
        .expect("join")
        .expect("the turn's result");
    let took = cancelled_at.elapsed();
    assert!(took < TOOL_DURATION / 6, "the turn waited for its tool ({took:?} after the cancel)");
    assert_eq!(result.outcome, TurnOutcome::Stopped(TurnStop::Cancelled));
    assert_eq!(provider.requests().len(), 1, "the model was not asked again after the cancel");

    // The worker that ran the turn (the one its lease names) is the one the cancel
    // reached.
    let holders = lease_holders(&mut lease_watch, "t1").await;
    assert_eq!(holders.len(), 1, "one worker ran the turn: {holders:?}");
    assert_eq!(reply, CancelReply::Cancelling { holder: Some(holders[0].clone()) });

    // One commit, holding what lash had: the user's input and the tool call it was in.
    let snapshot = cluster.client.snapshot_session(&session_id).await.expect("snapshot");
    assert_eq!(snapshot.turn_index, 1, "one commit");
    let nodes: Vec<Value> =
        snapshot.session_graph.nodes.iter().map(|node| serde_json::to_value(node).expect("json")).collect();
    let parts: Vec<&Value> =
        nodes.iter().filter_map(|node| node["event"]["Conversation"]["parts"].as_array()).flatten().collect();
    let of_kind = |kind: &str| -> Vec<&Value> { parts.iter().copied().filter(|part| part["kind"] == kind).collect() };
    let inputs = of_kind("Text");
    assert_eq!(inputs.len(), 1, "the user's input, and no answer: {nodes:?}");
    assert_eq!(inputs[0]["content"], TEXT);
    let calls = of_kind("ToolCall");
    assert_eq!(calls.len(), 1, "the tool call the turn was in is committed once: {nodes:?}");
    assert_eq!((&calls[0]["tool_call_id"], &calls[0]["tool_name"]), (&json!("call-sleep-1"), &json!("sleep")));
    let results = of_kind("ToolResult");
    assert!(
        !results.is_empty()
            && results.iter().all(|result| result["tool_call_id"] == "call-sleep-1"
                && result["content"].as_str().is_some_and(|text| text.contains("cancelled"))),
        "lash's record that the call was cancelled: {nodes:?}"
    );
    // Exactly what lash itself has when the same turn is cancelled inside its tool.
    let reference = lash_graph_cancelled_in_a_tool("sleep_then_answer.json", &session_id, TEXT).await;
    assert_eq!(shape(&nodes), shape(&reference), "the committed graph is not what lash had");

    let again = canceller.cancel_turn(&session_id, "t1").await.expect("cancel again");
    assert_eq!(again, CancelReply::Finished { outcome: TurnOutcome::Stopped(TurnStop::Cancelled) });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_client_receives_a_streamed_lash_answer_in_several_deltas_in_order_before_the_final_reply() {
    let provider = ScriptedProvider::new(script("add_then_answer.json"));
    let cluster = lash_bus(&provider, &["worker-a", "worker-b"]).await;
    let session_id = new_session(&cluster.client).await;
    let request = SessionTurnRequest::for_turn(&session_id, "t1", TurnInput::text("What is 2 + 3?")).expect("turn");
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
    let result = cluster.client.start_turn_live(request, sender).await.expect("turn");
    let mut events = Vec::new();
    while let Ok(event) = received.try_recv() {
        events.push(event);
    }
    let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>(), "every event, in order, before the reply");
    let kinds: Vec<&str> = events.iter().filter_map(|event| event.event["type"].as_str()).collect();
    let position = |kind: &str| kinds.iter().position(|k| *k == kind);
    let (started, completed) = (position("tool_call_started"), position("tool_call_completed"));
    assert!(started.is_some() && started < completed, "the tool's start, then its end: {kinds:?}");
    // The script streams the answer in three pieces (`deltas`); each reaches the client
    // as its own delta, in order, and together they are the answer.
    let deltas: Vec<&str> = events
        .iter()
        .filter(|event| event.event["type"] == "assistant_prose_delta")
        .filter_map(|event| event.event.get("delta").or_else(|| event.event.get("text")).and_then(Value::as_str))
        .collect();
    assert_eq!(deltas, ["2 + 3", " = ", "5."], "the answer's deltas, in order: {kinds:?}");
    let text = deltas.concat();
    assert_eq!(result.outcome, TurnOutcome::Finished(sessionbus_api::TurnFinish::AssistantMessage { text }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_past_its_time_limit_is_stopped_and_the_model_is_told() {
    let provider = ScriptedProvider::new(script("slow_tool_times_out.json"));
    let cluster =
        lash_bus_with(&provider, &["worker-a"], Duration::from_millis(300), JetStreamHostConfig::default()).await;
    let session_id = new_session(&cluster.client).await;
    let request = SessionTurnRequest::for_turn(&session_id, "t1", TurnInput::text("Wait a minute, then say done."))
        .expect("turn");
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(20), cluster.client.start_turn(request))
        .await
        .expect("the turn does not wait for the minute-long tool")
        .expect("the turn's result");
    assert!(started.elapsed() < Duration::from_secs(20));
    let text = "The tool timed out.".to_owned();
    assert_eq!(result.outcome, TurnOutcome::Finished(sessionbus_api::TurnFinish::AssistantMessage { text }));
    let requests = provider.requests();
    assert_eq!(requests.len(), 2, "the model was asked again, with the tool's failure");
    let told = requests[1].to_string();
    assert!(told.contains("tool `sleep` ran longer than its limit of 300ms and was stopped"), "{told}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lash_turn_stuck_in_a_tool_past_the_host_s_maximum_turn_duration_fails_commits_nothing_and_frees_the_lease() {
    // The tool sleeps a minute and may (its own limit is the default 300 s); the host
    // allows a turn 1 s. The lease lasts 30 s: a lease the stopped turn kept would hold
    // the session that long.
    let provider = ScriptedProvider::new(script("sleep_then_answer.json"));
    let host = JetStreamHostConfig::default()
        .with_max_turn_duration(Duration::from_secs(1))
        .with_lease_ttl(Duration::from_secs(30));
    let cluster = lash_bus_with(&provider, &["worker-a"], DEFAULT_TOOL_TIMEOUT, host).await;
    let session_id = new_session(&cluster.client).await;
    let request = SessionTurnRequest::for_turn(&session_id, "t1", TurnInput::text("Wait a minute, then say done."))
        .expect("turn");
    let error = tokio::time::timeout(Duration::from_secs(20), cluster.client.start_turn(request))
        .await
        .expect("the turn is stopped at the host's maximum, not after its tool's minute")
        .expect_err("a turn past the maximum fails");
    assert_eq!(error.kind(), ErrorKind::Session, "a permanent failure, not retried: {error:?}");
    assert!(error.message().contains("ran longer than the maximum of 1s"), "it says why: {error}");
    assert_eq!(provider.requests().len(), 1, "the turn ran once, into its tool, and was not retried");

    let snapshot = cluster.client.snapshot_session(&session_id).await.expect("snapshot");
    assert_eq!(snapshot.turn_index, 0, "nothing was committed");
    assert!(snapshot.session_graph.nodes.is_empty(), "nothing was committed: {:?}", snapshot.session_graph);

    let started = Instant::now();
    let next = SessionTurnRequest::for_turn(&session_id, "t2", TurnInput::text("Are you there?")).expect("turn");
    let result = cluster.client.start_turn(next).await.expect("the next turn runs");
    assert!(started.elapsed() < Duration::from_secs(10), "the stopped turn kept the lease ({:?})", started.elapsed());
    let text = "Yes.".to_owned();
    assert_eq!(result.outcome, TurnOutcome::Finished(sessionbus_api::TurnFinish::AssistantMessage { text }));
}
