//! A leader read on the wire: the `$JS.API.STREAM.MSG.GET.<stream>` request body, and
//! the answer read in one pass into a [`StoredMessage`].
//!
//! The library's raw message getter decodes the answer through its untagged
//! `Response<T>` (which buffers the whole answer into an intermediate tree before trying
//! each form), then into a `StreamMessage` (every header into a map), which the bus then
//! copied into a `StoredMessage`. Here the answer's strings are borrowed from the reply,
//! the body is base64-decoded once, and only the three headers the bus reads are kept.
//! Pure functions, no I/O; `JetStreamApi` sends the request.

use std::borrow::Cow;

use async_nats::header;
use async_nats::jetstream::{self, ErrorCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use super::api::{JsError, JsErrorKind, StoredMessage, kind_of};

/// The header of a KV delete or purge marker (`DEL`, `PURGE`).
pub(crate) const KV_OPERATION: &str = "KV-Operation";
/// The header holding the digest of the request a stored message was written for.
pub(crate) const REQUEST_DIGEST: &str = "Sessionbus-Request-Digest";

/// Which message a leader read asks for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Get<'a> {
    /// The last message on a subject (may be a wildcard).
    Last(&'a str),
    /// The first message on a subject at or after a sequence.
    Next(&'a str, u64),
    /// The message at a sequence.
    At(u64),
}

/// The request body of `get` (the fields the server reads: `seq`, `last_by_subj`,
/// `next_by_subj`).
#[derive(serde::Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_by_subj: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_by_subj: Option<&'a str>,
}

/// The subject a read of `stream` is sent to (the default JetStream API prefix).
pub(crate) fn subject(stream: &str) -> String {
    format!("$JS.API.STREAM.MSG.GET.{stream}")
}

/// The JSON body asking for `get`.
pub(crate) fn request_body(get: Get<'_>) -> Result<Bytes, JsError> {
    let body = match get {
        Get::Last(subject) => Body { seq: None, last_by_subj: Some(subject), next_by_subj: None },
        Get::Next(subject, from_seq) => {
            Body { seq: Some(from_seq.max(1)), last_by_subj: None, next_by_subj: Some(subject) }
        }
        Get::At(seq) => Body { seq: Some(seq), last_by_subj: None, next_by_subj: None },
    };
    serde_json::to_vec(&body).map(Bytes::from).map_err(|err| JsError::with_source(JsErrorKind::Other, err))
}

/// A `MSG.GET` answer: the message, or the server's refusal.
#[derive(serde::Deserialize)]
struct Answer<'a> {
    #[serde(default)]
    error: Option<jetstream::Error>,
    #[serde(default, borrow)]
    message: Option<RawMessage<'a>>,
}

/// A stored message as the server writes it in a `MSG.GET` answer (the strings are
/// borrowed from the reply; `data` and `hdrs` are base64, `time` RFC 3339).
#[derive(serde::Deserialize)]
struct RawMessage<'a> {
    #[serde(borrow)]
    subject: Cow<'a, str>,
    seq: u64,
    #[serde(default, borrow)]
    data: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    hdrs: Option<Cow<'a, str>>,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

/// Reads a `MSG.GET` answer: the message, `None` when there is no such message (10037),
/// or the server's refusal as a [`JsError`] of its kind.
pub(crate) fn parse(reply: &[u8]) -> Result<Option<StoredMessage>, JsError> {
    let other = |err: &dyn std::fmt::Display| {
        JsError::with_source(JsErrorKind::Other, format!("an unreadable MSG.GET answer: {err}"))
    };
    let answer: Answer<'_> = serde_json::from_slice(reply).map_err(|err| other(&err))?;
    match answer {
        Answer { error: Some(error), .. } if error.error_code() == ErrorCode::NO_MESSAGE_FOUND => Ok(None),
        Answer { error: Some(error), .. } => Err(JsError::with_source(kind_of(error.error_code()), error)),
        Answer { message: Some(raw), .. } => {
            let payload =
                raw.data.map_or(Ok(Vec::new()), |data| STANDARD.decode(data.as_bytes())).map_err(|err| other(&err))?;
            let headers =
                raw.hdrs.map_or(Ok(Vec::new()), |hdrs| STANDARD.decode(hdrs.as_bytes())).map_err(|err| other(&err))?;
            let headers = std::str::from_utf8(&headers).map_err(|err| other(&err))?;
            let stored_at = time::OffsetDateTime::parse(&raw.time, &time::format_description::well_known::Rfc3339)
                .map_err(|err| other(&err))?;
            Ok(Some(StoredMessage {
                seq: raw.seq,
                subject: raw.subject.into_owned(),
                msg_id: header_value(headers, header::NATS_MESSAGE_ID.as_ref()).map(str::to_owned),
                kv_operation: header_value(headers, KV_OPERATION).map(str::to_owned),
                digest: header_value(headers, REQUEST_DIGEST).map(str::to_owned),
                stored_at_unix_nanos: stored_at.unix_timestamp_nanos(),
                payload: Bytes::from(payload),
            }))
        }
        Answer { error: None, message: None } => Err(other(&"neither a message nor an error")),
    }
}

/// The first value of header `name` in a NATS header block (`NATS/1.0\r\nName: value\r\n
/// ...`), trimmed; names compare exactly, as the library's header map does.
fn header_value<'a>(block: &'a str, name: &str) -> Option<&'a str> {
    block
        .split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == name)
        .map(|(_, value)| value.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_name_what_the_server_reads() {
        let body = |get| String::from_utf8(request_body(get).expect("a body").to_vec()).expect("utf-8");
        assert_eq!(body(Get::Last("$KV.T.s1")), r#"{"last_by_subj":"$KV.T.s1"}"#);
        assert_eq!(body(Get::Next("a.>", 0)), r#"{"seq":1,"next_by_subj":"a.>"}"#);
        assert_eq!(body(Get::Next("a.>", 9)), r#"{"seq":9,"next_by_subj":"a.>"}"#);
        assert_eq!(body(Get::At(7)), r#"{"seq":7}"#);
        assert_eq!(subject("SESSIONBUS_TOOLS"), "$JS.API.STREAM.MSG.GET.SESSIONBUS_TOOLS");
    }

    #[test]
    fn header_values_by_exact_name() {
        let block = "NATS/1.0\r\nNats-Msg-Id: abc/0\r\nKV-Operation:DEL\r\nX: a:b\r\n\r\n";
        let table = [
            ("Nats-Msg-Id", Some("abc/0")),
            ("KV-Operation", Some("DEL")),
            ("X", Some("a:b")),
            ("nats-msg-id", None),
            ("Sessionbus-Request-Digest", None),
            ("NATS/1.0", None),
        ];
        for (name, expected) in table {
            assert_eq!(header_value(block, name), expected, "{name}");
        }
    }

    #[test]
    fn reads_a_stored_message_with_its_headers() {
        let encode = |bytes: &[u8]| STANDARD.encode(bytes);
        let headers =
            encode(b"NATS/1.0\r\nNats-Msg-Id: abc/0\r\nKV-Operation: DEL\r\nSessionbus-Request-Digest: d1\r\n\r\n");
        // A MSG.GET answer as the server writes it.
        let answer = serde_json::json!({
            "type": "io.nats.jetstream.api.v1.stream_msg_get_response",
            "message": {
                "subject": "$KV.SESSIONBUS_TOOLS.s1", "seq": 9, "hdrs": headers, "data": encode(b"{}"),
                "time": "2026-12-01T00:00:00.000000001Z"
            }
        });
        let stored = parse(answer.to_string().as_bytes()).expect("readable").expect("a message");
        assert_eq!((stored.seq, stored.subject.as_str()), (9, "$KV.SESSIONBUS_TOOLS.s1"));
        assert_eq!(stored.msg_id.as_deref(), Some("abc/0"));
        assert_eq!(stored.kv_operation.as_deref(), Some("DEL"));
        assert_eq!(stored.digest.as_deref(), Some("d1"));
        assert_eq!(stored.payload.as_ref(), b"{}");
        assert_eq!(stored.stored_at_unix_nanos, 1_796_083_200_000_000_001);
        let bare = serde_json::json!({"message": {"subject": "s", "seq": 1, "time": "2026-12-01T00:00:00Z"}});
        let bare = parse(bare.to_string().as_bytes()).expect("readable").expect("a message");
        assert!(bare.payload.is_empty() && bare.msg_id.is_none());
    }

    #[test]
    fn answers_without_a_message_by_their_error_code() {
        let kind = |answer: &str| parse(answer.as_bytes()).expect_err("a refusal").kind();
        assert!(matches!(
            parse(br#"{"error":{"code":404,"err_code":10037,"description":"no message found"}}"#),
            Ok(None)
        ));
        assert_eq!(
            kind(r#"{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}"#),
            JsErrorKind::NoStream
        );
        assert_eq!(
            kind(r#"{"error":{"code":404,"err_code":10059,"description":"stream not found"}}"#),
            JsErrorKind::NoStream
        );
        assert_eq!(kind(r#"{"type":"x"}"#), JsErrorKind::Other);
        assert_eq!(
            kind(r#"{"message":{"subject":"s","seq":1,"data":"!!","time":"2026-12-01T00:00:00Z"}}"#),
            JsErrorKind::Other
        );
        assert_eq!(kind("not json"), JsErrorKind::Other);
    }
}
