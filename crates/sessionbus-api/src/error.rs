//! [`PluginError`], the contract's error, and its wire form.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The error every session service call returns.
///
/// The first four variants are lash's. The others let callers decide on typed detail,
/// never on text: an unknown session, a conflict with the generation it expected and the
/// one it found, a value too large with its size and limit, a lost lease apart from an
/// overloaded worker. On the wire every variant is written in lash's shape
/// (`{"type":"session","message":..}` for the sessionbus ones), so a lash client reads
/// every error body; the typed detail travels beside the body ([`PluginError::detail`],
/// restored by [`PluginError::from_wire`]).
///
/// ```
/// use sessionbus_api::{ErrorKind, PluginError};
///
/// let err = PluginError::GenerationMismatch { expected: 3, actual: 5 };
/// assert_eq!(err.kind(), ErrorKind::Conflict);
/// // Across the wire: lash's body plus the detail, restored to the same typed error.
/// let body: PluginError = serde_json::from_value(serde_json::to_value(&err).unwrap()).unwrap();
/// assert_eq!(PluginError::from_wire(err.kind(), body, err.detail().as_deref()), err);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// A plugin could not be registered.
    #[error("plugin registration failed: {0}")]
    Registration(String),
    /// A snapshot could not be taken or restored.
    #[error("snapshot failed: {0}")]
    Snapshot(String),
    /// A plugin invocation failed.
    #[error("plugin invocation failed: {0}")]
    Invoke(String),
    /// A session service refused or failed the call.
    #[error("{0}")]
    Session(String),
    /// No session has this id (404 on the bus).
    #[error("unknown session `{session_id}`")]
    UnknownSession {
        /// The id asked for.
        session_id: String,
    },
    /// A create named an id that is taken (409 on the bus).
    #[error("session `{session_id}` already exists")]
    SessionExists {
        /// The taken id.
        session_id: String,
    },
    /// A write to a closed session (409 on the bus).
    #[error("session `{session_id}` is closed")]
    SessionClosed {
        /// The closed session.
        session_id: String,
    },
    /// A tool-state write expected another generation (409: re-read and retry).
    #[error("generation mismatch: expected {expected}, actual {actual}")]
    GenerationMismatch {
        /// The generation the caller's write was conditioned on.
        expected: u64,
        /// The generation the store holds.
        actual: u64,
    },
    /// A compare-and-set lost: the caller's view is stale (re-read and retry).
    #[error("{0}")]
    Conflict(String),
    /// A membership change named a tool the session does not have (400 on the bus).
    #[error("unknown tool `{name}`")]
    UnknownTool {
        /// The tool asked for.
        name: String,
    },
    /// A request or value cannot fit (413 on the bus). Nothing was written.
    #[error("payload too large: {what} is {size} {unit}; the limit is {limit} {unit}")]
    TooLarge {
        /// What is too large ("the request", "the reply", "a graph record", ...).
        what: String,
        /// Its size.
        size: u64,
        /// The limit it exceeds.
        limit: u64,
        /// The unit of both ("bytes", "messages").
        unit: String,
    },
    /// The request is malformed or violates a rule of the contract (do not retry).
    #[error("{0}")]
    InvalidRequest(String),
    /// A turn lost its lease to another worker: nothing was committed, and a retry with
    /// the same turn id reaches whoever holds the turn now.
    #[error("{0}")]
    LeaseLost(String),
    /// The worker has no room for the call (retry shortly, or add workers).
    #[error("{0}")]
    Overloaded(String),
    /// The service could not be reached or did not answer in time (retry later).
    #[error("{0}")]
    Unavailable(String),
}

/// The class of a [`PluginError`]: what a caller does about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// [`PluginError::Registration`].
    Registration,
    /// [`PluginError::Snapshot`].
    Snapshot,
    /// [`PluginError::Invoke`].
    Invoke,
    /// [`PluginError::Session`] and [`PluginError::UnknownSession`].
    Session,
    /// A conflict with the stored state: [`PluginError::Conflict`],
    /// [`PluginError::GenerationMismatch`], [`PluginError::SessionExists`],
    /// [`PluginError::SessionClosed`]. Re-read, then decide.
    Conflict,
    /// Retry later: [`PluginError::Unavailable`], [`PluginError::Overloaded`],
    /// [`PluginError::LeaseLost`].
    Unavailable,
    /// Do not retry: [`PluginError::InvalidRequest`], [`PluginError::UnknownTool`],
    /// [`PluginError::TooLarge`].
    InvalidRequest,
}

/// The typed part of a sessionbus error, as it travels beside lash's body.
#[derive(Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
enum Detail {
    UnknownSession { session_id: String },
    SessionExists { session_id: String },
    SessionClosed { session_id: String },
    GenerationMismatch { expected: u64, actual: u64 },
    UnknownTool { name: String },
    TooLarge { what: String, size: u64, limit: u64, unit: String },
    LeaseLost,
    Overloaded,
}

impl PluginError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Registration(_) => ErrorKind::Registration,
            Self::Snapshot(_) => ErrorKind::Snapshot,
            Self::Invoke(_) => ErrorKind::Invoke,
            Self::Session(_) | Self::UnknownSession { .. } => ErrorKind::Session,
            Self::Conflict(_)
            | Self::GenerationMismatch { .. }
            | Self::SessionExists { .. }
            | Self::SessionClosed { .. } => ErrorKind::Conflict,
            Self::Unavailable(_) | Self::Overloaded(_) | Self::LeaseLost(_) => ErrorKind::Unavailable,
            Self::InvalidRequest(_) | Self::UnknownTool { .. } | Self::TooLarge { .. } => ErrorKind::InvalidRequest,
        }
    }

    /// The human-readable message, without the lash variants' prefix.
    pub fn message(&self) -> Cow<'_, str> {
        match self {
            Self::Registration(m)
            | Self::Snapshot(m)
            | Self::Invoke(m)
            | Self::Session(m)
            | Self::Conflict(m)
            | Self::InvalidRequest(m)
            | Self::LeaseLost(m)
            | Self::Overloaded(m)
            | Self::Unavailable(m) => Cow::Borrowed(m),
            typed => Cow::Owned(typed.to_string()),
        }
    }

    /// Rebuilds an error of `kind` carrying `message` (no typed detail).
    pub fn from_kind(kind: ErrorKind, message: impl Into<String>) -> Self {
        let message = message.into();
        match kind {
            ErrorKind::Registration => Self::Registration(message),
            ErrorKind::Snapshot => Self::Snapshot(message),
            ErrorKind::Invoke => Self::Invoke(message),
            ErrorKind::Session => Self::Session(message),
            ErrorKind::Conflict => Self::Conflict(message),
            ErrorKind::Unavailable => Self::Unavailable(message),
            ErrorKind::InvalidRequest => Self::InvalidRequest(message),
        }
    }

    /// The typed detail of a sessionbus variant as JSON (`{"reason":..,..}`), to travel
    /// beside lash's body; `None` for the variants that carry only a message.
    pub fn detail(&self) -> Option<String> {
        let detail = match self {
            Self::UnknownSession { session_id } => Detail::UnknownSession { session_id: session_id.clone() },
            Self::SessionExists { session_id } => Detail::SessionExists { session_id: session_id.clone() },
            Self::SessionClosed { session_id } => Detail::SessionClosed { session_id: session_id.clone() },
            Self::GenerationMismatch { expected, actual } => {
                Detail::GenerationMismatch { expected: *expected, actual: *actual }
            }
            Self::UnknownTool { name } => Detail::UnknownTool { name: name.clone() },
            Self::TooLarge { what, size, limit, unit } => {
                Detail::TooLarge { what: what.clone(), size: *size, limit: *limit, unit: unit.clone() }
            }
            Self::LeaseLost(_) => Detail::LeaseLost,
            Self::Overloaded(_) => Detail::Overloaded,
            _ => return None,
        };
        serde_json::to_string(&detail).ok()
    }

    /// Restores an error from the wire: the class (`kind`), lash's body and the detail
    /// written by [`PluginError::detail`]. A missing or unreadable detail (an older
    /// peer) gives the plain variant of `kind` with the body's message.
    pub fn from_wire(kind: ErrorKind, body: PluginError, detail: Option<&str>) -> Self {
        let detail = detail.and_then(|d| serde_json::from_str::<Detail>(d).ok());
        match detail {
            Some(Detail::UnknownSession { session_id }) => Self::UnknownSession { session_id },
            Some(Detail::SessionExists { session_id }) => Self::SessionExists { session_id },
            Some(Detail::SessionClosed { session_id }) => Self::SessionClosed { session_id },
            Some(Detail::GenerationMismatch { expected, actual }) => Self::GenerationMismatch { expected, actual },
            Some(Detail::UnknownTool { name }) => Self::UnknownTool { name },
            Some(Detail::TooLarge { what, size, limit, unit }) => Self::TooLarge { what, size, limit, unit },
            Some(Detail::LeaseLost) => Self::LeaseLost(body.message().into_owned()),
            Some(Detail::Overloaded) => Self::Overloaded(body.message().into_owned()),
            // lash's own variants are the body itself; a sessionbus class is rebuilt.
            None => match kind {
                ErrorKind::Session | ErrorKind::Registration | ErrorKind::Snapshot | ErrorKind::Invoke => body,
                ErrorKind::Conflict | ErrorKind::Unavailable | ErrorKind::InvalidRequest => {
                    Self::from_kind(kind, body.message())
                }
            },
        }
    }

    /// [`PluginError::UnknownSession`] for `session_id`.
    pub fn unknown_session(session_id: &str) -> Self {
        Self::UnknownSession { session_id: session_id.to_owned() }
    }

    /// [`PluginError::SessionClosed`] for `session_id`.
    pub fn session_closed(session_id: &str) -> Self {
        Self::SessionClosed { session_id: session_id.to_owned() }
    }

    /// [`PluginError::SessionExists`] for `session_id`.
    pub fn session_exists(session_id: &str) -> Self {
        Self::SessionExists { session_id: session_id.to_owned() }
    }

    /// [`PluginError::UnknownTool`] for `name`.
    pub fn unknown_tool(name: &str) -> Self {
        Self::UnknownTool { name: name.to_owned() }
    }

    /// [`PluginError::TooLarge`]: `what` is `size` bytes, over `limit` bytes.
    pub fn too_large(what: impl Into<String>, size: usize, limit: usize) -> Self {
        Self::TooLarge { what: what.into(), size: size as u64, limit: limit as u64, unit: "bytes".to_owned() }
    }

    /// True when a compare-and-set lost ([`PluginError::GenerationMismatch`] or a plain
    /// [`PluginError::Conflict`]): re-reading and retrying can succeed. A closed or
    /// taken session is a conflict no retry fixes.
    pub fn is_lost_race(&self) -> bool {
        matches!(self, Self::GenerationMismatch { .. } | Self::Conflict(_))
    }

    /// True for [`PluginError::TooLarge`].
    pub fn is_payload_too_large(&self) -> bool {
        matches!(self, Self::TooLarge { .. })
    }

    /// True for [`PluginError::UnknownSession`].
    pub fn is_unknown_session(&self) -> bool {
        matches!(self, Self::UnknownSession { .. })
    }
}

/// The lash wire shape: adjacently tagged, snake_case, four variants.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "message", rename_all = "snake_case")]
enum WireError<'a> {
    Registration(Cow<'a, str>),
    Snapshot(Cow<'a, str>),
    Invoke(Cow<'a, str>),
    Session(Cow<'a, str>),
}

impl Serialize for PluginError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let message = self.message();
        let wire = match self {
            Self::Registration(_) => WireError::Registration(message),
            Self::Snapshot(_) => WireError::Snapshot(message),
            Self::Invoke(_) => WireError::Invoke(message),
            _ => WireError::Session(message),
        };
        wire.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PluginError {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match WireError::deserialize(deserializer)? {
            WireError::Registration(m) => Self::Registration(m.into_owned()),
            WireError::Snapshot(m) => Self::Snapshot(m.into_owned()),
            WireError::Invoke(m) => Self::Invoke(m.into_owned()),
            WireError::Session(m) => Self::Session(m.into_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<PluginError> {
        vec![
            PluginError::Registration("r".into()),
            PluginError::Snapshot("s".into()),
            PluginError::Invoke("i".into()),
            PluginError::Session("x".into()),
            PluginError::unknown_session("a"),
            PluginError::session_exists("a"),
            PluginError::session_closed("a"),
            PluginError::GenerationMismatch { expected: 1, actual: 2 },
            PluginError::Conflict("c".into()),
            PluginError::unknown_tool("t"),
            PluginError::too_large("the request", 10, 5),
            PluginError::InvalidRequest("bad".into()),
            PluginError::LeaseLost("lost".into()),
            PluginError::Overloaded("busy".into()),
            PluginError::Unavailable("down".into()),
        ]
    }

    #[test]
    fn every_variant_survives_the_wire_as_the_same_typed_error() {
        for error in every_variant() {
            let body: PluginError =
                serde_json::from_value(serde_json::to_value(&error).expect("encode")).expect("lash's shape");
            assert_eq!(PluginError::from_wire(error.kind(), body, error.detail().as_deref()), error);
        }
    }

    #[test]
    fn without_detail_an_error_keeps_its_class_and_message() {
        for error in every_variant() {
            let body: PluginError =
                serde_json::from_value(serde_json::to_value(&error).expect("encode")).expect("lash's shape");
            let restored = PluginError::from_wire(error.kind(), body, None);
            assert_eq!((restored.kind(), restored.message()), (error.kind(), error.message()));
        }
    }

    #[test]
    fn the_body_is_lashs_shape() {
        let body = serde_json::to_value(PluginError::GenerationMismatch { expected: 1, actual: 2 }).expect("encode");
        assert_eq!(
            body,
            serde_json::json!({"type": "session", "message": "generation mismatch: expected 1, actual 2"})
        );
        let body = serde_json::to_value(PluginError::Invoke("boom".into())).expect("encode");
        assert_eq!(body, serde_json::json!({"type": "invoke", "message": "boom"}));
    }
}
