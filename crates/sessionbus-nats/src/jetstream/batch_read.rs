//! A run of one subject's records in one request: a batched direct get
//! (`$JS.API.DIRECT.GET.<stream>` with `batch`, nats-server 2.11 and later).
//!
//! Any replica may answer a direct get, and a lagging one answers short. So a batch read
//! is only ever asked for records up to a sequence the stream leader reported (stored
//! records never change), and whatever it leaves out the caller reads from the leader:
//! it saves round trips, it never decides anything.

use std::time::Duration;

use async_nats::Message;
use futures::StreamExt as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::api::{JetStreamApi, JsError, JsErrorKind, StoredMessage};
use super::msg_get::{KV_OPERATION, REQUEST_DIGEST};

/// How long a batch read waits for its next reply before it returns what it has (the
/// caller reads the rest from the leader).
const BATCH_REPLY_WAIT: Duration = Duration::from_millis(500);
/// The most bytes one batch asks the server for (it stops after the record that
/// crosses this).
const BATCH_MAX_BYTES: usize = 8 << 20;

/// One reply to a batched direct get.
#[derive(Debug)]
enum BatchReply {
    /// A stored record.
    Record(StoredMessage),
    /// The end of the batch (204 EOB), or no record at all (404).
    End,
}

/// Reads one reply; `Other` for a refused request (a malformed or unsupported one, a
/// reply without the headers a direct get writes).
fn batch_reply(message: &Message) -> Result<BatchReply, JsError> {
    let refused = || JsError::new(JsErrorKind::Other);
    match message.status.map(|status| status.as_u16()) {
        Some(204 | 404) => return Ok(BatchReply::End),
        Some(_) => return Err(refused()),
        None => {}
    }
    let headers = message.headers.as_ref().ok_or_else(refused)?;
    let header = |name: &str| headers.get(name).map(|value| value.as_str().to_owned());
    let seq = header("Nats-Sequence").and_then(|seq| seq.parse().ok()).ok_or_else(refused)?;
    let subject = header("Nats-Subject").ok_or_else(refused)?;
    let stored_at =
        header("Nats-Time-Stamp").and_then(|stamp| OffsetDateTime::parse(&stamp, &Rfc3339).ok()).ok_or_else(refused)?;
    Ok(BatchReply::Record(StoredMessage {
        seq,
        subject,
        msg_id: header(async_nats::header::NATS_MESSAGE_ID.as_ref()),
        payload: message.payload.clone(),
        kv_operation: header(KV_OPERATION),
        digest: header(REQUEST_DIGEST),
        stored_at_unix_nanos: stored_at.unix_timestamp_nanos(),
    }))
}

impl JetStreamApi {
    /// The records on `subject` (may be a wildcard) from `from_seq` through
    /// `through_seq` (a sequence the stream leader reported), in order, at most `batch`
    /// of them, as far as one batched direct get returns them: possibly none (a lagging
    /// replica, a failed read), never one after `through_seq`. The caller reads the rest
    /// from the leader.
    pub(crate) async fn batch_read(
        &self,
        stream: &str,
        subject: &str,
        from_seq: u64,
        through_seq: u64,
        batch: usize,
    ) -> Vec<StoredMessage> {
        let read = async {
            let inbox = self.client().new_inbox();
            // Replies answer a request of this connection, sent after the subscription on
            // the same connection: the server has registered it when they come.
            let mut replies = self
                .client()
                .subscribe(inbox.clone())
                .await
                .map_err(|err| JsError::with_source(JsErrorKind::Other, err))?;
            let request = serde_json::json!({
                "seq": from_seq.max(1), "next_by_subj": subject, "batch": batch, "max_bytes": BATCH_MAX_BYTES,
            });
            self.client()
                .publish_with_reply(format!("$JS.API.DIRECT.GET.{stream}"), inbox, request.to_string().into())
                .await
                .map_err(|err| JsError::with_source(JsErrorKind::Other, err))?;
            let mut records = Vec::new();
            while let Ok(Some(reply)) = tokio::time::timeout(BATCH_REPLY_WAIT, replies.next()).await {
                match batch_reply(&reply)? {
                    BatchReply::End => break,
                    BatchReply::Record(record) if record.seq > through_seq => break,
                    BatchReply::Record(record) => {
                        let done = record.seq == through_seq;
                        records.push(record);
                        if done {
                            break;
                        }
                    }
                }
            }
            Ok::<_, JsError>(records)
        };
        read.await.unwrap_or_else(|err| {
            tracing::debug!(%err, stream, subject, "a batched read failed; the leader is read instead");
            Vec::new()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::{HeaderMap, StatusCode};

    fn reply(status: Option<u16>, headers: &[(&str, &str)], payload: &str) -> Message {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, *value);
        }
        Message {
            subject: "_INBOX.x".into(),
            reply: None,
            payload: payload.to_owned().into(),
            headers: (!headers.is_empty()).then_some(map),
            status: status.map(|code| StatusCode::from_u16(code).expect("a status")),
            description: None,
            length: 0,
        }
    }

    const RECORD: [(&str, &str); 5] = [
        ("Nats-Stream", "SESSIONBUS_STATE"),
        ("Nats-Subject", "sessionbus.v1.state.s.graph"),
        ("Nats-Sequence", "42"),
        ("Nats-Time-Stamp", "2026-12-01T10:00:00.000000001Z"),
        ("Nats-Msg-Id", "r1/c1"),
    ];

    #[test]
    fn replies_are_records_ends_or_refusals() {
        let record = match batch_reply(&reply(None, &RECORD, "{}")).expect("a record") {
            BatchReply::Record(record) => record,
            BatchReply::End => panic!("a record was read as the end"),
        };
        assert_eq!((record.seq, record.subject.as_str()), (42, "sessionbus.v1.state.s.graph"));
        assert_eq!(record.msg_id.as_deref(), Some("r1/c1"));
        assert_eq!(record.payload.as_ref(), b"{}");
        assert_eq!(record.stored_at_unix_nanos, 1_796_119_200_000_000_001);
        for end in [204, 404] {
            assert!(matches!(batch_reply(&reply(Some(end), &[], "")), Ok(BatchReply::End)), "{end}");
        }
        for refused in [408, 412, 503] {
            assert!(batch_reply(&reply(Some(refused), &[], "")).is_err(), "{refused}");
        }
        for missing in ["Nats-Sequence", "Nats-Subject", "Nats-Time-Stamp"] {
            let headers: Vec<_> = RECORD.iter().copied().filter(|(name, _)| *name != missing).collect();
            assert!(batch_reply(&reply(None, &headers, "{}")).is_err(), "without {missing}");
        }
        let bad_sequence: Vec<_> = RECORD
            .iter()
            .map(|&(name, value)| if name == "Nats-Sequence" { (name, "x") } else { (name, value) })
            .collect();
        assert!(batch_reply(&reply(None, &bad_sequence, "{}")).is_err());
    }
}
