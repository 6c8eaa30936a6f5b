//! One store's state: the session's records replayed, in stream order, into lash's
//! own in-memory store (decisions 0011 and 0024).
//!
//! A store keyed by a session id lives on that session's subjects of the state stream:
//! lash's changes on `state.<sid>.lash`, each commit as the session's graph record (the
//! bus's record, with lash's change beside it), and whatever bus ops write there too.
//! Every process applies the session's records in stream order: lash's changes as lash
//! asked for them, a graph record bus ops wrote as an import of its nodes, the meta as
//! the session's current meta. Every write is conditioned on the last sequence of the
//! whole session this process applied (`Nats-Expected-Last-Subject-Sequence` on
//! `state.<sid>.>`), so a record lands only right after what its writer applied, and is
//! applied from its own bytes without reading it back. Each change carries the writer's
//! clock reading, so replaying it decides lease and claim expiry as the writer did.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream::message::PublishMessage;
use lash_core::store::GraphCommitDelta;
use lash_core::{Clock, InMemorySessionStore, SessionCommitStore as _, SessionMeta, SessionReadScope, StoreError};
use serde::{Deserialize, Serialize};
use sessionbus_nats::jetstream::StateWrite;
use sessionbus_nats::jetstream::records::{GraphRecord, MetaRecord};

use super::append::{AppendFailure, classify_error};
use super::backend::{StoreBackend, backend};
use super::blobs;
use super::layout::StoreLayout;
use super::ops::{Op, Output, Query};
use super::projection::{Before, ProjectionRefusal, project};

/// Appends lost to other writers (or unanswered) before a change gives up.
const APPEND_ATTEMPTS: usize = 1000;
/// The pause before sending a record again whose append had no answer.
const RESEND_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
/// `Nats-Expected-Last-Subject-Sequence-Subject`: the subjects the condition counts.
const EXPECTED_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";
/// The request id prefix of the graph records a lash commit wrote (`lash/<msg id>`).
const LASH_REQUEST: &str = "lash/";

/// A change lash asked for.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    /// The writer's clock (lash's injected `Clock`) when it proposed the change.
    at_ms: u64,
    #[serde(flatten)]
    op: Op,
}

/// A lash commit's graph record: the bus's record, and the change beside it.
#[derive(Serialize)]
struct CommitRecord<'a> {
    #[serde(flatten)]
    graph: &'a GraphRecord,
    lash: &'a Entry,
}

/// The part of a graph record the store reads first: a lash commit's change, if any.
#[derive(Deserialize)]
struct LashPart {
    #[serde(default)]
    lash: Option<Entry>,
}

/// The clock lash's in-memory store reads: set to each record's time while it is
/// applied, and to the caller's clock for reads.
#[derive(Debug, Default)]
pub(crate) struct ReplayClock {
    at_ms: AtomicU64,
}

impl ReplayClock {
    fn set(&self, at_ms: u64) {
        self.at_ms.store(at_ms, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Clock for ReplayClock {
    fn now(&self) -> std::time::Instant {
        std::time::Instant::now()
    }

    fn timestamp_ms(&self) -> u64 {
        self.at_ms.load(Ordering::SeqCst)
    }

    fn timestamp_rfc3339(&self) -> String {
        self.timestamp_datetime().to_rfc3339()
    }

    fn timestamp_datetime(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from(std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.timestamp_ms()))
    }

    async fn sleep(&self, duration: std::time::Duration) {
        tokio::time::sleep(duration).await;
    }

    async fn sleep_until(&self, deadline: std::time::Instant) {
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// The replayed state of one store.
struct Replayed {
    state: InMemorySessionStore,
    clock: Arc<ReplayClock>,
    /// The last sequence of the session's subjects applied.
    applied_seq: u64,
    /// The blob holding the last committed checkpoint's snapshots.
    blob: Option<String>,
    /// The highest head revision a commit reached.
    head: u64,
    /// The session's meta on the bus as of `applied_seq`, and its sequence.
    bus_meta: Option<(u64, MetaRecord)>,
}

/// One record of the session's subjects, by what it is to the store.
enum Record {
    /// A change lash asked for (a log record, or a lash commit's graph record).
    Change(Entry),
    /// Nodes bus ops appended (a graph record no lash commit wrote).
    Appended(GraphRecord),
    /// The session's meta.
    Meta(MetaRecord),
    /// Anything else (a lease, a turn ledger record, a lash commit's later chunks).
    Other,
}

impl Replayed {
    fn empty() -> Self {
        let clock = Arc::new(ReplayClock::default());
        Self {
            state: InMemorySessionStore::with_clock(clock.clone()),
            clock,
            applied_seq: 0,
            blob: None,
            head: 0,
            bus_meta: None,
        }
    }

    /// Applies record `seq`; the answer when it was a change lash asked for.
    async fn apply(&mut self, seq: u64, record: Record, key: &str) -> Option<Result<Output, StoreError>> {
        self.applied_seq = seq;
        match record {
            Record::Change(entry) => Some(self.decide(entry).await),
            Record::Appended(graph) => {
                if let Err(err) = self.import(graph, key).await {
                    tracing::warn!(%err, key, seq, "lash refused nodes bus ops appended; the session differs from the bus");
                }
                None
            }
            Record::Meta(meta) => {
                self.bus_meta = Some((seq, meta));
                None
            }
            Record::Other => None,
        }
    }

    /// Applies `entry`'s change to the state, without saying where it is stored.
    async fn decide(&mut self, entry: Entry) -> Result<Output, StoreError> {
        self.clock.set(entry.at_ms);
        self.change(entry.op).await
    }

    /// Applies `op` to the state; a commit it accepted moves the head (and, when it
    /// carries one, the live checkpoint blob).
    async fn change(&mut self, op: Op) -> Result<Output, StoreError> {
        let blob = match &op {
            Op::Commit { blob, .. } => Some(blob.clone()),
            _ => None,
        };
        let output = op.apply(&self.state).await;
        if let Ok(Output::Commit(result)) = &output {
            self.head = self.head.max(result.head_revision);
            if let Some(blob) = blob {
                self.blob = blob;
            }
        }
        output
    }

    /// Takes in the nodes of a graph record bus ops wrote, as one commit.
    async fn import(&mut self, graph: GraphRecord, key: &str) -> Result<(), StoreError> {
        if graph.replace {
            return Err(backend("a graph record replacing the whole graph, which only a lash store writes".into()));
        }
        let mut nodes = Vec::with_capacity(graph.nodes.len());
        for node in graph.nodes {
            let value = serde_json::to_value(node).map_err(|err| backend(format!("a node: {err}")))?;
            nodes.push(
                serde_json::from_value(value)
                    .map_err(|err| backend(format!("a node bus ops stored is not lash's node record: {err}")))?,
            );
        }
        let (meta, config) = match &self.bus_meta {
            Some((_, meta)) => (Some(lash_meta(meta)), lash_config(meta)),
            None => (None, None),
        };
        let import = Op::Import { session_id: key.to_owned(), nodes, leaf_node_id: graph.leaf, meta, config };
        self.change(import).await.map(drop)
    }
}

/// One store: its key (the bus session it lives on), its subjects, its replayed state,
/// and the clock its writes are stamped with.
pub(crate) struct Engine {
    pub(crate) backend: Arc<StoreBackend>,
    pub(crate) key: String,
    /// `<prefix>.state.<key>.lash`: lash's changes other than commits.
    subject: String,
    /// `<prefix>.state.<key>.>`: every record of the session.
    session: String,
    /// `<prefix>.state.<key>.graph`.
    graph_subject: String,
    /// `<prefix>.state.<key>.meta`.
    meta_subject: String,
    clock: Arc<dyn Clock>,
    replayed: tokio::sync::Mutex<Replayed>,
}

impl Engine {
    pub(crate) fn new(backend: Arc<StoreBackend>, key: String, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let subject = backend.layout.log(&key)?;
        let token = StoreLayout::token(&key)?;
        let subjects = backend.layout.subjects();
        let (session, graph_subject, meta_subject) =
            (subjects.state_session(&token), subjects.graph(&token), subjects.meta(&token));
        Ok(Self {
            backend,
            key,
            subject,
            session,
            graph_subject,
            meta_subject,
            clock,
            replayed: tokio::sync::Mutex::new(Replayed::empty()),
        })
    }

    /// The sequence of the session's last record (0 when it has none), read from the
    /// stream leader.
    pub(crate) async fn tip(&self) -> Result<u64, StoreError> {
        Ok(self.backend.state.last(&self.session).await.map_err(unreadable)?.map_or(0, |record| record.seq))
    }

    /// True when anything of the session is stored (by lash or by bus ops).
    pub(crate) async fn exists(&self) -> Result<bool, StoreError> {
        Ok(self.tip().await? > 0)
    }

    /// What record `seq`, stored on `subject`, is to the store.
    fn read(&self, seq: u64, subject: &str, payload: &[u8]) -> Result<Record, StoreError> {
        let kind = subject.strip_prefix(self.session.trim_end_matches('>')).unwrap_or_default();
        Ok(match kind {
            "lash" => Record::Change(decode(seq, payload, &self.key)?),
            "graph" => match serde_json::from_slice::<LashPart>(payload) {
                Ok(LashPart { lash: Some(entry) }) => Record::Change(entry),
                _ => {
                    let graph: GraphRecord = decode_record("graph record", payload, &self.key)?;
                    if graph.request_id.starts_with(LASH_REQUEST) { Record::Other } else { Record::Appended(graph) }
                }
            },
            "meta" => Record::Meta(decode_record("meta", payload, &self.key)?),
            _ => Record::Other,
        })
    }

    /// Applies every record after `replayed.applied_seq` up to `until`; returns the
    /// answer of the record whose message id is `mine`, when it was among them. The
    /// records come in batched direct gets; what a batch leaves out comes from the
    /// leader, record by record.
    async fn catch_up(
        &self,
        replayed: &mut Replayed,
        until: u64,
        mine: Option<&str>,
    ) -> Result<Option<Result<Output, StoreError>>, StoreError> {
        if until < replayed.applied_seq {
            // The session was deleted (and maybe written again) since: start over.
            *replayed = Replayed::empty();
        }
        let state = &self.backend.state;
        let mut answer = None;
        while replayed.applied_seq < until {
            let mut records = state.read_batch(&self.session, replayed.applied_seq + 1, until).await;
            if records.is_empty() {
                match state.next(&self.session, replayed.applied_seq + 1).await.map_err(unreadable)? {
                    Some(record) if record.seq <= until => records.push(record),
                    // Purged meanwhile: nothing of the session is left up to `until`.
                    _ => replayed.applied_seq = until,
                }
            }
            for record in records {
                let read = self.read(record.seq, &record.subject, &record.payload)?;
                let output = replayed.apply(record.seq, read, &self.key).await;
                if let Some(output) = output
                    && mine.is_some()
                    && record.msg_id.as_deref() == mine
                {
                    answer = Some(output);
                }
            }
        }
        Ok(answer)
    }

    /// Appends `op` and answers it as applied in stream order. A commit is also the
    /// graph record and meta of the bus session the store is keyed by.
    pub(crate) async fn execute(&self, op: Op) -> Result<Output, StoreError> {
        let mut replayed = self.replayed.lock().await;
        let op = match op {
            Op::Commit { commit, .. } => {
                let (commit, blob) = blobs::store_checkpoint(&self.backend, &self.key, *commit).await?;
                Op::Commit { commit: Box::new(commit), blob }
            }
            op => op,
        };
        match &op {
            Op::Commit { .. } => self.commit(&mut replayed, op).await,
            _ => self.append(&mut replayed, op).await,
        }
    }

    /// Appends `op` to the log subject and answers it as applied in stream order.
    async fn append(&self, replayed: &mut Replayed, op: Op) -> Result<Output, StoreError> {
        let msg_id = uuid::Uuid::new_v4().to_string();
        // No read of the session's end first: the append's condition says when this
        // process is behind, and then it catches up and appends again.
        for _ in 0..APPEND_ATTEMPTS {
            let entry = Entry { at_ms: self.clock.timestamp_ms(), op: op.clone() };
            let payload = serde_json::to_vec(&entry)
                .map_err(|err| backend(format!("a lash store change could not be encoded: {err}")))?;
            let publish = PublishMessage::build()
                .payload(payload.clone().into())
                .message_id(&msg_id)
                .expected_last_subject_sequence(replayed.applied_seq)
                .header(EXPECTED_SUBJECT, self.session.as_str());
            let appended = match self.backend.context.send_publish(self.subject.clone(), publish).await {
                Ok(ack) => ack.await,
                Err(err) => Err(err),
            };
            let failure = match appended {
                Ok(ack) if !ack.duplicate => {
                    // Stored under the condition: no record of the session lies between
                    // what this process applied and this one. Apply it as every other
                    // process will, decoded from the same bytes.
                    replayed.applied_seq = ack.sequence;
                    return replayed.decide(decode(ack.sequence, &payload, &self.key)?).await;
                }
                Ok(ack) => {
                    // A duplicate ack (a resend of a record that landed) names the first
                    // copy; an earlier catch-up would have answered it already.
                    if let Some(answer) = self.catch_up(replayed, ack.sequence, Some(&msg_id)).await? {
                        return answer;
                    }
                    return Err(backend(format!(
                        "the lash store `{}` acknowledged a change it does not hold; reload before retrying",
                        self.key
                    )));
                }
                Err(err) => (classify_error(&err), err),
            };
            match failure {
                (AppendFailure::LostRace, _) => {}
                (AppendFailure::Unknown, err) => {
                    tracing::debug!(%err, key = %self.key, "a lash store append had no answer; sending it again");
                    tokio::time::sleep(RESEND_PAUSE).await;
                }
                (AppendFailure::Refused, err) => {
                    return Err(backend(format!(
                        "appending to the lash store `{}` was refused ({err}); nothing was stored",
                        self.key
                    )));
                }
            }
            // Apply what landed first (maybe this very record, when its answer was lost),
            // then try again after it.
            let tip = self.tip().await?;
            if let Some(answer) = self.catch_up(replayed, tip, Some(&msg_id)).await? {
                return answer;
            }
        }
        Err(backend(format!("the lash store `{}` kept changing under this write; retry", self.key)))
    }

    /// Stores a commit as the session's graph record (its change beside the bus's
    /// record), then rewrites the session's meta (decision 0024).
    ///
    /// The graph record is written only for a commit lash accepted and that moved the
    /// head, so lash decides first, on the state as this process holds it, and the
    /// record is stored only where that decision holds: right after the last record of
    /// the session this process applied. When that fails (another writer, a bus op, no
    /// answer), the decided state is not what the stream holds: it is rebuilt from the
    /// stream (which may hold this very record, found by its message id).
    async fn commit(&self, replayed: &mut Replayed, op: Op) -> Result<Output, StoreError> {
        let Op::Commit { commit, .. } = &op else { return self.append(replayed, op).await };
        let msg_id = uuid::Uuid::new_v4().to_string();
        for _ in 0..APPEND_ATTEMPTS {
            if let Some((_, meta)) = &replayed.bus_meta
                && meta.closed
            {
                return Err(backend(ProjectionRefusal::Closed(self.key.clone()).to_string()));
            }
            let before_nodes = match &commit.graph {
                GraphCommitDelta::ReplaceFull(_) => self.graph_nodes(replayed).await?,
                _ => Vec::new(),
            };
            // Only a commit creating the session on the bus names its parent.
            let parent_session_id = match replayed.bus_meta {
                Some(_) => None,
                None => replayed
                    .state
                    .load_session_meta()
                    .await?
                    .and_then(|meta| meta.parent_session_id().map(str::to_owned)),
            };
            let entry = Entry { at_ms: self.clock.timestamp_ms(), op: op.clone() };
            let head_before = replayed.head;
            let output = replayed.decide(entry.clone()).await;
            let projection = match &output {
                Ok(Output::Commit(result)) if result.head_revision > head_before => {
                    let ledger = self.ledger(replayed).await?;
                    let before = Before {
                        session_id: &self.key,
                        nodes: &before_nodes,
                        meta: replayed.bus_meta.as_ref().map(|(_, meta)| meta.clone()),
                        parent_session_id,
                        ledger: &ledger,
                    };
                    let now = self.clock.timestamp_rfc3339();
                    match project(commit, before, &format!("{LASH_REQUEST}{msg_id}"), &now) {
                        Ok(projection) => Some(projection),
                        Err(refusal) => {
                            *replayed = Replayed::empty();
                            return Err(backend(refusal.to_string()));
                        }
                    }
                }
                _ => None,
            };
            // The first write carries the change and the condition; a split graph's
            // later records only nodes.
            let first = |subject: &String, payload| {
                StateWrite::new(subject.clone(), payload, msg_id.clone())
                    .if_last_sequence_on(replayed.applied_seq, self.session.clone())
            };
            let writes = match &projection {
                Some(projection) => {
                    let mut writes = Vec::with_capacity(projection.graph.len());
                    for (index, graph) in projection.graph.iter().enumerate() {
                        writes.push(match index {
                            0 => first(&self.graph_subject, encoded(&CommitRecord { graph, lash: &entry })?),
                            _ => StateWrite::new(
                                self.graph_subject.clone(),
                                encoded(graph)?,
                                format!("{msg_id}/{index}"),
                            ),
                        });
                    }
                    writes
                }
                // Refused, or a repeat of a stored turn: a change like any other.
                None => vec![first(&self.subject, encoded(&entry)?)],
            };
            let failure = match self.backend.state.publish_batch(&writes).await {
                Ok(stored) if !stored.duplicate => {
                    // Stored under the condition, right after what this state holds.
                    replayed.applied_seq = stored.sequence;
                    if let Some(projection) = projection {
                        self.write_meta(replayed, projection.meta, &msg_id).await;
                        if projection.created {
                            self.register(replayed).await?;
                        }
                    }
                    return output;
                }
                Ok(stored) => {
                    // An earlier send of this commit was stored: take it from the stream.
                    *replayed = Replayed::empty();
                    if let Some(answer) = self.catch_up(replayed, stored.sequence, Some(&msg_id)).await? {
                        return answer;
                    }
                    return Err(backend(format!(
                        "the lash store `{}` acknowledged a commit it does not hold; reload before retrying",
                        self.key
                    )));
                }
                Err(failure) => failure,
            };
            // What lash decided is not in the stream: rebuild the state from the stream.
            *replayed = Replayed::empty();
            let tip = self.tip().await?;
            if let Some(answer) = self.catch_up(replayed, tip, Some(&msg_id)).await? {
                return answer;
            }
            match failure.kind() {
                sessionbus_api::ErrorKind::Conflict => {}
                sessionbus_api::ErrorKind::Unavailable => tokio::time::sleep(RESEND_PAUSE).await,
                _ => {
                    return Err(backend(format!(
                        "committing to the lash store `{}` was refused ({failure}); nothing was stored",
                        self.key
                    )));
                }
            }
        }
        Err(backend(format!("the lash store `{}` kept changing under this commit; retry", self.key)))
    }

    /// Rewrites the session's meta after a commit, unless the session changed since
    /// (a bus op closed it, say). A meta that is not written is rewritten whole by the
    /// next commit: it is made from lash's state, not added to.
    async fn write_meta(&self, replayed: &mut Replayed, meta: MetaRecord, msg_id: &str) {
        let write = match encoded(&meta) {
            Ok(payload) => StateWrite::latest(self.meta_subject.clone(), payload, format!("{msg_id}/meta"))
                .if_last_sequence_on(replayed.applied_seq, self.session.clone()),
            Err(err) => {
                tracing::warn!(%err, key = %self.key, "the session's meta could not be encoded");
                return;
            }
        };
        match self.backend.state.publish_batch(std::slice::from_ref(&write)).await {
            Ok(stored) if !stored.duplicate => {
                replayed.applied_seq = stored.sequence;
                replayed.bus_meta = Some((stored.sequence, meta));
            }
            Ok(_) => {}
            Err(err) => tracing::debug!(%err, key = %self.key, "the session's meta was not rewritten after a commit"),
        }
    }

    /// Writes the registry entry of a session a commit created on the bus.
    async fn register(&self, replayed: &Replayed) -> Result<(), StoreError> {
        let Some((_, meta)) = &replayed.bus_meta else { return Ok(()) };
        let msg_id = format!("{LASH_REQUEST}{}/index", self.key);
        self.backend.state.register_session(&meta.handle, &meta.created_at, msg_id).await.map_err(|err| {
            backend(format!("the session `{}` is stored but `sessions` does not list it yet: {err}", self.key))
        })
    }

    /// The session's nodes as lash's JSON, in graph order.
    async fn graph_nodes(&self, replayed: &Replayed) -> Result<Vec<serde_json::Value>, StoreError> {
        let read = replayed.state.load_session(SessionReadScope::FullGraph).await?;
        let nodes = read.map(|read| read.graph.nodes.clone()).unwrap_or_default();
        nodes
            .iter()
            .map(|node| {
                serde_json::to_value(node).map_err(|err| backend(format!("a node could not be encoded: {err}")))
            })
            .collect()
    }

    /// lash's token ledger of the session as the state holds it (lash's JSON).
    async fn ledger(&self, replayed: &Replayed) -> Result<Vec<serde_json::Value>, StoreError> {
        let read = replayed.state.load_session(SessionReadScope::FullGraph).await?;
        let ledger = read.map(|read| read.token_ledger).unwrap_or_default();
        ledger
            .iter()
            .map(|entry| serde_json::to_value(entry).map_err(|err| backend(format!("a ledger entry: {err}"))))
            .collect()
    }

    /// Answers `query` from the session's records as of now (bus ops' included).
    pub(crate) async fn query(&self, query: Query) -> Result<Output, StoreError> {
        let mut replayed = self.replayed.lock().await;
        let tip = self.tip().await?;
        self.catch_up(&mut replayed, tip, None).await?;
        replayed.clock.set(self.clock.timestamp_ms());
        let hydrate = matches!(query, Query::LoadSession(_));
        let output = query.answer(&replayed.state).await?;
        match (output, hydrate, replayed.blob.clone()) {
            (Output::Session(Some(mut read)), true, Some(blob)) => {
                blobs::hydrate(&self.backend, &blob, &mut read).await?;
                Ok(Output::Session(Some(read)))
            }
            (output, _, _) => Ok(output),
        }
    }

    /// The blob the last commit's checkpoint lives in.
    pub(crate) async fn live_blob(&self) -> Result<Option<String>, StoreError> {
        let mut replayed = self.replayed.lock().await;
        let tip = self.tip().await?;
        self.catch_up(&mut replayed, tip, None).await?;
        Ok(replayed.blob.clone())
    }
}

/// A bus record, encoded.
fn encoded(record: &impl Serialize) -> Result<bytes::Bytes, StoreError> {
    sessionbus_nats::jetstream::records::encode(record)
        .map_err(|err| backend(format!("a record for the bus could not be encoded: {err}")))
}

/// lash's session meta for a session created through the bus.
fn lash_meta(meta: &MetaRecord) -> SessionMeta {
    let handle = &meta.handle;
    let model = handle.policy.pointer("/model/id").and_then(serde_json::Value::as_str).unwrap_or_default();
    SessionMeta {
        session_id: handle.session_id.clone(),
        session_name: handle.session_id.clone(),
        created_at: meta.created_at.clone(),
        model: model.to_owned(),
        cwd: None,
        relation: match &handle.parent_session_id {
            Some(parent) => lash_core::SessionRelation::Child { parent_session_id: parent.clone(), caused_by: None },
            None => lash_core::SessionRelation::Root,
        },
    }
}

/// lash's session config (provider and model) from a bus session's policy (lash's
/// `SessionPolicy` JSON); `None` when the policy names none lash reads.
fn lash_config(meta: &MetaRecord) -> Option<lash_core::PersistedSessionConfig> {
    let policy = &meta.handle.policy;
    let provider_id = policy.get("provider_id")?.as_str()?.to_owned();
    let model = serde_json::from_value(policy.get("model")?.clone()).ok()?;
    Some(lash_core::PersistedSessionConfig { provider_id, model })
}

/// A bus record of session `key`, decoded.
fn decode_record<T: serde::de::DeserializeOwned>(what: &str, payload: &[u8], key: &str) -> Result<T, StoreError> {
    serde_json::from_slice(payload)
        .map_err(|err| backend(format!("the {what} of session `{key}` on the bus is unreadable ({err})")))
}

/// Record `seq` of store `key`, decoded.
fn decode(seq: u64, payload: &[u8], key: &str) -> Result<Entry, StoreError> {
    serde_json::from_slice(payload).map_err(|err| {
        backend(format!(
            "record {seq} of the lash store `{key}` is unreadable ({err}); it was written by another version"
        ))
    })
}

fn unreadable(err: impl std::fmt::Display) -> StoreError {
    backend(format!("reading a lash store's log failed: {err}; is JetStream up?"))
}
