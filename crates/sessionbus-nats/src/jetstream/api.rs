//! JetStream access on async-nats, plus what the library leaves to its callers: resends
//! through leader elections, a span per call, and atomic batches (async-nats 0.51 names
//! only their headers).
//!
//! - A write is the library's [`PublishMessage`] (message id, expected last subject
//!   sequence), sent as a request whose reply is an [`Ack`] or the server's API error
//!   (docs/decisions/0007-jetstream-on-async-nats.md says why not the context's
//!   `send_publish`).
//! - A read is a `$JS.API.STREAM.MSG.GET` request, which the stream leader answers
//!   (the same request the library's raw message getter sends; its answer is read in
//!   one pass by `msg_get`). Decisions never use direct get, which a lagging replica
//!   may answer; a batched direct get (`batch_read`) only fetches records up to a
//!   sequence a leader read reported, and the leader fills in whatever it leaves out.
//! - Server error codes are the library's [`ErrorCode`]s, read in one place,
//!   [`kind_of`]: the bus tells 10071 (a real conflict) from 10164 and 10158 (re-read and
//!   retry) and 10201 (a batch that may already be committed). The library's error is
//!   kept as the source; no decision reads the server's description.
//!
//! Names the library has none for are set here, once: [`EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT`]
//! and [`ROLLUP_SUBJECT`] (`msg_get` names `KV-Operation` and the bus's own
//! `Sessionbus-Request-Digest`).

use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{Client, HeaderValue, header};
use bytes::Bytes;
use sessionbus_api::PluginError;
use sessionbus_api::sync::Backoff;

use super::fast_batch;
use super::msg_get::{self, Get, REQUEST_DIGEST};

/// `Nats-Expected-Last-Subject-Sequence-Subject`: the subject (may be a wildcard) whose
/// last sequence `Nats-Expected-Last-Subject-Sequence` is compared with.
const EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";
/// The `Nats-Rollup` value that replaces the subject's earlier messages.
const ROLLUP_SUBJECT: &str = "sub";
/// How long a leader read waits for its answer before it is sent again, and a publish
/// retried after a transient failure waits for its ack (see `JetStreamApi::leader_read`
/// and `JetStreamApi::publish`).
const RESEND_EVERY: Duration = Duration::from_millis(250);
/// The pauses between retries of a transient failure: 20 ms, doubling, at most
/// [`RESEND_EVERY`].
const RETRY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(20), RESEND_EVERY);

/// What went wrong talking to JetStream: a [`JsErrorKind`] and, when there is one, the
/// library's error as its source.
pub(crate) type JsError = async_nats::error::Error<JsErrorKind>;

/// The kinds of [`JsError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JsErrorKind {
    /// 10071: the expected-sequence condition failed (re-read to learn what is stored).
    WrongLastSequence,
    /// 10164 / 10158: a concurrent write to the subject, or with the message id, is in
    /// flight; re-read and retry.
    InFlight,
    /// 10201: the batch repeats a seen message id (it may already be committed).
    BatchDuplicate,
    /// No stream answered (no leader yet, or the stream is missing).
    NoStream,
    /// No answer in time.
    TimedOut,
    /// The message (`size` bytes) is larger than the server accepts (`limit` bytes).
    TooLarge {
        /// The message's size.
        size: usize,
        /// The server's `max_payload`.
        limit: usize,
    },
    /// The message id was already used by a write for a request with another body.
    ReusedRequestId,
    /// 10205 / 10211: the stream does not take fast batches (set up before they were
    /// used), or too many are in flight; publish the messages one by one instead.
    BatchRefused,
    /// Any other failure (its source says which).
    Other,
}

impl JsErrorKind {
    /// True for failures that a bounded backoff and retry can fix (leader elections).
    pub(crate) fn is_transient(self) -> bool {
        matches!(self, JsErrorKind::NoStream | JsErrorKind::TimedOut | JsErrorKind::InFlight)
    }
}

impl std::fmt::Display for JsErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsErrorKind::WrongLastSequence => write!(f, "wrong last sequence"),
            JsErrorKind::InFlight => write!(f, "a concurrent write is in flight"),
            JsErrorKind::BatchDuplicate => write!(f, "the batch repeats a stored message id"),
            JsErrorKind::NoStream => write!(f, "no stream answered"),
            JsErrorKind::TimedOut => write!(f, "timed out"),
            JsErrorKind::TooLarge { size, limit } => write!(f, "a message of {size} bytes (the limit is {limit})"),
            JsErrorKind::ReusedRequestId => write!(f, "a message id reused for another request body"),
            JsErrorKind::BatchRefused => write!(f, "the stream refused a fast batch"),
            JsErrorKind::Other => write!(f, "JetStream request failed"),
        }
    }
}

/// What the bus does with a [`JsError`].
pub(crate) trait JsErrorExt {
    /// True when a bounded backoff and retry can fix it (see [`JsErrorKind::is_transient`]).
    fn is_transient(&self) -> bool;
    /// The contract error for a failure that could not be retried away.
    fn into_plugin(self, what: &str) -> PluginError;
}

impl JsErrorExt for JsError {
    fn is_transient(&self) -> bool {
        self.kind().is_transient()
    }

    fn into_plugin(self, what: &str) -> PluginError {
        match self.kind() {
            JsErrorKind::WrongLastSequence => PluginError::Conflict(format!("{what}: a concurrent write won")),
            JsErrorKind::TooLarge { size, limit } => PluginError::too_large(format!("{what}: a message"), size, limit),
            JsErrorKind::NoStream => PluginError::Unavailable(format!(
                "{what}: JetStream has no leader for the sessionbus streams (is JetStream enabled, and is the \
                 cluster electing a leader?)"
            )),
            JsErrorKind::TimedOut => PluginError::Unavailable(format!("{what}: JetStream did not answer in time")),
            JsErrorKind::ReusedRequestId => reused_request_id(),
            _ => PluginError::Unavailable(format!("{what}: {self}")),
        }
    }
}

/// The kind of a JetStream API error, by its server error code.
pub(super) fn kind_of(code: ErrorCode) -> JsErrorKind {
    match code {
        ErrorCode::STREAM_WRONG_LAST_SEQUENCE => JsErrorKind::WrongLastSequence,
        // 10164: another write conditioned on the subject is in flight (a clustered
        // stream checks them one at a time); 10158: the message id is in flight.
        ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT | ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT => {
            JsErrorKind::InFlight
        }
        ErrorCode::ATOMIC_PUBLISH_CONTAINS_DUPLICATE_MESSAGE => JsErrorKind::BatchDuplicate,
        // 10008 ("JetStream system temporarily unavailable") is what a stream or the
        // cluster answers while it has no leader.
        ErrorCode::STREAM_NOT_FOUND | ErrorCode::CLUSTER_NOT_AVAILABLE => JsErrorKind::NoStream,
        // The publisher fills in the sizes (`JetStreamApi::sized`).
        ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM => JsErrorKind::TooLarge { size: 0, limit: 0 },
        _ => JsErrorKind::Other,
    }
}

/// The kind of a failed request (a publish awaiting its ack).
fn request_kind(err: &async_nats::RequestError) -> JsErrorKind {
    match err.kind() {
        async_nats::RequestErrorKind::NoResponders => JsErrorKind::NoStream,
        async_nats::RequestErrorKind::TimedOut => JsErrorKind::TimedOut,
        async_nats::RequestErrorKind::MaxPayloadExceeded => JsErrorKind::TooLarge { size: 0, limit: 0 },
        _ => JsErrorKind::Other,
    }
}

/// What a stored publish is acknowledged with: where and whether it was new.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ack {
    /// The stream that stored it.
    pub(crate) stream: String,
    /// Its sequence in that stream (the first one's, for a duplicate).
    pub(crate) sequence: u64,
    /// True when its message id was stored before (nothing new was written).
    pub(crate) duplicate: bool,
}

/// A publish's answer as the server writes it: an ack (`stream`, `seq`, `duplicate`)
/// or a refusal (`error`), read in one pass into flat fields. (The library's untagged
/// `Response<PublishAck>` first buffers the whole answer into an intermediate tree and
/// then tries each form against it, on every write.)
#[derive(serde::Deserialize)]
struct AckReply {
    #[serde(default)]
    error: Option<jetstream::Error>,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    duplicate: bool,
}

/// A publish ack, or the server's refusal by its error code (`sized` fills in the sizes
/// of a message refused as too large).
fn parse_ack(reply: &[u8], sized: impl Fn(JsErrorKind) -> JsErrorKind) -> Result<Ack, JsError> {
    match serde_json::from_slice::<AckReply>(reply) {
        Ok(AckReply { error: Some(error), .. }) => Err(JsError::with_source(sized(kind_of(error.error_code())), error)),
        Ok(AckReply { stream: Some(stream), seq: Some(sequence), duplicate, .. }) => {
            Ok(Ack { stream, sequence, duplicate })
        }
        Ok(_) => Err(JsError::with_source(JsErrorKind::Other, "a publish answer with neither an ack nor an error")),
        Err(err) => Err(JsError::with_source(JsErrorKind::Other, err)),
    }
}

/// The answer to a call whose request id was used before for another body.
pub(crate) fn reused_request_id() -> PluginError {
    PluginError::InvalidRequest(
        "this Sessionbus-Request-Id was already used for a request with another body; nothing was written: \
         send a new call with a new request id"
            .to_owned(),
    )
}

/// One write: subject, body, idempotency key and optional condition.
#[derive(Clone, Debug)]
pub(crate) struct Write {
    pub(crate) subject: String,
    pub(crate) payload: Bytes,
    pub(crate) msg_id: String,
    /// `Nats-Expected-Last-Subject-Sequence` (and its `-Subject` when set).
    pub(crate) expect: Option<(u64, Option<String>)>,
    /// `Nats-Rollup: sub`: this message replaces the subject's earlier ones.
    pub(crate) rollup: bool,
    /// The digest of the request the write serves (`Sessionbus-Request-Digest`).
    pub(crate) digest: Option<String>,
}

impl Write {
    /// A write of `payload` to `subject` with message id `msg_id`, for the request being
    /// served (its body's digest goes along).
    pub(crate) fn new(subject: String, payload: Bytes, msg_id: String) -> Self {
        let digest = crate::request_context::current_body_digest();
        Self { subject, payload, msg_id, expect: None, rollup: false, digest }
    }

    /// A write to a subject that keeps only its latest record (a session's meta and
    /// lease, a turn's ledger): stored with `Nats-Rollup: sub`, so earlier records
    /// (a long turn's lease renewals, say) do not accumulate in the stream.
    pub(crate) fn latest(subject: String, payload: Bytes, msg_id: String) -> Self {
        Self::new(subject, payload, msg_id).rollup()
    }

    /// Stored only if the last sequence of `on_subject` (default: the write's own
    /// subject; may be a wildcard) is `sequence` (0: never written).
    pub(crate) fn if_last_sequence(mut self, sequence: u64, on_subject: Option<String>) -> Self {
        self.expect = Some((sequence, on_subject));
        self
    }

    /// This message replaces the subject's earlier ones (`Nats-Rollup: sub`).
    pub(crate) fn rollup(mut self) -> Self {
        self.rollup = true;
        self
    }

    /// The message the library publishes.
    fn message(&self) -> PublishMessage {
        let mut message = PublishMessage::build().payload(self.payload.clone()).message_id(&self.msg_id);
        if let Some((sequence, on_subject)) = &self.expect {
            message = message.expected_last_subject_sequence(*sequence);
            if let Some(on_subject) = on_subject {
                message = message.header(EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT, on_subject.as_str());
            }
        }
        if self.rollup {
            message = message.header(header::NATS_ROLLUP, ROLLUP_SUBJECT);
        }
        if let Some(digest) = &self.digest {
            message = message.header(REQUEST_DIGEST, digest.as_str());
        }
        message
    }
}

/// A message read back from a stream.
#[derive(Clone, Debug)]
pub(crate) struct StoredMessage {
    pub(crate) seq: u64,
    /// The subject it was stored on.
    pub(crate) subject: String,
    pub(crate) msg_id: Option<String>,
    pub(crate) payload: Bytes,
    /// `KV-Operation` (`DEL`, `PURGE`) for KV delete markers.
    pub(crate) kv_operation: Option<String>,
    /// The digest of the request it was written for.
    pub(crate) digest: Option<String>,
    /// When the server stored it, in nanoseconds since the Unix epoch.
    pub(crate) stored_at_unix_nanos: i128,
}

impl StoredMessage {
    /// True when this message was written for a request with another body than the
    /// `write` now made under its message id.
    pub(crate) fn written_for_another_body(&self, write: &Write) -> bool {
        matches!((&self.digest, &write.digest), (Some(stored), Some(ours)) if stored != ours)
    }
}

/// JetStream access over one client.
#[derive(Clone)]
pub(crate) struct JetStreamApi {
    client: Client,
    timeout: Duration,
    /// How long transient failures (leader elections) are retried.
    retry_budget: Duration,
}

impl JetStreamApi {
    /// JetStream calls over `client`, each answered within `timeout`, transient failures
    /// retried for `retry_budget`.
    pub(crate) fn new(client: Client, timeout: Duration, retry_budget: Duration) -> Self {
        Self { client, timeout, retry_budget }
    }

    /// The client the calls go through.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Retries `attempt` on transient errors with [`RETRY_BACKOFF`] (at most
    /// [`RESEND_EVERY`] between attempts, so a write waiting out a leader election goes
    /// through within that long of the new leader).
    pub(crate) async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, JsError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, JsError>>,
    {
        let deadline = tokio::time::Instant::now() + self.retry_budget;
        let mut retry = 1;
        loop {
            let pause = RETRY_BACKOFF.pause(retry);
            match attempt().await {
                Err(err) if err.is_transient() && tokio::time::Instant::now() + pause < deadline => {
                    tracing::debug!(%err, ?pause, "transient JetStream failure, retrying");
                    tokio::time::sleep(pause).await;
                    retry += 1;
                }
                other => return other,
            }
        }
    }

    /// Publishes `message` (made from `write`) in a span named `jetstream <operation>`
    /// and awaits its ack.
    ///
    /// The ack is awaited as the reply of a request, not through the jetstream context's
    /// `send_publish`, whose acker task and semaphore cost more per call and add nothing
    /// here (docs/decisions/0007-jetstream-on-async-nats.md).
    async fn send(&self, operation: &'static str, write: &Write, message: PublishMessage) -> Result<Ack, JsError> {
        let message = message.outbound_message(write.subject.clone());
        let request = async_nats::Request::new()
            .payload(message.payload)
            .headers(message.headers.unwrap_or_default())
            .timeout(Some(self.timeout));
        let sized = |kind| self.sized(kind, write);
        let publish = async {
            match self.client.send_request(message.subject, request).await {
                Ok(reply) => parse_ack(&reply.payload, sized),
                Err(err) => Err(JsError::with_source(sized(request_kind(&err)), err)),
            }
        };
        traced(operation, &write.subject, publish).await
    }

    /// Publishes one write and awaits its ack (no retry).
    pub(crate) async fn publish_once(&self, write: &Write) -> Result<Ack, JsError> {
        self.send("publish", write, write.message()).await
    }

    /// `kind` with the sizes of `write` when the message was refused as too large.
    fn sized(&self, kind: JsErrorKind, write: &Write) -> JsErrorKind {
        match kind {
            JsErrorKind::TooLarge { .. } => {
                JsErrorKind::TooLarge { size: write.payload.len(), limit: self.client.server_info().max_payload }
            }
            kind => kind,
        }
    }

    /// Publishes one write, retrying transient failures with the same message id (the
    /// server's dedupe makes the retry apply once).
    ///
    /// Once an attempt has failed transiently (a leader election), each further attempt
    /// waits at most [`RESEND_EVERY`] for its ack: a publish sent while the new leader
    /// takes over can be lost, and would otherwise wait out the whole API timeout after
    /// the leader is up. Resending is safe: on a replicated stream the message id wins
    /// over the condition (a duplicate ack with the first sequence).
    pub(crate) async fn publish(&self, write: &Write) -> Result<Ack, JsError> {
        let ack = self.resending(|| self.publish_once(write)).await?;
        // A duplicate: the id was stored before. A retry of the same request is answered
        // like the first call; the same id for another body is refused.
        if ack.duplicate && write.digest.is_some() {
            let stored = self.retrying(|| self.leader_read(&ack.stream, Get::At(ack.sequence))).await?;
            if stored.is_some_and(|stored| stored.written_for_another_body(write)) {
                return Err(JsError::new(JsErrorKind::ReusedRequestId));
            }
        }
        Ok(ack)
    }

    /// Runs `attempt` until it succeeds, retrying transient failures; once one has
    /// failed transiently (a leader election), each further attempt waits at most
    /// [`RESEND_EVERY`] for its answer (see [`JetStreamApi::publish`]).
    async fn resending<T, F, Fut>(&self, attempt: F) -> Result<T, JsError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, JsError>>,
    {
        let electing = std::sync::atomic::AtomicBool::new(false);
        self.retrying(|| async {
            let result = if electing.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::timeout(RESEND_EVERY, attempt())
                    .await
                    .unwrap_or_else(|elapsed| Err(JsError::with_source(JsErrorKind::TimedOut, elapsed)))
            } else {
                attempt().await
            };
            if matches!(&result, Err(err) if err.is_transient()) {
                electing.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            result
        })
        .await
    }

    /// Publishes `writes` pipelined: all are sent at once, in order, and their acks
    /// awaited together; each is retried like [`JetStreamApi::publish`] (same message
    /// id, so a retry stores it once). The first error when any failed (the others may
    /// be stored).
    pub(crate) async fn publish_pipelined(&self, writes: &[Write]) -> Result<(), JsError> {
        // Each publish enqueues its message on the connection (a FIFO channel) at its
        // first poll; started in order, they leave in order.
        let acks = crate::trace_batch::join_started_in_order(writes.iter().map(|write| self.publish(write))).await;
        acks.into_iter().find_map(Result::err).map_or(Ok(()), Err)
    }

    /// Publishes `writes` (on one stream that allows fast batches) as one fast batch and
    /// waits for the server's single answer that all are stored; a failed batch is sent
    /// again as a new one, as [`JetStreamApi::publish`] resends (message ids keep each
    /// write stored once). `BatchRefused` when the stream takes no fast batch now.
    pub(crate) async fn publish_fast_batch(&self, writes: &[Write]) -> Result<(), JsError> {
        match writes {
            [] => Ok(()),
            [write] => self.publish(write).await.map(drop),
            writes => {
                let resent =
                    self.resending(|| traced("fast batch", &writes[0].subject, self.fast_batch_once(writes))).await?;
                // A resend: its first write, published alone, is a duplicate whose stored
                // body `publish` compares (the same id for another body is refused).
                if resent { self.publish(&writes[0]).await.map(drop) } else { Ok(()) }
            }
        }
    }

    /// One attempt of [`JetStreamApi::publish_fast_batch`]; `true` when every write was a
    /// duplicate of a stored one. Its answers come on an inbox of its own, subscribed
    /// before the first message leaves (same connection, so the server has the
    /// subscription first).
    async fn fast_batch_once(&self, writes: &[Write]) -> Result<bool, JsError> {
        let batch_id = uuid::Uuid::new_v4().simple().to_string();
        let inbox = self.client.new_inbox();
        let mut answers = self
            .client
            .subscribe(format!("{inbox}.>"))
            .await
            .map_err(|err| JsError::with_source(JsErrorKind::Other, err))?;
        for (index, write) in writes.iter().enumerate() {
            let message = write.message().outbound_message(write.subject.clone());
            let reply = fast_batch::reply_subject(&inbox, &batch_id, index + 1, writes.len());
            self.client
                .publish_with_reply_and_headers(
                    message.subject,
                    reply,
                    message.headers.unwrap_or_default(),
                    message.payload,
                )
                .await
                .map_err(|err| JsError::with_source(JsErrorKind::Other, err))?;
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let answer = match tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut answers)).await {
                Ok(Some(answer)) => answer,
                Ok(None) => return Err(JsError::with_source(JsErrorKind::Other, "the answer inbox closed")),
                Err(_) => return Err(JsError::new(JsErrorKind::TimedOut)),
            };
            match fast_batch::read_answer(&answer.payload, &batch_id, writes.len()) {
                fast_batch::Answer::Progress => {}
                fast_batch::Answer::Committed { resent } => return Ok(resent),
                fast_batch::Answer::Failed(err) => {
                    return Err(match err.kind() {
                        JsErrorKind::TooLarge { .. } => {
                            let largest = writes.iter().max_by_key(|write| write.payload.len()).unwrap_or(&writes[0]);
                            JsError::new(self.sized(err.kind(), largest))
                        }
                        _ => err,
                    });
                }
            }
        }
    }

    /// Publishes `writes` as one atomic batch: all stored or none. No retry: a failed
    /// commit may have been applied, so the caller decides from what is stored.
    pub(crate) async fn publish_batch(&self, writes: &[Write]) -> Result<Ack, JsError> {
        let Some((last, staged)) = writes.split_last() else {
            return Err(JsError::with_source(JsErrorKind::Other, "an empty batch"));
        };
        if staged.is_empty() {
            return self.publish_once(last).await;
        }
        let batch_id = uuid::Uuid::new_v4().simple().to_string();
        let in_batch = |write: &Write, sequence: usize| {
            write
                .message()
                .header(header::NATS_BATCH_ID, batch_id.as_str())
                .header(header::NATS_BATCH_SEQUENCE, HeaderValue::from(sequence))
        };
        for (index, write) in staged.iter().enumerate() {
            let staged = in_batch(write, index + 1).outbound_message(write.subject.clone());
            self.client
                .publish_with_headers(staged.subject, staged.headers.unwrap_or_default(), staged.payload)
                .await
                .map_err(|err| JsError::with_source(JsErrorKind::Other, err))?;
        }
        let commit = in_batch(last, writes.len()).header(header::NATS_BATCH_COMMIT, header::NATS_BATCH_COMMIT_FINAL);
        self.send("batch commit", last, commit).await
    }

    /// One leader read (no retry; `None` when there is no such message): a request to
    /// `$JS.API.STREAM.MSG.GET.<stream>`, its answer read by [`msg_get::parse`].
    async fn get_once(&self, stream: &str, get: Get<'_>) -> Result<Option<StoredMessage>, JsError> {
        let read = async {
            let request = async_nats::Request::new().payload(msg_get::request_body(get)?).timeout(Some(self.timeout));
            match self.client.send_request(msg_get::subject(stream), request).await {
                Ok(reply) => msg_get::parse(&reply.payload),
                Err(err) => Err(JsError::with_source(request_kind(&err), err)),
            }
        };
        traced("msg.get", stream, read).await
    }

    /// The last message on `subject` (may be a wildcard), read from the stream leader.
    pub(crate) async fn last(&self, stream: &str, subject: &str) -> Result<Option<StoredMessage>, JsError> {
        self.retrying(|| self.leader_read(stream, Get::Last(subject))).await
    }

    /// The first message on `subject` at or after `from_seq`, read from the leader.
    pub(crate) async fn next(
        &self,
        stream: &str,
        subject: &str,
        from_seq: u64,
    ) -> Result<Option<StoredMessage>, JsError> {
        self.retrying(|| self.leader_read(stream, Get::Next(subject, from_seq))).await
    }

    /// One leader read, sent again every [`RESEND_EVERY`] while unanswered.
    ///
    /// A stream without a leader does not answer `MSG.GET` at all (the request times
    /// out; it does not fail fast like a publish), and a read sent during a leader
    /// election is never answered by the leader elected after it. Sent once, a read that
    /// arrives late in an election would wait out the whole API timeout after the new
    /// leader is up. Reads are idempotent, so the same read is sent again while earlier
    /// sends stay in flight (a large read that is merely slow still completes): the
    /// first answer wins, at most one interval after the new leader can answer.
    async fn leader_read(&self, stream: &str, get: Get<'_>) -> Result<Option<StoredMessage>, JsError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut sends = futures::stream::FuturesUnordered::new();
        loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(JsError::new(JsErrorKind::TimedOut));
            }
            sends.push(self.get_once(stream, get));
            let resend = tokio::time::sleep_until((tokio::time::Instant::now() + RESEND_EVERY).min(deadline));
            tokio::pin!(resend);
            loop {
                tokio::select! {
                    Some(result) = futures::StreamExt::next(&mut sends) => match result {
                        // One send gave up; the others are still waiting.
                        Err(err) if err.kind() == JsErrorKind::TimedOut => {}
                        other => return other,
                    },
                    () = &mut resend => break,
                }
            }
        }
    }
}

/// Runs one JetStream call in a span named `jetstream <operation>` on `destination`
/// (marked failed when the call fails).
async fn traced<T>(
    operation: &'static str,
    destination: &str,
    call: impl std::future::Future<Output = Result<T, JsError>>,
) -> Result<T, JsError> {
    let cx = crate::propagation::jetstream_span(operation, destination);
    let result = call.await;
    if let Err(err) = &result {
        crate::propagation::record_error(&cx, &err.to_string());
    }
    opentelemetry::trace::TraceContextExt::span(&cx).end();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ack as the server writes it (nats-server 2.15.1), parsed.
    fn ack(reply: &str) -> Result<Ack, JsError> {
        parse_ack(reply.as_bytes(), |kind| kind)
    }

    #[test]
    fn parses_acks_and_error_codes() {
        let stored = ack(r#"{"stream":"S","seq":7}"#).expect("an ack");
        assert_eq!((stored.stream.as_str(), stored.sequence, stored.duplicate), ("S", 7, false));
        let duplicate = ack(r#"{"stream":"S","seq":7,"duplicate":true}"#).expect("an ack");
        assert_eq!((duplicate.sequence, duplicate.duplicate), (7, true));
        assert_eq!(ack(r#"{"stream":"S","seq":8,"domain":"hub","val":"1"}"#).expect("an ack").sequence, 8);
        assert_eq!(ack(r#"{"stream":"S"}"#).expect_err("no sequence").kind(), JsErrorKind::Other);
        assert_eq!(ack("not json").expect_err("unreadable").kind(), JsErrorKind::Other);
        let kind = |reply: &str| ack(reply).expect_err("a refusal").kind();
        assert_eq!(
            kind(r#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 42"}}"#),
            JsErrorKind::WrongLastSequence
        );
        assert_eq!(
            kind(r#"{"error":{"code":400,"err_code":10164,"description":"wrong last sequence"}}"#),
            JsErrorKind::InFlight
        );
        assert_eq!(
            kind(r#"{"error":{"code":409,"err_code":10158,"description":"duplicate message id is in process"}}"#),
            JsErrorKind::InFlight
        );
        assert_eq!(
            kind(
                r#"{"error":{"code":400,"err_code":10201,"description":"atomic publish batch contains duplicate message id"}}"#
            ),
            JsErrorKind::BatchDuplicate
        );
        let unavailable =
            r#"{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}"#;
        assert!(ack(unavailable).is_err_and(|err| err.is_transient()));
        assert_eq!(
            kind(r#"{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}}"#),
            JsErrorKind::TooLarge { size: 0, limit: 0 }
        );
        assert_eq!(
            kind(r#"{"error":{"code":500,"err_code":10111,"description":"rollup not permitted"}}"#),
            JsErrorKind::Other
        );
    }

    #[test]
    fn the_server_error_is_kept_as_the_source() {
        let err = ack(r#"{"error":{"code":400,"err_code":10164,"description":"wrong last sequence"}}"#)
            .expect_err("a refusal");
        let api = std::error::Error::source(&err).and_then(|source| source.downcast_ref::<jetstream::Error>());
        assert_eq!(api.map(jetstream::Error::error_code), Some(ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT));
    }

    #[test]
    fn failed_requests_decide_by_the_library_kinds() {
        let kind = |kind| request_kind(&async_nats::RequestError::new(kind));
        assert_eq!(kind(async_nats::RequestErrorKind::NoResponders), JsErrorKind::NoStream);
        assert_eq!(kind(async_nats::RequestErrorKind::TimedOut), JsErrorKind::TimedOut);
        assert_eq!(kind(async_nats::RequestErrorKind::Other), JsErrorKind::Other);
    }
}
