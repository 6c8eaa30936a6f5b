//! The protocol of nats-server's fast batch publishing (2.14 and newer; a stream with
//! `allow_batched`), without I/O: the reply subject each message carries, and what each
//! of the server's answers means (decision 0026).
//!
//! A fast batch is a run of plain publishes whose reply subjects name the batch, the
//! message's place in it and its operation (start, append, commit). The server stores
//! each message as it arrives, deduplicates it by its `Nats-Msg-Id` like any publish, and
//! answers the batch once, when the commit and every message before it are stored,
//! instead of once per message. In between it may send flow-control acks and, on a
//! failure, the failed message's error. `JetStreamApi::publish_fast_batch` does the I/O.

use async_nats::jetstream::{self, ErrorCode};

use super::api::{JsError, JsErrorKind, kind_of};

/// The suffix nats-server recognises a fast batch message's reply subject by.
const SUFFIX: &str = "$FI";
/// Any failure ends the batch: the commit then covers only the messages before it, and
/// the answer is an error (gap mode `fail`, rather than `ok`).
const GAP_MODE: &str = "fail";
/// The server sends a flow-control ack every this many messages (it caps the value);
/// the bus waits for the commit's answer only.
const FLOW_ACK_EVERY: usize = 500;

/// A message's operation in its batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Start = 0,
    Append = 1,
    Commit = 2,
}

/// The reply subject of message `position` (1-based) of `count` in batch `batch_id`,
/// under `inbox` (which the publisher subscribes to with `<inbox>.>`).
pub(crate) fn reply_subject(inbox: &str, batch_id: &str, position: usize, count: usize) -> String {
    let operation = if position == count {
        Operation::Commit
    } else if position == 1 {
        Operation::Start
    } else {
        Operation::Append
    };
    let flow = count.clamp(1, FLOW_ACK_EVERY);
    format!("{inbox}.{batch_id}.{flow}.{GAP_MODE}.{position}.{}.{SUFFIX}", operation as u8)
}

/// What one answer of the server to a fast batch means.
#[derive(Debug)]
pub(crate) enum Answer {
    /// A flow-control ack (or a gap report the failure after it will also name): keep
    /// waiting for the commit's answer.
    Progress,
    /// Every message of the batch is stored; `resent` when every one was a duplicate
    /// of a stored message (a resend).
    Committed {
        /// Nothing new was stored.
        resent: bool,
    },
    /// The batch failed; the messages before the failure may be stored. Sending it again
    /// as a new batch stores each message once (message ids).
    Failed(JsError),
}

/// An answer as the server writes it: a flow message (`type`), a publish ack with the
/// batch's id and size, or an error.
#[derive(serde::Deserialize)]
struct Reply {
    #[serde(default, rename = "type")]
    flow: Option<String>,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    error: Option<jetstream::Error>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    batch: Option<String>,
    #[serde(default)]
    count: Option<usize>,
}

/// Reads one answer to batch `batch_id` of `count` messages.
pub(crate) fn read_answer(payload: &[u8], batch_id: &str, count: usize) -> Answer {
    let reply = match serde_json::from_slice::<Reply>(payload) {
        Ok(reply) => reply,
        Err(err) => return Answer::Failed(JsError::with_source(JsErrorKind::Other, err)),
    };
    if let Some(error) = reply.error {
        return Answer::Failed(JsError::with_source(kind_of_batch(error.error_code()), error));
    }
    match (reply.flow.as_deref(), reply.batch.as_deref(), reply.count) {
        (Some(_), _, _) => Answer::Progress,
        // The answer's `seq` is the last one the batch stored: 0 when it stored none.
        (None, Some(batch), Some(stored)) if batch == batch_id && stored == count => {
            Answer::Committed { resent: reply.seq == Some(0) }
        }
        (None, Some(batch), Some(stored)) if batch == batch_id => Answer::Failed(JsError::with_source(
            JsErrorKind::Other,
            format!("the fast batch committed {stored} of its {count} messages"),
        )),
        // A server without fast batches stores each message as a plain publish and acks
        // it: what it stored is stored, and publishing one by one stores the rest once.
        (None, None, None) if reply.stream.is_some() => {
            Answer::Failed(JsError::with_source(JsErrorKind::BatchRefused, "the server acked a plain publish"))
        }
        _ => Answer::Failed(JsError::with_source(JsErrorKind::Other, "a fast batch answer of another batch")),
    }
}

/// The kind of a fast batch's error: the stream not allowing fast batches, or too many
/// batches in flight, are their own kind (the caller publishes one by one instead); a
/// batch its stream's leader does not know was started under the leader before an
/// election (send it again, as a new batch).
fn kind_of_batch(code: ErrorCode) -> JsErrorKind {
    match code {
        ErrorCode::BATCH_PUBLISH_DISABLED | ErrorCode::BATCH_PUBLISH_TOO_MANY_INFLIGHT => JsErrorKind::BatchRefused,
        ErrorCode::BATCH_PUBLISH_UNKNOWN_BATCH_ID => JsErrorKind::NoStream,
        code => kind_of(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_names_its_batch_place_and_operation() {
        let subjects: Vec<_> = (1..=3).map(|position| reply_subject("_INBOX.x", "b1", position, 3)).collect();
        assert_eq!(
            subjects,
            ["_INBOX.x.b1.3.fail.1.0.$FI", "_INBOX.x.b1.3.fail.2.1.$FI", "_INBOX.x.b1.3.fail.3.2.$FI"]
        );
        assert_eq!(reply_subject("_INBOX.x", "b1", 1, 1), "_INBOX.x.b1.1.fail.1.2.$FI", "one message commits at once");
        assert_eq!(reply_subject("_INBOX.x", "b1", 7, 2000), "_INBOX.x.b1.500.fail.7.1.$FI", "flow is capped");
    }

    #[test]
    fn answers_are_read_by_their_form() {
        let table: [(&str, &str); 10] = [
            (r#"{"type":"ack","seq":0,"msgs":500}"#, "progress"),
            (r#"{"type":"gap","last_seq":3,"seq":5}"#, "progress"),
            (r#"{"stream":"T","seq":9,"batch":"b1","count":3}"#, "committed"),
            // Every message a duplicate: stored before, nothing new.
            (r#"{"stream":"T","seq":0,"batch":"b1","count":3}"#, "resent"),
            (r#"{"stream":"T","seq":9,"batch":"b1","count":2}"#, "failed Other"),
            (r#"{"stream":"T","seq":9,"batch":"b2","count":3}"#, "failed Other"),
            // A server older than fast batches.
            (r#"{"stream":"T","seq":9}"#, "failed BatchRefused"),
            (
                r#"{"stream":"T","error":{"code":400,"err_code":10205,"description":"batch publish is disabled"}}"#,
                "failed BatchRefused",
            ),
            (
                r#"{"stream":"T","error":{"code":400,"err_code":10208,"description":"batch publish ID unknown"}}"#,
                "failed NoStream",
            ),
            (
                r#"{"type":"err","seq":2,"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}}"#,
                "failed TooLarge",
            ),
        ];
        for (payload, expected) in table {
            let read = match read_answer(payload.as_bytes(), "b1", 3) {
                Answer::Progress => "progress".to_owned(),
                Answer::Committed { resent: false } => "committed".to_owned(),
                Answer::Committed { resent: true } => "resent".to_owned(),
                Answer::Failed(err) => format!("failed {:?}", err.kind()),
            };
            let read = read.split_once(" {").map_or(read.clone(), |(kind, _)| kind.to_owned());
            assert_eq!(read, expected, "{payload}");
        }
        assert!(matches!(read_answer(b"not json", "b1", 3), Answer::Failed(err) if err.kind() == JsErrorKind::Other));
    }
}
