//! [`InMemoryHost`]: a complete in-process implementation of the three traits, the
//! reference every other host is checked against.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::watch;

use crate::{
    AppendSessionNodesRequest, AppendSessionNodesResult, AssembledTurn, CancelReply, CancellationToken, CatalogCache,
    PluginError, SessionAppendNode, SessionBinding, SessionCreateRequest, SessionGraph, SessionGraphService,
    SessionHandle, SessionHistoryService, SessionLifecycleService, SessionListPage, SessionListQuery, SessionNode,
    SessionRegistryService, SessionRelation, SessionSnapshot, SessionStartPoint, SessionStateService, SessionStatus,
    SessionSummary, SessionTurnRequest, ToolHistory, ToolState, TraceContext, TraceEvent, TraceRecord, TraceSink,
    TurnCancelService, TurnContext, TurnExecutor, TurnInput, TurnLease, TurnListPage, TurnListQuery, TurnOutput,
    TurnSummary, assign_node_ids, check_verbatim_nodes, claim_trace_context, clock, default_policy, ids, merge_ledger,
    run_until_cancelled, set_membership_with_retry,
};

type TurnResult = Result<AssembledTurn, PluginError>;

enum TurnRecord {
    Running { input: TurnInput, done: watch::Receiver<Option<TurnResult>>, cancel: CancellationToken },
    Completed { input: TurnInput, result: Box<AssembledTurn> },
}

struct Session {
    snapshot: SessionSnapshot,
    parent_session_id: Option<String>,
    closed: bool,
    running_turn: Option<String>,
    turns: HashMap<String, TurnRecord>,
    /// The turn ledger as the history reads it: each turn's latest record, keyed by the
    /// host's ledger sequence of that record (a turn's new record replaces its old one).
    ledger: BTreeMap<u64, TurnSummary>,
    created_at: String,
    last_activity: String,
}

impl Session {
    fn touch(&mut self) {
        self.last_activity = clock::now_rfc3339();
    }

    fn summary(&self) -> SessionSummary {
        SessionSummary {
            session_id: self.snapshot.session_id.clone(),
            parent_session_id: self.parent_session_id.clone(),
            status: if self.closed { SessionStatus::Closed } else { SessionStatus::Open },
            created_at: self.created_at.clone(),
            last_activity: self.last_activity.clone(),
            turn_index: self.snapshot.turn_index,
            tokens: self.snapshot.token_usage.input_tokens + self.snapshot.token_usage.output_tokens,
            turn_running: self.running_turn.is_some(),
        }
    }

    /// The lease as the history shows it; this host renews no lease, so it has no time.
    fn lease(&self) -> TurnLease {
        match &self.running_turn {
            _ if self.closed => TurnLease::Closed,
            Some(turn_id) => {
                TurnLease::Held { turn_id: turn_id.clone(), holder: MEMORY_LEASE_HOLDER.into(), renewed_at_ms: None }
            }
            None => TurnLease::Free,
        }
    }
}

/// The lease holder the in-memory host names (it is its own, only worker).
const MEMORY_LEASE_HOLDER: &str = "in-memory";

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    /// Session ids by creation order.
    created: BTreeMap<u64, String>,
    tools: HashMap<String, ToolState>,
    tool_revision: u64,
    /// Each session's stored tool states `(generation, written at, state)`, the newest
    /// [`crate::MAX_TOOL_GENERATIONS`], as the JetStream host's KV bucket keeps them.
    tool_revisions: HashMap<String, VecDeque<(u64, String, ToolState)>>,
    /// The last ledger sequence given out (shared by every session, like a stream's).
    ledger_seq: u64,
    traces: Vec<TraceRecord>,
}

struct Inner {
    state: Mutex<State>,
    catalogs: CatalogCache,
    executor: Arc<dyn TurnExecutor>,
}

/// An in-process host with every rule of the contract. Clones share state; a clone
/// made with [`InMemoryHost::bound_to`] answers `snapshot_current` for its session.
///
/// ```
/// use std::sync::Arc;
/// use sessionbus_api::memory::InMemoryHost;
/// use sessionbus_api::{EchoExecutor, SessionCreateRequest, SessionLifecycleService as _, SessionTurnRequest};
/// use sessionbus_api::{SessionStateService as _, TurnInput};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let host = InMemoryHost::new(Arc::new(EchoExecutor));
/// let session = host.create_session(SessionCreateRequest::root(Some("chat-42".into()))).await.unwrap();
/// let turn = SessionTurnRequest::for_turn(&session.session_id, "t1", TurnInput::text("hello")).unwrap();
/// let done = host.start_turn(turn).await.unwrap();
/// assert_eq!(done.state.turn_index, 1);
/// assert_eq!(host.snapshot_session("chat-42").await.unwrap().session_graph.nodes.len(), 2);
/// # });
/// ```
#[derive(Clone)]
pub struct InMemoryHost {
    inner: Arc<Inner>,
    bound: SessionBinding,
}

impl InMemoryHost {
    /// An empty host whose turns run on `executor`.
    pub fn new(executor: Arc<dyn TurnExecutor>) -> Self {
        Self {
            inner: Arc::new(Inner { state: Mutex::new(State::default()), catalogs: CatalogCache::new(4096), executor }),
            bound: SessionBinding::unbound(),
        }
    }

    /// A view of the same host bound to `session_id`.
    pub fn bound_to(&self, session_id: impl Into<String>) -> Self {
        Self { inner: Arc::clone(&self.inner), bound: SessionBinding::to(session_id) }
    }

    /// Every trace record emitted so far, in order.
    pub fn trace_records(&self) -> Vec<TraceRecord> {
        self.lock().traces.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied write: every
        // mutation below validates first and then writes, so the data stays usable.
        crate::sync::lock(&self.inner.state)
    }

    fn record_trace(&self, session_id: &str, mut context: TraceContext, event: TraceEvent) -> Result<(), PluginError> {
        claim_trace_context(&mut context, session_id)?;
        self.lock().traces.push(TraceRecord::new(context, event));
        Ok(())
    }
}

fn session<'a>(state: &'a State, session_id: &str) -> Result<&'a Session, PluginError> {
    state.sessions.get(session_id).ok_or_else(|| PluginError::unknown_session(session_id))
}

fn session_mut<'a>(state: &'a mut State, session_id: &str) -> Result<&'a mut Session, PluginError> {
    state.sessions.get_mut(session_id).ok_or_else(|| PluginError::unknown_session(session_id))
}

/// Commits a turn's nodes (chained, or verbatim after [`check_verbatim_nodes`]) and the
/// metadata it changed into `snapshot`.
fn apply_changes(snapshot: &mut SessionSnapshot, output: &TurnOutput, turn_id: &str) -> Result<(), PluginError> {
    let changes = &output.changes;
    let graph = &mut snapshot.session_graph;
    if changes.verbatim_nodes.is_empty() {
        chain_nodes(graph, output.nodes.clone(), snapshot.current_agent_frame_id.as_ref());
    } else {
        let leaf = changes.leaf_node_id.clone().or_else(|| changes.verbatim_nodes.last().map(|n| n.node_id.clone()));
        check_verbatim_nodes(&changes.verbatim_nodes, leaf.as_deref(), graph.nodes.is_empty(), |id| {
            graph.nodes.iter().any(|n| n.node_id == id)
        })
        .map_err(|refusal| refusal.into_error(turn_id))?;
        graph.nodes.extend(changes.verbatim_nodes.iter().cloned());
        graph.leaf_node_id = leaf;
    }
    if let Some(frames) = &changes.agent_frames {
        snapshot.agent_frames = frames.frames.clone();
        snapshot.current_agent_frame_id = frames.current.clone();
    }
    if !changes.usage_deltas.is_empty() {
        let mut ledger = match snapshot.extra.remove("token_ledger") {
            Some(Value::Array(entries)) => entries,
            _ => Vec::new(),
        };
        merge_ledger(&mut ledger, &changes.usage_deltas);
        snapshot.extra.insert("token_ledger".into(), Value::Array(ledger));
    }
    if let Some(usage) = &changes.last_prompt_usage {
        snapshot.extra.insert("last_prompt_usage".into(), usage.clone());
    }
    if let Some(options) = &changes.protocol_turn_options {
        snapshot.protocol_turn_options = options.clone();
    }
    Ok(())
}

/// Chains `nodes` onto the graph's leaf, assigning ids by the contract's rules, in the
/// agent frame `frame` (the session's current one, as lash's own append does: decision
/// 0008).
fn chain_nodes(graph: &mut SessionGraph, nodes: Vec<SessionAppendNode>, frame: Option<&String>) -> Vec<String> {
    let ids = assign_node_ids(&nodes, |id| graph.nodes.iter().any(|n| n.node_id == id), |_| uuid::Uuid::new_v4());
    let timestamp = clock::now_rfc3339();
    for (node, id) in nodes.into_iter().zip(&ids) {
        let parent = graph.leaf_node_id.take();
        let mut node = SessionNode::from_append(node, id.clone(), parent, timestamp.clone());
        node.agent_frame_id = frame.cloned();
        graph.nodes.push(node);
        graph.leaf_node_id = Some(id.clone());
    }
    ids
}

/// Stores `summary` as its turn's latest ledger record, at the next ledger sequence.
fn record_ledger(ledger_seq: &mut u64, session: &mut Session, summary: TurnSummary) {
    session.ledger.retain(|_, kept| kept.turn_id != summary.turn_id);
    *ledger_seq += 1;
    session.ledger.insert(*ledger_seq, summary);
}

fn validate_session_id(session_id: &str) -> Result<(), PluginError> {
    ids::validate_id("session id", session_id)
}

#[async_trait::async_trait]
impl SessionStateService for InMemoryHost {
    async fn snapshot_current(&self) -> Result<SessionSnapshot, PluginError> {
        self.snapshot_session(self.bound.current()?).await
    }

    async fn snapshot_session(&self, session_id: &str) -> Result<SessionSnapshot, PluginError> {
        validate_session_id(session_id)?;
        let state = self.lock();
        Ok(session(&state, session_id)?.snapshot.clone())
    }

    async fn tool_catalog(&self, session_id: &str) -> Result<Vec<Value>, PluginError> {
        Ok(self.tool_state(session_id).await?.catalog())
    }

    async fn shared_tool_catalog(&self, session_id: &str) -> Result<Arc<Vec<Value>>, PluginError> {
        let state = self.tool_state(session_id).await?;
        Ok(self.inner.catalogs.get_or_build(session_id, state.generation, || state.catalog()))
    }

    async fn tool_state(&self, session_id: &str) -> Result<ToolState, PluginError> {
        validate_session_id(session_id)?;
        Ok(self.lock().tools.get(session_id).cloned().unwrap_or_default())
    }

    async fn apply_tool_state(&self, session_id: &str, mut snapshot: ToolState) -> Result<u64, PluginError> {
        validate_session_id(session_id)?;
        let mut state = self.lock();
        let actual = state.tools.get(session_id).map_or(0, |tools| tools.generation);
        if snapshot.generation != actual {
            return Err(PluginError::GenerationMismatch { expected: snapshot.generation, actual });
        }
        state.tool_revision += 1;
        snapshot.generation = state.tool_revision;
        let revisions = state.tool_revisions.entry(session_id.to_owned()).or_default();
        revisions.push_back((snapshot.generation, clock::now_rfc3339(), snapshot.clone()));
        if revisions.len() > crate::MAX_TOOL_GENERATIONS {
            revisions.pop_front();
        }
        state.tools.insert(session_id.to_owned(), snapshot);
        Ok(state.tool_revision)
    }

    async fn set_tool_membership(
        &self,
        session_id: &str,
        tool_names: &[String],
        present: bool,
    ) -> Result<u64, PluginError> {
        set_membership_with_retry(self, session_id, tool_names, present).await
    }
}

#[async_trait::async_trait]
impl SessionLifecycleService for InMemoryHost {
    async fn create_session(&self, request: SessionCreateRequest) -> Result<SessionHandle, PluginError> {
        let session_id = match request.session_id {
            Some(id) => id,
            None => uuid::Uuid::new_v4().to_string(),
        };
        validate_session_id(&session_id)?;
        let mut state = self.lock();
        if state.sessions.contains_key(&session_id) {
            return Err(PluginError::session_exists(&session_id));
        }
        let parent_session_id = match &request.relation {
            SessionRelation::Root => None,
            SessionRelation::Child { parent_session_id, .. } => {
                session(&state, parent_session_id)?;
                Some(parent_session_id.clone())
            }
        };
        let policy = request.policy.unwrap_or_else(|| default_policy(&session_id));
        let mut snapshot = SessionSnapshot::new(session_id.clone(), policy.clone());
        match request.start {
            SessionStartPoint::Empty => {}
            SessionStartPoint::CurrentSession => {
                let current = self.bound.start_point()?;
                snapshot.session_graph = session(&state, current)?.snapshot.session_graph.clone();
            }
            SessionStartPoint::ExistingSession { session_id: source } => {
                snapshot.session_graph = session(&state, &source)?.snapshot.session_graph.clone();
            }
            SessionStartPoint::Snapshot { snapshot: source } => {
                snapshot.session_graph = source.session_graph;
                snapshot.agent_frames = source.agent_frames;
                snapshot.current_agent_frame_id = source.current_agent_frame_id;
            }
        }
        chain_nodes(&mut snapshot.session_graph, request.initial_nodes, snapshot.current_agent_frame_id.as_ref());
        let handle = SessionHandle { session_id: session_id.clone(), parent_session_id, policy };
        let created_seq = state.created.last_key_value().map_or(1, |(seq, _)| seq + 1);
        state.created.insert(created_seq, session_id.clone());
        let created_at = clock::now_rfc3339();
        let session = Session {
            snapshot,
            parent_session_id: handle.parent_session_id.clone(),
            closed: false,
            running_turn: None,
            turns: HashMap::new(),
            ledger: BTreeMap::new(),
            last_activity: created_at.clone(),
            created_at,
        };
        state.sessions.insert(session_id, session);
        Ok(handle)
    }

    async fn close_session(&self, session_id: &str) -> Result<(), PluginError> {
        validate_session_id(session_id)?;
        let mut state = self.lock();
        let Some(session) = state.sessions.get_mut(session_id) else { return Ok(()) };
        if let Some(turn_id) = &session.running_turn {
            return Err(PluginError::Conflict(format!(
                "session `{session_id}` has a running turn `{turn_id}`; close it after the turn completes"
            )));
        }
        session.closed = true;
        session.touch();
        Ok(())
    }

    async fn start_turn(&self, request: SessionTurnRequest) -> Result<AssembledTurn, PluginError> {
        let session_id = request.session_id().to_owned();
        let turn_id = request.turn_id().to_owned();
        validate_session_id(&session_id)?;
        ids::validate_id("turn id", &turn_id)?;
        let (mut done, start) = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let session =
                state.sessions.get_mut(&session_id).ok_or_else(|| PluginError::unknown_session(&session_id))?;
            match session.turns.get(&turn_id) {
                Some(TurnRecord::Completed { input, result }) => {
                    return if input == request.input() {
                        Ok((**result).clone())
                    } else {
                        Err(other_input_conflict(&turn_id))
                    };
                }
                Some(TurnRecord::Running { input, done, .. }) => {
                    if input != request.input() {
                        return Err(other_input_conflict(&turn_id));
                    }
                    (done.clone(), None)
                }
                None => {
                    if session.closed {
                        return Err(PluginError::session_closed(&session_id));
                    }
                    if session.running_turn.is_some() {
                        return Err(PluginError::Conflict(format!(
                            "session `{session_id}` already has a running turn"
                        )));
                    }
                    let (sender, done) = watch::channel(None);
                    let cancel = CancellationToken::new();
                    session.running_turn = Some(turn_id.clone());
                    session.touch();
                    session.turns.insert(
                        turn_id.clone(),
                        TurnRecord::Running {
                            input: request.input().clone(),
                            done: done.clone(),
                            cancel: cancel.clone(),
                        },
                    );
                    let running = TurnSummary::running(turn_id.clone(), Some(clock::now_rfc3339()));
                    record_ledger(&mut state.ledger_seq, session, running);
                    (done, Some((sender, session.snapshot.clone(), cancel)))
                }
            }
        };
        if let Some((sender, snapshot, cancel)) = start {
            // The run is its own task: a caller that goes away does not strand the turn.
            let host = self.clone();
            let (turn, _scope) = request.into_parts();
            tokio::spawn(async move {
                let result = host.run_turn(turn, snapshot, cancel).await;
                let _ = sender.send(Some(result));
            });
        }
        let result = done.wait_for(Option::is_some).await;
        match result {
            Ok(result) => result.clone().unwrap_or_else(|| Err(turn_lost(&turn_id))),
            Err(_) => Err(turn_lost(&turn_id)),
        }
    }
}

fn other_input_conflict(turn_id: &str) -> PluginError {
    PluginError::Conflict(format!("turn `{turn_id}` was already started with a different input"))
}

fn turn_lost(turn_id: &str) -> PluginError {
    PluginError::Unavailable(format!("turn `{turn_id}` ended without a result; retry it with the same turn id"))
}

struct MemoryTraceSink {
    host: InMemoryHost,
    session_id: String,
}

#[async_trait::async_trait]
impl TraceSink for MemoryTraceSink {
    async fn emit(&self, context: TraceContext, event: TraceEvent) -> Result<(), PluginError> {
        self.host.record_trace(&self.session_id, context, event)
    }
}

impl InMemoryHost {
    /// Runs the executor, then commits its output atomically under the lock: nodes,
    /// turn index, usage and the ledger record become visible together. A failed run
    /// commits nothing and frees the turn id for a retry.
    async fn run_turn(
        &self,
        turn: crate::SessionTurnInput,
        snapshot: SessionSnapshot,
        cancel: CancellationToken,
    ) -> TurnResult {
        let started_at_ms = clock::now_unix_ms();
        let sink = Arc::new(MemoryTraceSink { host: self.clone(), session_id: turn.session_id.clone() });
        let session_id = turn.session_id.clone();
        let turn_id = turn.turn_id.clone();
        let input = turn.input.clone();
        let context = TurnContext::new(turn, snapshot, sink).with_cancellation(cancel.clone());
        let outcome = run_until_cancelled(self.inner.executor.run(context), &cancel).await;
        // The tool state is written before the commit, as the durable host does.
        let outcome = match outcome {
            Ok(output) => match output.changes.tool_state.clone() {
                Some(tools) => self.apply_tool_state(&session_id, tools).await.map(|_| output),
                None => Ok(output),
            },
            failed => failed,
        };
        let mut guard = self.lock();
        let state = &mut *guard;
        let session = state.sessions.get_mut(&session_id).ok_or_else(|| PluginError::unknown_session(&session_id))?;
        session.running_turn = None;
        session.touch();
        let output =
            match outcome.and_then(|output| apply_changes(&mut session.snapshot, &output, &turn_id).map(|()| output)) {
                Ok(output) => output,
                Err(err) => {
                    session.turns.remove(&turn_id);
                    record_ledger(&mut state.ledger_seq, session, TurnSummary::failed(turn_id, &err));
                    return Err(err);
                }
            };
        session.snapshot.turn_index += 1;
        session.snapshot.token_usage.add(&output.token_usage);
        let state_after = session.snapshot.clone();
        let duration_ms = clock::now_unix_ms().saturating_sub(started_at_ms);
        let assembled = output.assemble(state_after, started_at_ms, duration_ms);
        record_ledger(&mut state.ledger_seq, session, TurnSummary::completed(turn_id.clone(), &assembled));
        session.turns.insert(turn_id, TurnRecord::Completed { input, result: Box::new(assembled.clone()) });
        Ok(assembled)
    }
}

#[async_trait::async_trait]
impl SessionGraphService for InMemoryHost {
    async fn append_session_nodes(
        &self,
        session_id: &str,
        request: AppendSessionNodesRequest,
    ) -> Result<AppendSessionNodesResult, PluginError> {
        validate_session_id(session_id)?;
        if request.nodes.is_empty() {
            return Err(PluginError::InvalidRequest("an append needs at least one node".to_string()));
        }
        let mut state = self.lock();
        let session = session_mut(&mut state, session_id)?;
        if session.closed {
            return Err(PluginError::session_closed(session_id));
        }
        let graph = &mut session.snapshot.session_graph;
        if let Some(ancestor) = &request.requires_ancestor_node_id
            && !graph.is_on_active_path(ancestor)
        {
            return Ok(AppendSessionNodesResult::StaleBranch { current_leaf_node_id: graph.leaf_node_id.clone() });
        }
        let node_ids = chain_nodes(graph, request.nodes, session.snapshot.current_agent_frame_id.as_ref());
        let leaf_node_id = graph.leaf_node_id.clone().unwrap_or_default();
        session.touch();
        Ok(AppendSessionNodesResult::Appended { node_ids, leaf_node_id })
    }

    async fn emit_trace_event(&self, context: TraceContext, event: TraceEvent) -> Result<(), PluginError> {
        let session_id = self.bound.trace_session(&context)?;
        validate_session_id(&session_id)?;
        self.record_trace(&session_id, context, event)
    }
}

/// A cancel fires the running turn's token; the run commits as cancelled.
#[async_trait::async_trait]
impl TurnCancelService for InMemoryHost {
    async fn cancel_turn(&self, session_id: &str, turn_id: &str) -> Result<CancelReply, PluginError> {
        validate_session_id(session_id)?;
        ids::validate_id("turn id", turn_id)?;
        let mut state = self.lock();
        let session = session_mut(&mut state, session_id)?;
        Ok(match session.turns.get(turn_id) {
            None => CancelReply::UnknownTurn,
            Some(TurnRecord::Completed { result, .. }) => CancelReply::Finished { outcome: result.outcome.clone() },
            Some(TurnRecord::Running { cancel, .. }) => {
                cancel.cancel();
                CancelReply::Cancelling { holder: None }
            }
        })
    }
}

/// Pages by creation order with exact filters: the cursor is the creation sequence of the
/// last session the page looked at.
#[async_trait::async_trait]
impl SessionRegistryService for InMemoryHost {
    async fn list_sessions(&self, query: &SessionListQuery) -> Result<SessionListPage, PluginError> {
        let after = query.after_sequence()?;
        let limit = query.effective_limit();
        let state = self.lock();
        let mut page = SessionListPage::default();
        let mut last_seen = None;
        for (seq, session_id) in state.created.range(after.saturating_add(1)..) {
            let Some(session) = state.sessions.get(session_id) else { continue };
            let summary = session.summary();
            if !query.matches(&summary) {
                continue;
            }
            if page.sessions.len() == limit {
                page.next_after = last_seen.map(|seq: u64| seq.to_string());
                return Ok(page);
            }
            last_seen = Some(*seq);
            page.sessions.push(summary);
        }
        Ok(page)
    }
}

/// Pages by ledger sequence (the cursor is the sequence of the last turn listed); the
/// tool history is the kept tool states of the session.
#[async_trait::async_trait]
impl SessionHistoryService for InMemoryHost {
    async fn list_turns(&self, session_id: &str, query: &TurnListQuery) -> Result<TurnListPage, PluginError> {
        validate_session_id(session_id)?;
        let after = query.after_sequence()?;
        let limit = query.effective_limit();
        let state = self.lock();
        let session = session(&state, session_id)?;
        let mut entries = session.ledger.range(after.saturating_add(1)..);
        let mut page =
            TurnListPage { lease: query.after.is_none().then(|| session.lease()), ..TurnListPage::default() };
        for (seq, summary) in entries.by_ref().take(limit) {
            page.turns.push(summary.clone());
            page.next_after = Some(seq.to_string());
        }
        if entries.next().is_none() {
            page.next_after = None;
        }
        Ok(page)
    }

    async fn tool_history(&self, session_id: &str) -> Result<ToolHistory, PluginError> {
        validate_session_id(session_id)?;
        let state = self.lock();
        session(&state, session_id)?;
        let revisions = state.tool_revisions.get(session_id).into_iter().flatten().cloned();
        Ok(ToolHistory::from_revisions(revisions))
    }
}
