//! [`Worker`]: serves the three traits of any host on the bus, as the NATS micro
//! service `sessionbus` (so `$SRV.PING/INFO/STATS` and `nats micro` work), in a queue
//! group so any number of workers share the load.
//!
//! Turns and fast ops have separate concurrency limits: long turns never starve reads,
//! and a request over the limit is answered `Unavailable` (503) at once instead of
//! queueing without bound.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::service::{self, ServiceExt as _};
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures::StreamExt as _;
use serde::Serialize;
use sessionbus_api::{
    AppendSessionNodesRequest, ExecutionScope, PluginError, SessionCreateRequest, SessionHost, SessionListQuery,
    SessionNode, SessionSnapshot, SessionTurnRequest, ToolState, TurnListQuery, claim_trace_context,
};
use tokio::sync::Semaphore;

use crate::generations::ToolGenerations;
use crate::propagation;
use crate::reply_policy::ReplyPolicy;
use crate::request_context::{RequestContext, scoped_request_id, with_request};
use crate::subjects::{Endpoint, Op, Subjects};
use crate::wire::{
    self, CancelTurnRequest, Empty, ErrorCode, GenerationReply, GraphPageRef, GraphPageRequest, MembershipRequest,
    PingReply, StartTurnRequest, ToolCatalogReply, ToolCatalogRequest, TraceBody, TraceRequest,
};
use opentelemetry::trace::{FutureExt as _, SpanKind, TraceContextExt as _};

/// The micro service name every worker registers.
pub const SERVICE_NAME: &str = "sessionbus";
/// The queue group every worker endpoint joins.
pub const QUEUE_GROUP: &str = "sessionbus";
/// Bytes kept free in a reply for headers.
const REPLY_HEADROOM: usize = 4096;

/// Settings of a [`Worker`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// The subject prefix.
    pub subjects: Subjects,
    /// Fast ops (everything but `start_turn`) served at once; more are refused (503).
    pub max_fast_in_flight: usize,
    /// Turns run at once; more are refused (503).
    pub max_turns_in_flight: usize,
    /// How often a running turn sends a progress message to a client that asked.
    pub progress_every: Duration,
    /// This worker's id (in `ping` replies and the service metadata).
    pub worker_id: String,
    /// Learn tool-state generations from JetStream's republished tool events, so an
    /// unchanged catalog is answered without a JetStream read where that is provably
    /// safe (the tools stream on the standalone server this worker is connected to; see
    /// docs/decisions/0003). Only for hosts whose writes are republished (the JetStream
    /// host) and that read through the same server. The connection's
    /// `subscription_capacity` must be at least 1024 (async-nats's default is 65,536).
    pub tool_events: bool,
    /// The reply subjects this worker answers; a request with any other reply subject
    /// is dropped unanswered and unexecuted (see [`ReplyPolicy`]).
    pub reply_policy: ReplyPolicy,
    /// Figures the host reports in the worker's service stats (see [`HostStats`]).
    pub host_stats: Option<HostStats>,
}

/// Figures a worker's host reports about itself: `$SRV.STATS` carries them in the
/// `ping` endpoint's `data`, under `host` (the JetStream host's cache counters, which
/// `sessionbus bench --scale` reads). Called on every stats request.
#[derive(Clone)]
pub struct HostStats(Arc<dyn Fn() -> serde_json::Value + Send + Sync>);

impl HostStats {
    /// Stats made by `report` when a stats request comes.
    pub fn new(report: impl Fn() -> serde_json::Value + Send + Sync + 'static) -> Self {
        Self(Arc::new(report))
    }
}

impl std::fmt::Debug for HostStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostStats(..)")
    }
}

with_setters!(WorkerConfig {
    with_subjects => subjects: Subjects,
    with_max_fast_in_flight => max_fast_in_flight: usize,
    with_max_turns_in_flight => max_turns_in_flight: usize,
    with_progress_every => progress_every: Duration,
    with_worker_id => worker_id: String,
    with_tool_events => tool_events: bool,
    with_reply_policy => reply_policy: ReplyPolicy,
    with_host_stats => host_stats: Option<HostStats>,
});

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            subjects: Subjects::default(),
            max_fast_in_flight: 256,
            max_turns_in_flight: 32,
            progress_every: Duration::from_secs(2),
            worker_id: uuid::Uuid::new_v4().to_string(),
            tool_events: false,
            reply_policy: ReplyPolicy::default(),
            host_stats: None,
        }
    }
}

/// What every running worker is asked through the NATS micro service protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceQuery {
    /// `$SRV.INFO.sessionbus`: each worker's id, version, metadata and endpoints.
    Info,
    /// `$SRV.STATS.sessionbus`: each worker's per-endpoint requests, errors and latency.
    Stats,
}

impl ServiceQuery {
    /// The subject every worker answers this query on.
    pub fn subject(self) -> String {
        let verb = match self {
            Self::Info => "INFO",
            Self::Stats => "STATS",
        };
        format!("$SRV.{verb}.{SERVICE_NAME}")
    }
}

/// Every worker's answer to `query` that arrives within `wait` (a scatter-gather: one
/// request, all replies; answers that are not JSON are skipped). No worker: an empty list.
pub async fn service_answers(
    nats: &Client,
    query: ServiceQuery,
    wait: Duration,
) -> Result<Vec<serde_json::Value>, PluginError> {
    let subject = query.subject();
    let failed = |what: &str, err: &dyn std::fmt::Display| {
        PluginError::Unavailable(format!("could not {what} {subject} to find the sessionbus workers: {err}"))
    };
    let inbox = nats.new_inbox();
    let mut replies = nats.subscribe(inbox.clone()).await.map_err(|e| failed("subscribe for", &e))?;
    nats.publish_with_reply(subject.clone(), inbox, Bytes::new()).await.map_err(|e| failed("publish", &e))?;
    let mut answers = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await {
        if let Ok(value) = serde_json::from_slice(&message.payload) {
            answers.push(value);
        }
    }
    Ok(answers)
}

/// Per-endpoint error counts, reported in the micro service stats (`data`).
#[derive(Clone, Debug, Default, Serialize)]
struct EndpointErrors {
    errors: u64,
    overloaded: u64,
    by_code: HashMap<u16, u64>,
    last_error: Option<String>,
    /// Requests dropped because their reply subject is outside the inbox prefixes.
    refused_replies: u64,
}

/// How many distinct senders of refused reply subjects are logged (each once).
const LOGGED_REFUSED_SENDERS: usize = 1024;

type ErrorStats = Arc<Mutex<HashMap<String, EndpointErrors>>>;

struct Shared<H: ?Sized> {
    host: Arc<H>,
    client: Client,
    config: WorkerConfig,
    fast: Arc<Semaphore>,
    turns: Arc<Semaphore>,
    errors: ErrorStats,
    generations: Option<ToolGenerations>,
    /// The largest reply body that fits the server's `max_payload`.
    reply_limit: usize,
    /// Senders of refused reply subjects already logged.
    refused_senders: Mutex<HashSet<String>>,
    /// The graphs of replies cut into pages, which the next pages are sliced from.
    cuts: GraphCuts,
}

/// A running worker. [`Worker::shutdown`] stops taking requests and waits for the ones
/// in flight.
///
/// Serves any host of the three traits; here the in-memory reference host:
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use sessionbus_api::{EchoExecutor, memory::InMemoryHost};
/// use sessionbus_nats::{Worker, WorkerConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let nats = async_nats::connect("nats://127.0.0.1:4222").await?;
/// let host = Arc::new(InMemoryHost::new(Arc::new(EchoExecutor)));
/// let worker = Worker::start(nats, host, WorkerConfig::default()).await?;
/// // ... serve until asked to stop, then drain for at most 10 s.
/// worker.shutdown(Duration::from_secs(10)).await;
/// # Ok(())
/// # }
/// ```
pub struct Worker {
    service: service::Service,
    loops: Vec<tokio::task::JoinHandle<()>>,
    /// Tells the endpoint loops to stop taking requests (they finish the ones they hold).
    stop: tokio::sync::watch::Sender<bool>,
    fast: Arc<Semaphore>,
    turns: Arc<Semaphore>,
    config: WorkerConfig,
}

fn unavailable(what: &str, err: impl std::fmt::Display) -> PluginError {
    PluginError::Unavailable(format!("{what}: {err}"))
}

impl Worker {
    /// Registers the service, subscribes every endpoint, and returns once the server
    /// has confirmed the subscriptions (a round trip through it), so a request sent
    /// after this returns reaches this worker or another one.
    pub async fn start<H: SessionHost + ?Sized + 'static>(
        client: Client,
        host: Arc<H>,
        config: WorkerConfig,
    ) -> Result<Self, PluginError> {
        let errors: ErrorStats = Arc::default();
        let stats_errors = Arc::clone(&errors);
        let host_stats = config.host_stats.clone();
        let service = client
            .service_builder()
            .description("sessionbus: session state, lifecycle and graph over NATS")
            .queue_group(QUEUE_GROUP)
            .metadata(HashMap::from([("worker_id".to_owned(), config.worker_id.clone())]))
            .stats_handler(move |endpoint, _stats| {
                let mut data = {
                    let errors = lock(&stats_errors);
                    serde_json::to_value(errors.get(&endpoint).cloned().unwrap_or_default()).unwrap_or_default()
                };
                if let (Some(host), Some(fields), true) =
                    (&host_stats, data.as_object_mut(), endpoint == Endpoint::Ping.name())
                {
                    fields.insert("host".to_owned(), (host.0)());
                }
                data
            })
            .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
            .await
            .map_err(|err| unavailable("could not start the sessionbus service", err))?;
        let generations = match config.tool_events {
            true => Some(ToolGenerations::start(&client, &config.subjects, 65_536).await?),
            false => None,
        };
        let shared = Arc::new(Shared {
            reply_limit: client.server_info().max_payload.saturating_sub(REPLY_HEADROOM),
            generations,
            host,
            client: client.clone(),
            fast: Arc::new(Semaphore::new(config.max_fast_in_flight)),
            turns: Arc::new(Semaphore::new(config.max_turns_in_flight)),
            config: config.clone(),
            errors,
            refused_senders: Mutex::default(),
            cuts: GraphCuts::default(),
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut loops = Vec::with_capacity(Endpoint::ALL.len());
        for route in Endpoint::ALL {
            let endpoint = service
                .endpoint_builder()
                .name(route.name())
                .add(config.subjects.listen(route))
                .await
                .map_err(|err| unavailable("could not subscribe a sessionbus endpoint", err))?;
            loops.push(tokio::spawn(serve_endpoint(Arc::clone(&shared), endpoint, route, stopped.clone())));
        }
        let info = service.info().await;
        client
            .request(Subjects::service_ping(SERVICE_NAME, &info.id), Bytes::new())
            .await
            .map_err(|err| unavailable("the worker could not confirm its subscriptions with the server", err))?;
        Ok(Self { fast: Arc::clone(&shared.fast), turns: Arc::clone(&shared.turns), service, loops, stop, config })
    }

    /// This worker's id.
    pub fn id(&self) -> &str {
        &self.config.worker_id
    }

    /// Stops taking requests, waits up to `grace` for the ones in flight, then stops
    /// the service. Returns within `grace` (plus at most one second to unregister the
    /// service) even when the server is gone.
    pub async fn shutdown(self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        // The loops stop taking requests and finish the fast ops they run; turns run in
        // their own tasks. Both hold a permit until they have replied.
        self.stop.send_replace(true);
        let drained = async {
            let fast = self.fast.acquire_many(self.config.max_fast_in_flight as u32).await;
            let turns = self.turns.acquire_many(self.config.max_turns_in_flight as u32).await;
            drop((fast, turns));
        };
        if tokio::time::timeout_at(deadline, drained).await.is_err() {
            tracing::warn!(?grace, "worker shutdown: requests still in flight after the drain deadline");
        }
        for endpoint_loop in &self.loops {
            endpoint_loop.abort();
        }
        let unregister_by = deadline.max(tokio::time::Instant::now() + Duration::from_secs(1));
        match tokio::time::timeout_at(unregister_by, self.service.stop()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(%err, "worker shutdown: stopping the service failed"),
            Err(_) => tracing::warn!("worker shutdown: the server did not confirm the service stop in time"),
        }
    }
}

/// Takes `route`'s requests until told to stop. A fast op runs inside this loop's task
/// (with the others in flight on the endpoint), not in a task of its own: no spawn and no
/// hop between tasks per call, and the requests and replies of the calls in flight leave
/// together, in fewer writes. A turn, which runs for long, gets its own task.
async fn serve_endpoint<H: SessionHost + ?Sized + 'static>(
    shared: Arc<Shared<H>>,
    mut endpoint: service::endpoint::Endpoint,
    route: Endpoint,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let name = route.name();
    let is_turn = route == Endpoint::Session(Op::StartTurn);
    let mut in_flight = futures::stream::FuturesUnordered::new();
    // A worker dropped without `shutdown` leaves its loops serving, as before.
    let mut stoppable = true;
    loop {
        let request = tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => continue,
            stopped = stop.wait_for(|stopped| *stopped), if stoppable => match stopped {
                Ok(_) => break,
                Err(_) => {
                    stoppable = false;
                    continue;
                }
            },
            request = endpoint.next() => match request {
                Some(request) => request,
                None => break,
            },
        };
        if let Some(reply) = request.message.reply.as_deref()
            && !shared.config.reply_policy.allows(reply)
        {
            refuse_reply(&shared, name, reply, &request.message.subject);
            continue;
        }
        let semaphore = if is_turn { &shared.turns } else { &shared.fast };
        let Ok(permit) = Arc::clone(semaphore).try_acquire_owned() else {
            let error = PluginError::Overloaded(format!(
                "sessionbus worker {} is overloaded ({} `{name}` requests in flight); retry shortly or add workers",
                shared.config.worker_id,
                if is_turn { shared.config.max_turns_in_flight } else { shared.config.max_fast_in_flight },
            ));
            record_error(&shared.errors, name, ErrorCode::Unavailable, &error, true);
            respond_error(&request, ErrorCode::Unavailable, &error).await;
            continue;
        };
        let call = serve_request(Arc::clone(&shared), request, route, permit);
        if is_turn {
            tokio::spawn(call);
        } else {
            in_flight.push(call);
        }
    }
    while in_flight.next().await.is_some() {}
}

/// Handles one request and sends its reply; `permit` is held until the reply is sent.
async fn serve_request<H: SessionHost + ?Sized + 'static>(
    shared: Arc<Shared<H>>,
    request: service::Request,
    route: Endpoint,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let _permit = permit;
    match handle(&shared, &request, route).await {
        Ok(body) => {
            if let Err(err) = request.respond(Ok(body)).await {
                tracing::debug!(%err, endpoint = route.name(), "could not send a reply");
            }
        }
        Err((code, error)) => {
            record_error(&shared.errors, route.name(), code, &error, false);
            respond_error(&request, code, &error).await;
        }
    }
}

/// Counts a request dropped for its reply subject, and logs it once per sender.
fn refuse_reply<H: ?Sized>(shared: &Shared<H>, endpoint: &str, reply: &str, subject: &str) {
    lock(&shared.errors).entry(endpoint.to_owned()).or_default().refused_replies += 1;
    let sender = ReplyPolicy::sender_key(reply);
    let mut logged = lock(&shared.refused_senders);
    if logged.len() < LOGGED_REFUSED_SENDERS && logged.insert(sender.to_owned()) {
        tracing::warn!(
            endpoint,
            subject,
            reply = wire::header_safe(reply),
            "dropped a request whose reply subject is outside the inbox prefixes (logged once per sender; \
             counted in the service stats as refused_replies)"
        );
    }
}

use crate::graph_cuts::GraphCuts;
use crate::lock;

fn record_error(errors: &ErrorStats, endpoint: &str, code: ErrorCode, error: &PluginError, overloaded: bool) {
    let mut errors = lock(errors);
    let entry = errors.entry(endpoint.to_owned()).or_default();
    entry.errors += 1;
    entry.overloaded += u64::from(overloaded);
    *entry.by_code.entry(code.as_u16()).or_default() += 1;
    entry.last_error = Some(wire::header_safe(&error.message()));
}

async fn respond_error(request: &service::Request, code: ErrorCode, error: &PluginError) {
    let (headers, body) = wire::error_reply(code, error);
    if let Err(err) = request.respond_with_headers(Ok(body), headers).await {
        tracing::debug!(%err, "could not send an error reply");
    }
}

type Reply = Result<Bytes, (ErrorCode, PluginError)>;

fn failed(error: PluginError) -> (ErrorCode, PluginError) {
    (ErrorCode::for_error(&error), error)
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers.and_then(|h| h.get(name)).map(|v| v.as_str())
}

async fn handle<H: SessionHost + ?Sized + 'static>(
    shared: &Arc<Shared<H>>,
    request: &service::Request,
    route: Endpoint,
) -> Reply {
    let message = &request.message;
    let headers = message.headers.as_ref();
    let request_id = header(headers, wire::REQUEST_ID)
        .filter(|id| sessionbus_api::ids::validate_id("request id", id).is_ok())
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), |id| scoped_request_id(&message.subject, id));
    let limit = shared.reply_limit;
    let operation = route.name();
    let template = || shared.config.subjects.template(route);
    let parent = propagation::extract(headers);
    let cx = propagation::messaging_span(&parent, SpanKind::Server, operation, template, &message.subject);
    let context = RequestContext {
        request_id: Some(request_id),
        // Only writes are compared with what their request id stored before: reads (the
        // most frequent calls) skip hashing their body.
        body_digest: route.writes().then(|| crate::request_context::body_digest(&message.payload)),
        traceparent: propagation::traceparent_of(&cx),
        live_reply: (route == Endpoint::Session(Op::StartTurn)
            && header(headers, wire::PROGRESS) == Some(wire::PROGRESS_STREAM))
        .then(|| message.reply.as_ref().map(ToString::to_string))
        .flatten(),
    };
    let result = with_request(context, handle_route(shared, request, route, limit).with_context(cx.clone())).await;
    if let Err((_, error)) = &result {
        propagation::record_error(&cx, &error.message());
    }
    cx.span().end();
    result
}

async fn handle_route<H: SessionHost + ?Sized + 'static>(
    shared: &Arc<Shared<H>>,
    request: &service::Request,
    route: Endpoint,
    limit: usize,
) -> Reply {
    let message = &request.message;
    let body = match route {
        Endpoint::Ping => wire::encode(&PingReply {
            worker_id: shared.config.worker_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .map_err(failed),
        Endpoint::Create => {
            let create: SessionCreateRequest = wire::decode_request("create", &message.payload).map_err(failed)?;
            reply(shared.host.create_session(create).await)
        }
        Endpoint::Sessions => {
            let query: SessionListQuery = wire::decode_request("sessions", &message.payload).map_err(failed)?;
            reply(shared.host.list_sessions(&query).await)
        }
        Endpoint::Session(op) => {
            let (session_id, _) = shared.config.subjects.parse_session_op(&message.subject).map_err(failed)?;
            handle_session_op(shared, request, op, &session_id, limit).await
        }
    }?;
    if body.len() > limit {
        return Err((ErrorCode::TooLarge, PluginError::too_large("the reply", body.len(), limit)));
    }
    Ok(body)
}

/// Decodes the request body of `op`; malformed input is a 400.
fn body<T: serde::de::DeserializeOwned>(op: Op, payload: &[u8]) -> Result<T, (ErrorCode, PluginError)> {
    wire::decode_request(op.as_str(), payload).map_err(failed)
}

fn reply<T: Serialize>(result: Result<T, PluginError>) -> Reply {
    wire::encode(&result.map_err(failed)?).map_err(failed)
}

async fn handle_session_op<H: SessionHost + ?Sized + 'static>(
    shared: &Arc<Shared<H>>,
    request: &service::Request,
    op: Op,
    session_id: &str,
    limit: usize,
) -> Reply {
    let host = &shared.host;
    let payload = &request.message.payload;
    match op {
        Op::Snapshot => {
            let _: Empty = body(op, payload)?;
            let snapshot = host.snapshot_session(session_id).await.map_err(failed)?;
            first_page(snapshot, limit, |whole| shared.cuts.keep(session_id, whole))
        }
        Op::GraphPage => {
            let page: GraphPageRequest = body(op, payload)?;
            // The graph the first page was cut from when this worker keeps it, else the
            // host's current graph (`as_of` cuts it back to the first page's graph).
            let nodes = match page.as_of.and_then(|as_of| shared.cuts.get(session_id, as_of)) {
                Some(nodes) => nodes,
                None => {
                    let nodes = Arc::new(host.snapshot_session(session_id).await.map_err(failed)?.session_graph.nodes);
                    if page.as_of.is_some() {
                        shared.cuts.keep(session_id, Arc::clone(&nodes));
                    }
                    nodes
                }
            };
            graph_page(&nodes, page, limit)
        }
        Op::ToolCatalog => {
            let ask: ToolCatalogRequest = body(op, payload)?;
            let token = crate::subjects::session_token(session_id).map_err(failed)?;
            if let (Some(generations), Some(asked)) = (&shared.generations, ask.if_generation)
                && generations.current(&token).await == Some(asked)
            {
                return reply(Ok(ToolCatalogReply::Unchanged { generation: asked, unchanged: true }));
            }
            let ticket = shared.generations.as_ref().map(ToolGenerations::ticket);
            let state = host.tool_state(session_id).await.map_err(failed)?;
            let generation = state.generation;
            if let (Some(generations), Some(ticket)) = (&shared.generations, ticket) {
                generations.observe_read(ticket, &token, generation);
            }
            if ask.if_generation == Some(generation) {
                reply(Ok(ToolCatalogReply::Unchanged { generation, unchanged: true }))
            } else {
                reply(Ok(ToolCatalogReply::Full { generation, tools: state.catalog() }))
            }
        }
        Op::ToolState => {
            let _: Empty = body(op, payload)?;
            reply(host.tool_state(session_id).await)
        }
        Op::ApplyToolState => {
            let state: ToolState = body(op, payload)?;
            reply(host.apply_tool_state(session_id, state).await.map(|generation| GenerationReply { generation }))
        }
        Op::SetToolMembership => {
            let ask: MembershipRequest = body(op, payload)?;
            reply(
                host.set_tool_membership(session_id, &ask.tool_names, ask.present)
                    .await
                    .map(|generation| GenerationReply { generation }),
            )
        }
        Op::Close => {
            let _: Empty = body(op, payload)?;
            reply(host.close_session(session_id).await.map(|()| Empty {}))
        }
        Op::AppendNodes => {
            let append: AppendSessionNodesRequest = body(op, payload)?;
            reply(host.append_session_nodes(session_id, append).await)
        }
        Op::Trace => {
            let traced: TraceBody = body(op, payload)?;
            let records = traced
                .into_records()
                .map_err(failed)?
                .into_iter()
                .map(|TraceRequest { mut context, event }| {
                    claim_trace_context(&mut context, session_id).map(|()| (context, event))
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(failed)?;
            // One record takes the single-record path (its id as before); more, a batch.
            let stored = match <[_; 1]>::try_from(records) {
                Ok([(context, event)]) => host.emit_trace_event(context, event).await,
                Err(records) => host.emit_trace_events(records).await,
            };
            reply(stored.map(|()| Empty {}))
        }
        Op::Turns => {
            let query: TurnListQuery = body(op, payload)?;
            reply(host.list_turns(session_id, &query).await)
        }
        Op::ToolHistory => {
            let _: Empty = body(op, payload)?;
            reply(host.tool_history(session_id).await)
        }
        Op::CancelTurn => {
            let cancel: CancelTurnRequest = body(op, payload)?;
            reply(host.cancel_turn(session_id, &cancel.turn_id).await)
        }
        Op::StartTurn => {
            let start: StartTurnRequest = body(op, payload)?;
            let scope = start.scope.unwrap_or_else(|| ExecutionScope::turn(session_id, start.turn_id.clone()));
            let turn = SessionTurnRequest::new(session_id, start.turn_id, start.input, scope).map_err(failed)?;
            let wants_progress =
                matches!(header(request.message.headers.as_ref(), wire::PROGRESS), Some("1" | wire::PROGRESS_STREAM));
            let progress = wants_progress.then(|| request.message.reply.clone()).flatten().map(|reply| {
                tokio::spawn(send_progress(shared.client.clone(), reply.to_string(), shared.config.progress_every))
            });
            let result = host.start_turn(turn).await;
            if let Some(progress) = progress {
                progress.abort();
            }
            turn_reply(result.map_err(failed)?, limit, |whole| shared.cuts.keep(session_id, whole))
        }
    }
}

/// Sends `Sessionbus-Status: 102` messages to `reply` until aborted.
async fn send_progress(client: Client, reply: String, every: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        ticks.tick().await;
        let mut headers = HeaderMap::new();
        headers.insert(wire::STATUS, wire::STATUS_PROGRESS);
        if client.publish_with_headers(reply.clone(), headers, Bytes::new()).await.is_err() {
            return;
        }
    }
}

/// The snapshot reply: the whole snapshot when it fits, else the first page of its
/// graph with `graph_next_seq` and `graph_as_of` (the whole graph goes to `keep`).
fn first_page(mut snapshot: SessionSnapshot, limit: usize, keep: impl FnOnce(Arc<Vec<SessionNode>>)) -> Reply {
    let body = wire::encode(&snapshot).map_err(failed)?;
    if body.len() <= limit {
        return Ok(body);
    }
    let overhead = body.len() - nodes_size(&snapshot.session_graph.nodes);
    keep(cut_first_page(&mut snapshot, limit.saturating_sub(overhead + 128)));
    wire::encode(&snapshot).map_err(failed)
}

/// A turn's reply: like a snapshot, its state's graph is paged when the whole reply
/// does not fit (the client completes it with `graph_page`).
fn turn_reply(
    mut turn: sessionbus_api::AssembledTurn,
    limit: usize,
    keep: impl FnOnce(Arc<Vec<SessionNode>>),
) -> Reply {
    let body = wire::encode(&turn).map_err(failed)?;
    if body.len() <= limit {
        return Ok(body);
    }
    let overhead = body.len() - nodes_size(&turn.state.session_graph.nodes);
    keep(cut_first_page(&mut turn.state, limit.saturating_sub(overhead + 128)));
    wire::encode(&turn).map_err(failed)
}

/// Keeps the nodes of `snapshot` that fit `budget` bytes and marks the cut: where the
/// next page starts (`graph_next_seq`) and how many nodes the whole graph has
/// (`graph_as_of`). Returns the whole graph.
fn cut_first_page(snapshot: &mut SessionSnapshot, budget: usize) -> Arc<Vec<SessionNode>> {
    let whole = std::mem::take(&mut snapshot.session_graph.nodes);
    let count = nodes_fitting(&whole, 0, usize::MAX, budget);
    snapshot.session_graph.nodes = whole[..count].to_vec();
    let next = (count < whole.len()).then_some(count as u64);
    snapshot.extra.insert(wire::GRAPH_NEXT_SEQ.to_owned(), serde_json::Value::from(next));
    snapshot.extra.insert(wire::GRAPH_AS_OF.to_owned(), serde_json::Value::from(whole.len() as u64));
    Arc::new(whole)
}

/// The JSON size of `nodes` inside their array.
fn nodes_size(nodes: &[SessionNode]) -> usize {
    nodes.iter().map(|node| json_size(node).map_or(0, |size| size + 1)).sum()
}

/// The size of `value`'s JSON, counted as it is written (nothing is kept).
fn json_size<T: Serialize>(value: &T) -> Option<usize> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).ok().map(|()| count.0)
}

/// One page of `graph` (cut back to `as_of` nodes when given), encoded from the kept
/// graph without copying its nodes.
fn graph_page(graph: &[SessionNode], page: GraphPageRequest, limit: usize) -> Reply {
    let cut = page.as_of.map_or(graph.len(), |as_of| usize::try_from(as_of).unwrap_or(usize::MAX).min(graph.len()));
    let nodes = &graph[..cut];
    let start = usize::try_from(page.after_seq).unwrap_or(usize::MAX).min(nodes.len());
    let count = nodes_fitting(nodes, start, page.limit.max(1) as usize, limit.saturating_sub(64));
    let end = start + count;
    let next_seq = (end < nodes.len()).then_some(end as u64);
    reply(Ok(GraphPageRef { nodes: &nodes[start..end], next_seq }))
}

/// How many nodes from `start`, `most` at most, fit in `budget` bytes of JSON (at least
/// one when any is left, so paging always progresses; a single node too large is
/// refused by the size check).
fn nodes_fitting(nodes: &[SessionNode], start: usize, most: usize, budget: usize) -> usize {
    let mut used = 0;
    let mut count = 0;
    for node in nodes[start..].iter().take(most) {
        let size = json_size(node).map_or(usize::MAX, |size| size + 1);
        if count > 0 && used + size > budget {
            break;
        }
        used = used.saturating_add(size);
        count += 1;
    }
    count
}
