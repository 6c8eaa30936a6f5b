//! The four-store lash benchmark (issue 13): one scripted lash workload, N sessions at
//! once x M turns each with a tool call, through a real `LashCore` built on each store's
//! factory: lash's in-memory store, lash-sqlite-store, lash-postgres-store (on a
//! PostgreSQL the bench starts and stops) and sessionbus's JetStream store (R1, and R3
//! on a 3-node cluster). Turns/s and commit p50/p99 per store, under each system's
//! defaults and under an fsync on every commit.
//!
//! A separate crate, outside the workspace's default members and out of
//! sessionbus-lash's features: the SQLite and PostgreSQL stores (bundled SQLite, sqlx)
//! are compiled only for it.

#![deny(missing_docs)]

pub mod error;
pub mod options;
pub mod postgres;
pub mod report;
pub mod stores;
pub mod timed;
pub mod workload;

use error::BenchError;
use report::{Measurement, Report, RoundFigures};
use stores::{Deployment, Durability, StoreKind, configuration};
use workload::{Runner, Workload};

/// The warm-up before a store's rounds (connections, schemas, caches): not measured.
const WARM_UP: Workload = Workload { sessions: 1, turns: 2 };

/// Runs `workload` `rounds` times on `store` under `durability` (after a warm-up), on a
/// deployment of its own that is stopped afterwards. A setting the store does not have
/// is reported as such, with no rounds.
pub async fn measure(
    store: StoreKind,
    durability: Durability,
    workload: Workload,
    rounds: usize,
) -> Result<Measurement, BenchError> {
    let configured = configuration(store, durability);
    let mut measurement = Measurement {
        store,
        durability,
        configuration: configured.unwrap_or_else(|why| why).to_owned(),
        rounds: Vec::new(),
        stream_writes_per_commit: None,
    };
    if configured.is_err() {
        return Ok(measurement);
    }
    let deployment = Deployment::start(store, durability).await?;
    let runner = Runner::new(store.name(), &deployment, workload.turns.max(WARM_UP.turns))?;
    runner.round("warm-up", WARM_UP).await?;
    let writes_before = deployment.stream_writes().await?;
    let mut commits = 0;
    for round in 0..rounds {
        let round = runner.round(&format!("round-{round}"), workload).await?;
        commits += round.commits.len();
        measurement.rounds.push(RoundFigures::of(&round));
    }
    if let (Some(before), Some(after)) = (writes_before, deployment.stream_writes().await?) {
        measurement.stream_writes_per_commit = Some(after.saturating_sub(before) as f64 / commits.max(1) as f64);
    }
    Ok(measurement)
}

/// Measures every store under every setting of `options`, settings outermost; `progress`
/// is told each measurement as it ends.
pub async fn run(options: &options::Options, mut progress: impl FnMut(&Measurement)) -> Result<Report, BenchError> {
    let mut measurements = Vec::new();
    for &durability in &options.settings {
        for &store in &options.stores {
            let measurement = measure(store, durability, options.workload, options.rounds).await?;
            progress(&measurement);
            measurements.push(measurement);
        }
    }
    Ok(Report::new(options.workload, options.rounds, measurements))
}
