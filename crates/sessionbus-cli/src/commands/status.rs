//! `sessionbus status`: the workers on the bus, found through `$SRV.INFO` / `$SRV.STATS`.

use std::time::Duration;

use clap::Args;
use sessionbus_nats::worker::{ServiceQuery, service_answers};
use sessionbus_nats::{BusClient, BusClientConfig};

use crate::connect::{CliError, ConnectionArgs};
use crate::output;

/// Options of `status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Readiness probe: exit 0 when a worker answers `<prefix>.ping`, print nothing else.
    #[arg(long)]
    pub ping: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How long to collect answers, in milliseconds.
    #[arg(long, default_value_t = 750)]
    pub wait_ms: u64,
}

/// Prints the workers and their per-endpoint statistics.
pub async fn run(connection: &ConnectionArgs, args: StatusArgs) -> Result<(), CliError> {
    let nats = connection.connect("sessionbus-status").await?;
    if args.ping {
        let client =
            BusClient::new(nats, BusClientConfig::default().with_subjects(connection.subjects()).with_attempts(1));
        let reply = client.ping().await?;
        println!("ready: worker {} (sessionbus {})", reply.worker_id, reply.version);
        return Ok(());
    }
    let wait = Duration::from_millis(args.wait_ms);
    let stats = service_answers(&nats, ServiceQuery::Stats, wait).await?;
    if stats.is_empty() {
        return Err(CliError::Other(format!(
            "no sessionbus worker answered {}: start one with `sessionbus worker` (or `sessionbus up`)",
            ServiceQuery::Stats.subject()
        )));
    }
    let infos = service_answers(&nats, ServiceQuery::Info, wait).await?;
    if args.json {
        println!("{}", serde_json::json!({"stats": stats, "info": infos}));
        return Ok(());
    }
    let worker_of = |id: &str| {
        infos
            .iter()
            .find(|info| info["id"] == id)
            .and_then(|info| info["metadata"]["worker_id"].as_str())
            .unwrap_or(id)
            .to_owned()
    };
    let mut table = output::table(["worker", "version", "endpoint", "requests", "errors", "refused replies", "avg ms"]);
    let (mut requests, mut errors, mut refused) = (0u64, 0u64, 0u64);
    for worker in &stats {
        let id = worker["id"].as_str().unwrap_or("?");
        let name = worker_of(id);
        let short: String = name.chars().take(8).collect();
        for endpoint in worker["endpoints"].as_array().into_iter().flatten() {
            let count = endpoint["num_requests"].as_u64().unwrap_or(0);
            let failed =
                endpoint["num_errors"].as_u64().unwrap_or(0) + endpoint["data"]["errors"].as_u64().unwrap_or(0);
            let dropped = endpoint["data"]["refused_replies"].as_u64().unwrap_or(0);
            requests += count;
            errors += failed;
            refused += dropped;
            let average_ms = endpoint["average_processing_time"].as_u64().unwrap_or(0) as f64 / 1e6;
            table.add_row(vec![
                short.clone(),
                worker["version"].as_str().unwrap_or("?").to_owned(),
                endpoint["name"].as_str().unwrap_or("?").to_owned(),
                count.to_string(),
                failed.to_string(),
                dropped.to_string(),
                format!("{average_ms:.3}"),
            ]);
        }
    }
    println!("{table}");
    println!(
        "{} workers, {requests} requests, {errors} errors, {refused} dropped for a reply subject outside the inbox prefixes",
        stats.len()
    );
    Ok(())
}
