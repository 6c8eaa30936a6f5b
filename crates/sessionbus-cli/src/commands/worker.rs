//! `sessionbus worker`: a worker (JetStream host + executor) against NATS_URL.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use sessionbus_api::{EchoExecutor, PluginError, SessionAppendNode, TurnContext, TurnExecutor, TurnOutput};
use sessionbus_nats::reply_policy::ReplyPolicy;
use sessionbus_nats::{HostStats, JetStreamHost, JetStreamHostConfig, Subjects, Worker, WorkerConfig};

use super::lash::LashArgs;
use super::setup::{LayoutArgs, setup_layout};
use crate::connect::{CliError, ConnectionArgs};

/// The agent logic a worker runs turns with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExecutorKind {
    /// Deterministic: echoes the input as the assistant's reply.
    Echo,
    /// Like echo, after `--turn-delay-ms` (for trying out long turns and failures). Its
    /// live output streams the reply's words over the first half, then a `wait` tool.
    Slow,
    /// Real lash turns (`--provider`, `--script`); needs a binary built with the
    /// `lash` feature.
    Lash,
}

/// Options of a worker. [`WorkerArgs::default`] is what `sessionbus worker` runs with
/// when given no options.
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// Fast operations (everything but turns) served at once; more are answered 503.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Turns run at once; more are answered 503.
    #[arg(long, default_value_t = 32)]
    pub turns: usize,
    /// Create or update the JetStream layout first, as `sessionbus setup` does (needs
    /// the right to create streams: single-user and local deployments).
    #[arg(long)]
    pub setup: bool,
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// The turn executor.
    #[arg(long, value_enum, default_value_t = ExecutorKind::Echo)]
    pub executor: ExecutorKind,
    #[command(flatten)]
    pub lash: LashArgs,
    /// Delay of the `slow` executor, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub turn_delay_ms: u64,
    /// The longest a turn may run, in seconds; past it the turn is stopped, nothing is
    /// committed, and its callers get a 500 (do not retry: it would run as long again).
    #[arg(long, default_value_t = 3600)]
    pub max_turn_secs: u64,
    /// Lease TTL of a running turn, in seconds.
    #[arg(long, default_value_t = 30)]
    pub lease_ttl_secs: u64,
    /// A reply subject prefix to answer besides `_INBOX.`, `_INBOX_<name>.` and `_R_.`
    /// (repeatable). Requests with any other reply subject are dropped.
    #[arg(long = "reply-prefix")]
    pub reply_prefixes: Vec<String>,
    /// On Ctrl-C / SIGTERM, how long to wait for requests in flight before exiting,
    /// whether or not the server is still reachable.
    #[arg(long, default_value_t = 10)]
    pub drain_timeout_secs: u64,
    /// Test only: shift this worker's wall clock (milliseconds, may be negative).
    #[arg(long, default_value_t = 0, hide = true, allow_hyphen_values = true)]
    pub clock_skew_ms: i64,
    /// How often a running turn's lease is renewed, in milliseconds (default: a sixth of
    /// the lease TTL, at least 200 ms).
    #[arg(long)]
    pub lease_renew_ms: Option<u64>,
}

impl Default for WorkerArgs {
    /// The defaults of the command line (one source of truth: the `#[arg]` attributes).
    fn default() -> Self {
        /// `sessionbus worker` with its options only.
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            args: WorkerArgs,
        }
        <Defaults as clap::Parser>::parse_from(["worker"]).args
    }
}

struct SlowExecutor(Duration);

impl SlowExecutor {
    /// The live output of a run, as lash's events: the echo reply's words as text deltas
    /// over the first half of the wait, then a `wait` tool over the rest.
    async fn stream(&self, context: &TurnContext) {
        let reply = EchoExecutor::reply_to(&context.turn.input.joined_text());
        let words: Vec<&str> = reply.split_inclusive(' ').collect();
        let step = self.0.div_f64(2.0 * (words.len() + 1) as f64);
        let waited = self.0.saturating_sub(step.mul_f64(words.len() as f64));
        for word in words {
            tokio::time::sleep(step).await;
            context.live(serde_json::json!({ "type": "assistant_prose_delta", "text": word }));
        }
        context.live(serde_json::json!({ "type": "tool_call_started", "name": "wait", "args": {} }));
        tokio::time::sleep(waited).await;
        context.live(
            serde_json::json!({ "type": "tool_call_completed", "name": "wait", "duration_ms": waited.as_millis() }),
        );
    }
}

#[async_trait::async_trait]
impl TurnExecutor for SlowExecutor {
    /// Stops early when the turn is cancelled, with the user's message committed.
    async fn run(&self, context: TurnContext) -> Result<TurnOutput, PluginError> {
        tokio::select! {
            () = self.stream(&context) => EchoExecutor.run(context).await,
            () = context.cancellation().cancelled() => Ok(TurnOutput {
                nodes: vec![SessionAppendNode::message("User", context.turn.input.joined_text())],
                ..TurnOutput::cancelled()
            }),
        }
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
        ExecutorKind::Lash => super::lash::executor(&args.lash)?,
    };
    sessionbus_api::clock::set_skew_ms(args.clock_skew_ms);
    if args.setup {
        setup_layout(&client, &subjects, &args.layout, Duration::from_secs(60)).await?;
    }
    let lease_ttl = Duration::from_secs(args.lease_ttl_secs.max(1));
    // One id for the worker and the leases it takes, so a turn's lease names its worker.
    let worker_id = uuid::Uuid::new_v4().to_string();
    let host_config = JetStreamHostConfig::default()
        .with_lease_holder(worker_id.clone())
        .with_subjects(subjects.clone())
        .with_lease_ttl(lease_ttl)
        .with_max_turn_duration(Duration::from_secs(args.max_turn_secs.max(1)))
        .with_lease_renew_every(
            args.lease_renew_ms
                .map_or((lease_ttl / 6).max(Duration::from_millis(200)), |ms| Duration::from_millis(ms.max(1))),
        );
    let host = JetStreamHost::connect(client.clone(), executor, host_config).await?;
    let stats_host = host.clone();
    let worker_config = WorkerConfig::default()
        .with_host_stats(Some(HostStats::new(move || {
            serde_json::to_value(stats_host.cache_stats()).unwrap_or_default()
        })))
        .with_worker_id(worker_id)
        .with_subjects(subjects)
        .with_max_fast_in_flight(args.concurrency.max(1))
        .with_max_turns_in_flight(args.turns.max(1))
        .with_tool_events(true)
        .with_reply_policy(ReplyPolicy::with_prefixes(args.reply_prefixes.iter().cloned()));
    let worker = Worker::start(client, Arc::new(host.clone()), worker_config).await?;
    Ok((worker, host))
}

/// Runs a worker until Ctrl-C / SIGTERM, then drains it.
pub async fn run(connection: &ConnectionArgs, args: WorkerArgs) -> Result<(), CliError> {
    let client = connection.connect("sessionbus-worker").await?;
    let (worker, _host) = start_worker(client, &args, connection.subjects()).await?;
    tracing::info!(worker_id = worker.id(), prefix = connection.prefix, "worker ready");
    println!("{}", sessionbus_launch::ready_line(worker.id(), &connection.prefix));
    super::shutdown_signal().await;
    println!("stopping: draining requests in flight");
    worker.shutdown(Duration::from_secs(args.drain_timeout_secs)).await;
    Ok(())
}
