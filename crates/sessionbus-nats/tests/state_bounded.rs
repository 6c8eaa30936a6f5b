//! The state stream stays bounded under long turns: a running turn renews its lease
//! every few seconds for as long as it runs, and only the latest lease record (and the
//! latest record of each turn's ledger) is kept.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sessionbus_api::{SessionLifecycleService as _, SessionTurnRequest, TurnInput};
use sessionbus_nats::subjects::session_token;
use sessionbus_nats::{JetStreamHostConfig, STATE_STREAM};

/// Messages stored per subject of one session in the state stream.
async fn messages_per_subject(client: &async_nats::Client, session: &str) -> std::collections::HashMap<String, u64> {
    let token = session_token(session).expect("token");
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream(STATE_STREAM).await.expect("state stream");
    let info = stream.info_with_subjects(format!("sessionbus.v1.state.{token}.>")).await.expect("info");
    let mut subjects = std::collections::HashMap::new();
    let mut info = info;
    while let Some(entry) = futures::StreamExt::next(&mut info).await {
        let (subject, count) = entry.expect("subject count");
        subjects.insert(
            subject.rsplit_once(&format!("{token}.")).map_or(subject.clone(), |(_, s)| s.to_owned()),
            count as u64,
        );
    }
    subjects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_renewals_and_many_turns_keep_the_state_stream_bounded() {
    let server = common::server();
    // 120 renewals in about 6 s stand in for a 10-minute turn renewed every 5 s.
    let config = JetStreamHostConfig::default()
        .with_lease_ttl(Duration::from_secs(2))
        .with_lease_renew_every(Duration::from_millis(50));
    let long = Arc::new(common::SlowExecutor(Duration::from_millis(120 * 50 + 200)));
    let host = common::jetstream_host_with(&server, long, config).await;
    let session = common::create_root(&host).await;
    let turn = SessionTurnRequest::for_turn(&session, "long", TurnInput::text("a long turn")).expect("turn");
    host.start_turn(turn).await.expect("the long turn");
    let client = server.client().await.expect("connect");
    let after_long = messages_per_subject(&client, &session).await;
    assert_eq!(after_long.get("lease"), Some(&1), "only the latest lease record is kept: {after_long:?}");
    assert_eq!(after_long.get("turn.long"), Some(&1), "only the latest ledger record is kept: {after_long:?}");

    let fast =
        common::jetstream_host_with(&server, Arc::new(sessionbus_api::EchoExecutor), JetStreamHostConfig::default())
            .await;
    let session = common::create_root(&fast).await;
    for index in 0..1000 {
        let turn = SessionTurnRequest::for_turn(&session, format!("t{index}"), TurnInput::text("hi")).expect("turn");
        fast.start_turn(turn).await.expect("turn");
    }
    let after_turns = messages_per_subject(&client, &session).await;
    let total: u64 = after_turns.values().sum();
    assert_eq!(after_turns.get("lease"), Some(&1), "{after_turns:?}");
    assert_eq!(after_turns.get("meta"), Some(&1));
    assert!(
        after_turns.iter().filter(|(s, _)| s.starts_with("turn.")).all(|(_, n)| *n == 1),
        "one ledger record per turn"
    );
    // meta + lease + one ledger record per turn + the graph (one record per turn, the
    // session's history, kept on purpose).
    assert_eq!(total, 1 + 1 + 1000 + after_turns.get("graph").copied().unwrap_or(0));
    let report = json!({
        "after_120_renewals": after_long,
        "after_1000_turns": { "total": total, "graph": after_turns.get("graph"), "lease": after_turns.get("lease") },
    });
    println!("state stream messages per session: {report}");
}
