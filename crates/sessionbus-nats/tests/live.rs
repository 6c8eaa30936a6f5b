//! A running turn's live output: a streaming caller receives it in order before the
//! final reply, and watchers of `<prefix>.live.<sid>` see it; nothing of it is stored.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use serde_json::json;
use sessionbus_api::{
    EchoExecutor, PluginError, SessionLifecycleService as _, SessionTurnRequest, TurnContext, TurnExecutor, TurnInput,
    TurnOutput,
};
use sessionbus_nats::subjects::session_token;
use sessionbus_nats::wire::{LIVE, TURN_ID};
use sessionbus_nats::{LiveEvent, Subjects};
use sessionbus_testkit::subscribe_confirmed;
use tokio::sync::mpsc;

const DELTAS: usize = 200;

/// Streams `DELTAS` text deltas, then answers as the echo executor does.
struct Streams;

#[async_trait::async_trait]
impl TurnExecutor for Streams {
    async fn run(&self, context: TurnContext) -> Result<TurnOutput, PluginError> {
        for i in 0..DELTAS {
            context.live(json!({ "type": "text_delta", "text": format!("{i} ") }));
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        EchoExecutor.run(context).await
    }
}

fn expected() -> Vec<LiveEvent> {
    (0..DELTAS)
        .map(|i| LiveEvent { seq: i as u64 + 1, event: json!({ "type": "text_delta", "text": format!("{i} ") }) })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_caller_receives_the_live_output_in_order_before_the_final_reply() {
    let server = common::server();
    let _worker = common::serve_jetstream(&server, Arc::new(Streams)).await;
    let client = common::client_on(&server).await;
    let session = common::create_root(&client).await;
    let watcher = server.client().await.expect("connect");
    let live_subject = Subjects::default().live(&session_token(&session).expect("token"));
    let mut watched = subscribe_confirmed(&watcher, live_subject).await.expect("watch");

    let (sender, mut received) = mpsc::unbounded_channel();
    let request = SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("hello")).expect("request");
    let result = client.start_turn_live(request, sender).await.expect("turn");
    // Everything arrived before the final reply: it is all queued already.
    let mut events = Vec::new();
    while let Ok(event) = received.try_recv() {
        events.push(event);
    }
    assert_eq!(events, expected(), "every delta, in order, before the reply");
    assert_eq!(result.state.turn_index, 1);

    let mut seen = Vec::new();
    while seen.len() < DELTAS {
        let message = tokio::time::timeout(Duration::from_secs(10), watched.next())
            .await
            .expect("the watcher sees every delta")
            .expect("subscription open");
        let headers = message.headers.as_ref().expect("headers");
        assert_eq!(headers.get(TURN_ID).map(|v| v.as_str()), Some("t1"));
        assert!(headers.get(LIVE).is_some());
        seen.push(LiveEvent::of(&message).expect("a live event"));
    }
    assert_eq!(seen, expected(), "watchers see the same output in the same order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_did_not_ask_for_live_output_gets_the_same_result_without_it() {
    let server = common::server();
    let _worker = common::serve_jetstream(&server, Arc::new(Streams)).await;
    let client = common::client_on(&server).await;
    let session = common::create_root(&client).await;
    let request = SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("hello")).expect("request");
    let plain = client.start_turn(request.clone()).await.expect("turn");
    let (sender, mut received) = mpsc::unbounded_channel();
    let again = client.start_turn_live(request, sender).await.expect("the stored turn");
    assert_eq!(plain, again, "the final reply does not depend on streaming");
    assert!(received.try_recv().is_err(), "a stored turn has no live output");
    let snapshot = sessionbus_api::SessionStateService::snapshot_session(&client, &session).await.expect("snapshot");
    assert!(!serde_json::to_string(&snapshot).expect("json").contains("text_delta"), "live output is not stored");
}
