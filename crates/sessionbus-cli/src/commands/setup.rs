//! `sessionbus setup`: creates or updates the JetStream layout (streams and buckets).
//!
//! The only command that needs the right to create and update streams; workers and
//! the exporter only check that the layout is there.

use std::time::{Duration, Instant};

use clap::Args;
use sessionbus_nats::Subjects;
use sessionbus_nats::jetstream::{
    INDEX_STREAM, LayoutConfig, SPANS_STREAM, STATE_STREAM, TOOLS_STREAM, TRACE_STREAM, ensure_layout,
};

use crate::connect::{CliError, ConnectionArgs};
use crate::output;

/// Options of the JetStream layout.
#[derive(Args, Debug, Clone)]
pub struct LayoutArgs {
    /// Replicas of the streams and buckets (1 on a single server, 3 in a cluster).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
}

/// Options of `setup`.
#[derive(Args, Debug, Clone)]
pub struct SetupArgs {
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// How long to retry while the cluster elects its JetStream leader.
    #[arg(long, default_value_t = 60)]
    pub wait_secs: u64,
}

/// Creates or updates the layout, retrying transient failures (a fresh cluster has no
/// JetStream leader for a moment) until `wait` has passed.
pub async fn setup_layout(
    client: &async_nats::Client,
    subjects: &Subjects,
    layout: &LayoutArgs,
    wait: Duration,
) -> Result<(), CliError> {
    let context = async_nats::jetstream::new(client.clone());
    let config = LayoutConfig::default().with_replicas(layout.replicas.max(1));
    let deadline = Instant::now() + wait;
    loop {
        match ensure_layout(&context, subjects, &config).await {
            Ok(()) => return Ok(()),
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(%error, "setup: waiting for JetStream");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => {
                return Err(CliError::Other(format!(
                    "setup failed: {error}. `sessionbus setup` needs a user allowed to create and update \
                     streams (the deploy/ `admin` user)"
                )));
            }
        }
    }
}

/// Runs `setup` and prints what it made.
pub async fn run(connection: &ConnectionArgs, args: SetupArgs) -> Result<(), CliError> {
    let client = connection.connect("sessionbus-setup").await?;
    let subjects = connection.subjects();
    setup_layout(&client, &subjects, &args.layout, Duration::from_secs(args.wait_secs)).await?;
    let mut table = output::table(["stream", "subjects", "replicas"]);
    for stream in [STATE_STREAM, INDEX_STREAM, TRACE_STREAM, TOOLS_STREAM, SPANS_STREAM] {
        table.add_row(vec![
            stream.to_owned(),
            stream_subjects(&client, stream).await,
            args.layout.replicas.to_string(),
        ]);
    }
    println!("sessionbus JetStream layout is ready\n{table}");
    Ok(())
}

async fn stream_subjects(client: &async_nats::Client, stream: &str) -> String {
    let context = async_nats::jetstream::new(client.clone());
    match context.get_stream(stream).await {
        Ok(mut handle) => match handle.info().await {
            Ok(info) => info.config.subjects.join(", "),
            Err(err) => format!("(info failed: {err})"),
        },
        Err(err) => format!("(missing: {err})"),
    }
}
