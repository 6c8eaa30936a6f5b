//! An API key never appears in what a lash turn leaves behind on the bus: a real
//! `sessionbus worker --executor lash --provider openai` process (debug logs on) runs
//! turns against a loopback server replaying chat-completions responses, one answered
//! and one refused with a 401 whose body echoes the key. The key is in no stored trace
//! record of the session, no turn's answer, and no line the worker logged.
//!
//! The worker runs lash at its default trace level, which makes no `provider_request`
//! or `provider_stream_event` records; `openai_provider.rs` tests that those carry no
//! key when a host asks for them.

mod replay;

use replay::{ReplayServer, Reply, fixture};
use serde_json::Value;
use sessionbus_api::{SessionCreateRequest, SessionLifecycleService as _, SessionTurnRequest, TurnInput};
use sessionbus_lash::provider::openai::REDACTED;
use sessionbus_nats::{BusClient, BusClientConfig, Subjects, TRACE_STREAM};
use sessionbus_testkit::{NatsServer, WorkerConfig, WorkerProcess};

/// The key the worker is given; `unauthorized.json` echoes it, as OpenAI's 401 does.
const KEY: &str = "sk-test-REPLAYKEY-0123456789";

/// Every record stored on the session's trace subject, as text.
async fn stored_trace(raw: &async_nats::Client, session_id: &str) -> Vec<String> {
    let stream = async_nats::jetstream::new(raw.clone()).get_stream(TRACE_STREAM).await.expect("the trace stream");
    let token = sessionbus_nats::subjects::session_token(session_id).expect("token");
    let subject = Subjects::default().trace(&token);
    let mut records = Vec::new();
    let mut next = 1;
    while let Ok(message) = stream.direct_get_next_for_subject(&subject, Some(next)).await {
        records.push(String::from_utf8_lossy(&message.payload).into_owned());
        next = message.sequence + 1;
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lash_worker_s_api_key_is_in_no_stored_trace_record_turn_error_or_debug_log() {
    let replies = vec![Reply::sse(fixture("stream_answer.sse"), 64), Reply::json(401, fixture("unauthorized.json"))];
    let model = ReplayServer::start(replies).await;
    let server = NatsServer::start().expect("start nats-server");
    let config = WorkerConfig::default()
        .with_args(["--executor", "lash", "--provider", "openai"])
        .with_env("OPENAI_BASE_URL", model.base_url(false))
        .with_env("OPENAI_API_KEY", KEY)
        .with_env("OPENAI_MODEL", "gpt-4o-mini")
        .with_env("RUST_LOG", "debug");
    let worker = WorkerProcess::start_with(&server.url(), &config)
        .await
        .unwrap_or_else(|err| panic!("start a lash worker (is sessionbus built with --features lash?): {err}"));
    let client = BusClient::new(server.client().await.expect("connect"), BusClientConfig::default());
    let raw = server.client().await.expect("connect");
    let session_id = uuid::Uuid::new_v4().to_string();
    client.create_session(SessionCreateRequest::root(Some(session_id.clone()))).await.expect("create");

    let answered = client
        .start_turn(
            SessionTurnRequest::for_turn(&session_id, "t1", TurnInput::text("Capital of France?")).expect("turn"),
        )
        .await
        .expect("the answered turn");
    assert_eq!(
        serde_json::to_value(&answered.outcome).expect("json"),
        serde_json::json!({"finished": {"assistant_message": {"text": "Paris is the capital of France."}}})
    );
    let refused = client
        .start_turn(SessionTurnRequest::for_turn(&session_id, "t2", TurnInput::text("And of Spain?")).expect("turn"))
        .await;

    // The key did reach the model server, so its absence below is redaction, not luck.
    let received = model.received();
    assert_eq!(received.len(), 2, "both turns called the model: {received:?}");
    for request in &received {
        assert_eq!(request.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    }

    // lash stops the refused turn with a provider error; nothing in its answer shows the key.
    let refused = refused.expect("the refused turn's answer");
    assert_eq!(serde_json::to_value(&refused.outcome).expect("json"), serde_json::json!({"stopped": "provider_error"}));
    let answer = serde_json::to_string(&refused).expect("json");
    assert!(!answer.contains(KEY), "the refused turn's answer shows the key: {answer}");

    // The stored failure carries the server's message, the key in it redacted.
    let records = stored_trace(&raw, &session_id).await;
    let failures: Vec<Value> = records
        .iter()
        .filter_map(|record| serde_json::from_str::<Value>(record).ok())
        .filter(|record| record["type"] == "llm_call_failed")
        .collect();
    assert_eq!(failures.len(), 1, "the refused call's failure is stored: {records:?}");
    let message = failures[0]["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("HTTP 401") && message.contains(REDACTED), "{message}");
    for record in &records {
        assert!(!record.contains(KEY), "a stored trace record shows the key: {record}");
    }

    let logs = worker.stderr();
    assert!(logs.contains("DEBUG"), "the worker logged at debug level:\n{logs}");
    for line in logs.lines() {
        assert!(!line.contains(KEY), "the worker logged the key: {line}");
    }
}
