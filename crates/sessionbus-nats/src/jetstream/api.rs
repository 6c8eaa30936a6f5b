//! Raw JetStream API access with full error codes: conditional publishes, atomic
//! batches and leader reads (`$JS.API.STREAM.MSG.GET`).
//!
//! async-nats maps publish errors to a few kinds; sessionbus must tell 10071 (a real
//! conflict) from 10164/10158 (re-read and retry) and 10201 (a batch that may already
//! be committed), so acks are parsed here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, HeaderMap};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Deserialize;
use sessionbus_api::PluginError;

/// Wrong last sequence: the condition did not hold.
pub(crate) const ERR_WRONG_LAST_SEQUENCE: u64 = 10071;
/// Another write to the subject is in flight.
pub(crate) const ERR_SUBJECT_IN_FLIGHT: u64 = 10164;
/// The same message id is in flight.
pub(crate) const ERR_MSG_ID_IN_FLIGHT: u64 = 10158;
/// A batch holds an already-seen message id.
pub(crate) const ERR_BATCH_DUPLICATE: u64 = 10201;
/// No message found.
const ERR_NO_MESSAGE: u64 = 10037;
/// JetStream is temporarily unavailable (no leader yet).
const ERR_TEMPORARILY_UNAVAILABLE: u64 = 10008;
/// How long a leader read waits for its answer before it is sent again, and a publish
/// retried after a transient failure waits for its ack (see `JetStreamApi::leader_read`
/// and `JetStreamApi::publish`).
const RESEND_EVERY: Duration = Duration::from_millis(250);

/// What went wrong talking to JetStream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum JsError {
    /// 10071: the expected-sequence condition failed (re-read to learn what is stored:
    /// the server's description is text, and no decision reads text).
    WrongLastSequence,
    /// 10164 / 10158: a concurrent write is in flight; re-read and retry.
    InFlight,
    /// 10201: the batch repeats a seen message id (it may already be committed).
    BatchDuplicate,
    /// No stream answered (no leader yet, or the stream is missing).
    NoStream,
    /// No answer in time.
    TimedOut,
    /// The message (`size` bytes) is larger than the server accepts (`limit` bytes).
    TooLarge { size: usize, limit: usize },
    /// The message id was already used by a write for a request with another body.
    ReusedRequestId,
    /// Any other API error.
    Other(String),
}

impl JsError {
    /// True for errors that a bounded backoff and retry can fix (leader elections).
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, JsError::NoStream | JsError::TimedOut | JsError::InFlight)
    }

    /// The contract error for a failure that could not be retried away.
    pub(crate) fn into_plugin(self, what: &str) -> PluginError {
        match self {
            JsError::WrongLastSequence => PluginError::Conflict(format!("{what}: a concurrent write won")),
            JsError::TooLarge { size, limit } => PluginError::too_large(format!("{what}: a message"), size, limit),
            JsError::NoStream => PluginError::Unavailable(format!(
                "{what}: JetStream has no leader for the sessionbus streams (is JetStream enabled, and is the \
                 cluster electing a leader?)"
            )),
            JsError::TimedOut => PluginError::Unavailable(format!("{what}: JetStream did not answer in time")),
            JsError::ReusedRequestId => reused_request_id(),
            other => PluginError::Unavailable(format!("{what}: JetStream error {other:?}")),
        }
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

/// The header holding the digest of the request a stored message was written for.
pub(crate) const REQUEST_DIGEST: &str = "Sessionbus-Request-Digest";

impl Write {
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

    pub(crate) fn rollup(mut self) -> Self {
        self.rollup = true;
        self
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", self.msg_id.as_str());
        if let Some((sequence, subject)) = &self.expect {
            headers.insert("Nats-Expected-Last-Subject-Sequence", sequence.to_string().as_str());
            if let Some(subject) = subject {
                headers.insert("Nats-Expected-Last-Subject-Sequence-Subject", subject.as_str());
            }
        }
        if self.rollup {
            headers.insert("Nats-Rollup", "sub");
        }
        if let Some(digest) = &self.digest {
            headers.insert(REQUEST_DIGEST, digest.as_str());
        }
        headers
    }
}

/// A successful publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ack {
    /// The stream sequence of the stored message (the last one, for a batch).
    pub(crate) seq: u64,
    /// The server had already stored this message id.
    pub(crate) duplicate: bool,
    /// The stream that stored it.
    pub(crate) stream: String,
}

/// A message read back from a stream.
#[derive(Clone, Debug)]
pub(crate) struct StoredMessage {
    pub(crate) seq: u64,
    pub(crate) msg_id: Option<String>,
    pub(crate) payload: Bytes,
    /// `KV-Operation` (`DEL`, `PURGE`) for KV delete markers.
    pub(crate) kv_operation: Option<String>,
    /// The digest of the request it was written for.
    pub(crate) digest: Option<String>,
}

impl StoredMessage {
    /// True when this message was written for a request with another body than the
    /// `write` now made under its message id.
    pub(crate) fn written_for_another_body(&self, write: &Write) -> bool {
        matches!((&self.digest, &write.digest), (Some(stored), Some(ours)) if stored != ours)
    }
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
struct AckBody {
    #[serde(default)]
    error: Option<ApiError>,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    duplicate: bool,
    #[serde(default)]
    stream: String,
}

#[derive(Deserialize)]
struct GetBody {
    #[serde(default)]
    error: Option<ApiError>,
    #[serde(default)]
    message: Option<RawStored>,
}

#[derive(Deserialize)]
struct RawStored {
    seq: u64,
    #[serde(default)]
    hdrs: Option<String>,
    #[serde(default)]
    data: Option<String>,
}

fn api_error(error: ApiError) -> JsError {
    match error.err_code {
        ERR_WRONG_LAST_SEQUENCE => JsError::WrongLastSequence,
        ERR_SUBJECT_IN_FLIGHT | ERR_MSG_ID_IN_FLIGHT => JsError::InFlight,
        ERR_BATCH_DUPLICATE => JsError::BatchDuplicate,
        // 10059: stream not found; 10008: "JetStream system temporarily unavailable",
        // which a stream or the cluster answers while it has no leader.
        10059 | ERR_TEMPORARILY_UNAVAILABLE => JsError::NoStream,
        // The publisher fills in the sizes (`JetStreamApi::sized`).
        10054 => JsError::TooLarge { size: 0, limit: 0 },
        code => JsError::Other(format!("{} (error {code})", error.description)),
    }
}

/// Raw JetStream access over one client.
#[derive(Clone)]
pub(crate) struct JetStreamApi {
    client: Client,
    timeout: Duration,
    /// How long transient failures (leader elections) are retried.
    retry_budget: Duration,
    /// When a request last found no leader (no responders, a timeout, 10008).
    leaderless_at: Arc<Mutex<Option<tokio::time::Instant>>>,
}

impl JetStreamApi {
    pub(crate) fn new(client: Client, timeout: Duration, retry_budget: Duration) -> Self {
        Self { client, timeout, retry_budget, leaderless_at: Arc::default() }
    }

    /// Notes that JetStream had no leader for a request just now.
    pub(crate) fn note_leaderless(&self) {
        *self.leaderless_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(tokio::time::Instant::now());
    }

    /// True when JetStream had no leader for a request within `window`: a leader election
    /// may be going on (the meta leader's too, which consumers need).
    pub(crate) fn leaderless_within(&self, window: Duration) -> bool {
        let at = *self.leaderless_at.lock().unwrap_or_else(|p| p.into_inner());
        at.is_some_and(|at| at.elapsed() < window)
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    async fn request(
        &self,
        operation: &'static str,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<Bytes, JsError> {
        let cx = crate::propagation::jetstream_span(operation, &subject);
        let result = self.request_untraced(subject, headers, payload).await;
        if let Err(err) = &result {
            crate::propagation::record_error(&cx, &format!("{err:?}"));
        }
        opentelemetry::trace::TraceContextExt::span(&cx).end();
        result
    }

    async fn request_untraced(&self, subject: String, headers: HeaderMap, payload: Bytes) -> Result<Bytes, JsError> {
        let size = payload.len();
        let request = async_nats::Request::new().payload(payload).headers(headers).timeout(Some(self.timeout));
        match self.client.send_request(subject, request).await {
            Ok(message) => Ok(message.payload),
            Err(err) => Err(match err.kind() {
                async_nats::RequestErrorKind::NoResponders => JsError::NoStream,
                async_nats::RequestErrorKind::TimedOut => JsError::TimedOut,
                async_nats::RequestErrorKind::MaxPayloadExceeded => self.too_large(size),
                _ => JsError::Other(err.to_string()),
            }),
        }
    }

    /// Retries `attempt` on transient errors with a bounded exponential backoff (at most
    /// [`RESEND_EVERY`] between attempts, so a write waiting out a leader election goes
    /// through within that long of the new leader).
    pub(crate) async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, JsError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, JsError>>,
    {
        let deadline = tokio::time::Instant::now() + self.retry_budget;
        let mut pause = Duration::from_millis(20);
        loop {
            match attempt().await {
                Err(err) if err.is_transient() && tokio::time::Instant::now() + pause < deadline => {
                    tracing::debug!(?err, ?pause, "transient JetStream failure, retrying");
                    if err != JsError::InFlight {
                        self.note_leaderless();
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RESEND_EVERY);
                }
                other => return other,
            }
        }
    }

    /// Publishes one write and parses its ack (no retry).
    pub(crate) async fn publish_once(&self, write: &Write) -> Result<Ack, JsError> {
        let reply = self.request("publish", write.subject.clone(), write.headers(), write.payload.clone()).await?;
        parse_ack(&reply).map_err(|err| self.sized(err, write))
    }

    /// [`JsError::TooLarge`] for a message of `size` bytes on this connection.
    fn too_large(&self, size: usize) -> JsError {
        JsError::TooLarge { size, limit: self.client.server_info().max_payload }
    }

    /// `err` with the sizes of `write` when the server refused it as too large.
    fn sized(&self, err: JsError, write: &Write) -> JsError {
        match err {
            JsError::TooLarge { .. } => self.too_large(write.payload.len()),
            other => other,
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
        let electing = std::sync::atomic::AtomicBool::new(false);
        let ack = self
            .retrying(|| async {
                let result = if electing.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::time::timeout(RESEND_EVERY, self.publish_once(write)).await.unwrap_or(Err(JsError::TimedOut))
                } else {
                    self.publish_once(write).await
                };
                if matches!(&result, Err(err) if err.is_transient()) {
                    electing.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                result
            })
            .await?;
        // A duplicate: the id was stored before. A retry of the same request is answered
        // like the first call; the same id for another body is refused.
        if ack.duplicate && write.digest.is_some() {
            let stored = self.retrying(|| self.leader_read(&ack.stream, serde_json::json!({ "seq": ack.seq }))).await?;
            if stored.is_some_and(|stored| stored.written_for_another_body(write)) {
                return Err(JsError::ReusedRequestId);
            }
        }
        Ok(ack)
    }

    /// Publishes `writes` as one atomic batch: all stored or none. No retry: a failed
    /// commit may have been applied, so the caller decides from what is stored.
    pub(crate) async fn publish_batch(&self, writes: &[Write]) -> Result<Ack, JsError> {
        let Some((last, staged)) = writes.split_last() else {
            return Err(JsError::Other("an empty batch".into()));
        };
        if staged.is_empty() {
            return self.publish_once(last).await;
        }
        let batch_id = uuid::Uuid::new_v4().simple().to_string();
        for (index, write) in staged.iter().enumerate() {
            let mut headers = write.headers();
            headers.insert("Nats-Batch-Id", batch_id.as_str());
            headers.insert("Nats-Batch-Sequence", (index + 1).to_string().as_str());
            self.client
                .publish_with_headers(write.subject.clone(), headers, write.payload.clone())
                .await
                .map_err(|err| JsError::Other(format!("staging a batch message failed: {err}")))?;
        }
        let mut headers = last.headers();
        headers.insert("Nats-Batch-Id", batch_id.as_str());
        headers.insert("Nats-Batch-Sequence", writes.len().to_string().as_str());
        headers.insert("Nats-Batch-Commit", "1");
        let reply = self.request("batch commit", last.subject.clone(), headers, last.payload.clone()).await?;
        parse_ack(&reply).map_err(|err| self.sized(err, last))
    }

    async fn get_once(&self, stream: &str, body: serde_json::Value) -> Result<Option<StoredMessage>, JsError> {
        let subject = format!("$JS.API.STREAM.MSG.GET.{stream}");
        let payload = Bytes::from(body.to_string());
        let reply = self.request("msg.get", subject, HeaderMap::new(), payload).await?;
        let body: GetBody =
            serde_json::from_slice(&reply).map_err(|err| JsError::Other(format!("malformed MSG.GET reply: {err}")))?;
        if let Some(error) = body.error {
            return if error.err_code == ERR_NO_MESSAGE { Ok(None) } else { Err(api_error(error)) };
        }
        let raw = body.message.ok_or_else(|| JsError::Other("MSG.GET reply without a message".into()))?;
        let decode = |field: Option<String>| -> Result<Vec<u8>, JsError> {
            field
                .map(|text| {
                    STANDARD.decode(text).map_err(|err| JsError::Other(format!("bad base64 in MSG.GET: {err}")))
                })
                .transpose()
                .map(Option::unwrap_or_default)
        };
        let headers = decode(raw.hdrs)?;
        let header = |name: &str| header_value(&headers, name);
        Ok(Some(StoredMessage {
            seq: raw.seq,
            msg_id: header("Nats-Msg-Id"),
            kv_operation: header("KV-Operation"),
            digest: header(REQUEST_DIGEST),
            payload: Bytes::from(decode(raw.data)?),
        }))
    }

    /// The last message on `subject` (may be a wildcard), read from the stream leader.
    pub(crate) async fn last(&self, stream: &str, subject: &str) -> Result<Option<StoredMessage>, JsError> {
        self.retrying(|| self.leader_read(stream, serde_json::json!({ "last_by_subj": subject }))).await
    }

    /// The first message on `subject` at or after `from_seq`, read from the leader.
    pub(crate) async fn next(
        &self,
        stream: &str,
        subject: &str,
        from_seq: u64,
    ) -> Result<Option<StoredMessage>, JsError> {
        self.retrying(|| {
            self.leader_read(stream, serde_json::json!({ "seq": from_seq.max(1), "next_by_subj": subject }))
        })
        .await
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
    async fn leader_read(&self, stream: &str, body: serde_json::Value) -> Result<Option<StoredMessage>, JsError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut sends = futures::stream::FuturesUnordered::new();
        loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(JsError::TimedOut);
            }
            sends.push(self.get_once(stream, body.clone()));
            let resend = tokio::time::sleep_until((tokio::time::Instant::now() + RESEND_EVERY).min(deadline));
            tokio::pin!(resend);
            loop {
                tokio::select! {
                    Some(result) = futures::StreamExt::next(&mut sends) => match result {
                        // One send gave up; the others are still waiting.
                        Err(JsError::TimedOut) => {}
                        other => return other,
                    },
                    () = &mut resend => break,
                }
            }
        }
    }
}

fn parse_ack(reply: &[u8]) -> Result<Ack, JsError> {
    let body: AckBody =
        serde_json::from_slice(reply).map_err(|err| JsError::Other(format!("malformed publish ack: {err}")))?;
    match body.error {
        Some(error) => Err(api_error(error)),
        None => Ok(Ack { seq: body.seq, duplicate: body.duplicate, stream: body.stream }),
    }
}

/// Reads one header from a raw `NATS/1.0` header block.
fn header_value(block: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(block).ok()?;
    text.split("\r\n").skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_acks_and_error_codes() {
        let ack = |seq, duplicate| Ack { seq, duplicate, stream: "S".to_owned() };
        assert_eq!(parse_ack(br#"{"stream":"S","seq":7}"#), Ok(ack(7, false)));
        assert_eq!(parse_ack(br#"{"stream":"S","seq":7,"duplicate":true}"#), Ok(ack(7, true)));
        assert_eq!(
            parse_ack(br#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 42"}}"#),
            Err(JsError::WrongLastSequence)
        );
        assert_eq!(parse_ack(br#"{"error":{"code":400,"err_code":10164,"description":"x"}}"#), Err(JsError::InFlight));
        assert_eq!(parse_ack(br#"{"error":{"code":400,"err_code":10158,"description":"x"}}"#), Err(JsError::InFlight));
        assert_eq!(
            parse_ack(br#"{"error":{"code":400,"err_code":10201,"description":"x"}}"#),
            Err(JsError::BatchDuplicate)
        );
        let unavailable =
            br#"{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}"#;
        assert!(parse_ack(unavailable).is_err_and(|err| err.is_transient()));
    }

    #[test]
    fn reads_headers_from_a_raw_block() {
        let block = b"NATS/1.0\r\nNats-Msg-Id: abc/0\r\nKV-Operation: DEL\r\n\r\n";
        assert_eq!(header_value(block, "nats-msg-id").as_deref(), Some("abc/0"));
        assert_eq!(header_value(block, "KV-Operation").as_deref(), Some("DEL"));
        assert_eq!(header_value(block, "Missing"), None);
    }
}
