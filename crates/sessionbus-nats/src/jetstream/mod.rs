//! [`JetStreamHost`]: the durable host. Tool state lives in the `SESSIONBUS_TOOLS` KV
//! bucket, each session's meta, lease, graph and turn ledger in the
//! `SESSIONBUS_STATE` stream, trace records in `SESSIONBUS_TRACE`. Every write is a
//! conditional publish or an atomic batch, so no update is lost and any worker can die.
//!
//! - `tools.rs`: tool state (compare-and-set on the KV revision);
//! - `sessions.rs`: create, close, snapshot, append (graph chained by expected sequence);
//! - `turns.rs`: leases, the ledger and the atomic turn commit;
//! - `cancels.rs`: `cancel_turn` (a stored request, watched by every worker);
//! - `live.rs`: a running turn's live output (not stored);
//! - `api.rs`: raw JetStream publishes, batches and leader reads with full error codes;
//! - `view.rs`: the bounded per-session cache;
//! - `layout.rs`: the bucket and streams;
//! - `registry.rs`: the session registry (an index in creation order, paged lists);
//! - `retention.rs`: purging closed sessions past their retention age, in batches;

mod api;
mod batch_read;
mod cancels;
mod exporter;
mod fast_batch;
mod history;
mod layout;
mod lease_watch;
mod live;
mod msg_get;
pub mod records;
mod registry;
mod retention;
mod sessions;
mod state_access;
mod tools;
mod trace_sink;
mod turn_protocol;
mod turns;
mod view;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sessionbus_api::{
    AppendSessionNodesRequest, AppendSessionNodesResult, AssembledTurn, CancelReply, CatalogCache, PluginError,
    SessionBinding, SessionCreateRequest, SessionGraphService, SessionHandle, SessionHistoryService,
    SessionLifecycleService, SessionListPage, SessionListQuery, SessionRegistryService, SessionSnapshot,
    SessionStateService, SessionTurnRequest, ToolHistory, ToolState, TraceContext, TraceEvent, TurnCancelService,
    TurnExecutor, TurnListPage, TurnListQuery,
};

pub use exporter::{ExporterStats, SPANS_BUCKET, SPANS_STREAM, TraceExporterConfig, run_trace_exporter};
pub use layout::{
    INDEX_STREAM, LayoutConfig, STATE_STREAM, TOOLS_BUCKET, TOOLS_STREAM, TRACE_STREAM, ensure_layout, verify_layout,
};
pub use registry::describe_session;
pub use retention::{PurgeConfig, PurgeReport, purge_closed_sessions};
pub use state_access::{StateAccess, StateWrite, Stored, StoredRecord};

use crate::subjects::Subjects;
use api::JetStreamApi;
use view::ViewCache;

/// How a [`JetStreamHost`]'s caches have served calls since it started (a worker
/// reports them in `$SRV.STATS`; `sessionbus bench --scale` turns them into hit rates).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheStats {
    /// Sessions whose state is held in memory now (bounded by the config).
    pub sessions_cached: usize,
    /// Calls that found their session's state cached: only what changed since is read.
    pub view_hits: u64,
    /// Calls that loaded their session's state whole.
    pub view_misses: u64,
    /// Catalog reads answered with the catalog built at the same generation.
    pub catalog_hits: u64,
    /// Catalog reads that built the catalog.
    pub catalog_builds: u64,
}

/// Settings of a [`JetStreamHost`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct JetStreamHostConfig {
    /// The subject prefix.
    pub subjects: Subjects,
    /// How long a turn's lease lasts without renewal (at least 3x the worst
    /// leader-election stall).
    pub lease_ttl: Duration,
    /// How often a running turn renews its lease.
    pub lease_renew_every: Duration,
    /// The longest a turn may run before it is stopped (and not committed).
    pub max_turn_duration: Duration,
    /// Sessions whose materialised state a host keeps in memory.
    pub cached_sessions: usize,
    /// Graph nodes all cached sessions may hold together.
    pub cached_nodes: usize,
    /// Timeout of one JetStream API call.
    pub api_timeout: Duration,
    /// How long transient JetStream failures (leader elections) are retried.
    pub retry_budget: Duration,
    /// Who this host is in the leases it takes (dashboards show it as the worker running
    /// a turn): `sessionbus worker` passes its worker id; a new UUID by default. Must
    /// differ between hosts.
    pub lease_holder: String,
}

with_setters!(JetStreamHostConfig {
    with_subjects => subjects: Subjects,
    with_lease_ttl => lease_ttl: Duration,
    with_lease_renew_every => lease_renew_every: Duration,
    with_max_turn_duration => max_turn_duration: Duration,
    with_cached_sessions => cached_sessions: usize,
    with_cached_nodes => cached_nodes: usize,
    with_api_timeout => api_timeout: Duration,
    with_retry_budget => retry_budget: Duration,
    with_lease_holder => lease_holder: String,
});

impl Default for JetStreamHostConfig {
    fn default() -> Self {
        Self {
            subjects: Subjects::default(),
            lease_ttl: Duration::from_secs(30),
            lease_renew_every: Duration::from_secs(5),
            max_turn_duration: Duration::from_secs(3600),
            cached_sessions: 1024,
            cached_nodes: 200_000,
            api_timeout: Duration::from_secs(5),
            retry_budget: Duration::from_secs(15),
            lease_holder: uuid::Uuid::new_v4().to_string(),
        }
    }
}

struct Inner {
    api: JetStreamApi,
    config: JetStreamHostConfig,
    executor: Arc<dyn TurnExecutor>,
    /// This host's identity as a lease holder.
    holder: String,
    views: ViewCache,
    catalogs: CatalogCache,
    /// Held leases this host has seen, to judge their liveness by its own clock.
    leases: lease_watch::LeaseWatch,
    /// The server's `max_payload`, read once at connect (it is a server setting).
    max_payload: usize,
    /// The turns this host runs now, fired by cancel requests.
    running: Arc<cancels::RunningTurns>,
    /// The task watching cancel requests; ends with the host.
    cancel_watch: tokio::task::AbortHandle,
    /// When the trace stream last refused a fast batch: for a while after, trace records
    /// are published one by one without asking again.
    fast_batch_refused: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel_watch.abort();
    }
}

/// The durable host: implements the three traits on JetStream. Cheap to clone; clones
/// share the connection and caches.
///
/// ```no_run
/// use std::sync::Arc;
/// use sessionbus_api::{EchoExecutor, SessionCreateRequest, SessionLifecycleService as _};
/// use sessionbus_nats::jetstream::{LayoutConfig, ensure_layout};
/// use sessionbus_nats::{JetStreamHost, JetStreamHostConfig, Subjects};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let nats = async_nats::connect("nats://127.0.0.1:4222").await?;
/// // Once per deployment (what `sessionbus setup` does):
/// ensure_layout(&async_nats::jetstream::new(nats.clone()), &Subjects::default(), &LayoutConfig::default()).await?;
/// let host = JetStreamHost::connect(nats, Arc::new(EchoExecutor), JetStreamHostConfig::default()).await?;
/// host.create_session(SessionCreateRequest::root(Some("chat-42".into()))).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct JetStreamHost {
    inner: Arc<Inner>,
    bound: SessionBinding,
}

impl JetStreamHost {
    /// Checks the JetStream layout (see [`verify_layout`]; [`ensure_layout`] creates it)
    /// and returns a host whose turns run on `executor`.
    pub async fn connect(
        client: async_nats::Client,
        executor: Arc<dyn TurnExecutor>,
        config: JetStreamHostConfig,
    ) -> Result<Self, PluginError> {
        let context = async_nats::jetstream::new(client.clone());
        verify_layout(&context, &config.subjects).await?;
        let max_payload = client.server_info().max_payload;
        let running = Arc::new(cancels::RunningTurns::default());
        let cancel_watch =
            tokio::spawn(cancels::watch_cancels(client.clone(), config.subjects.clone(), Arc::downgrade(&running)))
                .abort_handle();
        let api = JetStreamApi::new(client, config.api_timeout, config.retry_budget);
        Ok(Self {
            inner: Arc::new(Inner {
                api,
                views: ViewCache::new(config.cached_sessions, config.cached_nodes),
                catalogs: CatalogCache::new(config.cached_sessions),
                leases: lease_watch::LeaseWatch::new(config.cached_sessions),
                max_payload,
                running,
                cancel_watch,
                fast_batch_refused: std::sync::Mutex::new(None),
                holder: config.lease_holder.clone(),
                executor,
                config,
            }),
            bound: SessionBinding::unbound(),
        })
    }

    /// A view of the same host bound to `session_id` (answers `snapshot_current`,
    /// resolves `current_session` start points and trace contexts naming no session).
    pub fn bound_to(&self, session_id: impl Into<String>) -> Self {
        Self { inner: Arc::clone(&self.inner), bound: SessionBinding::to(session_id) }
    }

    /// The subjects this host writes under.
    pub fn subjects(&self) -> &Subjects {
        &self.inner.config.subjects
    }

    /// How this host's caches have served calls since it started.
    pub fn cache_stats(&self) -> CacheStats {
        let (sessions_cached, view_hits, view_misses) = self.inner.views.counts();
        let (catalog_hits, catalog_builds) = self.inner.catalogs.counts();
        CacheStats { sessions_cached, view_hits, view_misses, catalog_hits, catalog_builds }
    }

    fn max_payload(&self) -> usize {
        self.inner.max_payload
    }

    /// True while a lease held at sequence `seq` of session `token` may be alive: until
    /// this host has seen that sequence unchanged for the holder's TTL (`ttl_ms`; 0
    /// means this host's own).
    fn lease_alive(&self, token: &str, seq: u64, ttl_ms: u64) -> bool {
        let ttl = match ttl_ms {
            0 => self.inner.config.lease_ttl,
            ms => std::time::Duration::from_millis(ms),
        };
        self.inner.leases.alive(token, seq, ttl)
    }
}

#[async_trait::async_trait]
impl SessionStateService for JetStreamHost {
    async fn snapshot_current(&self) -> Result<SessionSnapshot, PluginError> {
        self.snapshot(self.bound.current()?).await
    }

    async fn snapshot_session(&self, session_id: &str) -> Result<SessionSnapshot, PluginError> {
        self.snapshot(session_id).await
    }

    async fn tool_catalog(&self, session_id: &str) -> Result<Vec<Value>, PluginError> {
        Ok(self.read_tool_state(session_id).await?.catalog())
    }

    async fn shared_tool_catalog(&self, session_id: &str) -> Result<Arc<Vec<Value>>, PluginError> {
        self.cached_catalog(session_id).await
    }

    async fn tool_state(&self, session_id: &str) -> Result<ToolState, PluginError> {
        self.read_tool_state(session_id).await
    }

    async fn apply_tool_state(&self, session_id: &str, snapshot: ToolState) -> Result<u64, PluginError> {
        let msg_id = format!("{}/0", crate::request_context::current_request_id());
        self.write_tool_state(session_id, snapshot, msg_id).await
    }

    async fn set_tool_membership(
        &self,
        session_id: &str,
        tool_names: &[String],
        present: bool,
    ) -> Result<u64, PluginError> {
        self.toggle_tools(session_id, tool_names, present).await
    }
}

#[async_trait::async_trait]
impl SessionLifecycleService for JetStreamHost {
    async fn create_session(&self, request: SessionCreateRequest) -> Result<SessionHandle, PluginError> {
        self.create(request, &self.bound).await
    }

    async fn close_session(&self, session_id: &str) -> Result<(), PluginError> {
        self.close(session_id).await
    }

    async fn start_turn(&self, request: SessionTurnRequest) -> Result<AssembledTurn, PluginError> {
        self.turn(request).await
    }
}

#[async_trait::async_trait]
impl SessionGraphService for JetStreamHost {
    async fn append_session_nodes(
        &self,
        session_id: &str,
        request: AppendSessionNodesRequest,
    ) -> Result<AppendSessionNodesResult, PluginError> {
        self.append(session_id, request).await
    }

    async fn emit_trace_event(&self, context: TraceContext, event: TraceEvent) -> Result<(), PluginError> {
        let session_id = self.bound.trace_session(&context)?;
        let request_id = crate::request_context::current_request_id();
        self.publish_traces(&session_id, vec![(context, event)], &request_id).await
    }

    async fn emit_trace_events(&self, records: Vec<(TraceContext, TraceEvent)>) -> Result<(), PluginError> {
        let Some(session_id) = self.bound.trace_batch_session(records.iter().map(|(context, _)| context))? else {
            return Ok(());
        };
        let request_id = crate::request_context::current_request_id();
        self.publish_traces(&session_id, records, &request_id).await
    }
}

#[async_trait::async_trait]
impl TurnCancelService for JetStreamHost {
    async fn cancel_turn(&self, session_id: &str, turn_id: &str) -> Result<CancelReply, PluginError> {
        self.cancel(session_id, turn_id).await
    }
}

#[async_trait::async_trait]
impl SessionRegistryService for JetStreamHost {
    async fn list_sessions(&self, query: &SessionListQuery) -> Result<SessionListPage, PluginError> {
        self.list(query).await
    }
}

#[async_trait::async_trait]
impl SessionHistoryService for JetStreamHost {
    async fn list_turns(&self, session_id: &str, query: &TurnListQuery) -> Result<TurnListPage, PluginError> {
        self.turns_page(session_id, query).await
    }

    async fn tool_history(&self, session_id: &str) -> Result<ToolHistory, PluginError> {
        self.read_tool_history(session_id).await
    }
}
