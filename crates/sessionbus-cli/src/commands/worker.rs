//! `sessionbus worker`: a worker (JetStream host + executor) against NATS_URL.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use sessionbus_api::{EchoExecutor, PluginError, TurnContext, TurnExecutor, TurnOutput};
use sessionbus_nats::jetstream::LayoutConfig;
use sessionbus_nats::{JetStreamHost, JetStreamHostConfig, Subjects, Worker, WorkerConfig};

use crate::connect::{CliError, ConnectionArgs};

/// The agent logic a worker runs turns with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExecutorKind {
    /// Deterministic: echoes the input as the assistant's reply.
    Echo,
    /// Like echo, after sleeping `--turn-delay-ms` (for trying out long turns and failures).
    Slow,
}

/// Options of a worker.
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// Fast operations (everything but turns) served at once; more are answered 503.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Turns run at once; more are answered 503.
    #[arg(long, default_value_t = 32)]
    pub turns: usize,
    /// Replicas of the streams and bucket (1 on a single server, 3 in a cluster).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// The turn executor.
    #[arg(long, value_enum, default_value_t = ExecutorKind::Echo)]
    pub executor: ExecutorKind,
    /// Delay of the `slow` executor, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub turn_delay_ms: u64,
    /// Lease TTL of a running turn, in seconds.
    #[arg(long, default_value_t = 30)]
    pub lease_ttl_secs: u64,
    /// How often a running turn's lease is renewed, in milliseconds (default: a sixth of
    /// the lease TTL, at least 200 ms).
    #[arg(long)]
    pub lease_renew_ms: Option<u64>,
}

struct SlowExecutor(Duration);

#[async_trait::async_trait]
impl TurnExecutor for SlowExecutor {
    async fn run(&self, context: TurnContext) -> Result<TurnOutput, PluginError> {
        tokio::time::sleep(self.0).await;
        EchoExecutor.run(context).await
    }
}

/// Starts a JetStream host and a worker serving it on `client`.
pub async fn start_worker(
    client: async_nats::Client,
    args: &WorkerArgs,
    subjects: Subjects,
) -> Result<(Worker, JetStreamHost), CliError> {
    let executor: Arc<dyn TurnExecutor> = match args.executor {
        ExecutorKind::Echo => Arc::new(EchoExecutor),
        ExecutorKind::Slow => Arc::new(SlowExecutor(Duration::from_millis(args.turn_delay_ms))),
    };
    let lease_ttl = Duration::from_secs(args.lease_ttl_secs.max(1));
    let host_config = JetStreamHostConfig {
        subjects: subjects.clone(),
        layout: LayoutConfig { replicas: args.replicas, ..LayoutConfig::default() },
        lease_ttl,
        lease_renew_every: args
            .lease_renew_ms
            .map_or((lease_ttl / 6).max(Duration::from_millis(200)), |ms| Duration::from_millis(ms.max(1))),
        ..JetStreamHostConfig::default()
    };
    let host = JetStreamHost::connect(client.clone(), executor, host_config).await?;
    let worker_config = WorkerConfig {
        subjects,
        max_fast_in_flight: args.concurrency.max(1),
        max_turns_in_flight: args.turns.max(1),
        tool_events: true,
        ..WorkerConfig::default()
    };
    let worker = Worker::start(client, Arc::new(host.clone()), worker_config).await?;
    Ok((worker, host))
}

/// Runs a worker until Ctrl-C / SIGTERM, then drains it.
pub async fn run(connection: &ConnectionArgs, args: WorkerArgs) -> Result<(), CliError> {
    let client = connection.connect("sessionbus-worker").await?;
    let (worker, _host) = start_worker(client, &args, connection.subjects()).await?;
    tracing::info!(worker_id = worker.id(), prefix = connection.prefix, "worker ready");
    println!("sessionbus worker {} ready on {}.> (Ctrl-C to stop)", worker.id(), connection.prefix);
    super::shutdown_signal().await;
    println!("stopping: draining requests in flight");
    worker.shutdown(Duration::from_secs(30)).await;
    Ok(())
}
