//! One store's state: its log replayed, in order, into lash's own in-memory store.
//!
//! A change is appended to the log first; only an appended change is applied, in log
//! order, by every process, and a writer's answer is what lash's in-memory store decides
//! for its record in that order (a head conflict, a busy lease, a superseded claim).
//! The log's order is what makes this correct. The append is also conditioned on the
//! last sequence this process applied (`Nats-Expected-Last-Subject-Sequence`), so a
//! record lands only after its writer has applied every earlier one, and is applied
//! from its own bytes without reading it back. Each record carries the writer's clock
//! reading, so replaying it decides lease and claim expiry as the writer did (decision
//! 0011).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::RawMessageErrorKind;
use lash_core::store::GraphCommitDelta;
use lash_core::{Clock, InMemorySessionStore, SessionCommitStore as _, SessionMeta, StoreError};
use serde::{Deserialize, Serialize};
use sessionbus_nats::STATE_STREAM;
use sessionbus_nats::jetstream::StateWrite;
use sessionbus_nats::jetstream::records::{GraphRecord, MetaRecord};

use super::append::{AppendFailure, classify_error};
use super::backend::{StoreBackend, backend};
use super::blobs;
use super::layout::StoreLayout;
use super::ops::{Op, Output, Query};
use super::projection::{Before, Projection, ProjectionRefusal, project};

/// Appends lost to other writers (or unanswered) before a change gives up.
const APPEND_ATTEMPTS: usize = 1000;
/// Above this many records to apply, a catch-up reads them through a consumer.
const CONSUMER_THRESHOLD: u64 = 16;
/// The longest a consumer may keep a catch-up waiting before it goes on record by record.
const CONSUMER_STALL: std::time::Duration = std::time::Duration::from_secs(1);
/// The pause before sending a record again whose append had no answer.
const RESEND_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// One log record.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    /// The writer's clock (lash's injected `Clock`) when it proposed the change.
    at_ms: u64,
    /// How many graph records the same atomic batch stored right after this record (a
    /// commit written onto the session's bus layout; decision 0024).
    #[serde(default, skip_serializing_if = "is_zero")]
    graph_records: u64,
    #[serde(flatten)]
    op: Op,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
    /// The last log sequence applied.
    applied_seq: u64,
    /// The blob holding the last committed checkpoint's snapshots.
    blob: Option<String>,
    /// The last record of the session's graph subject this state holds (written with a
    /// commit of this log, or imported).
    graph_seq: u64,
    /// The highest head revision a commit reached.
    head: u64,
}

impl Replayed {
    fn empty() -> Self {
        let clock = Arc::new(ReplayClock::default());
        Self {
            state: InMemorySessionStore::with_clock(clock.clone()),
            clock,
            applied_seq: 0,
            blob: None,
            graph_seq: 0,
            head: 0,
        }
    }

    async fn apply(&mut self, seq: u64, entry: Entry) -> Result<Output, StoreError> {
        let graph_records = entry.graph_records;
        let output = self.decide(entry).await;
        self.applied_seq = seq;
        if graph_records > 0 {
            self.graph_seq = seq + graph_records;
        }
        output
    }

    /// Applies `entry`'s change to the state, without saying where in the log it is.
    async fn decide(&mut self, entry: Entry) -> Result<Output, StoreError> {
        self.clock.set(entry.at_ms);
        let blob = match &entry.op {
            Op::Commit { blob, .. } => Some(blob.clone()),
            _ => None,
        };
        if let Op::Import { graph_seq, .. } = &entry.op {
            self.graph_seq = *graph_seq;
        }
        let output = entry.op.apply(&self.state).await;
        if let Ok(Output::Commit(result)) = &output {
            self.head = self.head.max(result.head_revision);
            if let Some(blob) = blob {
                self.blob = blob;
            }
        }
        output
    }
}

/// One store: its log subject, the session subjects it shares with the bus, its
/// replayed state, and the clock its writes are stamped with.
pub(crate) struct Engine {
    pub(crate) backend: Arc<StoreBackend>,
    pub(crate) key: String,
    subject: String,
    /// `<prefix>.state.<key>.graph`.
    graph_subject: String,
    /// `<prefix>.state.<key>.meta`.
    meta_subject: String,
    clock: Arc<dyn Clock>,
    replayed: tokio::sync::Mutex<Replayed>,
}

/// The session as the bus holds it: its graph subject's last sequence and its meta.
struct OnTheBus {
    graph_seq: u64,
    meta: Option<(u64, MetaRecord)>,
}

/// The request id of a graph record a commit of a lash store wrote (`lash/<msg id>`).
const LASH_REQUEST: &str = "lash/";

impl Engine {
    pub(crate) fn new(backend: Arc<StoreBackend>, key: String, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let subject = backend.layout.log(&key)?;
        let token = StoreLayout::token(&key)?;
        let subjects = backend.layout.subjects();
        let (graph_subject, meta_subject) = (subjects.graph(&token), subjects.meta(&token));
        Ok(Self {
            backend,
            key,
            subject,
            graph_subject,
            meta_subject,
            clock,
            replayed: tokio::sync::Mutex::new(Replayed::empty()),
        })
    }

    /// The sequence of the log's last record (0 when the log is empty), read from the
    /// stream leader.
    pub(crate) async fn tip(&self) -> Result<u64, StoreError> {
        let stream = self.backend.context.get_stream_no_info(STATE_STREAM).await.map_err(unreadable)?;
        match stream.raw_message_builder().last_by_subject(self.subject.clone()).send().await {
            Ok(message) => Ok(message.sequence),
            Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => Ok(0),
            Err(err) => Err(unreadable(err)),
        }
    }

    /// True when the store's log or the session on the bus holds anything.
    pub(crate) async fn exists(&self) -> Result<bool, StoreError> {
        Ok(self.tip().await? > 0 || self.on_the_bus().await?.meta.is_some())
    }

    /// The session's graph sequence and meta on the bus, read from the leader at once.
    async fn on_the_bus(&self) -> Result<OnTheBus, StoreError> {
        let state = &self.backend.state;
        let (graph, meta) = tokio::join!(state.last(&self.graph_subject), state.last(&self.meta_subject));
        let graph_seq = graph.map_err(unreadable)?.map_or(0, |record| record.seq);
        let meta = match meta.map_err(unreadable)? {
            Some(record) => Some((record.seq, decode_record::<MetaRecord>("meta", &record.payload, &self.key)?)),
            None => None,
        };
        Ok(OnTheBus { graph_seq, meta })
    }

    /// Applies every record after `replayed.applied_seq` up to `until`; returns the
    /// answer of the record whose message id is `mine`, when it was among them.
    async fn catch_up(
        &self,
        replayed: &mut Replayed,
        until: u64,
        mine: Option<&str>,
    ) -> Result<Option<Result<Output, StoreError>>, StoreError> {
        if until < replayed.applied_seq {
            // The log was deleted (and maybe written again) since: start over.
            *replayed = Replayed::empty();
        }
        let stream = self.backend.context.get_stream_no_info(STATE_STREAM).await.map_err(unreadable)?;
        let mut answer = None;
        if until - replayed.applied_seq > CONSUMER_THRESHOLD
            && let Err(err) = self.catch_up_with_consumer(&stream, replayed, until, mine, &mut answer).await
        {
            // A consumer needs the meta leader and stalls in elections: go on record by
            // record from where it stopped.
            tracing::debug!(%err, key = %self.key, "replaying through a consumer failed; reading record by record");
        }
        while replayed.applied_seq < until {
            let message = stream
                .raw_message_builder()
                .sequence(replayed.applied_seq + 1)
                .next_by_subject(self.subject.clone())
                .send()
                .await
                .map_err(unreadable)?;
            let id = message.headers.get(async_nats::header::NATS_MESSAGE_ID).map(|id| id.as_str().to_owned());
            self.apply_read(replayed, message.sequence, &message.payload, id.as_deref(), mine, &mut answer).await?;
        }
        Ok(answer)
    }

    /// Applies record `seq` read from the log; keeps its answer when it is `mine`.
    async fn apply_read(
        &self,
        replayed: &mut Replayed,
        seq: u64,
        payload: &[u8],
        id: Option<&str>,
        mine: Option<&str>,
        answer: &mut Option<Result<Output, StoreError>>,
    ) -> Result<(), StoreError> {
        let output = replayed.apply(seq, decode(seq, payload, &self.key)?).await;
        if mine.is_some() && id == mine {
            *answer = Some(output);
        }
        Ok(())
    }

    /// [`Self::catch_up`] through an ordered consumer (many records in one pass).
    async fn catch_up_with_consumer(
        &self,
        stream: &async_nats::jetstream::stream::Stream<()>,
        replayed: &mut Replayed,
        until: u64,
        mine: Option<&str>,
        answer: &mut Option<Result<Output, StoreError>>,
    ) -> Result<(), StoreError> {
        use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
        use futures::StreamExt as _;
        let consumer = tokio::time::timeout(
            CONSUMER_STALL,
            stream.create_consumer(OrderedConfig {
                filter_subject: self.subject.clone(),
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: replayed.applied_seq + 1 },
                ..Default::default()
            }),
        )
        .await
        .map_err(unreadable)?
        .map_err(unreadable)?;
        let mut messages = consumer.messages().await.map_err(unreadable)?;
        while replayed.applied_seq < until {
            let message = tokio::time::timeout(CONSUMER_STALL, messages.next())
                .await
                .map_err(unreadable)?
                .ok_or_else(|| unreadable("the consumer ended early"))?
                .map_err(unreadable)?;
            let seq = message.info().map_err(unreadable)?.stream_sequence;
            let id = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|id| id.as_str().to_owned());
            self.apply_read(replayed, seq, &message.payload, id.as_deref(), mine, answer).await?;
        }
        Ok(())
    }

    /// Appends `op` and answers it as applied in log order. A commit is also written
    /// onto the graph and meta of the bus session the store is keyed by.
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
            Op::Commit { .. } => self.commit_on_layout(&mut replayed, op).await,
            _ => self.append(&mut replayed, op).await,
        }
    }

    /// Appends `op` to the log and answers it as applied in log order.
    async fn append(&self, replayed: &mut Replayed, op: Op) -> Result<Output, StoreError> {
        let msg_id = uuid::Uuid::new_v4().to_string();
        // No read of the log's end first: the append's condition says when this process
        // is behind, and then it catches up and appends again.
        for _ in 0..APPEND_ATTEMPTS {
            let entry = Entry { at_ms: self.clock.timestamp_ms(), graph_records: 0, op: op.clone() };
            let payload = serde_json::to_vec(&entry)
                .map_err(|err| backend(format!("a lash store change could not be encoded: {err}")))?;
            let publish = PublishMessage::build()
                .payload(payload.clone().into())
                .message_id(&msg_id)
                .expected_last_subject_sequence(replayed.applied_seq);
            let appended = match self.backend.context.send_publish(self.subject.clone(), publish).await {
                Ok(ack) => ack.await,
                Err(err) => Err(err),
            };
            let failure = match appended {
                Ok(ack) if !ack.duplicate && ack.sequence == replayed.applied_seq + 1 => {
                    // This record directly follows what this process applied: apply it as
                    // every other process will, decoded from the same bytes.
                    return replayed.apply(ack.sequence, decode(ack.sequence, &payload, &self.key)?).await;
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

    /// Appends a commit of the store's session together with its graph records and the
    /// session's meta, in one atomic batch on the state stream (decision 0024).
    ///
    /// lash decides the commit on the state as this process holds it, and the batch is
    /// stored only where that decision holds: right after the last log record applied
    /// (the log's condition) and on the graph as this state holds it (the graph's
    /// condition: a bus op that appended since makes the batch fail, and its nodes are
    /// imported before lash decides again). When the batch fails, the decided state is
    /// not what the log holds: it is rebuilt from the log.
    async fn commit_on_layout(&self, replayed: &mut Replayed, op: Op) -> Result<Output, StoreError> {
        let Op::Commit { commit, .. } = &op else { return self.append(replayed, op).await };
        let msg_id = uuid::Uuid::new_v4().to_string();
        for _ in 0..APPEND_ATTEMPTS {
            let bus = self.on_the_bus().await?;
            if bus.graph_seq != replayed.graph_seq {
                self.sync_with_bus(replayed).await?;
                continue;
            }
            if let Some((_, meta)) = &bus.meta
                && meta.closed
            {
                return Err(backend(ProjectionRefusal::Closed(self.key.clone()).to_string()));
            }
            let before_nodes = match &commit.graph {
                GraphCommitDelta::ReplaceFull(_) => self.graph_nodes(replayed).await?,
                _ => Vec::new(),
            };
            let parent_session_id =
                replayed.state.load_session_meta().await?.and_then(|meta| meta.parent_session_id().map(str::to_owned));
            let (meta_seq, bus_meta) = bus.meta.map_or((0, None), |(seq, meta)| (seq, Some(meta)));
            let at_ms = self.clock.timestamp_ms();
            let head_before = replayed.head;
            let output = replayed.decide(Entry { at_ms, graph_records: 0, op: op.clone() }).await;
            let projection = match &output {
                Ok(Output::Commit(result)) if result.head_revision > head_before => {
                    let before =
                        Before { session_id: &self.key, nodes: &before_nodes, meta: bus_meta, parent_session_id };
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
            let graph_records = projection.as_ref().map_or(0, |projection| projection.graph.len() as u64);
            let entry = Entry { at_ms, graph_records, op: op.clone() };
            let writes = self.batch(replayed, &entry, &msg_id, projection.as_ref(), meta_seq)?;
            let created = projection.as_ref().filter(|projection| projection.created).map(|p| &p.meta);
            let failure = match self.backend.state.publish_batch(&writes).await {
                Ok(last) => {
                    let log_seq = last + 1 - writes.len() as u64;
                    replayed.applied_seq = log_seq;
                    if graph_records > 0 {
                        replayed.graph_seq = log_seq + graph_records;
                    }
                    self.register(created).await?;
                    return output;
                }
                Err(failure) => failure,
            };
            // What lash decided is not in the log: rebuild the state from the log, which
            // may hold this very batch (when its answer was lost).
            *replayed = Replayed::empty();
            let tip = self.tip().await?;
            if let Some(answer) = self.catch_up(replayed, tip, Some(&msg_id)).await? {
                self.register(created).await?;
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

    /// The writes of one commit: its log record, then its graph records and the meta.
    fn batch(
        &self,
        replayed: &Replayed,
        entry: &Entry,
        msg_id: &str,
        projection: Option<&Projection>,
        meta_seq: u64,
    ) -> Result<Vec<StateWrite>, StoreError> {
        let log = serde_json::to_vec(entry)
            .map_err(|err| backend(format!("a lash store change could not be encoded: {err}")))?;
        let mut writes = vec![
            StateWrite::new(self.subject.clone(), log.into(), msg_id.to_owned()).if_last_sequence(replayed.applied_seq),
        ];
        let Some(projection) = projection else { return Ok(writes) };
        for (index, record) in projection.graph.iter().enumerate() {
            let write =
                StateWrite::new(self.graph_subject.clone(), encoded(record)?, format!("{msg_id}/{}", index + 1));
            writes.push(if index == 0 { write.if_last_sequence(replayed.graph_seq) } else { write });
        }
        writes.push(
            StateWrite::latest(self.meta_subject.clone(), encoded(&projection.meta)?, format!("{msg_id}/meta"))
                .if_last_sequence(meta_seq),
        );
        Ok(writes)
    }

    /// Writes the registry entry of a session a commit created on the bus.
    async fn register(&self, created: Option<&MetaRecord>) -> Result<(), StoreError> {
        let Some(meta) = created else { return Ok(()) };
        let msg_id = format!("{LASH_REQUEST}{}/index", self.key);
        self.backend.state.register_session(&meta.handle, &meta.created_at, msg_id).await.map_err(|err| {
            backend(format!("the session `{}` is stored but `sessions` does not list it yet: {err}", self.key))
        })
    }

    /// The session's nodes as lash's JSON, in graph order.
    async fn graph_nodes(&self, replayed: &Replayed) -> Result<Vec<serde_json::Value>, StoreError> {
        let read = replayed.state.load_session(lash_core::SessionReadScope::FullGraph).await?;
        let nodes = read.map(|read| read.graph.nodes.clone()).unwrap_or_default();
        nodes
            .iter()
            .map(|node| {
                serde_json::to_value(node).map_err(|err| backend(format!("a node could not be encoded: {err}")))
            })
            .collect()
    }

    /// Brings the state level with the log and with what bus ops wrote on the
    /// session's graph: applies the log to its end, then imports the graph records no
    /// log record accounts for.
    async fn sync_with_bus(&self, replayed: &mut Replayed) -> Result<(), StoreError> {
        for _ in 0..APPEND_ATTEMPTS {
            let tip = self.tip().await?;
            self.catch_up(replayed, tip, None).await?;
            let bus = self.on_the_bus().await?;
            if bus.graph_seq == replayed.graph_seq {
                return Ok(());
            }
            if bus.graph_seq < replayed.graph_seq {
                return Err(backend(format!(
                    "the graph of session `{}` on the bus is older than its lash store's log (was it purged?); \
                     delete the session and create it again",
                    self.key
                )));
            }
            if self.import(replayed, bus).await? {
                return Ok(());
            }
        }
        Err(backend(format!("the session `{}` kept changing while its bus writes were read; retry", self.key)))
    }

    /// Appends the graph records bus ops wrote after `replayed.graph_seq` (up to
    /// `bus.graph_seq`) as one import record. False when one of them is a lash commit
    /// this process has not applied yet (the log moved since it was read).
    async fn import(&self, replayed: &mut Replayed, bus: OnTheBus) -> Result<bool, StoreError> {
        let mut nodes = Vec::new();
        let mut leaf_node_id = None;
        let mut seq = replayed.graph_seq;
        while seq < bus.graph_seq {
            let Some(record) = self.backend.state.next(&self.graph_subject, seq + 1).await.map_err(unreadable)? else {
                break;
            };
            if record.seq > bus.graph_seq {
                break;
            }
            seq = record.seq;
            let graph: GraphRecord = decode_record("graph", &record.payload, &self.key)?;
            if graph.request_id.starts_with(LASH_REQUEST) {
                return Ok(false);
            }
            if graph.replace {
                return Err(backend(format!(
                    "graph record {seq} of session `{}` replaces the whole graph, which only a lash store writes",
                    self.key
                )));
            }
            for node in graph.nodes {
                let value = serde_json::to_value(node).map_err(|err| backend(format!("a node: {err}")))?;
                nodes.push(serde_json::from_value(value).map_err(|err| {
                    backend(format!("a node session `{}` holds on the bus is not lash's node record: {err}", self.key))
                })?);
            }
            leaf_node_id = graph.leaf.or(leaf_node_id);
        }
        let (meta, config) = match bus.meta {
            Some((_, meta)) => (Some(lash_meta(&meta)), lash_config(&meta)),
            None => (None, None),
        };
        let import = Op::Import { session_id: self.key.clone(), graph_seq: seq, nodes, leaf_node_id, meta, config };
        if let Err(err) = self.append(replayed, import).await {
            tracing::warn!(%err, key = %self.key, "lash refused nodes bus ops wrote; the session differs from the bus");
        }
        Ok(true)
    }

    /// Answers `query` from the log as of now; a read of the session also takes in
    /// what bus ops wrote on it.
    pub(crate) async fn query(&self, query: Query) -> Result<Output, StoreError> {
        let mut replayed = self.replayed.lock().await;
        let tip = self.tip().await?;
        self.catch_up(&mut replayed, tip, None).await?;
        if matches!(query, Query::LoadSession(_) | Query::LoadNode(_) | Query::LoadSessionMeta)
            && self.on_the_bus().await?.graph_seq != replayed.graph_seq
        {
            self.sync_with_bus(&mut replayed).await?;
        }
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
