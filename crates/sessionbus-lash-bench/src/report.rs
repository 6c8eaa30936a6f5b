//! Figures: each round's turns/s and commit p50/p99, the median over rounds per store
//! and setting, the table, and the JSON written with `--out`.

use std::time::Duration;

use crate::stores::{Durability, StoreKind};
use crate::workload::{Round, Workload};

/// The `p`-quantile (0..=1) of ascending `sorted` by nearest rank; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of `values` (the lower middle one of an even count); zero when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len().saturating_sub(1) / 2).copied().unwrap_or(0.0)
}

/// One round's figures.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RoundFigures {
    /// Turns completed per second of wall time.
    pub turns_per_sec: f64,
    /// Commits of the round.
    pub commits: usize,
    /// Median commit latency, ms.
    pub commit_p50_ms: f64,
    /// 99th-percentile commit latency, ms.
    pub commit_p99_ms: f64,
}

impl RoundFigures {
    /// The figures of `round`.
    pub fn of(round: &Round) -> Self {
        let mut commits = round.commits.clone();
        commits.sort();
        let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
        Self {
            turns_per_sec: round.turns as f64 / round.elapsed.as_secs_f64().max(f64::EPSILON),
            commits: commits.len(),
            commit_p50_ms: ms(percentile(&commits, 0.50)),
            commit_p99_ms: ms(percentile(&commits, 0.99)),
        }
    }
}

/// One store under one setting: what it ran with and its rounds, or why it did not run.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Measurement {
    /// The store.
    pub store: StoreKind,
    /// The setting.
    pub durability: Durability,
    /// What the store ran with, or why the setting does not exist for it.
    pub configuration: String,
    /// Each round's figures (empty when it did not run).
    pub rounds: Vec<RoundFigures>,
    /// For the JetStream store: messages written to its streams per commit, over all
    /// rounds (log records, checkpoint blobs' chunks and metadata, KV entries).
    pub stream_writes_per_commit: Option<f64>,
}

impl Measurement {
    /// The median of `figure` over the rounds.
    fn median_of(&self, figure: impl Fn(&RoundFigures) -> f64) -> Option<f64> {
        let values: Vec<f64> = self.rounds.iter().map(figure).collect();
        (!values.is_empty()).then(|| median(&values))
    }

    /// The medians over rounds: turns/s, commit p50 ms, commit p99 ms, commits per turn.
    pub fn medians(&self, workload: Workload) -> Option<Medians> {
        let turns = (workload.sessions * workload.turns).max(1) as f64;
        Some(Medians {
            turns_per_sec: self.median_of(|round| round.turns_per_sec)?,
            commit_p50_ms: self.median_of(|round| round.commit_p50_ms)?,
            commit_p99_ms: self.median_of(|round| round.commit_p99_ms)?,
            commits_per_turn: self.median_of(|round| round.commits as f64 / turns)?,
        })
    }
}

/// Medians over a measurement's rounds.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Medians {
    /// Turns per second.
    pub turns_per_sec: f64,
    /// Commit p50, ms.
    pub commit_p50_ms: f64,
    /// Commit p99, ms.
    pub commit_p99_ms: f64,
    /// Commits per turn.
    pub commits_per_turn: f64,
}

/// The whole run, as `--out` writes it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// The workload of each round.
    pub workload: Workload,
    /// Rounds per store and setting.
    pub rounds: usize,
    /// Every store under every setting asked for.
    pub measurements: Vec<MeasurementReport>,
}

/// A measurement with its medians, for the JSON.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MeasurementReport {
    /// The measurement.
    #[serde(flatten)]
    pub measurement: Measurement,
    /// Its medians (absent when it did not run).
    pub median: Option<Medians>,
}

impl Report {
    /// The report of `measurements`.
    pub fn new(workload: Workload, rounds: usize, measurements: Vec<Measurement>) -> Self {
        let measurements = measurements
            .into_iter()
            .map(|measurement| MeasurementReport { median: measurement.medians(workload), measurement })
            .collect();
        Self { workload, rounds, measurements }
    }

    /// The table: one line per store and setting, medians over rounds.
    pub fn table(&self) -> String {
        let mut text = format!(
            "{} sessions x {} turns (each a tool call), {} round(s); medians over rounds\n",
            self.workload.sessions, self.workload.turns, self.rounds
        );
        text.push_str(&format!(
            "{:<9} {:<13} {:>8} {:>12} {:>12} {:>13} {:>14}  {}\n",
            "setting", "store", "turns/s", "commit p50", "commit p99", "commits/turn", "writes/commit", "configuration"
        ));
        for entry in &self.measurements {
            let measurement = &entry.measurement;
            let (setting, store) = (measurement.durability.name(), measurement.store.name());
            let writes = measurement.stream_writes_per_commit.map(|writes| format!("{writes:.1}")).unwrap_or_default();
            match entry.median {
                Some(median) => text.push_str(&format!(
                    "{setting:<9} {store:<13} {:>8.1} {:>9.2} ms {:>9.2} ms {:>13.1} {writes:>14}  {}\n",
                    median.turns_per_sec,
                    median.commit_p50_ms,
                    median.commit_p99_ms,
                    median.commits_per_turn,
                    measurement.configuration
                )),
                None => text.push_str(&format!(
                    "{setting:<9} {store:<13} {:>8} {:>12} {:>12} {:>13} {:>14}  {}\n",
                    "n/a", "", "", "", "", measurement.configuration
                )),
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|value| Duration::from_millis(*value)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank_over_the_sorted_latencies() {
        let hundred: Vec<u64> = (1..=100).collect();
        let table: [(&[u64], f64, u64); 7] = [
            (&[], 0.5, 0),
            (&[7], 0.5, 7),
            (&[7], 0.99, 7),
            (&[1, 2, 3, 4], 0.5, 2),
            (&[1, 2, 3, 4], 0.99, 4),
            (&hundred, 0.5, 50),
            (&hundred, 0.99, 99),
        ];
        for (values, p, expected) in table {
            assert_eq!(percentile(&ms(values), p), Duration::from_millis(expected), "p{p} of {values:?}");
        }
    }

    #[test]
    fn the_median_of_rounds_is_the_middle_one_whatever_their_order() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[9.0, 1.0, 5.0]), 5.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.0);
    }

    #[test]
    fn a_store_that_did_not_run_has_no_medians_and_says_why_in_the_table() {
        let workload = Workload { sessions: 2, turns: 3 };
        let ran = Measurement {
            store: StoreKind::Memory,
            durability: Durability::Defaults,
            configuration: "in memory".into(),
            rounds: vec![
                RoundFigures { turns_per_sec: 10.0, commits: 12, commit_p50_ms: 1.0, commit_p99_ms: 2.0 },
                RoundFigures { turns_per_sec: 30.0, commits: 12, commit_p50_ms: 3.0, commit_p99_ms: 4.0 },
                RoundFigures { turns_per_sec: 20.0, commits: 12, commit_p50_ms: 2.0, commit_p99_ms: 9.0 },
            ],
            stream_writes_per_commit: Some(2.5),
        };
        let skipped = Measurement {
            store: StoreKind::Sqlite,
            durability: Durability::Fsync,
            configuration: "no such setting".into(),
            rounds: Vec::new(),
            stream_writes_per_commit: None,
        };
        let report = Report::new(workload, 3, vec![ran, skipped]);
        let median = report.measurements[0].median.expect("medians");
        assert_eq!(
            median,
            Medians { turns_per_sec: 20.0, commit_p50_ms: 2.0, commit_p99_ms: 4.0, commits_per_turn: 2.0 }
        );
        assert_eq!(report.measurements[1].median, None);
        let table = report.table();
        assert!(table.contains("sqlite") && table.contains("n/a") && table.contains("no such setting"), "{table}");
        assert!(table.lines().any(|line| line.starts_with("defaults  memory") && line.contains(" 2.5 ")), "{table}");
    }
}
