//! The command line.

use std::path::PathBuf;

use crate::error::BenchError;
use crate::stores::{Durability, StoreKind};
use crate::workload::Workload;

/// The help text.
pub const HELP: &str = "\
lash-store-bench: one scripted lash workload (N sessions at once x M turns, each turn a tool
call) through LashCore on lash's in-memory, SQLite and PostgreSQL stores and on the JetStream
store, under each system's defaults and under fsync on every commit.

OPTIONS
  --sessions N       sessions run at once (default 8)
  --turns M          turns per session (default 10)
  --rounds R         rounds per store and setting; the table shows medians (default 3)
  --stores LIST      comma-separated: memory, sqlite, postgres, jetstream (R1), jetstream-r3
                     (default memory,sqlite,postgres,jetstream)
  --cluster          also run jetstream-r3 (a 3-node cluster the bench starts)
  --settings LIST    comma-separated: defaults, fsync (default both)
  --out FILE         also write the figures as JSON to FILE

NATS_SERVER_BIN names nats-server; PostgreSQL comes from /usr/lib/postgresql/<v>/bin (or PG_BIN):
scripts/install-postgresql installs it.";

/// What to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Each round's work.
    pub workload: Workload,
    /// Rounds per store and setting.
    pub rounds: usize,
    /// The stores, in the order given.
    pub stores: Vec<StoreKind>,
    /// The settings, in the order given.
    pub settings: Vec<Durability>,
    /// Where to write the JSON.
    pub out: Option<PathBuf>,
    /// `--help` was asked for.
    pub help: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            workload: Workload { sessions: 8, turns: 10 },
            rounds: 3,
            stores: vec![StoreKind::Memory, StoreKind::Sqlite, StoreKind::Postgres, StoreKind::JetstreamR1],
            settings: Durability::ALL.to_vec(),
            out: None,
            help: false,
        }
    }
}

impl Options {
    /// Parses the arguments (without the program's name).
    pub fn parse(args: &[String]) -> Result<Self, BenchError> {
        let mut options = Self::default();
        let mut cluster = false;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| BenchError::Usage(format!("{arg} needs a value")));
            match arg.as_str() {
                "--sessions" => options.workload.sessions = count(arg, value()?)?,
                "--turns" => options.workload.turns = count(arg, value()?)?,
                "--rounds" => options.rounds = count(arg, value()?)?,
                "--stores" => options.stores = list(arg, value()?, StoreKind::parse)?,
                "--settings" => options.settings = list(arg, value()?, Durability::parse)?,
                "--out" => options.out = Some(PathBuf::from(value()?)),
                "--cluster" => cluster = true,
                "--help" | "-h" => options.help = true,
                other => return Err(BenchError::Usage(format!("unknown argument `{other}`"))),
            }
        }
        if cluster && !options.stores.contains(&StoreKind::JetstreamR3) {
            options.stores.push(StoreKind::JetstreamR3);
        }
        Ok(options)
    }
}

fn count(arg: &str, value: &str) -> Result<usize, BenchError> {
    match value.parse() {
        Ok(0) | Err(_) => Err(BenchError::Usage(format!("{arg} takes a whole number of at least 1, not `{value}`"))),
        Ok(count) => Ok(count),
    }
}

fn list<T: PartialEq>(arg: &str, value: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, BenchError> {
    let mut items = Vec::new();
    for name in value.split(',').map(str::trim).filter(|name| !name.is_empty()) {
        let item = parse(name).ok_or_else(|| BenchError::Usage(format!("{arg}: unknown `{name}`")))?;
        if !items.contains(&item) {
            items.push(item);
        }
    }
    if items.is_empty() {
        return Err(BenchError::Usage(format!("{arg} needs at least one name")));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, BenchError> {
        Options::parse(&args.iter().map(|arg| arg.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn the_command_line_picks_the_workload_stores_and_settings() {
        let default = Options::default();
        let table: Vec<(&[&str], Options)> = vec![
            (&[], default.clone()),
            (
                &["--sessions", "2", "--turns", "3", "--rounds", "1"],
                Options { workload: Workload { sessions: 2, turns: 3 }, rounds: 1, ..default.clone() },
            ),
            (
                &["--stores", "memory,jetstream", "--settings", "fsync"],
                Options {
                    stores: vec![StoreKind::Memory, StoreKind::JetstreamR1],
                    settings: vec![Durability::Fsync],
                    ..default.clone()
                },
            ),
            (
                &["--cluster"],
                Options {
                    stores: vec![
                        StoreKind::Memory,
                        StoreKind::Sqlite,
                        StoreKind::Postgres,
                        StoreKind::JetstreamR1,
                        StoreKind::JetstreamR3,
                    ],
                    ..default.clone()
                },
            ),
            (&["--out", "x.json"], Options { out: Some("x.json".into()), ..default.clone() }),
            (&["--help"], Options { help: true, ..default.clone() }),
        ];
        for (args, expected) in table {
            assert_eq!(parse(args).expect("parses"), expected, "{args:?}");
        }
    }

    #[test]
    fn a_wrong_command_line_is_refused_with_what_is_wrong() {
        let table: [(&[&str], &str); 6] = [
            (&["--sessions"], "--sessions needs a value"),
            (&["--sessions", "0"], "at least 1"),
            (&["--turns", "many"], "not `many`"),
            (&["--stores", "redis"], "unknown `redis`"),
            (&["--settings", ","], "at least one name"),
            (&["--fast"], "unknown argument `--fast`"),
        ];
        for (args, message) in table {
            let err = parse(args).expect_err("refused");
            assert_eq!(err.kind(), "usage");
            assert!(err.to_string().contains(message), "{args:?}: {err}");
        }
    }
}
