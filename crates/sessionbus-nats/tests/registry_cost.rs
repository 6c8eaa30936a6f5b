//! The registry's first page is a bounded read: the JetStream requests it makes, seen
//! by a connection subscribed to `$JS.API.>`, are the same with 1,000 more sessions in
//! the store: one leader read of the registry's newest entry, one batched read of the
//! page's entries up to it, and single-message leader reads of each listed session's
//! state (no consumer, no scan).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use sessionbus_api::{
    EchoExecutor, SessionCreateRequest, SessionLifecycleService as _, SessionListQuery, SessionRegistryService as _,
    SessionStatus,
};
use sessionbus_nats::JetStreamHost;
use sessionbus_testkit::subscribe_confirmed;

/// Everything `sniffer` receives until it has been quiet for `quiet`.
async fn drain(sniffer: &mut async_nats::Subscriber, quiet: Duration) -> BTreeSet<(String, Vec<u8>)> {
    let mut seen = BTreeSet::new();
    while let Ok(Some(message)) = tokio::time::timeout(quiet, sniffer.next()).await {
        seen.insert((message.subject.to_string(), message.payload.to_vec()));
    }
    seen
}

/// The distinct JetStream API requests (subject and body) `host` makes for `query`
/// (a read resent while unanswered counts once), and how long the page took.
async fn requests_for(
    sniffer: &mut async_nats::Subscriber,
    host: &JetStreamHost,
    query: &SessionListQuery,
) -> (BTreeSet<(String, Vec<u8>)>, Duration) {
    drain(sniffer, Duration::from_millis(200)).await;
    let started = Instant::now();
    let page = host.list_sessions(query).await.expect("a page");
    let took = started.elapsed();
    assert_eq!(page.sessions.len(), query.effective_limit(), "a full page");
    (drain(sniffer, Duration::from_millis(500)).await, took)
}

async fn create_many(host: &JetStreamHost, count: usize) {
    futures::stream::iter(0..count)
        .for_each_concurrent(32, |_| async {
            host.create_session(SessionCreateRequest::root(None)).await.expect("create");
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_page_costs_the_same_whatever_the_number_of_sessions() {
    let server = common::server();
    let host = common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await;
    let sniffing = server.client().await.expect("connect");
    let mut sniffer = subscribe_confirmed(&sniffing, "$JS.API.>").await.expect("subscribe");
    create_many(&host, 30).await;
    let queries = [
        SessionListQuery::first(10),
        SessionListQuery { status: Some(SessionStatus::Open), ..SessionListQuery::first(10) },
    ];
    let mut small = Vec::new();
    for query in &queries {
        small.push(requests_for(&mut sniffer, &host, query).await);
    }
    create_many(&host, 1000).await;
    for (query, (before, took_before)) in queries.iter().zip(small) {
        let (after, took_after) = requests_for(&mut sniffer, &host, query).await;
        eprintln!("{query:?}: {} requests; {took_before:?} at 30 sessions, {took_after:?} at 1030", after.len());
        let text = |set: &BTreeSet<(String, Vec<u8>)>| -> Vec<String> {
            set.iter().map(|(s, b)| format!("{s} {}", String::from_utf8_lossy(b))).collect()
        };
        assert_eq!(
            after.len(),
            before.len(),
            "{query:?}: the same number of reads: {:?} / {:?}",
            text(&before),
            text(&after)
        );
        // The newest entry, one batch of 10 entries, 3 state reads for each listed session.
        assert_eq!(after.len(), 1 + 1 + 3 * 10, "{query:?}");
        let subjects: BTreeSet<&str> = after.iter().map(|(subject, _)| subject.as_str()).collect();
        assert_eq!(
            subjects,
            BTreeSet::from([
                "$JS.API.DIRECT.GET.SESSIONBUS_INDEX",
                "$JS.API.STREAM.MSG.GET.SESSIONBUS_INDEX",
                "$JS.API.STREAM.MSG.GET.SESSIONBUS_STATE"
            ]),
            "leader reads of single messages and one batch of entries: no consumer, no stream scan"
        );
        let batches = after.iter().filter(|(subject, _)| subject.starts_with("$JS.API.DIRECT.GET")).count();
        assert_eq!(batches, 1, "the page's entries in one batch");
    }
}

/// nats-server answers a read filtered by `>` in stream order, but a read filtered by a
/// wildcard such as `<prefix>.index.>` makes it match the wildcard against every subject
/// the stream holds: one per session (BENCHMARKS.md measures 0.47 ms against 11 ms at
/// 100,000 sessions for the newest entry, 2.4 ms against 17 ms for a batch of 50). The
/// index stream holds nothing but entries, so a page of every session reads it by `>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_all_sessions_reads_the_index_in_stream_order_without_matching_every_subject() {
    let server = common::server();
    let host = common::jetstream_host_on(&server, Arc::new(EchoExecutor)).await;
    let sniffing = server.client().await.expect("connect");
    let mut sniffer = subscribe_confirmed(&sniffing, "$JS.API.*.*.SESSIONBUS_INDEX").await.expect("subscribe");
    create_many(&host, 30).await;
    let (requests, _) = requests_for(&mut sniffer, &host, &SessionListQuery::first(10)).await;
    assert!(!requests.is_empty(), "the page read the index");
    for (subject, body) in &requests {
        let body: serde_json::Value = serde_json::from_slice(body).expect("a JSON request");
        for key in ["last_by_subj", "next_by_subj"] {
            if let Some(filter) = body.get(key) {
                assert_eq!(filter, ">", "{subject} {body}: every entry, in stream order");
            }
        }
    }
}
