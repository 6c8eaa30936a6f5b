//! A worker that has not seen a session yet (a cold read: another worker wrote it, or
//! its view was evicted) loads the session's graph in batched reads: a few requests,
//! however many records the graph has, and never a consumer.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sessionbus_api::{AppendSessionNodesRequest, EchoExecutor, SessionAppendNode, SessionGraphService as _};
use sessionbus_api::{SessionStateService as _, TurnInput};
use sessionbus_testkit::subscribe_confirmed;

/// The JetStream API requests `sniffer` receives until it has been quiet for 500 ms,
/// counted by subject with the stream name cut off.
async fn requests(sniffer: &mut async_nats::Subscriber) -> BTreeMap<String, usize> {
    common::count_until_quiet(sniffer, |message| {
        message.subject.rsplit_once('.').map_or(message.subject.as_str(), |(kind, _)| kind).to_owned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_snapshot_loads_a_long_graph_in_a_few_batched_reads_without_a_consumer() {
    let server = common::server();
    let writer = common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await;
    let session = common::create_root(&writer).await;
    let other = common::create_root(&writer).await;
    // 300 graph records (more than one batch), with other sessions' writes between them.
    for n in 0..300 {
        let append = |text: String| AppendSessionNodesRequest {
            nodes: vec![SessionAppendNode::message("User", text)],
            requires_ancestor_node_id: None,
        };
        writer.append_session_nodes(&session, append(format!("node {n}"))).await.expect("append");
        writer.append_session_nodes(&other, append(format!("other {n}"))).await.expect("append");
    }
    let turn = sessionbus_api::SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("last")).expect("turn");
    sessionbus_api::SessionLifecycleService::start_turn(&writer, turn).await.expect("turn");
    let written = writer.snapshot_session(&session).await.expect("snapshot");

    let cold = common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await;
    let sniffing = server.client().await.expect("connect");
    let mut sniffer = subscribe_confirmed(&sniffing, "$JS.API.>").await.expect("subscribe");
    requests(&mut sniffer).await;
    let read = cold.snapshot_session(&session).await.expect("a cold snapshot");
    let seen = requests(&mut sniffer).await;

    assert_eq!(read, written, "the cold read sees what was written");
    assert_eq!(read.session_graph.nodes.len(), 302, "300 appended nodes and the turn's two");
    assert!(!seen.keys().any(|kind| kind.contains("CONSUMER")), "a consumer was used: {seen:?}");
    // The session's last sequence; meta, lease and graph's last; two batches.
    assert_eq!(seen.get("$JS.API.DIRECT.GET"), Some(&2), "{seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 6, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reports_its_host_s_cache_hits_in_its_service_stats() {
    let server = common::server();
    let host = common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await;
    let stats_host = host.clone();
    let config =
        sessionbus_nats::WorkerConfig::default().with_host_stats(Some(sessionbus_nats::HostStats::new(move || {
            serde_json::to_value(stats_host.cache_stats()).expect("json")
        })));
    let _worker =
        sessionbus_nats::Worker::start(server.client().await.expect("connect"), Arc::new(host.clone()), config)
            .await
            .expect("worker");
    let client = common::client_on(&server).await;
    let session = common::create_root(&client).await;
    let before = host.cache_stats();
    for _ in 0..3 {
        client.snapshot_session(&session).await.expect("snapshot");
    }
    let nats = server.client().await.expect("connect");
    let answers = sessionbus_nats::worker::service_answers(
        &nats,
        sessionbus_nats::worker::ServiceQuery::Stats,
        Duration::from_secs(1),
    )
    .await
    .expect("stats");
    let ping = answers[0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|endpoint| endpoint["name"] == "ping")
        .expect("the ping endpoint")
        .clone();
    let reported: sessionbus_nats::jetstream::CacheStats =
        serde_json::from_value(ping["data"]["host"].clone()).expect("the host's cache counters");
    assert_eq!(reported, host.cache_stats(), "the stats carry the host's counters");
    let (hits, misses) = (reported.view_hits - before.view_hits, reported.view_misses - before.view_misses);
    assert_eq!((hits, misses), (2, 1), "the first snapshot loads the session, the next two find it cached");
    assert_eq!(reported.sessions_cached, 1, "{reported:?}");
}
