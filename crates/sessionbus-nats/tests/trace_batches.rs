//! Batched trace records (README.md "Batched trace records"), against a real
//! nats-server: order, per-record dedupe of a resent batch, an emit returning only once
//! its record is stored, every emitter of a failed batch failing, and the single-record
//! wire form still served.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::{Value, json};
use sessionbus_api::{
    EchoExecutor, ErrorKind, PluginError, SessionGraphService as _, SessionTurnRequest, TraceContext, TraceEvent,
    TraceRecord, TurnContext, TurnExecutor, TurnInput, TurnOutput,
};
use sessionbus_nats::subjects::session_token;
use sessionbus_nats::wire::{REQUEST_ID, TraceRequest, trace_batch_body};
use sessionbus_nats::{BusClient, BusClientConfig, Op, Subjects, TRACE_STREAM};

/// A custom record of `session` saying who emitted it and its number.
fn record(session: &str, emitter: usize, i: usize) -> (TraceContext, TraceEvent) {
    let context = TraceContext { session_id: Some(session.to_owned()), ..TraceContext::default() };
    let event = TraceEvent::Custom {
        name: "batch-test".into(),
        payload: json!({"emitter": emitter, "i": i}),
        extra: Default::default(),
    };
    (context, event)
}

/// `(emitter, i)` of every record stored for `session`, in stream order.
async fn stored(client: &async_nats::Client, session: &str) -> Vec<(u64, u64)> {
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream(TRACE_STREAM).await.expect("the trace stream");
    let subject = Subjects::default().trace(&session_token(session).expect("token"));
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: subject,
            ..Default::default()
        })
        .await
        .expect("an ordered consumer");
    let pending = consumer.cached_info().num_pending as usize;
    let mut messages = consumer.messages().await.expect("messages");
    let (mut records, mut seen) = (Vec::with_capacity(pending), 0);
    while seen < pending {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the stored records within 10 s")
            .expect("a message")
            .expect("no error");
        let record: TraceRecord = serde_json::from_slice(&message.payload).expect("a trace record");
        seen += 1;
        // The turn's own records (an executor's) are not the test's.
        if let TraceEvent::Custom { name, payload, .. } = record.event
            && name == "batch-test"
        {
            let field = |name: &str| payload.get(name).and_then(Value::as_u64).expect("a test record field");
            records.push((field("emitter"), field("i")));
        }
    }
    records
}

/// Starts `emits` one after another (each polled once, so queued on its lane, before
/// the next starts), then awaits them all.
async fn start_in_order<F: Future<Output = Result<(), PluginError>>>(emits: impl IntoIterator<Item = F>) {
    let mut started = Vec::new();
    for emit in emits {
        let mut emit = Box::pin(emit);
        if futures::poll!(emit.as_mut()).is_pending() {
            started.push(emit);
        }
    }
    for result in futures::future::join_all(started).await {
        result.expect("emit");
    }
}

/// The `trace` requests sent for `session`: how many records each carried.
async fn watch_trace_requests(client: &async_nats::Client, session: &str) -> async_nats::Subscriber {
    let subject = Subjects::default().session_op(&session_token(session).expect("token"), Op::Trace);
    sessionbus_testkit::subscribe_confirmed(client, subject).await.expect("watch trace requests")
}

/// How many records each watched `trace` request carried, until they add up to `total`.
async fn records_per_request(watched: &mut async_nats::Subscriber, total: usize) -> Vec<usize> {
    let mut counts = Vec::new();
    while counts.iter().sum::<usize>() < total {
        let message = tokio::time::timeout(Duration::from_secs(10), watched.next())
            .await
            .expect("the watched requests within 10 s")
            .expect("a watched request");
        let body: Value = serde_json::from_slice(&message.payload).expect("a trace request body");
        counts.push(body.get("records").and_then(Value::as_array).map_or(1, Vec::len));
    }
    counts
}

/// A server, a JetStream worker, a bus client, a second connection to watch with, and a
/// new session.
async fn started() -> (sessionbus_testkit::NatsServer, sessionbus_nats::Worker, BusClient, async_nats::Client, String) {
    let server = common::server();
    let worker = common::serve_jetstream(&server, Arc::new(EchoExecutor)).await;
    let bus = common::client_on(&server).await;
    let watcher = server.client().await.expect("connect");
    let session = common::create_root(&bus).await;
    (server, worker, bus, watcher, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_one_session_are_stored_in_emit_order_under_concurrent_emits() {
    let (_server, _worker, bus, watcher, session) = started().await;
    let mut requests = watch_trace_requests(&watcher, &session).await;

    // Emitters 0..8 each emit 40 records one after another (each awaited); emitter 8
    // starts 200 emits one after another without awaiting any before the next.
    let sequential = (0..8).map(|emitter| {
        let (bus, session) = (bus.clone(), session.clone());
        tokio::spawn(async move {
            for i in 0..40 {
                let (context, event) = record(&session, emitter, i);
                bus.emit_trace_event(context, event).await.expect("emit");
            }
        })
    });
    let sequential: Vec<_> = sequential.collect();
    let burst = (0..200).map(|i| {
        let (context, event) = record(&session, 8, i);
        bus.emit_trace_event(context, event)
    });
    start_in_order(burst).await;
    for task in sequential {
        task.await.expect("emitter");
    }

    let records = stored(&watcher, &session).await;
    assert_eq!(records.len(), 8 * 40 + 200, "every record stored once");
    for emitter in 0..9 {
        let order: Vec<u64> = records.iter().filter(|(e, _)| *e == emitter).map(|(_, i)| *i).collect();
        let expected: Vec<u64> = (0..if emitter == 8 { 200 } else { 40 }).collect();
        assert_eq!(order, expected, "emitter {emitter}'s records in emit order");
    }
    let counts = records_per_request(&mut requests, records.len()).await;
    assert_eq!(counts.iter().sum::<usize>(), records.len(), "every record went out in exactly one request");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), requests.next()).await.is_err(),
        "no record was sent twice"
    );
    assert!(counts.len() < records.len() && counts.iter().any(|n| *n > 1), "records were batched: {counts:?}");
}

/// Sends `body` as a `trace` request of `session` with request id `id`; the error
/// code of the reply, if any.
async fn send_trace(client: &async_nats::Client, session: &str, id: &str, body: Bytes) -> Option<String> {
    let mut headers = HeaderMap::new();
    headers.insert(REQUEST_ID, id);
    let request = async_nats::Request::new().payload(body).headers(headers).timeout(Some(Duration::from_secs(10)));
    let reply = client
        .send_request(Subjects::default().session_op(&session_token(session).expect("token"), Op::Trace), request)
        .await
        .expect("reply");
    reply.headers.as_ref().and_then(|h| h.get(sessionbus_nats::wire::SERVICE_ERROR_CODE)).map(|v| v.to_string())
}

fn encoded(session: &str, emitter: usize, i: usize) -> Bytes {
    let (context, event) = record(session, emitter, i);
    serde_json::to_vec(&TraceRequest { context, event }).expect("json").into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_batch_stores_each_record_once_and_single_records_are_still_served() {
    let server = common::server();
    let _worker = common::serve_jetstream(&server, Arc::new(EchoExecutor)).await;
    let bus = common::client_on(&server).await;
    let client = server.client().await.expect("connect");
    let session = common::create_root(&bus).await;

    let batch = trace_batch_body(&[encoded(&session, 0, 0), encoded(&session, 0, 1), encoded(&session, 0, 2)]);
    for _ in 0..3 {
        assert_eq!(send_trace(&client, &session, "batch-1", batch.clone()).await, None, "a batch is stored");
    }
    assert_eq!(stored(&client, &session).await, [(0, 0), (0, 1), (0, 2)], "a resent batch stores each record once");

    // The original single-record body (every older client sends it) is served as before.
    let single = encoded(&session, 1, 0);
    for _ in 0..2 {
        assert_eq!(send_trace(&client, &session, "single-1", single.clone()).await, None, "a record is stored");
    }
    // A new batch (another request id) of the same content is new records.
    assert_eq!(send_trace(&client, &session, "batch-2", batch).await, None);
    assert_eq!(
        stored(&client, &session).await,
        [(0, 0), (0, 1), (0, 2), (1, 0), (0, 0), (0, 1), (0, 2)],
        "a resent single record is stored once; a new batch is stored"
    );

    // `emit_trace_events` with an explicit request id is one resendable batch.
    let records = || vec![record(&session, 2, 0), record(&session, 2, 1)];
    for _ in 0..2 {
        sessionbus_nats::request_context::with_request_id("events-1".into(), bus.emit_trace_events(records()))
            .await
            .expect("emit a batch");
    }
    let stored_now = stored(&client, &session).await;
    assert_eq!(&stored_now[7..], [(2, 0), (2, 1)], "resent with its request id, the batch is stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emit_returns_only_once_its_record_is_readable_from_the_stream() {
    let server = common::server();
    let _worker = common::serve_jetstream(&server, Arc::new(EchoExecutor)).await;
    let bus = common::client_on(&server).await;
    let reader = server.client().await.expect("connect");
    let session = common::create_root(&bus).await;

    let emitters = (0..16).map(|emitter| {
        let (bus, reader, session) = (bus.clone(), reader.clone(), session.clone());
        tokio::spawn(async move {
            for i in 0..3 {
                let (context, event) = record(&session, emitter, i);
                bus.emit_trace_event(context, event).await.expect("emit");
                let stored = stored(&reader, &session).await;
                assert!(
                    stored.contains(&(emitter as u64, i as u64)),
                    "record {i} of emitter {emitter} is readable once its emit returned"
                );
            }
        })
    });
    for task in futures::future::join_all(emitters).await {
        task.expect("emitter");
    }
}

/// A client that gives up quickly (one attempt of 1 s).
fn impatient(client: async_nats::Client) -> BusClient {
    BusClient::new(client, BusClientConfig::default().with_timeout(Duration::from_secs(1)).with_attempts(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_emitter_of_a_failed_batch_gets_a_typed_error_without_hanging() {
    let mut server = common::server();
    let _worker = common::serve_jetstream(&server, Arc::new(EchoExecutor)).await;
    let bus = impatient(server.client().await.expect("connect"));
    let admin = server.client().await.expect("connect");
    let session = common::create_root(&bus).await;
    let (context, event) = record(&session, 0, 0);
    bus.emit_trace_event(context, event).await.expect("stored while the stream exists");

    // The stream is gone: the worker's publishes find no stream.
    async_nats::jetstream::new(admin.clone()).delete_stream(TRACE_STREAM).await.expect("delete the trace stream");
    let mut requests = watch_trace_requests(&admin, &session).await;
    let burst = (0..50).map(|i| {
        let (context, event) = record(&session, 1, i);
        bus.emit_trace_event(context, event)
    });
    let results = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(burst))
        .await
        .expect("every emit answered within 30 s");
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.as_ref().map_err(PluginError::kind), Err(ErrorKind::Unavailable), "emit {i}: {result:?}");
    }
    let counts = records_per_request(&mut requests, 50).await;
    assert!(counts.iter().any(|n| *n > 1), "the failed records went out in batches: {counts:?}");

    // The server is gone: the same, from the client's side.
    server.kill();
    let burst = (0..50).map(|i| {
        let (context, event) = record(&session, 2, i);
        bus.emit_trace_event(context, event)
    });
    let results = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(burst))
        .await
        .expect("every emit answered within 30 s");
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.as_ref().map_err(PluginError::kind), Err(ErrorKind::Unavailable), "emit {i}: {result:?}");
    }
}

/// An executor that emits `count` records at once (none awaited before the next) and
/// then echoes.
struct BurstExecutor {
    count: usize,
}

#[async_trait::async_trait]
impl TurnExecutor for BurstExecutor {
    async fn run(&self, context: TurnContext) -> Result<TurnOutput, PluginError> {
        let session = context.turn.session_id.clone();
        let emits = (0..self.count).map(|i| {
            let (_, event) = record(&session, 0, i);
            context.emit(context.trace_context(), event)
        });
        start_in_order(emits).await;
        EchoExecutor.run(context).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turns_records_are_stored_in_emit_order_by_the_workers_sink() {
    let server = common::server();
    let _worker = common::serve_jetstream(&server, Arc::new(BurstExecutor { count: 300 })).await;
    let bus = common::client_on(&server).await;
    let reader = server.client().await.expect("connect");
    let session = common::create_root(&bus).await;
    let turn = SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("burst")).expect("turn");
    sessionbus_api::SessionLifecycleService::start_turn(&bus, turn).await.expect("turn");

    let records = stored(&reader, &session).await;
    let expected: Vec<(u64, u64)> = (0..300).map(|i| (0, i)).collect();
    assert_eq!(records, expected, "the turn's records, once each, in emit order");
}

/// JetStream's answers about `stream` sent to any inbox (every connection's), until
/// `quiet` passes without one.
async fn jetstream_answers(watched: &mut async_nats::Subscriber, stream: &str, quiet: Duration) -> Vec<Value> {
    let mut answers = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(quiet, watched.next()).await {
        if let Ok(answer) = serde_json::from_slice::<Value>(&message.payload)
            && answer["stream"] == stream
        {
            answers.push(answer);
        }
    }
    answers
}

/// Emits `records` records of `session` with one call.
async fn emit_batch(bus: &BusClient, session: &str, emitter: usize, records: usize) {
    bus.emit_trace_events((0..records).map(|i| record(session, emitter, i)).collect()).await.expect("emit a batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_trace_records_is_stored_with_one_jetstream_answer_not_one_per_record() {
    let (_server, _worker, bus, watcher, session) = started().await;
    let mut requests = watch_trace_requests(&watcher, &session).await;
    let mut inboxes = sessionbus_testkit::subscribe_confirmed(&watcher, "_INBOX.>").await.expect("watch every inbox");

    emit_batch(&bus, &session, 0, 100).await;
    let per_request = records_per_request(&mut requests, 100).await;
    let answers = jetstream_answers(&mut inboxes, TRACE_STREAM, Duration::from_millis(300)).await;
    assert!(per_request.len() < 10, "the client batched the records: {per_request:?}");
    // A request of one record is one plain publish; of more, one fast batch.
    let answered: Vec<usize> =
        answers.iter().map(|answer| answer["count"].as_u64().map_or(1, |count| count as usize)).collect();
    assert_eq!(answered, per_request, "each trace request was stored with one answer: {answers:?}");
    let expected: Vec<(u64, u64)> = (0..100).map(|i| (0, i)).collect();
    assert_eq!(stored(&watcher, &session).await, expected, "every record, in emit order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_stored_one_by_one_on_a_trace_stream_set_up_before_fast_batches() {
    let (_server, _worker, bus, watcher, session) = started().await;
    // The trace stream as an older `sessionbus setup` made it.
    let js = async_nats::jetstream::new(watcher.clone());
    let mut config = js.get_stream(TRACE_STREAM).await.expect("stream").info().await.expect("info").config.clone();
    assert!(config.allow_batch_publish, "setup lets the trace stream take fast batches");
    config.allow_batch_publish = false;
    js.update_stream(config).await.expect("turn fast batches off");
    let mut requests = watch_trace_requests(&watcher, &session).await;
    let mut inboxes = sessionbus_testkit::subscribe_confirmed(&watcher, "_INBOX.>").await.expect("watch every inbox");

    emit_batch(&bus, &session, 0, 10).await;
    emit_batch(&bus, &session, 1, 10).await;
    let per_request = records_per_request(&mut requests, 20).await;
    let answers = jetstream_answers(&mut inboxes, TRACE_STREAM, Duration::from_millis(300)).await;
    let refused = answers.iter().filter(|answer| answer["error"]["err_code"] == 10205).count();
    let acks = answers.iter().filter(|answer| answer["seq"].as_u64().is_some_and(|seq| seq > 0)).count();
    let first_batch = per_request.iter().find(|records| **records > 1).expect("the client batched some records");
    assert_eq!(refused, *first_batch, "the first fast batch was refused, message by message");
    assert_eq!(acks, 20, "then every record was published and acked on its own, and no fast batch was tried again");
    let expected: Vec<(u64, u64)> = (0..2).flat_map(|emitter| (0..10).map(move |i| (emitter, i))).collect();
    assert_eq!(stored(&watcher, &session).await, expected, "every record once, in emit order");
}
