//! Controlling a running lash turn across the cluster: a cancel from a second client
//! stops it on the worker that runs it, and a streaming client receives its live output
//! in order before the final reply. Real nats-server, two workers whose executors run
//! lash turns with the scripted provider and the demo tools.

use std::time::{Duration, Instant};

use serde_json::Value;
use sessionbus_api::{
    CancelReply, SessionLifecycleService as _, SessionStateService as _, SessionTurnRequest, TurnCancelService as _,
    TurnInput, TurnOutcome, TurnStop,
};
use sessionbus_lash::provider::scripted::ScriptedProvider;
use sessionbus_nats::{BusClient, BusClientConfig};

mod lash_bus;

use lash_bus::{lash_bus, lash_bus_with, new_session, script};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_a_second_client_stops_a_lash_turn_waiting_in_a_slow_tool_once() {
    let provider = ScriptedProvider::new(script("sleep_then_answer.json"));
    let cluster = lash_bus(&provider, &["worker-a", "worker-b"]).await;
    let session_id = new_session(&cluster.client).await;
    let request = SessionTurnRequest::for_turn(&session_id, "t1", TurnInput::text("Wait a minute, then say done."))
        .expect("turn");
    let started = Instant::now();
    let turn = tokio::spawn({
        let client = cluster.client.clone();
        async move { client.start_turn(request).await }
    });

    // A second client, whose cancel any worker may take.
    let canceller = BusClient::new(cluster.server.client().await.expect("connect"), BusClientConfig::default());
    // The model has asked for the minute-long tool: the turn waits in it.
    tokio::time::timeout(Duration::from_secs(20), async {
        while provider.requests().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the model was asked");
    let reply = canceller.cancel_turn(&session_id, "t1").await.expect("cancel");
    let CancelReply::Cancelling { holder: Some(holder) } = reply else { panic!("a running turn: {reply:?}") };
    assert!(holder == "worker-a" || holder == "worker-b", "{holder}");

    let result = tokio::time::timeout(Duration::from_secs(20), turn)
        .await
        .expect("the cancelled turn ends long before its tool's minute")
        .expect("join")
        .expect("the turn's result");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(result.outcome, TurnOutcome::Stopped(TurnStop::Cancelled));
    assert_eq!(provider.requests().len(), 1, "the model was not asked again after the cancel");

    let snapshot = cluster.client.snapshot_session(&session_id).await.expect("snapshot");
    assert_eq!(snapshot.turn_index, 1, "one commit");
    let graph = serde_json::to_string(&snapshot.session_graph).expect("json");
    assert!(graph.contains("Wait a minute, then say done."), "what the turn had is committed: {graph}");
    let again = canceller.cancel_turn(&session_id, "t1").await.expect("cancel again");
    assert_eq!(again, CancelReply::Finished { outcome: TurnOutcome::Stopped(TurnStop::Cancelled) });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_client_receives_a_lash_turn_s_activity_in_order_before_the_final_reply() {
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
    let prose: String = events
        .iter()
        .filter(|event| event.event["type"] == "assistant_prose_delta")
        .filter_map(|event| event.event.get("delta").or_else(|| event.event.get("text")).and_then(Value::as_str))
        .collect();
    assert_eq!(prose, "2 + 3 = 5.", "the answer's deltas add up to the answer: {kinds:?}");
    assert_eq!(result.outcome, TurnOutcome::Finished(sessionbus_api::TurnFinish::AssistantMessage { text: prose }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_past_its_time_limit_is_stopped_and_the_model_is_told() {
    let provider = ScriptedProvider::new(script("slow_tool_times_out.json"));
    let cluster = lash_bus_with(&provider, &["worker-a"], Duration::from_millis(300)).await;
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
