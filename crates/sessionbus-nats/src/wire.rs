//! The wire protocol: header names, request and reply bodies, and error replies.
//!
//! Bodies are JSON. The session id always comes from the subject, never the body.

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sessionbus_api::{ErrorKind, ExecutionScope, PluginError, SessionNode, TraceContext, TraceEvent, TurnInput};

/// The idempotency key of a call: a UUID made by the client, reused on every retry.
pub const REQUEST_ID: &str = "Sessionbus-Request-Id";
/// Sent as `1` on `start_turn` to receive progress messages while the turn runs, or as
/// [`PROGRESS_STREAM`] to receive the turn's live events in them as well.
pub const PROGRESS: &str = "Sessionbus-Progress";
/// The [`PROGRESS`] value asking for live events.
pub const PROGRESS_STREAM: &str = "stream";
/// On a live event (a progress message with a body, or a message on
/// `<prefix>.live.<sid>`): its place in the run's live output, from 1.
pub const LIVE: &str = "Sessionbus-Live";
/// On a message on `<prefix>.live.<sid>`: the turn it belongs to.
pub const TURN_ID: &str = "Sessionbus-Turn-Id";
/// `102` on a progress message (the final reply has none).
pub const STATUS: &str = "Sessionbus-Status";
/// The status value of a progress message.
pub const STATUS_PROGRESS: &str = "102";
/// The one-line error summary of an error reply.
pub const SERVICE_ERROR: &str = "Nats-Service-Error";
/// The numeric class of an error reply (400, 404, 409, 413, 500, 503).
pub const SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";
/// The longest `Nats-Service-Error` value, in bytes.
pub const MAX_ERROR_HEADER_BYTES: usize = 256;
/// The header carrying an error's typed detail (`{"reason":..,..}`) beside lash's body:
/// the session id of a 404, the generations of a conflict, the sizes of a 413.
pub const ERROR_DETAIL: &str = "Sessionbus-Error-Detail";

/// An empty body: `{}` (an empty payload is accepted as well).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// `graph_page` request: nodes after position `after_seq` (0-based count of nodes
/// already read), at most `limit`, and none past position `as_of`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphPageRequest {
    /// How many nodes the caller has already read.
    pub after_seq: u64,
    /// The most nodes to return.
    pub limit: u32,
    /// The node count of the graph the first page was cut from (its `graph_as_of`):
    /// pages stop there, so nodes appended since do not join the snapshot. A graph's
    /// nodes are append-only, so the first `as_of` nodes are exactly that graph's.
    /// Absent (older clients): pages run to the current end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<u64>,
}

/// `graph_page` reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphPage {
    /// The nodes, in graph order.
    pub nodes: Vec<SessionNode>,
    /// The `after_seq` of the next page, or `None` when this page is the last.
    pub next_seq: Option<u64>,
}

/// A `graph_page` reply encoded from borrowed nodes: the same JSON as [`GraphPage`]'s,
/// without copying a page out of the graph a worker keeps.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct GraphPageRef<'a> {
    /// The nodes, in graph order.
    pub nodes: &'a [SessionNode],
    /// The `after_seq` of the next page, or `None` when this page is the last.
    pub next_seq: Option<u64>,
}

/// `tool_catalog` request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCatalogRequest {
    /// The generation the caller already has; answered with `unchanged` when current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_generation: Option<u64>,
}

/// `tool_catalog` reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolCatalogReply {
    /// The catalog at `generation`.
    Full {
        /// The tool-state generation the catalog belongs to.
        generation: u64,
        /// The catalog entries.
        tools: Vec<Value>,
    },
    /// The caller's catalog is current.
    Unchanged {
        /// The current generation.
        generation: u64,
        /// Always `true`.
        unchanged: bool,
    },
}

/// `apply_tool_state` / `set_tool_membership` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationReply {
    /// The new generation.
    pub generation: u64,
}

/// `set_tool_membership` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipRequest {
    /// Tool names (manifest `name`s).
    pub tool_names: Vec<String>,
    /// Member or not.
    pub present: bool,
}

/// `start_turn` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StartTurnRequest {
    /// The stable turn id.
    pub turn_id: String,
    /// The input.
    pub input: TurnInput,
    /// The execution scope; a turn scope of this turn when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ExecutionScope>,
}

/// `cancel_turn` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelTurnRequest {
    /// The turn to cancel.
    pub turn_id: String,
}

/// `trace` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceRequest {
    /// Where it happened.
    pub context: TraceContext,
    /// What happened.
    pub event: TraceEvent,
}

/// `ping` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingReply {
    /// The answering worker.
    pub worker_id: String,
    /// Its sessionbus version.
    pub version: String,
}

/// The key under which a snapshot reply names the next graph page.
pub const GRAPH_NEXT_SEQ: &str = "graph_next_seq";
/// The field of a paged snapshot (or a turn's paged state) holding the node count of
/// the graph it was cut from; the `as_of` of its `graph_page` requests.
pub const GRAPH_AS_OF: &str = "graph_as_of";

/// Decodes a request body; malformed input is `InvalidRequest` naming the op.
pub fn decode_request<T: DeserializeOwned>(op: &str, payload: &[u8]) -> Result<T, PluginError> {
    let payload: &[u8] = if payload.iter().all(u8::is_ascii_whitespace) { b"{}" } else { payload };
    // Every request body is a JSON object; serde would also take a struct from an array
    // of its fields in order, which no client means to send.
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(PluginError::InvalidRequest(format!("malformed `{op}` request body: expected a JSON object")));
    }
    serde_json::from_slice(payload)
        .map_err(|err| PluginError::InvalidRequest(format!("malformed `{op}` request body: {err}")))
}

/// Encodes a body as JSON.
pub fn encode<T: Serialize>(value: &T) -> Result<Bytes, PluginError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|err| PluginError::Session(format!("could not encode a reply: {err}")))
}

/// The status code of an error reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: malformed or invalid request.
    InvalidRequest,
    /// 404: unknown session.
    UnknownSession,
    /// 409: conflict or running turn.
    Conflict,
    /// 413: request or value too large.
    TooLarge,
    /// 500: any other failure (the body's variant says which).
    Internal,
    /// 503: unavailable or overloaded.
    Unavailable,
}

impl ErrorCode {
    /// The numeric code.
    pub fn as_u16(self) -> u16 {
        match self {
            Self::InvalidRequest => 400,
            Self::UnknownSession => 404,
            Self::Conflict => 409,
            Self::TooLarge => 413,
            Self::Internal => 500,
            Self::Unavailable => 503,
        }
    }

    /// The code an error is answered with: from its variant, never its text.
    pub fn for_error(error: &PluginError) -> Self {
        match error {
            PluginError::TooLarge { .. } => Self::TooLarge,
            PluginError::UnknownSession { .. } => Self::UnknownSession,
            _ => match error.kind() {
                ErrorKind::InvalidRequest => Self::InvalidRequest,
                ErrorKind::Conflict => Self::Conflict,
                ErrorKind::Unavailable => Self::Unavailable,
                ErrorKind::Registration | ErrorKind::Snapshot | ErrorKind::Invoke | ErrorKind::Session => {
                    Self::Internal
                }
            },
        }
    }

    /// Parses a header value.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "400" => Some(Self::InvalidRequest),
            "404" => Some(Self::UnknownSession),
            "409" => Some(Self::Conflict),
            "413" => Some(Self::TooLarge),
            "500" => Some(Self::Internal),
            "503" => Some(Self::Unavailable),
            _ => None,
        }
    }

    /// The class of error this code stands for; `None` when the body's lash variant
    /// says it (404 and 500).
    fn kind(self) -> Option<ErrorKind> {
        match self {
            Self::InvalidRequest | Self::TooLarge => Some(ErrorKind::InvalidRequest),
            Self::Conflict => Some(ErrorKind::Conflict),
            Self::Unavailable => Some(ErrorKind::Unavailable),
            Self::UnknownSession | Self::Internal => None,
        }
    }

    /// Rebuilds the error from this code, the body's lash-shaped error and the typed
    /// detail (`Sessionbus-Error-Detail`, absent from older workers).
    pub fn rebuild(self, body: PluginError, detail: Option<&str>) -> PluginError {
        let kind = self.kind().unwrap_or_else(|| body.kind());
        PluginError::from_wire(kind, body, detail)
    }
}

/// A header-safe one-line summary: control characters escaped, at most
/// [`MAX_ERROR_HEADER_BYTES`] bytes, never splitting a character.
pub fn header_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_ERROR_HEADER_BYTES));
    for c in text.chars() {
        let piece: std::borrow::Cow<'_, str> = if c.is_control() {
            c.escape_default().to_string().into()
        } else {
            let mut buf = [0u8; 4];
            String::from(c.encode_utf8(&mut buf) as &str).into()
        };
        if out.len() + piece.len() > MAX_ERROR_HEADER_BYTES {
            break;
        }
        out.push_str(&piece);
    }
    out
}

/// The headers and body of an error reply.
pub fn error_reply(code: ErrorCode, error: &PluginError) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(SERVICE_ERROR, header_safe(&error.message()).as_str());
    headers.insert(SERVICE_ERROR_CODE, code.as_u16().to_string().as_str());
    // JSON escapes control characters, so the detail is header-safe whole.
    if let Some(detail) = error.detail() {
        headers.insert(ERROR_DETAIL, detail.as_str());
    }
    // A PluginError always serializes; the fallback keeps the reply well-formed anyway.
    let body = serde_json::to_vec(error).unwrap_or_else(|_| br#"{"type":"session","message":"error"}"#.to_vec());
    (headers, Bytes::from(body))
}

/// Reads a reply: an error reply (with `Nats-Service-Error-Code`) becomes the
/// rebuilt `PluginError`; anything else is decoded as `T`.
pub fn decode_reply<T: DeserializeOwned>(
    op: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<T, PluginError> {
    if let Some(code) = headers.and_then(|h| h.get(SERVICE_ERROR_CODE)) {
        let code = ErrorCode::parse(code.as_str()).unwrap_or(ErrorCode::Internal);
        let body = serde_json::from_slice::<PluginError>(payload).unwrap_or_else(|_| {
            let summary = headers.and_then(|h| h.get(SERVICE_ERROR)).map(|v| v.as_str().to_owned());
            PluginError::Session(summary.unwrap_or_else(|| format!("`{op}` failed without an error body")))
        });
        return Err(code.rebuild(body, headers.and_then(|h| h.get(ERROR_DETAIL)).map(|v| v.as_str())));
    }
    serde_json::from_slice(payload).map_err(|err| {
        PluginError::Unavailable(format!(
            "malformed `{op}` reply from a sessionbus worker ({err}); is the worker the same sessionbus version?"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_graph_page_is_encoded_as_an_owned_one_is() {
        let node = |i: usize| {
            SessionNode::from_append(
                sessionbus_api::SessionAppendNode::message("User", format!("m{i}")),
                format!("n{i}"),
                i.checked_sub(1).map(|p| format!("n{p}")),
                "t".into(),
            )
        };
        let nodes: Vec<SessionNode> = (0..3).map(node).collect();
        for next_seq in [None, Some(3)] {
            let owned = encode(&GraphPage { nodes: nodes.clone(), next_seq }).unwrap();
            assert_eq!(encode(&GraphPageRef { nodes: &nodes, next_seq }).unwrap(), owned);
        }
    }

    #[test]
    fn header_safe_escapes_and_bounds() {
        assert_eq!(header_safe("a\r\nb\0c"), "a\\r\\nb\\u{0}c");
        let long = "é".repeat(400);
        let safe = header_safe(&long);
        assert!(safe.len() <= MAX_ERROR_HEADER_BYTES);
        assert!(safe.chars().all(|c| c == 'é'));
    }

    #[test]
    fn errors_round_trip_through_code_and_body() {
        for error in [
            PluginError::Conflict("generation mismatch: expected 1, actual 2".into()),
            PluginError::Unavailable("overloaded".into()),
            PluginError::InvalidRequest("bad\r\nid".into()),
            PluginError::unknown_session("x"),
            PluginError::Session("session `x` already exists".into()),
            PluginError::Invoke("tool failed".into()),
        ] {
            let (headers, body) = error_reply(ErrorCode::for_error(&error), &error);
            assert!(!headers.get(SERVICE_ERROR).expect("summary").as_str().contains('\n'));
            let back = decode_reply::<Empty>("op", Some(&headers), &body).expect_err("an error");
            assert_eq!(back, error);
        }
    }

    #[test]
    fn empty_payload_is_an_empty_object() {
        assert_eq!(decode_request::<Empty>("snapshot", b"").expect("empty"), Empty {});
        assert!(decode_request::<GraphPageRequest>("graph_page", b"{\"after_seq\":\"x\"}").is_err());
    }
}
