//! A turn that fails for good is answered once, as a permanent failure, and frees its
//! lease at once: an executor panic is a 500, a turn past the maximum duration is not
//! retried by the client, and the next turn of the session runs right away (not after
//! the lease's TTL).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sessionbus_api::{
    ErrorKind, PluginError, SessionLifecycleService as _, SessionTurnRequest, TurnContext, TurnExecutor, TurnInput,
    TurnOutput,
};
use sessionbus_nats::JetStreamHostConfig;

/// Panics on input "panic", sleeps 2 s on input "slow", echoes anything else; counts runs.
struct Failing {
    runs: AtomicUsize,
}

#[async_trait::async_trait]
impl TurnExecutor for Failing {
    async fn run(&self, context: TurnContext) -> Result<TurnOutput, PluginError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let text = serde_json::to_string(&context.turn.input).unwrap_or_default();
        if text.contains("panic") {
            panic!("the executor panicked on purpose");
        }
        if text.contains("slow") {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        sessionbus_api::EchoExecutor.run(context).await
    }
}

/// A bus whose turns may run 500 ms at most, with a 30 s lease: a lease kept by a
/// failed turn would hold the session for 30 s.
async fn bus() -> (common::Kept<sessionbus_nats::BusClient>, Arc<Failing>) {
    let executor = Arc::new(Failing { runs: AtomicUsize::new(0) });
    let server = common::server();
    let config = JetStreamHostConfig::default()
        .with_max_turn_duration(Duration::from_millis(500))
        .with_lease_ttl(Duration::from_secs(30));
    let host = Arc::new(common::jetstream_host_with(&server, executor.clone(), config).await);
    let worker = common::jetstream_worker_on(&server, host).await;
    let client = common::client_on(&server).await;
    (common::Kept { host: client, keep: Arc::new(common::BusParts { workers: vec![worker], server }) }, executor)
}

fn turn(session: &str, id: &str, text: &str) -> SessionTurnRequest {
    SessionTurnRequest::for_turn(session, id, TurnInput::text(text)).expect("turn")
}

/// The next turn of `session` runs at once, so the failed one freed the lease.
async fn next_turn_runs_at_once(bus: &sessionbus_nats::BusClient, session: &str) {
    let started = Instant::now();
    bus.start_turn(turn(session, "next", "hello")).await.expect("the next turn runs");
    assert!(started.elapsed() < Duration::from_secs(10), "the failed turn kept the lease ({:?})", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_panic_is_a_500_run_once_and_frees_the_lease() {
    let (bus, executor) = bus().await;
    let session = common::create_root(&bus.host).await;
    let error = bus.host.start_turn(turn(&session, "t1", "panic")).await.expect_err("a panicked turn fails");
    assert_eq!(error.kind(), ErrorKind::Session, "a permanent failure (500), not retryable: {error:?}");
    assert!(error.message().contains("panicked"), "the error says what happened: {error}");
    assert_eq!(executor.runs.load(Ordering::SeqCst), 1, "the client did not retry a permanent failure");
    next_turn_runs_at_once(&bus.host, &session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_past_its_maximum_duration_is_not_retried_and_frees_the_lease() {
    let (bus, executor) = bus().await;
    let session = common::create_root(&bus.host).await;
    let error = bus.host.start_turn(turn(&session, "t1", "slow")).await.expect_err("stopped at the maximum");
    assert_ne!(error.kind(), ErrorKind::Unavailable, "a turn that always runs too long is no transient failure");
    assert!(error.message().contains("maximum"), "the error says what happened: {error}");
    assert_eq!(executor.runs.load(Ordering::SeqCst), 1, "the client did not retry a permanent failure");
    next_turn_runs_at_once(&bus.host, &session).await;
}
