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
use lash_core::{Clock, InMemorySessionStore, StoreError};
use serde::{Deserialize, Serialize};

use super::append::{AppendFailure, classify_error};
use super::backend::{StoreBackend, backend};
use super::blobs;
use super::layout::LASH_STREAM;
use super::ops::{Op, Output, Query};

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
    #[serde(flatten)]
    op: Op,
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
}

impl Replayed {
    fn empty() -> Self {
        let clock = Arc::new(ReplayClock::default());
        Self { state: InMemorySessionStore::with_clock(clock.clone()), clock, applied_seq: 0, blob: None }
    }

    async fn apply(&mut self, seq: u64, entry: Entry) -> Result<Output, StoreError> {
        self.applied_seq = seq;
        self.clock.set(entry.at_ms);
        let blob = match &entry.op {
            Op::Commit { blob, .. } => Some(blob.clone()),
            _ => None,
        };
        let output = entry.op.apply(&self.state).await;
        if let (Ok(_), Some(blob)) = (&output, blob) {
            self.blob = blob;
        }
        output
    }
}

/// One store: its log subject, its replayed state, and the clock its writes are
/// stamped with.
pub(crate) struct Engine {
    pub(crate) backend: Arc<StoreBackend>,
    pub(crate) key: String,
    subject: String,
    clock: Arc<dyn Clock>,
    replayed: tokio::sync::Mutex<Replayed>,
}

impl Engine {
    pub(crate) fn new(backend: Arc<StoreBackend>, key: String, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let subject = backend.layout.log(&key)?;
        Ok(Self { backend, key, subject, clock, replayed: tokio::sync::Mutex::new(Replayed::empty()) })
    }

    /// The sequence of the log's last record (0 when the log is empty), read from the
    /// stream leader.
    pub(crate) async fn tip(&self) -> Result<u64, StoreError> {
        let stream = self.backend.context.get_stream_no_info(LASH_STREAM).await.map_err(unreadable)?;
        match stream.raw_message_builder().last_by_subject(self.subject.clone()).send().await {
            Ok(message) => Ok(message.sequence),
            Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => Ok(0),
            Err(err) => Err(unreadable(err)),
        }
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
        let stream = self.backend.context.get_stream_no_info(LASH_STREAM).await.map_err(unreadable)?;
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

    /// Appends `op` and answers it as applied in log order.
    pub(crate) async fn execute(&self, op: Op) -> Result<Output, StoreError> {
        let mut replayed = self.replayed.lock().await;
        let op = match op {
            Op::Commit { commit, .. } => {
                let (commit, blob) = blobs::store_checkpoint(&self.backend, &self.key, *commit).await?;
                Op::Commit { commit: Box::new(commit), blob }
            }
            op => op,
        };
        let msg_id = uuid::Uuid::new_v4().to_string();
        // No read of the log's end first: the append's condition says when this process
        // is behind, and then it catches up and appends again.
        for _ in 0..APPEND_ATTEMPTS {
            let entry = Entry { at_ms: self.clock.timestamp_ms(), op: op.clone() };
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
                    if let Some(answer) = self.catch_up(&mut replayed, ack.sequence, Some(&msg_id)).await? {
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
            if let Some(answer) = self.catch_up(&mut replayed, tip, Some(&msg_id)).await? {
                return answer;
            }
        }
        Err(backend(format!("the lash store `{}` kept changing under this write; retry", self.key)))
    }

    /// Answers `query` from the log as of now.
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
