//! Retention against a real nats-server: closed sessions past the age are purged from
//! every stream and the registry, in bounded batches, and nothing else changes.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt as _;
use sessionbus_api::{
    AppendSessionNodesRequest, EchoExecutor, SessionAppendNode, SessionGraphService as _, SessionLifecycleService as _,
    SessionListQuery, SessionRegistryService as _, SessionStateService as _, SessionTurnRequest, ToolManifest,
    ToolState, TraceContext, TraceEvent, TurnInput,
};
use sessionbus_nats::JetStreamHost;
use sessionbus_nats::jetstream::{
    INDEX_STREAM, PurgeConfig, STATE_STREAM, TOOLS_STREAM, TRACE_STREAM, purge_closed_sessions,
};

/// Every subject of every stream of the bus, with its message count and last sequence.
async fn stored(client: &async_nats::Client) -> BTreeMap<String, (usize, u64)> {
    let js = async_nats::jetstream::new(client.clone());
    let mut all = BTreeMap::new();
    for name in [STATE_STREAM, TRACE_STREAM, TOOLS_STREAM, INDEX_STREAM] {
        let stream = js.get_stream(name).await.expect("stream");
        let subjects: Vec<(String, usize)> =
            stream.info_with_subjects(">").await.expect("subjects").try_collect().await.expect("subjects");
        for (subject, count) in subjects {
            let last = stream.get_last_raw_message_by_subject(&subject).await.expect("last message").sequence;
            all.insert(subject, (count, last));
        }
    }
    all
}

/// A session with something in every stream: meta, graph, a turn, tool state, a trace.
async fn busy_session(host: &JetStreamHost, id: &str) {
    host.create_session(sessionbus_api::SessionCreateRequest::root(Some(id.to_owned()))).await.expect("create");
    let mut tools = ToolState::default();
    tools.insert(ToolManifest::new("tool:t", "t", "The t tool."));
    host.apply_tool_state(id, tools).await.expect("tool state");
    host.append_session_nodes(
        id,
        AppendSessionNodesRequest {
            nodes: vec![SessionAppendNode::message("User", "hi")],
            requires_ancestor_node_id: None,
        },
    )
    .await
    .expect("append");
    let turn = SessionTurnRequest::for_turn(id, "t1", TurnInput::text("hello")).expect("turn");
    host.start_turn(turn).await.expect("turn");
    let context = TraceContext { session_id: Some(id.to_owned()), ..TraceContext::default() };
    host.emit_trace_event(context, TraceEvent::turn_started()).await.expect("trace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_only_closed_sessions_past_the_age_in_bounded_batches() {
    let server = common::server();
    let host = common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await;
    let admin = server.client().await.expect("connect");
    let old_closed: Vec<String> = (0..3).map(|i| format!("old-closed-{i}")).collect();
    for id in &old_closed {
        busy_session(&host, id).await;
        host.close_session(id).await.expect("close");
    }
    busy_session(&host, "old-open").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    busy_session(&host, "young-closed").await;
    host.close_session("young-closed").await.expect("close");
    busy_session(&host, "young-open").await;

    let before = stored(&admin).await;
    let config = PurgeConfig::default().with_closed_older_than(Duration::from_secs(1)).with_batch(2);
    let first = purge_closed_sessions(&admin, host.subjects(), &config).await.expect("purge");
    assert_eq!(first.purged, old_closed[..2], "the oldest closed sessions first, at most a batch");
    assert!(first.more, "a full batch says to call again");
    let second = purge_closed_sessions(&admin, host.subjects(), &config).await.expect("purge");
    assert_eq!(second.purged, old_closed[2..]);
    assert!(!second.more, "the walk stopped at the first young session: {second:?}");
    let third = purge_closed_sessions(&admin, host.subjects(), &config).await.expect("purge");
    assert!(third.purged.is_empty() && !third.more, "{third:?}");

    // Exactly the purged sessions' subjects are gone; every other subject kept its
    // messages and its last sequence.
    let after = stored(&admin).await;
    // These ids are their own subject tokens.
    let of_purged = |subject: &str| old_closed.iter().any(|id| subject.split('.').any(|part| part == id));
    let expected: BTreeMap<String, (usize, u64)> =
        before.iter().filter(|(subject, _)| !of_purged(subject)).map(|(s, v)| (s.clone(), *v)).collect();
    assert!(before.len() > expected.len() + 4 * old_closed.len(), "the purged sessions had state, trace, tools, index");
    assert_eq!(after, expected);

    for id in &old_closed {
        let err = host.snapshot_session(id).await.expect_err("purged");
        assert!(err.is_unknown_session(), "{err:?}");
    }
    let listed: Vec<String> = host
        .list_sessions(&SessionListQuery::first(100))
        .await
        .expect("list")
        .sessions
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(listed, ["old-open", "young-closed", "young-open"]);
}
