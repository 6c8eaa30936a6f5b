//! The bench's workload, small, on the stores CI has (no PostgreSQL): it keeps the bench
//! from rotting. Each turn is checked inside the workload (the script's answer, two
//! model requests per turn: the tool call ran); here, that every round ran and its
//! commits went through the timed store.

use sessionbus_lash_bench::measure;
use sessionbus_lash_bench::report::Measurement;
use sessionbus_lash_bench::stores::{Durability, StoreKind};
use sessionbus_lash_bench::workload::Workload;

const WORKLOAD: Workload = Workload { sessions: 2, turns: 2 };

async fn assert_measured(store: StoreKind, durability: Durability) -> Measurement {
    let measurement = measure(store, durability, WORKLOAD, 1)
        .await
        .unwrap_or_else(|err| panic!("{store:?} under {durability:?}: {err}"));
    assert_eq!(measurement.rounds.len(), 1, "{measurement:?}");
    let round = &measurement.rounds[0];
    assert!(
        round.commits >= WORKLOAD.sessions * WORKLOAD.turns,
        "every turn commits at least once through the timed store: {round:?}"
    );
    assert!(round.turns_per_sec > 0.0 && round.commit_p50_ms > 0.0 && round.commit_p99_ms >= round.commit_p50_ms);
    measurement
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workload_runs_on_lash_s_in_memory_store() {
    let measurement = assert_measured(StoreKind::Memory, Durability::Defaults).await;
    assert_eq!(measurement.stream_writes_per_commit, None, "no JetStream behind it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workload_runs_on_the_jetstream_store_with_fsync_on_every_commit() {
    let measurement = assert_measured(StoreKind::JetstreamR1, Durability::Fsync).await;
    let writes = measurement.stream_writes_per_commit.expect("JetStream's writes are counted");
    assert!(writes >= 1.0, "every commit is at least one record in the store's log: {writes}");
}

#[tokio::test]
async fn a_setting_a_store_does_not_have_is_reported_without_running() {
    let measurement = measure(StoreKind::Sqlite, Durability::Fsync, WORKLOAD, 1).await.expect("no error");
    assert!(measurement.rounds.is_empty());
    assert!(measurement.configuration.contains("synchronous=NORMAL"), "{}", measurement.configuration);
}
