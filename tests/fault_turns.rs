//! Every acknowledged turn is counted: turns with distinct ids raced on one session
//! through two worker processes, each caller retrying until its turn is acknowledged,
//! and a close racing the last commits. The session's `turn_index` equals the number
//! of acknowledged turns and its token totals equal the sum of their usage: token
//! usage is what people bill on.

mod support;

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::json;
use sessionbus_api::{
    PluginError, SessionCreateRequest, SessionLifecycleService as _, SessionStateService as _, SessionTurnRequest,
    TokenUsage, TurnInput,
};
use sessionbus_nats::BusClientConfig;
use sessionbus_testkit::NatsServer;

/// Turns raced on one session.
const TURNS: usize = 60;

/// Runs turn `index` until it is acknowledged, retrying refusals (another turn holds
/// the session's lease); returns its usage.
async fn acknowledged_turn(bus: &sessionbus_nats::BusClient, session: &str, index: usize) -> TokenUsage {
    // Inputs of different lengths, so a lost increment of one turn cannot be hidden
    // by another's identical usage.
    let words = vec!["word"; 1 + index % 7].join(" ");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let turn = SessionTurnRequest::for_turn(session, format!("t{index}"), TurnInput::text(words.clone()))
            .expect("a valid turn");
        match bus.start_turn(turn).await {
            Ok(result) => return result.token_usage,
            Err(err @ (PluginError::Conflict(_) | PluginError::Unavailable(_))) => {
                assert!(Instant::now() < deadline, "turn t{index} never went through: {err}");
                tokio::time::sleep(Duration::from_millis(5 + (index as u64 * 7) % 30)).await;
            }
            Err(err) => panic!("turn t{index}: {err}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_turns_count_every_acknowledged_turn_and_token() {
    let server = NatsServer::start().expect("nats-server");
    let _first = support::worker(&server.url(), &[]).await;
    let _second = support::worker(&server.url(), &[]).await;
    let buses = [
        support::bus(&server.url(), BusClientConfig::default()).await,
        support::bus(&server.url(), BusClientConfig::default()).await,
    ];
    let session = support::new_id();
    buses[0].create_session(SessionCreateRequest::root(Some(session.clone()))).await.expect("create");

    let usages = join_all((0..TURNS).map(|index| acknowledged_turn(&buses[index % 2], &session, index))).await;
    let mut expected = TokenUsage::default();
    for usage in &usages {
        expected.add(usage);
    }
    let snapshot = buses[0].snapshot_session(&session).await.expect("snapshot");
    support::report(
        "racing_turns",
        json!({
            "turns_acknowledged": TURNS,
            "turn_index": snapshot.turn_index,
            "input_tokens": [snapshot.token_usage.input_tokens, expected.input_tokens],
            "output_tokens": [snapshot.token_usage.output_tokens, expected.output_tokens],
        }),
    );
    assert_eq!(snapshot.turn_index, TURNS as u64, "turn_index counts every acknowledged turn");
    assert_eq!(snapshot.token_usage, expected, "token totals are the sum of every acknowledged turn's usage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_racing_commits_loses_no_turn() {
    let server = NatsServer::start().expect("nats-server");
    let _first = support::worker(&server.url(), &[]).await;
    let _second = support::worker(&server.url(), &[]).await;
    let bus = support::bus(&server.url(), BusClientConfig::default()).await;
    let closer = support::bus(&server.url(), BusClientConfig::default()).await;
    for round in 0..10 {
        let session = support::new_id();
        bus.create_session(SessionCreateRequest::root(Some(session.clone()))).await.expect("create");
        let turns = (0..4).map(|index| {
            let (bus, session) = (&bus, session.clone());
            async move {
                let turn = SessionTurnRequest::for_turn(&session, format!("t{index}"), TurnInput::text("a b c"))
                    .expect("turn");
                bus.start_turn(turn).await.ok().map(|result| result.token_usage)
            }
        });
        let close = async {
            loop {
                match closer.close_session(&session).await {
                    Ok(()) => return,
                    Err(PluginError::Conflict(_)) => tokio::time::sleep(Duration::from_millis(2)).await,
                    Err(err) => panic!("close: {err}"),
                }
            }
        };
        let (usages, ()) = tokio::join!(join_all(turns), close);
        let acknowledged: Vec<TokenUsage> = usages.into_iter().flatten().collect();
        let mut expected = TokenUsage::default();
        for usage in &acknowledged {
            expected.add(usage);
        }
        let snapshot = bus.snapshot_session(&session).await.expect("snapshot");
        assert_eq!(snapshot.turn_index, acknowledged.len() as u64, "round {round}: turns counted");
        assert_eq!(snapshot.token_usage, expected, "round {round}: tokens counted");
    }
}

/// A turn that runs for minutes, the normal case for agents.
const LONG_TURN_MS: &str = "70000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_caller_of_a_running_turn_waits_for_it_and_gets_the_same_result() {
    let server = NatsServer::start().expect("nats-server");
    let slow = ["--executor", "slow", "--turn-delay-ms", LONG_TURN_MS];
    let _first = support::worker(&server.url(), &slow).await;
    let _second = support::worker(&server.url(), &slow).await;
    // Two callers in two processes' worth of connections: the second is a retry after
    // a timeout, or another process asking for the same turn.
    let first_caller = support::bus(&server.url(), BusClientConfig::default()).await;
    let second_caller = support::bus(&server.url(), BusClientConfig::default()).await;
    let session = support::new_id();
    first_caller.create_session(SessionCreateRequest::root(Some(session.clone()))).await.expect("create");
    let turn = || SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("a long task")).expect("turn");
    let started = Instant::now();
    let first = first_caller.start_turn(turn());
    let second = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Through BusClient, whose idle timeout is 10 s: it completes only if progress
        // messages keep arriving for the whole wait.
        second_caller.start_turn(turn()).await
    };
    let (first, second) = tokio::join!(first, second);
    let took = started.elapsed();
    let first = first.expect("the first caller's turn");
    let second = second.expect("the second caller waits for the running turn instead of a 409");
    assert_eq!(first, second, "both callers receive the same AssembledTurn");
    let snapshot = first_caller.snapshot_session(&session).await.expect("snapshot");
    assert_eq!(snapshot.turn_index, 1, "the turn ran and committed once");
    support::report("attached_caller", json!({ "turn_ms": LONG_TURN_MS, "both_answered_after_s": took.as_secs_f64() }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_clock_runs_a_minute_ahead_takes_over_no_live_turn() {
    let server = NatsServer::start().expect("nats-server");
    let slow = ["--executor", "slow", "--turn-delay-ms", "8000"];
    let _honest = support::worker(&server.url(), &slow).await;
    let bus = support::bus(&server.url(), BusClientConfig::default()).await;
    let session = support::new_id();
    bus.create_session(SessionCreateRequest::root(Some(session.clone()))).await.expect("create");
    let mut events = bus.events(&session).await.expect("events");
    let running = {
        let bus = bus.clone();
        let turn = SessionTurnRequest::for_turn(&session, "t1", TurnInput::text("long")).expect("turn");
        tokio::spawn(async move { bus.start_turn(turn).await })
    };
    // The honest worker holds the lease once its lease event is out.
    let lease_taken = async {
        while let Some(event) = futures::StreamExt::next(&mut events).await {
            if event.kind == sessionbus_nats::EventKind::Lease {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), lease_taken).await.expect("the turn takes its lease");
    // A second worker whose wall clock is 60 s ahead: by its clock, the lease expired.
    let mut skewed = slow.to_vec();
    skewed.extend(["--clock-skew-ms", "60000"]);
    let _skewed = support::worker(&server.url(), &skewed).await;
    let mut refused = 0;
    for attempt in 0..12 {
        match bus.close_session(&session).await {
            Err(PluginError::Conflict(_)) => refused += 1,
            other => panic!("close attempt {attempt} while the turn runs: {other:?}"),
        }
        let other =
            SessionTurnRequest::for_turn(&session, format!("other{attempt}"), TurnInput::text("x")).expect("turn");
        match bus.start_turn(other).await {
            Err(PluginError::Conflict(_)) => refused += 1,
            other => panic!("another turn while t1 runs: {other:?}"),
        }
    }
    let result = running.await.expect("join").expect("the live turn commits: nobody took it over");
    assert_eq!(result.state.turn_index, 1);
    let snapshot = bus.snapshot_session(&session).await.expect("snapshot");
    assert_eq!(snapshot.turn_index, 1, "one turn, committed once");
    support::report("clock_skew", json!({ "skew_s": 60, "refusals_while_the_turn_ran": refused }));
}
