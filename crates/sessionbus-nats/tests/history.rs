//! A session's history through the bus, on the JetStream host: each turn names the
//! worker that ran it and the trace its `start_turn` call carried (the one the ledger
//! stored); the reads are single-message leader reads, no consumer; the tool history
//! keeps what the KV bucket keeps.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use sessionbus_api::{
    EchoExecutor, MAX_TOOL_GENERATIONS, SessionHistoryService as _, SessionStateService as _, ToolManifest, ToolState,
    TurnListQuery, TurnStatus,
};
use sessionbus_nats::jetstream::records::LedgerRecord;
use sessionbus_nats::subjects::{session_token, turn_token};
use sessionbus_nats::{JetStreamHostConfig, Op, STATE_STREAM, Subjects, wire};
use sessionbus_testkit::subscribe_confirmed;

/// A random W3C trace parent and its trace id.
fn random_traceparent() -> (String, String) {
    let trace_id = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
    let span_id = &format!("{:032x}", uuid::Uuid::new_v4().as_u128())[..16];
    (format!("00-{trace_id}-{span_id}-01"), trace_id)
}

/// Starts turn `turn_id` with a raw request carrying `traceparent`, as any caller may.
async fn start_traced_turn(nats: &async_nats::Client, session: &str, turn_id: &str, traceparent: &str) {
    let subject = Subjects::default().session_op(&session_token(session).expect("token"), Op::StartTurn);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", traceparent);
    let body = serde_json::json!({ "turn_id": turn_id, "input": sessionbus_api::TurnInput::text("hello") });
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        nats.request_with_headers(subject, headers, serde_json::to_vec(&body).expect("json").into()),
    )
    .await
    .expect("a reply in time")
    .expect("a reply");
    assert!(reply.headers.as_ref().and_then(|h| h.get(wire::SERVICE_ERROR_CODE)).is_none(), "the turn failed");
}

/// The trace id of the `traceparent` the ledger stored for `turn_id`.
async fn stored_trace_id(nats: &async_nats::Client, session: &str, turn_id: &str) -> Option<String> {
    let subject =
        Subjects::default().turn(&session_token(session).expect("token"), &turn_token(turn_id).expect("token"));
    let stream = async_nats::jetstream::new(nats.clone()).get_stream(STATE_STREAM).await.expect("state stream");
    let stored = stream.get_last_raw_message_by_subject(&subject).await.expect("the ledger record");
    let record: LedgerRecord = serde_json::from_slice(&stored.payload).expect("a ledger record");
    record.traceparent().map(|value| value.split('-').nth(1).expect("a trace id").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_turn_names_its_worker_and_the_trace_its_ledger_stored() {
    let server = common::server();
    let config = JetStreamHostConfig::default().with_lease_holder("worker-a".to_owned());
    let host = Arc::new(common::jetstream_host_with(&server, Arc::new(EchoExecutor), config).await);
    let _worker = common::jetstream_worker_on(&server, host).await;
    let client = common::client_on(&server).await;
    let nats = server.client().await.expect("connect");
    let session = common::create_root(&client).await;
    let mut traces = Vec::new();
    for turn_id in ["t1", "t2", "t3"] {
        let (traceparent, trace_id) = random_traceparent();
        start_traced_turn(&nats, &session, turn_id, &traceparent).await;
        traces.push(trace_id);
    }
    let page = client.list_turns(&session, &TurnListQuery::first(10)).await.expect("turns");
    assert_eq!(page.turns.iter().map(|t| t.turn_id.as_str()).collect::<Vec<_>>(), ["t1", "t2", "t3"]);
    for (turn, sent) in page.turns.iter().zip(&traces) {
        assert_eq!(turn.status, TurnStatus::Completed, "{turn:?}");
        assert_eq!(turn.worker.as_deref(), Some("worker-a"), "{turn:?}");
        assert_eq!(turn.trace_id.as_ref(), Some(sent), "the trace of the call: {turn:?}");
        let stored = stored_trace_id(&nats, &session, &turn.turn_id).await;
        assert_eq!(turn.trace_id, stored, "the trace the ledger stored: {turn:?}");
        assert!(turn.tokens() > 0 && turn.duration_ms.is_some() && turn.started_at.is_some(), "{turn:?}");
    }
}

/// Everything `sniffer` receives until it has been quiet for `quiet`.
async fn drain(sniffer: &mut async_nats::Subscriber, quiet: Duration) -> BTreeSet<(String, Vec<u8>)> {
    let mut seen = BTreeSet::new();
    while let Ok(Some(message)) = tokio::time::timeout(quiet, sniffer.next()).await {
        seen.insert((message.subject.to_string(), message.payload.to_vec()));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_are_single_message_reads_and_create_no_consumer() {
    let server = common::server();
    let host = common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await;
    let session = common::create_root(&host).await;
    for n in 0..12 {
        let turn = sessionbus_api::SessionTurnRequest::for_turn(
            &session,
            format!("t{n}"),
            sessionbus_api::TurnInput::text("x"),
        )
        .expect("turn");
        sessionbus_api::SessionLifecycleService::start_turn(&host, turn).await.expect("turn");
    }
    let mut tools = ToolState::default();
    tools.insert(ToolManifest::new("tool:bash", "bash", ""));
    host.apply_tool_state(&session, tools).await.expect("tools");
    let sniffing = server.client().await.expect("connect");
    let mut sniffer = subscribe_confirmed(&sniffing, "$JS.API.>").await.expect("subscribe");
    drain(&mut sniffer, Duration::from_millis(200)).await;
    let page = host.list_turns(&session, &TurnListQuery::first(5)).await.expect("a page");
    assert_eq!(page.turns.len(), 5);
    let page_reads = drain(&mut sniffer, Duration::from_millis(500)).await;
    let next = TurnListQuery { limit: 5, after: page.next_after.clone() };
    assert_eq!(host.list_turns(&session, &next).await.expect("a second page").turns.len(), 5);
    let next_reads = drain(&mut sniffer, Duration::from_millis(500)).await;
    let history = host.tool_history(&session).await.expect("history");
    assert_eq!(history.generations.len(), 1);
    let history_reads = drain(&mut sniffer, Duration::from_millis(500)).await;
    for (subject, _) in page_reads.iter().chain(&next_reads).chain(&history_reads) {
        assert!(subject.starts_with("$JS.API.STREAM.MSG.GET."), "not a single-message read: {subject}");
    }
    // The session's meta, its lease (the first page only), five records, and one read
    // that says a page follows.
    assert_eq!(page_reads.len(), 8, "{page_reads:?}");
    assert_eq!(next_reads.len(), 7, "{next_reads:?}");
    // The meta, the one revision, and the read that finds no more.
    assert_eq!(history_reads.len(), 3, "{history_reads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tool_history_holds_the_newest_generations_the_bucket_keeps() {
    let server = common::server();
    let host = common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await;
    let session = common::create_root(&host).await;
    let mut generations = Vec::new();
    let names = vec!["bash".to_owned()];
    let mut tools = ToolState::default();
    tools.insert(ToolManifest::new("tool:bash", "bash", ""));
    generations.push(host.apply_tool_state(&session, tools).await.expect("tools"));
    for n in 0..MAX_TOOL_GENERATIONS + 5 {
        generations.push(host.set_tool_membership(&session, &names, n % 2 == 1).await.expect("toggle"));
    }
    let history = host.tool_history(&session).await.expect("history");
    assert!(history.truncated);
    let kept: Vec<u64> = history.generations.iter().map(|g| g.generation).collect();
    assert_eq!(kept, generations[generations.len() - MAX_TOOL_GENERATIONS..], "the newest, oldest first");
    let last = history.generations.last().expect("a generation");
    let current = host.tool_state(&session).await.expect("state");
    let member = current.iter().any(|(_, entry)| entry.is_member());
    assert_eq!((last.generation, !last.members.is_empty()), (current.generation, member));
}
