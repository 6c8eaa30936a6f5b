//! `sessionbus purge --closed-older-than AGE`: retention. Purges closed sessions whose
//! last write is older than AGE from every stream and the registry, in bounded batches
//! (run it as the deploy/ `admin` user, e.g. from a cron job).

use std::time::Duration;

use clap::Args;
use sessionbus_nats::jetstream::{PurgeConfig, purge_closed_sessions};

use crate::connect::{CliError, ConnectionArgs};
use crate::duration::parse_duration;

/// Options of `purge`.
#[derive(Args, Debug)]
pub struct PurgeArgs {
    /// Purge closed sessions whose last write is older than this (e.g. 30d, 12h).
    #[arg(long, value_parser = parse_duration)]
    pub closed_older_than: Duration,
    /// Sessions purged per batch.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Stop after this many batches (each batch examines a bounded part of the registry).
    #[arg(long, default_value_t = 1000)]
    pub max_batches: usize,
}

/// Purges batch after batch until no expired session is left (or `max_batches`).
pub async fn run(connection: &ConnectionArgs, args: PurgeArgs) -> Result<(), CliError> {
    let client = connection.connect("sessionbus-purge").await?;
    let subjects = connection.subjects();
    let config = PurgeConfig::default().with_closed_older_than(args.closed_older_than).with_batch(args.batch.max(1));
    let (mut purged, mut examined) = (0, 0);
    for _ in 0..args.max_batches {
        let report = purge_closed_sessions(&client, &subjects, &config).await?;
        purged += report.purged.len();
        examined += report.examined;
        if !report.more {
            println!("purged {purged} closed sessions ({examined} registry entries examined)");
            return Ok(());
        }
    }
    println!(
        "purged {purged} closed sessions ({examined} registry entries examined); stopped after {} batches, run again",
        args.max_batches
    );
    Ok(())
}
