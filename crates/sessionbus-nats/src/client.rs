//! [`BusClient`]: the three session service traits and the session registry over NATS
//! request/reply.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sessionbus_api::sync::Backoff;

use async_nats::{Client, HeaderMap, Message, StatusCode};
use futures::StreamExt as _;
use opentelemetry::Context;
use opentelemetry::trace::{SpanKind, TraceContextExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sessionbus_api::{
    AppendSessionNodesRequest, AppendSessionNodesResult, AssembledTurn, CancelReply, CatalogCache, ErrorKind,
    PluginError, SessionBinding, SessionCreateRequest, SessionGraphService, SessionHandle, SessionLifecycleService,
    SessionListPage, SessionListQuery, SessionRegistryService, SessionSnapshot, SessionStartPoint, SessionStateService,
    SessionTurnRequest, ToolState, TraceContext, TraceEvent, TurnCancelService,
};
use sessionbus_api::{SessionHistoryService, ToolHistory, TurnListPage, TurnListQuery};
use tokio::sync::{OnceCell, mpsc};

use crate::propagation;
use crate::trace_batch::{BatchSink, Limits, TraceLanes};

use crate::subjects::{Endpoint, Op, Subjects, session_token};
use crate::wire::{
    self, CancelTurnRequest, Empty, GenerationReply, GraphPage, GraphPageRequest, MembershipRequest, PingReply,
    StartTurnRequest, ToolCatalogReply, ToolCatalogRequest, TraceRequest,
};

/// The pause before each resend of a call (0.1 s, doubling, at most 3.2 s).
const CALL_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(3200));
/// The pause before each resend of a turn (0.2 s, doubling, at most 3.2 s).
const TURN_BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_millis(3200));
/// Settings of a [`BusClient`]: `BusClientConfig::default().with_timeout(..)`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BusClientConfig {
    /// The subject prefix.
    pub subjects: Subjects,
    /// How long one attempt of a call waits for its reply.
    pub timeout: Duration,
    /// Attempts per call (reads, and mutations with the same request id).
    pub attempts: u32,
    /// Silence after which a turn's worker is presumed gone and the turn is retried.
    pub turn_idle_timeout: Duration,
    /// Nodes per `graph_page` request when a snapshot arrives in pages.
    pub graph_page_limit: u32,
    /// How long a trace record may wait for others of its session to join its batch
    /// (zero: none; a batch goes as soon as the session's batch before it is stored).
    pub trace_window: Duration,
    /// Trace records per batched `trace` request, at most.
    pub trace_batch_records: usize,
    /// Trace records waiting or in flight, over all sessions, at most; beyond it
    /// `emit_trace_event` waits for room.
    pub trace_max_waiting: usize,
}

impl Default for BusClientConfig {
    fn default() -> Self {
        Self {
            subjects: Subjects::default(),
            timeout: Duration::from_secs(5),
            attempts: 3,
            turn_idle_timeout: Duration::from_secs(10),
            graph_page_limit: 5000,
            trace_window: Duration::ZERO,
            trace_batch_records: 256,
            trace_max_waiting: 4096,
        }
    }
}

with_setters!(BusClientConfig {
    with_subjects => subjects: Subjects,
    with_timeout => timeout: Duration,
    with_attempts => attempts: u32,
    with_turn_idle_timeout => turn_idle_timeout: Duration,
    with_graph_page_limit => graph_page_limit: u32,
    with_trace_window => trace_window: Duration,
    with_trace_batch_records => trace_batch_records: usize,
    with_trace_max_waiting => trace_max_waiting: usize,
});

type TurnRoutes = Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>;

struct Inner {
    client: Client,
    /// The server's `max_payload` when the client was made.
    max_payload: usize,
    config: BusClientConfig,
    catalogs: CatalogCache,
    /// The wildcard inbox all turn replies arrive on, demultiplexed by request.
    turn_inbox: OnceCell<String>,
    turn_routes: Arc<TurnRoutes>,
    /// Trace records waiting to go out in batches, by session.
    traces: Arc<TraceLanes<bytes::Bytes>>,
}

/// A client of the bus: implements the three traits by request/reply. Cheap to clone;
/// [`BusClient::bound`] makes a view bound to one session.
///
/// ```no_run
/// use sessionbus_api::{SessionCreateRequest, SessionLifecycleService as _, SessionStateService as _};
/// use sessionbus_nats::{BusClient, BusClientConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let nats = async_nats::connect("nats://127.0.0.1:4222").await?;
/// let bus = BusClient::new(nats, BusClientConfig::default());
/// let handle = bus.create_session(SessionCreateRequest::root(None)).await?;
/// let snapshot = bus.snapshot_session(&handle.session_id).await?;
/// assert_eq!(snapshot.turn_index, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct BusClient {
    inner: Arc<Inner>,
    bound: SessionBinding,
}

/// Where a call goes: an endpoint, and the session of a per-session one.
#[derive(Clone, Copy)]
struct Target<'a> {
    endpoint: Endpoint,
    session_id: &'a str,
}

impl<'a> Target<'a> {
    fn session(session_id: &'a str, op: Op) -> Self {
        Self { endpoint: Endpoint::Session(op), session_id }
    }

    fn global(endpoint: Endpoint) -> Self {
        Self { endpoint, session_id: "" }
    }
}

impl BusClient {
    /// Completes a paged graph (a snapshot's, or a turn's state): fetches the pages
    /// after the first, up to the graph the first page was cut from (`graph_as_of`).
    async fn complete_graph(&self, session_id: &str, snapshot: &mut SessionSnapshot) -> Result<(), PluginError> {
        let number = |value: Option<Value>| match value {
            Some(Value::Number(n)) => n.as_u64(),
            _ => None,
        };
        let mut next = number(snapshot.extra.remove(wire::GRAPH_NEXT_SEQ));
        let as_of = number(snapshot.extra.remove(wire::GRAPH_AS_OF));
        while let Some(after_seq) = next {
            let request = GraphPageRequest { after_seq, limit: self.inner.config.graph_page_limit, as_of };
            let page: GraphPage = self.session_call(session_id, Op::GraphPage, &request).await?;
            if page.nodes.is_empty() && page.next_seq.is_some() {
                return Err(PluginError::Unavailable("a graph page came back empty; the graph is incomplete".into()));
            }
            snapshot.session_graph.nodes.extend(page.nodes);
            next = page.next_seq;
        }
        Ok(())
    }

    /// A client over `client`.
    pub fn new(client: Client, config: BusClientConfig) -> Self {
        let max_payload = client.server_info().max_payload;
        let limits = trace_limits(&config, max_payload);
        Self {
            inner: Arc::new(Inner {
                max_payload,
                client,
                traces: Arc::new(TraceLanes::new(limits, config.trace_max_waiting)),
                config,
                catalogs: CatalogCache::new(4096),
                turn_inbox: OnceCell::new(),
                turn_routes: Arc::default(),
            }),
            bound: SessionBinding::unbound(),
        }
    }

    /// A view of this client bound to `session_id`: `snapshot_current` answers it,
    /// `current_session` start points copy it, and trace contexts default to it.
    pub fn bound(&self, session_id: impl Into<String>) -> Self {
        Self { inner: Arc::clone(&self.inner), bound: SessionBinding::to(session_id) }
    }

    /// The underlying NATS client.
    pub fn nats(&self) -> &Client {
        &self.inner.client
    }

    /// Live events of one session (every stored write: meta, lease, graph, turn, tools, trace).
    pub async fn events(&self, session_id: &str) -> Result<crate::events::EventStream, PluginError> {
        self.subscribe_events(Some(&session_token(session_id)?)).await
    }

    /// Live events of every session.
    pub async fn events_all(&self) -> Result<crate::events::EventStream, PluginError> {
        self.subscribe_events(None).await
    }

    /// The live output of one session's running turns (`<prefix>.live.<sid>`, decision
    /// 0018), from now on: nothing of it is stored, so nothing earlier can be read.
    pub async fn live_output(&self, session_id: &str) -> Result<crate::live_output::LiveStream, PluginError> {
        let subject = self.inner.config.subjects.live(&session_token(session_id)?);
        Ok(crate::live_output::LiveStream::new(self.subscribe(subject).await?))
    }

    /// A plain subscription to `subject`, its failure said as `Unavailable`.
    async fn subscribe(&self, subject: String) -> Result<async_nats::Subscriber, PluginError> {
        self.inner
            .client
            .subscribe(subject.clone())
            .await
            .map_err(|err| PluginError::Unavailable(format!("could not subscribe to {subject}: {err}")))
    }

    async fn subscribe_events(&self, token: Option<&str>) -> Result<crate::events::EventStream, PluginError> {
        let subjects = self.inner.config.subjects.clone();
        let subscriber = self.subscribe(subjects.events(token)).await?;
        Ok(crate::events::EventStream::new(subjects, subscriber))
    }

    /// A session's snapshot with only the first page of its graph: the rest is read
    /// with [`BusClient::graph_page`] from `extra["graph_next_seq"]` up to
    /// `extra["graph_as_of"]` (both absent when the first page holds the whole graph).
    /// For readers that draw a large graph page by page instead of waiting for all of it.
    ///
    /// Read as `T`: a [`SessionSnapshot`], or a reader's own struct of the few fields it
    /// uses (`SessionSnapshot` keeps every unknown field, so serde buffers the whole reply,
    /// graph included, before decoding it; a struct without such a catch-all reads the
    /// reply in one pass and skips the fields it does not name).
    pub async fn snapshot_first_page<T: DeserializeOwned>(&self, session_id: &str) -> Result<T, PluginError> {
        self.session_call(session_id, Op::Snapshot, &Empty {}).await
    }

    /// One page of a session's graph: up to `request.limit` nodes after the first
    /// `request.after_seq`, in graph order (the `graph_page` op).
    pub async fn graph_page(&self, session_id: &str, request: &GraphPageRequest) -> Result<GraphPage, PluginError> {
        self.session_call(session_id, Op::GraphPage, request).await
    }

    /// Asks any worker for readiness; answers once one serves every endpoint.
    pub async fn ping(&self) -> Result<PingReply, PluginError> {
        self.call(Target::global(Endpoint::Ping), &Empty {}).await
    }

    /// One page of the session registry, in creation order (`sessionbus.v1.sessions`);
    /// pass the page's `next_after` as the next query's `after` until it is `None`.
    pub async fn list_sessions(&self, query: &SessionListQuery) -> Result<SessionListPage, PluginError> {
        self.call(Target::global(Endpoint::Sessions), query).await
    }

    /// One page of `session_id`'s turns from its ledger (`sessionbus.v1.session.<sid>.turns`),
    /// oldest first; pass the page's `next_after` as the next query's `after` until it
    /// is `None`.
    pub async fn list_turns(&self, session_id: &str, query: &TurnListQuery) -> Result<TurnListPage, PluginError> {
        self.session_call(session_id, Op::Turns, query).await
    }

    /// `session_id`'s tool-state generations, oldest first
    /// (`sessionbus.v1.session.<sid>.tool_history`).
    pub async fn tool_history(&self, session_id: &str) -> Result<ToolHistory, PluginError> {
        self.session_call(session_id, Op::ToolHistory, &Empty {}).await
    }

    fn subject(&self, target: &Target<'_>) -> Result<String, PluginError> {
        let token = match target.endpoint {
            Endpoint::Session(_) => session_token(target.session_id)?,
            Endpoint::Create | Endpoint::Ping | Endpoint::Sessions => String::new(),
        };
        Ok(self.inner.config.subjects.call(target.endpoint, &token))
    }

    fn check_size(&self, payload: &[u8]) -> Result<(), PluginError> {
        let limit = self.inner.max_payload;
        if payload.len() + 512 > limit {
            return Err(PluginError::too_large("the request (with 512 bytes of headers)", payload.len() + 512, limit));
        }
        Ok(())
    }

    fn no_worker(&self, target: &Target<'_>) -> PluginError {
        PluginError::Unavailable(format!(
            "no sessionbus worker is listening on {}: start one with `sessionbus worker`",
            self.inner.config.subjects.listen(target.endpoint)
        ))
    }

    /// One call: request/reply with a request id reused on every retry.
    async fn call<B: Serialize, T: DeserializeOwned>(&self, target: Target<'_>, body: &B) -> Result<T, PluginError> {
        self.call_encoded(target, wire::encode(body)?).await
    }

    /// [`BusClient::call`] with the body already encoded.
    async fn call_encoded<T: DeserializeOwned>(
        &self,
        target: Target<'_>,
        payload: bytes::Bytes,
    ) -> Result<T, PluginError> {
        let subject = self.subject(&target)?;
        let op = target.endpoint.name();
        self.check_size(&payload)?;
        // The caller's request id when it resends a call (`request_context::with_request_id`),
        // else a fresh one; reused on every attempt.
        let request_id = crate::request_context::current_request_id();
        let mut headers = HeaderMap::new();
        headers.insert(wire::REQUEST_ID, request_id.as_str());
        let cx = propagation::messaging_span(
            &Context::current(),
            SpanKind::Client,
            op,
            || self.inner.config.subjects.template(target.endpoint),
            &subject,
        );
        propagation::inject(&cx, &mut headers);
        let mutation = target.endpoint.writes();
        let result = self.send_with_retries(&target, op, &subject, payload, headers).await.map_err(|failed| {
            match (mutation, failed.maybe_delivered) {
                (true, true) => outcome_unknown(failed.error, &request_id),
                _ => failed.error,
            }
        });
        if let Err(error) = &result {
            propagation::record_error(&cx, &error.message());
        }
        cx.span().end();
        result
    }

    async fn send_with_retries<T: DeserializeOwned>(
        &self,
        target: &Target<'_>,
        op: &str,
        subject: &str,
        payload: bytes::Bytes,
        headers: HeaderMap,
    ) -> Result<T, Unanswered> {
        let config = &self.inner.config;
        let mut last_error = None;
        let mut maybe_delivered = false;
        for attempt in 0..config.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(CALL_BACKOFF.pause(attempt)).await;
            }
            let request = async_nats::Request::new()
                .payload(payload.clone())
                .headers(headers.clone())
                .timeout(Some(config.timeout));
            match self.inner.client.send_request(subject.to_owned(), request).await {
                Ok(message) => match wire::decode_reply::<T>(op, message.headers.as_ref(), &message.payload) {
                    Err(error) if error.kind() == ErrorKind::Unavailable => {
                        // A worker ran the call and could not finish it (or refused it).
                        maybe_delivered = true;
                        last_error = Some(error);
                    }
                    other => return other.map_err(|error| Unanswered { error, maybe_delivered: false }),
                },
                Err(err) => {
                    last_error = Some(match err.kind() {
                        async_nats::RequestErrorKind::NoResponders => self.no_worker(target),
                        async_nats::RequestErrorKind::TimedOut => {
                            maybe_delivered = true;
                            PluginError::Unavailable(format!(
                                "timed out after {:?} waiting for a sessionbus worker on {subject}",
                                config.timeout
                            ))
                        }
                        async_nats::RequestErrorKind::MaxPayloadExceeded => {
                            let error = PluginError::too_large(
                                "the request with its headers",
                                payload.len(),
                                self.inner.max_payload,
                            );
                            return Err(Unanswered { error, maybe_delivered });
                        }
                        _ => {
                            maybe_delivered = true;
                            PluginError::Unavailable(format!("request on {subject} failed: {err}"))
                        }
                    });
                }
            }
        }
        Err(Unanswered { error: last_error.unwrap_or_else(|| self.no_worker(target)), maybe_delivered })
    }

    async fn session_call<B: Serialize, T: DeserializeOwned>(
        &self,
        session_id: &str,
        op: Op,
        body: &B,
    ) -> Result<T, PluginError> {
        self.call(Target::session(session_id, op), body).await
    }

    async fn turn_inbox(&self) -> Result<&str, PluginError> {
        let inner = &self.inner;
        inner
            .turn_inbox
            .get_or_try_init(|| async {
                let prefix = inner.client.new_inbox();
                let mut subscriber =
                    inner.client.subscribe(format!("{prefix}.*")).await.map_err(|err| {
                        PluginError::Unavailable(format!("could not subscribe the turn inbox: {err}"))
                    })?;
                let routes = Arc::clone(&inner.turn_routes);
                tokio::spawn(async move {
                    while let Some(message) = subscriber.next().await {
                        let Some(key) = message.subject.rsplit('.').next() else { continue };
                        let route = crate::lock(&routes).get(key).cloned();
                        if let Some(route) = route {
                            let _ = route.send(message);
                        }
                    }
                });
                Ok::<_, PluginError>(prefix)
            })
            .await
            .map(String::as_str)
    }

    /// `start_turn` that also receives the turn's live output while it runs (text
    /// deltas, tool starts and ends, as the executor sends them), in order, on `live`,
    /// all before the final result. A turn rerun after its worker died streams again
    /// from its start (`LiveEvent::seq` restarts at 1).
    pub async fn start_turn_live(
        &self,
        request: SessionTurnRequest,
        live: mpsc::UnboundedSender<LiveEvent>,
    ) -> Result<AssembledTurn, PluginError> {
        let session_id = request.session_id().to_owned();
        let mut turn = self.run_turn(request, Some(&live)).await?;
        self.complete_graph(&session_id, &mut turn.state).await?;
        Ok(turn)
    }

    /// `start_turn` as README.md "Long calls" says: progress requested, replies read
    /// from the demultiplexed inbox, an idle timeout, and retries by turn id.
    async fn run_turn(
        &self,
        request: SessionTurnRequest,
        live: Option<&mpsc::UnboundedSender<LiveEvent>>,
    ) -> Result<AssembledTurn, PluginError> {
        let target = Target::session(request.session_id(), Op::StartTurn);
        let subject = self.subject(&target)?;
        let body = StartTurnRequest {
            turn_id: request.turn_id().to_owned(),
            input: request.input().clone(),
            scope: Some(request.scope().clone()),
        };
        let payload = wire::encode(&body)?;
        self.check_size(&payload)?;
        let inbox = self.turn_inbox().await?.to_owned();
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut headers = HeaderMap::new();
        headers.insert(wire::REQUEST_ID, request_id.as_str());
        headers.insert(wire::PROGRESS, if live.is_some() { wire::PROGRESS_STREAM } else { "1" });
        let cx = propagation::messaging_span(
            &Context::current(),
            SpanKind::Client,
            "start_turn",
            || self.inner.config.subjects.template(target.endpoint),
            &subject,
        );
        propagation::inject(&cx, &mut headers);
        let call = TurnCall { subject: &subject, inbox: &inbox, headers, payload };
        let result = self.await_turn(&target, &request, call, live).await;
        if let Err(error) = &result {
            propagation::record_error(&cx, &error.message());
        }
        cx.span().end();
        result
    }

    async fn await_turn(
        &self,
        target: &Target<'_>,
        request: &SessionTurnRequest,
        call: TurnCall<'_>,
        live: Option<&mpsc::UnboundedSender<LiveEvent>>,
    ) -> Result<AssembledTurn, PluginError> {
        let TurnCall { subject, inbox, headers, payload } = call;
        let config = &self.inner.config;
        let mut last_error = None;
        for attempt in 0..config.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(TURN_BACKOFF.pause(attempt)).await;
            }
            let key = uuid::Uuid::new_v4().simple().to_string();
            let (sender, mut replies) = mpsc::unbounded_channel();
            crate::lock(&self.inner.turn_routes).insert(key.clone(), sender);
            let _route = RouteGuard { routes: Arc::clone(&self.inner.turn_routes), key: key.clone() };
            self.inner
                .client
                .publish_with_reply_and_headers(
                    subject.to_owned(),
                    format!("{inbox}.{key}"),
                    headers.clone(),
                    payload.clone(),
                )
                .await
                .map_err(|err| PluginError::Unavailable(format!("could not send start_turn: {err}")))?;
            loop {
                match tokio::time::timeout(config.turn_idle_timeout, replies.recv()).await {
                    Ok(Some(message)) => {
                        if message.status == Some(StatusCode::NO_RESPONDERS) {
                            last_error = Some(self.no_worker(target));
                            break;
                        }
                        let progress = message.headers.as_ref().and_then(|h| h.get(wire::STATUS)).map(|v| v.as_str())
                            == Some(wire::STATUS_PROGRESS);
                        if progress {
                            if let Some((live, event)) = live.zip(LiveEvent::of(&message)) {
                                let _ = live.send(event);
                            }
                            continue;
                        }
                        match wire::decode_reply::<AssembledTurn>(
                            "start_turn",
                            message.headers.as_ref(),
                            &message.payload,
                        ) {
                            Err(error) if error.kind() == ErrorKind::Unavailable => {
                                last_error = Some(error);
                                break;
                            }
                            other => return other,
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        last_error = Some(PluginError::Unavailable(format!(
                            "no word from the worker running turn `{}` for {:?}; the worker is presumed gone",
                            request.turn_id(),
                            config.turn_idle_timeout
                        )));
                        break;
                    }
                }
            }
        }
        Err(last_error.unwrap_or_else(|| self.no_worker(target)))
    }
}

/// What every attempt of a `start_turn` call sends.
struct TurnCall<'a> {
    subject: &'a str,
    inbox: &'a str,
    headers: HeaderMap,
    payload: bytes::Bytes,
}

/// One live event of a running turn, as a streaming caller
/// ([`BusClient::start_turn_live`]) or a watcher of `<prefix>.live.<sid>` receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveEvent {
    /// Its place in the run's live output, from 1.
    pub seq: u64,
    /// The executor's event (lash's stream event JSON for lash turns).
    pub event: Value,
}

impl LiveEvent {
    /// The live event a message carries (`Sessionbus-Live` header, JSON body); `None`
    /// for any other message (a bare progress message, a reply).
    pub fn of(message: &async_nats::Message) -> Option<Self> {
        let seq = message.headers.as_ref()?.get(wire::LIVE)?.as_str().parse().ok()?;
        let event = serde_json::from_slice(&message.payload).ok()?;
        Some(Self { seq, event })
    }
}

/// Removes a turn's reply route when the call ends.
struct RouteGuard {
    routes: Arc<TurnRoutes>,
    key: String,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        crate::lock(&self.routes).remove(&self.key);
    }
}

#[async_trait::async_trait]
impl SessionStateService for BusClient {
    async fn snapshot_current(&self) -> Result<SessionSnapshot, PluginError> {
        self.snapshot_session(self.bound.current()?).await
    }

    async fn snapshot_session(&self, session_id: &str) -> Result<SessionSnapshot, PluginError> {
        let mut snapshot: SessionSnapshot = self.session_call(session_id, Op::Snapshot, &Empty {}).await?;
        self.complete_graph(session_id, &mut snapshot).await?;
        Ok(snapshot)
    }

    async fn tool_catalog(&self, session_id: &str) -> Result<Vec<Value>, PluginError> {
        match self.session_call(session_id, Op::ToolCatalog, &ToolCatalogRequest::default()).await? {
            ToolCatalogReply::Full { tools, .. } => Ok(tools),
            ToolCatalogReply::Unchanged { .. } => {
                Err(PluginError::Unavailable("the worker answered `unchanged` to a full catalog request".into()))
            }
        }
    }

    /// Asks with the cached catalog's generation; the worker answers `unchanged` only
    /// when it knows that generation is current. This client's own tool writes drop the
    /// catalog they made stale, so its next call reads the leader (read-your-writes).
    async fn shared_tool_catalog(&self, session_id: &str) -> Result<Arc<Vec<Value>>, PluginError> {
        let cached = self.inner.catalogs.get(session_id);
        let ask = ToolCatalogRequest { if_generation: cached.as_ref().map(|(generation, _)| *generation) };
        match self.session_call(session_id, Op::ToolCatalog, &ask).await? {
            ToolCatalogReply::Unchanged { generation, .. } => match cached {
                Some((cached_generation, catalog)) if cached_generation == generation => Ok(catalog),
                _ => Err(PluginError::Unavailable(
                    "the worker answered `unchanged` for a catalog this client lacks".into(),
                )),
            },
            ToolCatalogReply::Full { generation, tools } => {
                Ok(self.inner.catalogs.get_or_build(session_id, generation, || tools))
            }
        }
    }

    async fn tool_state(&self, session_id: &str) -> Result<ToolState, PluginError> {
        self.session_call(session_id, Op::ToolState, &Empty {}).await
    }

    async fn apply_tool_state(&self, session_id: &str, snapshot: ToolState) -> Result<u64, PluginError> {
        let reply: GenerationReply = self.session_call(session_id, Op::ApplyToolState, &snapshot).await?;
        self.inner.catalogs.forget_older(session_id, reply.generation);
        Ok(reply.generation)
    }

    async fn set_tool_membership(
        &self,
        session_id: &str,
        tool_names: &[String],
        present: bool,
    ) -> Result<u64, PluginError> {
        let body = MembershipRequest { tool_names: tool_names.to_vec(), present };
        let reply: GenerationReply = self.session_call(session_id, Op::SetToolMembership, &body).await?;
        self.inner.catalogs.forget_older(session_id, reply.generation);
        Ok(reply.generation)
    }
}

#[async_trait::async_trait]
impl SessionLifecycleService for BusClient {
    async fn create_session(&self, mut request: SessionCreateRequest) -> Result<SessionHandle, PluginError> {
        request.session_id.get_or_insert_with(|| uuid::Uuid::new_v4().to_string());
        if matches!(request.start, SessionStartPoint::CurrentSession) {
            let current = self.bound.start_point()?.to_owned();
            request.start = SessionStartPoint::ExistingSession { session_id: current };
        }
        self.call(Target::global(Endpoint::Create), &request).await
    }

    async fn close_session(&self, session_id: &str) -> Result<(), PluginError> {
        let _: Empty = self.session_call(session_id, Op::Close, &Empty {}).await?;
        Ok(())
    }

    async fn start_turn(&self, request: SessionTurnRequest) -> Result<AssembledTurn, PluginError> {
        let session_id = request.session_id().to_owned();
        let mut turn = self.run_turn(request, None).await?;
        self.complete_graph(&session_id, &mut turn.state).await?;
        Ok(turn)
    }
}

#[async_trait::async_trait]
impl SessionGraphService for BusClient {
    async fn append_session_nodes(
        &self,
        session_id: &str,
        request: AppendSessionNodesRequest,
    ) -> Result<AppendSessionNodesResult, PluginError> {
        self.session_call(session_id, Op::AppendNodes, &request).await
    }

    /// Batched (README.md "Batched trace records"): returns once this record is stored,
    /// or with the error of the batch it went out in. A call made with an explicit
    /// request id (`request_context::with_request_id`, a resend) goes alone, unbatched,
    /// so the resend stores the record at most once.
    async fn emit_trace_event(&self, context: TraceContext, event: TraceEvent) -> Result<(), PluginError> {
        let session_id = self.bound.trace_session(&context)?;
        let payload = wire::encode(&TraceRequest { context, event })?;
        if crate::request_context::current().is_some_and(|current| current.request_id.is_some()) {
            let _: Empty = self.call_encoded(Target::session(&session_id, Op::Trace), payload).await?;
            return Ok(());
        }
        self.check_size(&payload)?;
        let size = payload.len();
        self.inner.traces.emit(self, &session_id, payload, size).await
    }

    /// The records go out in order: with an explicit request id as one batched `trace`
    /// request (a resend of it stores each record at most once), else through the
    /// session's lane like concurrent `emit_trace_event` calls.
    async fn emit_trace_events(&self, records: Vec<(TraceContext, TraceEvent)>) -> Result<(), PluginError> {
        if crate::request_context::current().is_some_and(|current| current.request_id.is_some()) {
            let Some(session_id) = self.bound.trace_batch_session(records.iter().map(|(context, _)| context))? else {
                return Ok(());
            };
            let payloads = records
                .into_iter()
                .map(|(context, event)| wire::encode(&TraceRequest { context, event }))
                .collect::<Result<Vec<_>, _>>()?;
            return self.send_batch(&session_id, payloads).await;
        }
        let emits = records.into_iter().map(|(context, event)| self.emit_trace_event(context, event));
        crate::trace_batch::join_started_in_order(emits).await.into_iter().collect()
    }
}

/// Reaches whichever worker runs the turn: the worker answering stores the request,
/// and the one running the turn stops it.
#[async_trait::async_trait]
impl TurnCancelService for BusClient {
    async fn cancel_turn(&self, session_id: &str, turn_id: &str) -> Result<CancelReply, PluginError> {
        self.session_call(session_id, Op::CancelTurn, &CancelTurnRequest { turn_id: turn_id.to_owned() }).await
    }
}

#[async_trait::async_trait]
impl SessionRegistryService for BusClient {
    async fn list_sessions(&self, query: &SessionListQuery) -> Result<SessionListPage, PluginError> {
        BusClient::list_sessions(self, query).await
    }
}

impl BatchSink<bytes::Bytes> for BusClient {
    /// One `trace` request: the original single-record body for one record, else a
    /// `records` batch; retried with one request id, so each record is stored once.
    async fn send_batch(&self, session_id: &str, mut items: Vec<bytes::Bytes>) -> Result<(), PluginError> {
        let payload = match items.len() {
            1 => items.swap_remove(0),
            _ => wire::trace_batch_body(&items),
        };
        let _: Empty = self.call_encoded(Target::session(session_id, Op::Trace), payload).await?;
        Ok(())
    }
}

/// The batch limits of `config` on a server taking `max_payload` bytes: a batch body
/// (records, commas, framing) plus 512 bytes of headers fits.
fn trace_limits(config: &BusClientConfig, max_payload: usize) -> Limits {
    let max_records = config.trace_batch_records.max(1);
    let overhead = 512 + wire::TRACE_BATCH_FRAMING.len() + max_records;
    Limits { window: config.trace_window, max_records, max_bytes: max_payload.saturating_sub(overhead) }
}

#[async_trait::async_trait]
impl SessionHistoryService for BusClient {
    async fn list_turns(&self, session_id: &str, query: &TurnListQuery) -> Result<TurnListPage, PluginError> {
        BusClient::list_turns(self, session_id, query).await
    }

    async fn tool_history(&self, session_id: &str) -> Result<ToolHistory, PluginError> {
        BusClient::tool_history(self, session_id).await
    }
}

/// A call that got no answer it could return, and whether a worker may have run it.
struct Unanswered {
    error: PluginError,
    /// False only when no worker can have received the call (no responders every time).
    maybe_delivered: bool,
}

/// The error of a write that may or may not have been applied.
fn outcome_unknown(error: PluginError, request_id: &str) -> PluginError {
    PluginError::Unavailable(format!(
        "{}; the outcome is unknown (the write may have been applied): resend it with request id {request_id} \
         (`request_context::with_request_id`, or the `Sessionbus-Request-Id` header), which applies it at most once",
        error.message()
    ))
}
