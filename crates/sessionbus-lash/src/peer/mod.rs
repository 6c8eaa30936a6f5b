//! [`Peer`]: a lash runtime whose sessions live in the JetStream stores, so that runtimes
//! in other processes (and on other hosts) share them: what the `lash-on-nats` binary
//! runs, and how a test puts two lash runtimes in two OS processes on one session.
//!
//! A peer builds a `LashCore` at lash's Durable tier on [`crate::store`]'s session store
//! factory, object-store attachments and KV process environments, with a scripted model
//! ([`crate::provider::scripted`]) and the demo tools ([`crate::executor::tools`]). It
//! reads [`protocol::Command`]s and says [`protocol::Event`]s: what the store answered to
//! every lease claim and commit lash made (what lash acknowledged), and how each command
//! went.
//!
//! Turns run through lash's queued path: an input is enqueued into the store, and a
//! drain runs it only while this runtime holds the session's lane (lash's execution
//! lease); while another runtime holds it, the drain waits and tries again. Each attempt
//! opens the session from the store anew, so it starts from what any runtime committed.

pub mod args;
mod observe;
pub mod protocol;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lash_core::{
    InlineEffectHost, LeaseOwnerIdentity, LeaseTimings, ModelSpec, ProviderComponents, ProviderHandle,
    SessionStoreFactory, SystemClock, TurnActivity, TurnActivitySink, TurnEvent,
};

pub use observe::{EventObserver, EventSink, ObservedFactory};
use protocol::{Command, Event};

use crate::executor::trace::DEFAULT_TRACE_CAPACITY;
use crate::executor::{DEFAULT_CONTEXT_TOKENS, tools};
use crate::provider::scripted::{Script, ScriptedProvider};
use crate::store::{
    JetStreamAttachmentStore, JetStreamProcessEnvStore, JetStreamStoreFactory, StoreBackend, StoreBackendConfig,
};
use crate::traces::RuntimeTraces;

/// How long a drain waits before it tries a busy lane again.
pub const LANE_RETRY: Duration = Duration::from_millis(250);

/// What a [`Peer`] runs with.
pub struct PeerConfig {
    /// The peer's name: its lease owner id, and the `peer` of its `ready` event.
    pub label: String,
    /// The NATS server URL(s), comma-separated.
    pub url: String,
    /// The factory's namespace (see [`JetStreamStoreFactory::with_namespace`]); peers
    /// share sessions when they share it.
    pub namespace: String,
    /// The model's answers.
    pub script: Script,
    /// lash's lease timings (the TTL after which a dead holder's lane is taken over).
    pub lease_timings: LeaseTimings,
}

/// Why a peer could not start or run a command.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The stores could not be reached.
    #[error("the JetStream stores could not be opened: {0}; is the server up, with the store's layout?")]
    Store(#[from] lash_core::StoreError),
    /// lash refused the runtime's configuration or a session operation.
    #[error("lash refused: {0}")]
    Lash(#[from] lash::EmbedError),
    /// The model spec was refused.
    #[error("lash refused the scripted model spec: {0}")]
    Model(String),
    /// Another runtime held the session's lane for the whole deadline.
    #[error(
        "session `{session}` still had pending input after {waited_ms} ms: another runtime holds its lane; retry, or \
         wait for that runtime's lease to end (its TTL)"
    )]
    LaneBusy {
        /// The session.
        session: String,
        /// How long the drain waited.
        waited_ms: u128,
    },
    /// The bus's streams (where trace records go) could not be reached.
    #[error("the bus's streams could not be reached: {0}")]
    Bus(#[from] sessionbus_api::PluginError),
}

impl PeerError {
    /// A stable name of the error's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Store(_) => "store",
            Self::Lash(_) => "lash",
            Self::Model(_) => "model",
            Self::LaneBusy { .. } => "lane_busy",
            Self::Bus(_) => "bus",
        }
    }
}

/// A lash runtime on the JetStream stores (see the module docs).
pub struct Peer {
    core: lash::LashCore,
    label: String,
    events: EventSink,
    _traces: RuntimeTraces,
}

/// A bus host on the servers at `url`, for storing trace records (it runs no turns).
async fn bus_host(url: &str) -> Result<sessionbus_nats::JetStreamHost, PeerError> {
    let client = async_nats::connect(crate::store::server_addrs(url)?).await.map_err(|err| {
        sessionbus_api::PluginError::Unavailable(format!("could not connect to NATS at `{url}`: {err}"))
    })?;
    let executor = Arc::new(sessionbus_api::EchoExecutor) as Arc<dyn sessionbus_api::TurnExecutor>;
    Ok(sessionbus_nats::JetStreamHost::connect(client, executor, sessionbus_nats::JetStreamHostConfig::default())
        .await?)
}

impl Peer {
    /// Connects to the stores and builds the `LashCore` at the Durable tier, its trace
    /// records stored on the bus; says `ready`.
    pub async fn start(config: PeerConfig, events: EventSink) -> Result<Self, PeerError> {
        crate::install_crypto_provider();
        let backend = StoreBackend::connect(StoreBackendConfig::new(config.url.clone()))?;
        let traces = RuntimeTraces::start(Arc::new(bus_host(&config.url).await?), DEFAULT_TRACE_CAPACITY);
        let factory: Arc<dyn SessionStoreFactory> = Arc::new(
            JetStreamStoreFactory::new(Arc::clone(&backend), Arc::new(SystemClock)).with_namespace(config.namespace),
        );
        let observed = ObservedFactory::new(factory, Arc::new(EventObserver(Arc::clone(&events))));
        let model = ModelSpec::from_token_limits("scripted", Default::default(), DEFAULT_CONTEXT_TOKENS, None)
            .map_err(|err| PeerError::Model(err.to_string()))?;
        let provider = ScriptedProvider::new(config.script);
        let core = lash::LashCore::standard_builder()
            .provider(ProviderHandle::new(ProviderComponents::new(Box::new(provider))))
            .model(model)
            .tools(tools::demo_tools())
            .store_factory(Arc::new(observed))
            .attachment_store(Arc::new(JetStreamAttachmentStore::new(Arc::clone(&backend))))
            .process_env_store(Arc::new(JetStreamProcessEnvStore::new(backend)))
            .effect_host(Arc::new(InlineEffectHost::default()))
            .trace_sink(traces.sink())
            .lease_timings(config.lease_timings)
            // The peer drains queued turns when told to, itself: lash's inline driver
            // would run them in the background, out of the commands' order, and under
            // one turn id per session (`queued_turn_input`; decision 0011).
            .disable_queued_work_driver()
            .build()?;
        events(Event::Ready { peer: config.label.clone(), pid: std::process::id() });
        Ok(Self { core, label: config.label, events, _traces: traces })
    }

    /// Runs `command`, saying how it went; a failure is said as `failed`.
    pub async fn run(&self, command: Command) {
        let (session, result) = match command {
            Command::Enqueue { session, input_id, text } => {
                let result = self.enqueue(&session, &input_id, text).await;
                (session, result)
            }
            Command::Drain { session, deadline_ms } => {
                let result = self.drain(&session, Duration::from_millis(deadline_ms)).await;
                (session, result)
            }
        };
        if let Err(err) = result {
            (self.events)(Event::Failed { session: Some(session), error: format!("{} ({})", err, err.kind()) });
        }
    }

    /// The session from the store, as this peer's lease owner (a new incarnation per
    /// open, as lash's default identity has).
    async fn open(&self, session: &str) -> Result<lash::LashSession, PeerError> {
        let owner = LeaseOwnerIdentity::opaque(self.label.clone(), uuid::Uuid::new_v4().to_string());
        Ok(self.core.session(session).session_execution_owner(owner).open().await?)
    }

    async fn enqueue(&self, session: &str, input_id: &str, text: String) -> Result<(), PeerError> {
        let opened = self.open(session).await?;
        opened.enqueue(lash::TurnInput::text(text)).id(input_id).send().await?;
        (self.events)(Event::Enqueued { session: session.to_owned(), input_id: input_id.to_owned() });
        Ok(())
    }

    async fn drain(&self, session: &str, deadline: Duration) -> Result<(), PeerError> {
        let started = Instant::now();
        loop {
            let opened = self.open(session).await?;
            if opened.pending_turn_inputs().await?.is_empty() {
                (self.events)(Event::Drained { session: session.to_owned() });
                return Ok(());
            }
            let sink = ToolStarts { session, events: &self.events };
            match opened.queued_turn().stream_to(&sink).await? {
                Some(result) => (self.events)(Event::TurnDone {
                    session: session.to_owned(),
                    outcome: serde_json::to_value(&result.outcome).unwrap_or_default(),
                    text: result.assistant_output.safe_text,
                }),
                None if started.elapsed() < deadline => {
                    (self.events)(Event::LaneBusy { session: session.to_owned() });
                    tokio::time::sleep(LANE_RETRY).await;
                }
                None => {
                    return Err(PeerError::LaneBusy {
                        session: session.to_owned(),
                        waited_ms: started.elapsed().as_millis(),
                    });
                }
            }
        }
    }
}

/// Says `tool_started` for every tool call a turn starts.
struct ToolStarts<'a> {
    session: &'a str,
    events: &'a EventSink,
}

#[async_trait::async_trait]
impl TurnActivitySink for ToolStarts<'_> {
    async fn emit(&self, activity: TurnActivity) {
        if let TurnEvent::ToolCallStarted { name, .. } = activity.event {
            (self.events)(Event::ToolStarted { session: self.session.to_owned(), tool: name });
        }
    }
}
