//! Figures of the JetStream lash store on a nats-server this example starts: commit
//! latency (p50/p99) of one writer, and the time a new process takes to open a store of
//! that many records (its first read replays the whole log).
//!
//! `NATS_SERVER_BIN=... cargo run -p sessionbus-lash --example store_bench --release -- 1000`

use std::sync::Arc;
use std::time::{Duration, Instant};

use lash_core::{RuntimeCommit, RuntimeSessionState, SessionCommitStore as _, SessionReadScope};
use sessionbus_lash::store::{JetStreamStore, StoreBackend, StoreBackendConfig, ensure_store_layout};
use sessionbus_testkit::NatsServer;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let commits: u64 = std::env::args().nth(1).map(|n| n.parse()).transpose()?.unwrap_or(1000);
    let server = NatsServer::start()?;
    let client = async_nats::connect(server.url()).await?;
    let context = async_nats::jetstream::new(client);
    ensure_store_layout(&context, &sessionbus_nats::Subjects::default(), 1).await?;
    let clock: Arc<dyn lash_core::Clock> = Arc::new(lash_core::SystemClock);

    let store =
        JetStreamStore::open(StoreBackend::connect(StoreBackendConfig::new(server.url()))?, "bench", clock.clone())?;
    let mut latencies = Vec::new();
    let mut head = None;
    for turn in 0..commits {
        let state = RuntimeSessionState {
            session_id: "bench".into(),
            head_revision: head,
            turn_index: turn as usize,
            ..RuntimeSessionState::default()
        };
        let started = Instant::now();
        let result = store.commit_runtime_state(RuntimeCommit::persisted_state(&state, &[])).await?;
        latencies.push(started.elapsed());
        head = Some(result.head_revision);
    }
    latencies.sort();
    let total: Duration = latencies.iter().sum();
    println!(
        "{commits} commits, one writer, R1: p50 {:?}, p99 {:?}, {:.0} commits/s",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        commits as f64 / total.as_secs_f64()
    );

    let reopened = JetStreamStore::open(StoreBackend::connect(StoreBackendConfig::new(server.url()))?, "bench", clock)?;
    let started = Instant::now();
    let read = reopened.load_session(SessionReadScope::FullGraph).await?.ok_or("the session is missing")?;
    println!(
        "a new process opens it (replays {commits} records) in {:?}, head {}",
        started.elapsed(),
        read.head_revision
    );
    Ok(())
}
