//! Sessions on the state stream: create, close, snapshot and appends.
//!
//! Appends are conditioned on the session's last sequence (`Nats-Expected-Last-Subject-
//! Sequence` with the wildcard `-Subject` `<prefix>.state.<sid>.>`): an append lands
//! only on the state its writer read, so the graph never forks, and no append lands
//! after a close. On a conflict the writer re-reads, re-checks the ancestor and retries.

use sessionbus_api::{
    AppendSessionNodesRequest, AppendSessionNodesResult, ErrorKind, PluginError, SessionAppendNode, SessionBinding,
    SessionCreateRequest, SessionHandle, SessionNode, SessionRelation, SessionSnapshot, SessionStartPoint,
    TraceContext, TraceEvent, TraceRecord, assign_node_ids, claim_trace_context, clock, default_policy, ids,
};

use super::JetStreamHost;
use super::api::{JsError, JsErrorExt as _, JsErrorKind, StoredMessage, Write};
use super::layout::{STATE_STREAM, TRACE_STREAM};
use super::records::{GraphRecord, LeaseRecord, MetaRecord, chunk_nodes, decode, encode};
use super::view::SessionView;
use crate::request_context::current_request_id;
use crate::subjects::session_token;
use sessionbus_api::sync::lock;

/// How long trace records skip fast batches after the trace stream refused one.
const FAST_BATCH_PAUSE: std::time::Duration = std::time::Duration::from_secs(60);

/// How many times an append re-reads and retries after losing a race.
const APPEND_ATTEMPTS: usize = 200;
/// Room left in a message for headers.
const HEADER_ROOM: usize = 1024;
/// The most graph records one batched read asks for.
const GRAPH_BATCH: usize = 256;
/// The namespace of node ids derived from request ids (UUID v5).
pub(crate) const NODE_ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5e55_10b0_5000_4e0d_9c1d_0000_0000_0001);

/// The uuid of the `index`-th node written by request `request_id`.
pub(crate) fn node_uuid(request_id: &str, index: usize) -> uuid::Uuid {
    uuid::Uuid::new_v5(&NODE_ID_NAMESPACE, format!("{request_id}/{index}").as_bytes())
}

fn js(what: &'static str) -> impl Fn(JsError) -> PluginError {
    move |err| err.into_plugin(what)
}

/// Turns appended nodes into stored ones chained onto `leaf`, with ids by the contract's
/// rules (uuids derived from `request_id`, so a retry builds the same ids), in the agent
/// frame `frame`: the session's current one, as lash's own append does (0008).
pub(crate) fn build_nodes(
    view: &SessionView,
    nodes: Vec<SessionAppendNode>,
    request_id: &str,
    leaf: Option<String>,
    frame: Option<&String>,
) -> (Vec<SessionNode>, Option<String>) {
    let node_ids = assign_node_ids(&nodes, |id| view.contains_node(id), |i| node_uuid(request_id, i));
    let timestamp = clock::now_rfc3339();
    let mut parent = leaf;
    let mut stored = Vec::with_capacity(nodes.len());
    for (node, id) in nodes.into_iter().zip(node_ids) {
        let mut node = SessionNode::from_append(node, id.clone(), parent.take(), timestamp.clone());
        node.agent_frame_id = frame.cloned();
        stored.push(node);
        parent = Some(id);
    }
    (stored, parent)
}

/// The snapshot `view` holds of `session_id` (unknown when it holds no meta).
pub(super) fn snapshot_of(view: &SessionView, session_id: &str) -> Result<SessionSnapshot, PluginError> {
    let Some((_, meta)) = &view.meta else { return Err(PluginError::unknown_session(session_id)) };
    let mut snapshot = SessionSnapshot::new(session_id, meta.handle.policy.clone());
    snapshot.agent_frames = meta.agent_frames.clone();
    snapshot.current_agent_frame_id = meta.current_agent_frame_id.clone();
    snapshot.turn_index = meta.turn_index;
    snapshot.token_usage = meta.token_usage;
    snapshot.tool_state_generation = meta.tool_state_generation;
    if let Some(options) = &meta.protocol_turn_options {
        snapshot.protocol_turn_options = options.clone();
    }
    snapshot.extra = meta.snapshot_extra(session_id);
    snapshot.session_graph = view.graph();
    Ok(snapshot)
}

impl JetStreamHost {
    fn payload_limit(&self) -> usize {
        self.max_payload().saturating_sub(HEADER_ROOM)
    }

    pub(super) fn too_large(&self, what: &str, size: usize) -> PluginError {
        PluginError::too_large(what, size, self.max_payload())
    }

    /// Reads meta, lease and graph from the stream leader into `view`. `session_seq` is
    /// read first, so a write racing this refresh makes the next fenced write fail.
    pub(super) async fn refresh(&self, token: &str, view: &mut SessionView) -> Result<(), PluginError> {
        let session_seq = self.session_seq(token).await?;
        self.refresh_from(token, view, session_seq).await
    }

    /// The sequence of the last write to any subject of the session (0 when none).
    pub(super) async fn session_seq(&self, token: &str) -> Result<u64, PluginError> {
        let subject = self.inner.config.subjects.state_session(token);
        let last = self.inner.api.last(STATE_STREAM, &subject).await.map_err(js("reading a session"))?;
        Ok(last.map_or(0, |m| m.seq))
    }

    /// [`Self::refresh`] with the session sequence already read (before calling this).
    ///
    /// The view ends consistent at one stream sequence: meta, lease and graph are read
    /// at once, and when any of them is newer than the session sequence read before
    /// (a write landed between the reads, so one may predate it and another not), the
    /// session sequence is read again and so are they.
    pub(super) async fn refresh_from(
        &self,
        token: &str,
        view: &mut SessionView,
        session_seq: u64,
    ) -> Result<(), PluginError> {
        let refreshed = self.read_view(token, view, session_seq).await;
        if refreshed.is_err() {
            // Reads that failed half-way may have left parts of the view newer than the rest.
            view.loaded = false;
        }
        refreshed
    }

    /// [`Self::refresh_from`]'s reads.
    async fn read_view(&self, token: &str, view: &mut SessionView, session_seq: u64) -> Result<(), PluginError> {
        let subjects = &self.inner.config.subjects;
        let api = &self.inner.api;
        let (meta_subject, lease_subject, graph_subject) =
            (subjects.meta(token), subjects.lease(token), subjects.graph(token));
        let mut session_seq = session_seq;
        for _ in 0..APPEND_ATTEMPTS {
            // A view loading from nothing fetches its graph records (all stored at or
            // before the session sequence) together with the three reads.
            let early_graph = async {
                match view.graph_seq {
                    0 => api.batch_read(STATE_STREAM, &graph_subject, 1, session_seq, GRAPH_BATCH).await,
                    _ => Vec::new(),
                }
            };
            let (meta, lease, graph_last, early_graph) = tokio::join!(
                api.last(STATE_STREAM, &meta_subject),
                api.last(STATE_STREAM, &lease_subject),
                api.last(STATE_STREAM, &graph_subject),
                early_graph,
            );
            for stored in early_graph {
                view.apply_graph(stored.seq, decode("graph", &stored.payload)?);
            }
            view.meta = meta
                .map_err(js("reading session meta"))?
                .map(|m| decode("meta", &m.payload).map(|r| (m.seq, r)))
                .transpose()?;
            view.lease = lease
                .map_err(js("reading a lease"))?
                .map(|m| decode("lease", &m.payload).map(|r| (m.seq, r)))
                .transpose()?;
            let graph_last = graph_last.map_err(js("reading a graph"))?;
            let newest = [view.meta.as_ref().map(|(seq, _)| *seq), view.lease.as_ref().map(|(seq, _)| *seq)]
                .into_iter()
                .chain([graph_last.as_ref().map(|m| m.seq)])
                .flatten()
                .max()
                .unwrap_or(0);
            if let Some(last) = graph_last {
                self.catch_up_graph(token, view, last).await?;
            }
            if newest <= session_seq {
                view.session_seq = session_seq;
                view.loaded = true;
                return Ok(());
            }
            session_seq = self.session_seq(token).await?;
        }
        view.loaded = false;
        Err(PluginError::Unavailable(format!("session `{token}` kept changing while it was read; retry the read")))
    }

    /// Applies every graph record up to and including `last`.
    pub(super) async fn catch_up_graph(
        &self,
        token: &str,
        view: &mut SessionView,
        last: StoredMessage,
    ) -> Result<(), PluginError> {
        if last.seq <= view.graph_seq {
            return Ok(());
        }
        let subject = self.inner.config.subjects.graph(token);
        // A view being loaded, or still behind after one record, reads the rest in
        // batches; what a batch leaves out comes from the leader, record by record.
        let mut batched = view.graph_seq == 0 || !view.loaded;
        while view.graph_seq < last.seq {
            if batched {
                let records =
                    self.inner.api.batch_read(STATE_STREAM, &subject, view.graph_seq + 1, last.seq, GRAPH_BATCH).await;
                if !records.is_empty() {
                    for stored in records {
                        view.apply_graph(stored.seq, decode("graph", &stored.payload)?);
                    }
                    continue;
                }
            }
            let next = self
                .inner
                .api
                .next(STATE_STREAM, &subject, view.graph_seq + 1)
                .await
                .map_err(js("reading a graph"))?
                .ok_or_else(|| PluginError::Unavailable("a graph record vanished while being read".into()))?;
            let record: GraphRecord = decode("graph", &next.payload)?;
            view.apply_graph(next.seq, record);
            batched = true;
        }
        Ok(())
    }

    /// `snapshot_session`: meta and graph from the leader, caught up incrementally.
    pub(super) async fn snapshot(&self, session_id: &str) -> Result<SessionSnapshot, PluginError> {
        let token = session_token(session_id)?;
        // One leader read decides: when nothing was written to the session since the
        // cached view was known to be current, the view answers.
        let session_seq = self.session_seq(&token).await?;
        if session_seq == 0 {
            return Err(PluginError::unknown_session(session_id));
        }
        let view_lock = self.inner.views.get(&token);
        let mut view = view_lock.lock().await;
        if !view.loaded || view.session_seq != session_seq {
            self.refresh_from(&token, &mut view, session_seq).await?;
        }
        snapshot_of(&view, session_id)
    }

    /// `append_session_nodes`.
    pub(super) async fn append(
        &self,
        session_id: &str,
        request: AppendSessionNodesRequest,
    ) -> Result<AppendSessionNodesResult, PluginError> {
        let token = session_token(session_id)?;
        if request.nodes.is_empty() {
            return Err(PluginError::InvalidRequest("an append needs at least one node".to_string()));
        }
        let request_id = current_request_id();
        let view_lock = self.inner.views.get(&token);
        let mut view = view_lock.lock().await;
        let subjects = &self.inner.config.subjects;
        for _ in 0..APPEND_ATTEMPTS {
            if !view.loaded {
                self.refresh(&token, &mut view).await?;
            }
            if let Some((node_ids, leaf_node_id)) = view.result_of(&request_id) {
                let digest = crate::request_context::current_body_digest();
                if view.stored_for_another_body(&request_id, digest.as_deref()) {
                    return Err(super::api::reused_request_id());
                }
                return Ok(AppendSessionNodesResult::Appended { node_ids, leaf_node_id });
            }
            let stale_branch = request.requires_ancestor_node_id.as_ref().is_some_and(|a| !view.is_on_active_path(a));
            if !view.exists() || view.is_closed() || stale_branch {
                // A refusal writes nothing, so no condition checks it: it is decided only
                // on a view the stream leader confirms current.
                let current = self.session_seq(&token).await?;
                if current != view.session_seq {
                    self.refresh_from(&token, &mut view, current).await?;
                    continue;
                }
                if !view.exists() {
                    return Err(PluginError::unknown_session(session_id));
                }
                if view.is_closed() {
                    return Err(PluginError::session_closed(session_id));
                }
                return Ok(AppendSessionNodesResult::StaleBranch { current_leaf_node_id: view.leaf.clone() });
            }
            let (nodes, leaf) =
                build_nodes(&view, request.nodes.clone(), &request_id, view.leaf.clone(), view.current_agent_frame());
            let digest = crate::request_context::current_body_digest();
            let record =
                GraphRecord { request_id: request_id.clone(), turn_id: None, nodes, leaf, digest, replace: false };
            let payload = encode(&record)?;
            if payload.len() > self.payload_limit() {
                return Err(self.too_large("the appended nodes", payload.len()));
            }
            let write = Write::new(subjects.graph(&token), payload, format!("{request_id}/0"))
                .if_last_sequence(view.session_seq, Some(subjects.state_session(&token)));
            match self.inner.api.publish(&write).await {
                Ok(ack) if !ack.duplicate => {
                    let node_ids = record.nodes.iter().map(|n| n.node_id.clone()).collect();
                    let leaf_node_id = record.leaf.clone().unwrap_or_default();
                    view.apply_graph(ack.sequence, record);
                    view.session_seq = ack.sequence;
                    return Ok(AppendSessionNodesResult::Appended { node_ids, leaf_node_id });
                }
                Ok(_) => view.loaded = false,
                Err(err) if err.kind() == JsErrorKind::WrongLastSequence => view.loaded = false,
                Err(err) => return Err(err.into_plugin("appending to a session graph")),
            }
        }
        Err(PluginError::Conflict(format!(
            "append to session `{session_id}` lost {APPEND_ATTEMPTS} races in a row; retry later"
        )))
    }

    /// `create_session`; `bound` resolves a `current_session` start point.
    pub(super) async fn create(
        &self,
        request: SessionCreateRequest,
        bound: &SessionBinding,
    ) -> Result<SessionHandle, PluginError> {
        let session_id = request.session_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        ids::validate_id("session id", &session_id)?;
        let token = session_token(&session_id)?;
        let request_id = current_request_id();
        let subjects = &self.inner.config.subjects;
        let parent_session_id = match &request.relation {
            SessionRelation::Root => None,
            SessionRelation::Child { parent_session_id, .. } => {
                let parent_token = session_token(parent_session_id)?;
                let parent = self
                    .inner
                    .api
                    .last(STATE_STREAM, &subjects.meta(&parent_token))
                    .await
                    .map_err(js("reading session meta"))?;
                if parent.is_none() {
                    return Err(self
                        .taken_first(&token, &session_id, PluginError::unknown_session(parent_session_id))
                        .await);
                }
                Some(parent_session_id.clone())
            }
        };
        let mut meta = MetaRecord::new(
            SessionHandle {
                session_id: session_id.clone(),
                parent_session_id,
                policy: request.policy.clone().unwrap_or_else(|| default_policy(&session_id)),
            },
            clock::now_rfc3339(),
        );
        let mut copy = SessionView::default();
        let source = match request.start {
            SessionStartPoint::Empty => None,
            SessionStartPoint::CurrentSession => match bound.start_point() {
                Ok(current) => Some(current.to_owned()),
                Err(err) => return Err(self.taken_first(&token, &session_id, err).await),
            },
            SessionStartPoint::ExistingSession { session_id } => Some(session_id),
            SessionStartPoint::Snapshot { snapshot } => {
                meta.agent_frames = snapshot.agent_frames;
                meta.current_agent_frame_id = snapshot.current_agent_frame_id;
                let graph = snapshot.session_graph;
                copy.apply_graph(1, GraphRecord::start_point(graph));
                None
            }
        };
        if let Some(source) = source {
            let graph = match self.snapshot(&source).await {
                Ok(snapshot) => snapshot.session_graph,
                Err(err) => return Err(self.taken_first(&token, &session_id, err).await),
            };
            copy.apply_graph(1, GraphRecord::start_point(graph));
        }
        let (initial, leaf) = build_nodes(
            &copy,
            request.initial_nodes,
            &request_id,
            copy.leaf.clone(),
            meta.current_agent_frame_id.as_ref(),
        );
        let mut nodes = std::mem::take(&mut copy.nodes);
        nodes.extend(initial);
        let leaf = if nodes.is_empty() { None } else { leaf };

        let mut writes = vec![
            Write::latest(subjects.meta(&token), encode(&meta)?, format!("{request_id}/0")).if_last_sequence(0, None),
        ];
        let chunks = chunk_nodes(nodes);
        let last_chunk = chunks.len().saturating_sub(1);
        for (index, chunk) in chunks.into_iter().enumerate() {
            let chunk_leaf = if index == last_chunk { leaf.clone() } else { chunk.last().map(|n| n.node_id.clone()) };
            let record = GraphRecord {
                request_id: format!("{request_id}#{index}"),
                turn_id: None,
                nodes: chunk,
                leaf: chunk_leaf,
                digest: None,
                replace: false,
            };
            writes.push(Write::new(subjects.graph(&token), encode(&record)?, format!("{request_id}/{}", index + 1)));
        }
        if writes.len() > 1000 {
            return Err(PluginError::TooLarge {
                what: "the start point's graph (one create batch)".to_owned(),
                size: writes.len() as u64,
                limit: 1000,
                unit: "messages".to_owned(),
            });
        }
        if let Some(write) = writes.iter().find(|w| w.payload.len() > self.payload_limit()) {
            return Err(self.too_large("a graph record of the new session", write.payload.len()));
        }
        let index_msg_id = format!("{request_id}/index");
        match self.inner.api.publish_batch(&writes).await {
            Ok(_) => {
                self.write_index(&meta.handle, &meta.created_at, index_msg_id).await?;
                Ok(meta.handle)
            }
            Err(err) if matches!(err.kind(), JsErrorKind::WrongLastSequence | JsErrorKind::BatchDuplicate) => {
                let stored = self
                    .inner
                    .api
                    .last(STATE_STREAM, &subjects.meta(&token))
                    .await
                    .map_err(js("reading session meta"))?;
                match stored {
                    Some(stored) if stored.msg_id.as_deref() == Some(format!("{request_id}/0").as_str()) => {
                        if stored.written_for_another_body(&writes[0]) {
                            return Err(super::api::reused_request_id());
                        }
                        // A resend also writes an entry its first attempt may have missed.
                        let stored: MetaRecord = decode("meta", &stored.payload)?;
                        self.write_index(&stored.handle, &stored.created_at, index_msg_id).await?;
                        Ok(stored.handle)
                    }
                    _ => Err(PluginError::session_exists(&session_id)),
                }
            }
            Err(err) => Err(err.into_plugin("creating a session")),
        }
    }

    /// A create refused for its parent or its start point (404, 400) is refused for a
    /// taken id first (409), as `InMemoryHost` does: the id is the first thing checked.
    async fn taken_first(&self, token: &str, session_id: &str, refusal: PluginError) -> PluginError {
        if !(refusal.is_unknown_session() || refusal.kind() == ErrorKind::InvalidRequest) {
            return refusal;
        }
        match self.inner.api.last(STATE_STREAM, &self.inner.config.subjects.meta(token)).await {
            Ok(Some(_)) => PluginError::session_exists(session_id),
            _ => refusal,
        }
    }

    /// `close_session`: refused while a turn holds the lease; fenced on the lease so a
    /// turn cannot start under it.
    pub(super) async fn close(&self, session_id: &str) -> Result<(), PluginError> {
        let token = session_token(session_id)?;
        let request_id = current_request_id();
        let subjects = &self.inner.config.subjects;
        let view_lock = self.inner.views.get(&token);
        let mut view = view_lock.lock().await;
        for _ in 0..APPEND_ATTEMPTS {
            self.refresh(&token, &mut view).await?;
            let Some((_, meta)) = view.meta.clone() else { return Ok(()) };
            let lease_seq = match &view.lease {
                Some((_, LeaseRecord::Closed)) => return Ok(()),
                Some((seq, LeaseRecord::Held { turn_id, ttl_ms, .. })) if self.lease_alive(&token, *seq, *ttl_ms) => {
                    return Err(PluginError::Conflict(format!(
                        "session `{session_id}` has a running turn `{turn_id}`; close it after the turn completes"
                    )));
                }
                Some((seq, _)) => *seq,
                None => 0,
            };
            let closed = MetaRecord { closed: true, ..meta };
            let writes = [
                Write::latest(subjects.lease(&token), encode(&LeaseRecord::Closed)?, format!("{request_id}/0"))
                    .if_last_sequence(lease_seq, None),
                // Conditioned on the whole session as read: a turn committed since is never
                // overwritten, and on a replicated stream an append sent while this batch
                // is in flight is held back until it is stored (decision 0028).
                Write::latest(subjects.meta(&token), encode(&closed)?, format!("{request_id}/1"))
                    .if_last_sequence(view.session_seq, Some(subjects.state_session(&token))),
            ];
            match self.inner.api.publish_batch(&writes).await {
                Ok(_) => {
                    view.loaded = false;
                    return Ok(());
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        JsErrorKind::WrongLastSequence | JsErrorKind::BatchDuplicate | JsErrorKind::InFlight
                    ) =>
                {
                    view.loaded = false
                }
                Err(err) => return Err(err.into_plugin("closing a session")),
            }
        }
        Err(PluginError::Conflict(format!("closing session `{session_id}` kept losing races; retry later")))
    }

    /// `emit_trace_event` and `emit_trace_events`: `Ok` once every record is stored in
    /// `SESSIONBUS_TRACE`, published pipelined. `request_id` is the bus request the
    /// records come with: their record ids (and so message ids) derive from it (one
    /// record: `<request>/trace`; record `i` of a batch: `<request>/trace/<i>`), so a
    /// resent request stores each record once.
    pub(super) async fn publish_traces(
        &self,
        session_id: &str,
        records: Vec<(TraceContext, TraceEvent)>,
        request_id: &str,
    ) -> Result<(), PluginError> {
        let single = records.len() == 1;
        let writes = records
            .into_iter()
            .enumerate()
            .map(|(index, (context, event))| {
                let name = if single { format!("{request_id}/trace") } else { format!("{request_id}/trace/{index}") };
                let id = uuid::Uuid::new_v5(&NODE_ID_NAMESPACE, name.as_bytes()).to_string();
                self.trace_write(session_id, context, event, Some(id))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.store_traces(&writes).await
    }

    /// The write of one trace record of `session_id` (its id `id`, else a fresh one),
    /// checked against the server's payload limit.
    pub(super) fn trace_write(
        &self,
        session_id: &str,
        mut context: TraceContext,
        event: TraceEvent,
        id: Option<String>,
    ) -> Result<Write, PluginError> {
        let token = session_token(session_id)?;
        claim_trace_context(&mut context, session_id)?;
        let mut record = TraceRecord::new(context, event);
        if let Some(id) = id {
            record.id = id;
        }
        let payload = encode(&record)?;
        if payload.len() > self.payload_limit() {
            return Err(self.too_large("the trace record", payload.len()));
        }
        Ok(Write::new(self.inner.config.subjects.trace(&token), payload, record.id))
    }

    /// Stores trace record writes, in order, as one fast batch (one answer for all). A
    /// trace stream set up before fast batches, or with too many in flight, refuses it:
    /// then, and for [`FAST_BATCH_PAUSE`] after, they go pipelined (sent in order, one
    /// ack each, awaited together).
    pub(super) async fn store_traces(&self, writes: &[Write]) -> Result<(), PluginError> {
        let paused = lock(&self.inner.fast_batch_refused).is_some_and(|at| at.elapsed() < FAST_BATCH_PAUSE);
        if !paused {
            match self.inner.api.publish_fast_batch(writes).await {
                Err(err) if err.kind() == JsErrorKind::BatchRefused => {
                    *lock(&self.inner.fast_batch_refused) = Some(std::time::Instant::now());
                    tracing::warn!(
                        "the {TRACE_STREAM} stream refused a fast batch ({err}); trace records go one by one for \
                         the next {} s. If this repeats, run `sessionbus setup` once: it lets the stream take fast \
                         batches",
                        FAST_BATCH_PAUSE.as_secs()
                    );
                }
                stored => return stored.map_err(js("storing trace records")),
            }
        }
        self.inner.api.publish_pipelined(writes).await.map_err(js("storing trace records"))
    }
}
