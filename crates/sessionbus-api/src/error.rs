//! [`PluginError`], the contract's error, and its wire form.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The error every session service call returns.
///
/// The first four variants are lash's. `Conflict`, `Unavailable` and `InvalidRequest`
/// let callers tell a revision conflict, a transport failure and bad input apart
/// without parsing text; on the wire they are written as lash's `session` variant
/// (`{"type":"session","message":..}`) so a lash client reads every error body, and
/// their class travels beside the body (see [`ErrorKind`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
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
    /// A compare-and-set lost: the caller's view is stale (re-read and retry).
    #[error("{0}")]
    Conflict(String),
    /// The service could not be reached or is overloaded (retry later).
    #[error("{0}")]
    Unavailable(String),
    /// The request is malformed or violates a rule of the contract (do not retry).
    #[error("{0}")]
    InvalidRequest(String),
}

/// The class of a [`PluginError`], for `match` instead of text parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// [`PluginError::Registration`].
    Registration,
    /// [`PluginError::Snapshot`].
    Snapshot,
    /// [`PluginError::Invoke`].
    Invoke,
    /// [`PluginError::Session`].
    Session,
    /// [`PluginError::Conflict`].
    Conflict,
    /// [`PluginError::Unavailable`].
    Unavailable,
    /// [`PluginError::InvalidRequest`].
    InvalidRequest,
}

impl PluginError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Registration(_) => ErrorKind::Registration,
            Self::Snapshot(_) => ErrorKind::Snapshot,
            Self::Invoke(_) => ErrorKind::Invoke,
            Self::Session(_) => ErrorKind::Session,
            Self::Conflict(_) => ErrorKind::Conflict,
            Self::Unavailable(_) => ErrorKind::Unavailable,
            Self::InvalidRequest(_) => ErrorKind::InvalidRequest,
        }
    }

    /// The human-readable message, without the variant's prefix.
    pub fn message(&self) -> &str {
        match self {
            Self::Registration(m)
            | Self::Snapshot(m)
            | Self::Invoke(m)
            | Self::Session(m)
            | Self::Conflict(m)
            | Self::Unavailable(m)
            | Self::InvalidRequest(m) => m,
        }
    }

    /// Rebuilds an error of `kind` carrying `message`.
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

    /// ``unknown session `id` ``: the answer for a session id nobody created.
    pub fn unknown_session(session_id: &str) -> Self {
        Self::Session(format!("unknown session `{session_id}`"))
    }

    /// ``session `id` is closed``: a write to a closed session (a conflict with the
    /// session's state: 409 on the bus).
    pub fn session_closed(session_id: &str) -> Self {
        Self::Conflict(format!("session `{session_id}` is closed"))
    }

    /// ``session `id` already exists``: a create with a taken id (409 on the bus).
    pub fn session_exists(session_id: &str) -> Self {
        Self::Conflict(format!("session `{session_id}` already exists"))
    }

    /// ``unknown tool `name` ``: a membership change naming a tool the session does not
    /// have (the request is wrong: 400 on the bus).
    pub fn unknown_tool(name: &str) -> Self {
        Self::InvalidRequest(format!("unknown tool `{name}`"))
    }

    /// `payload too large: <detail>`: a request or value that cannot fit in one NATS
    /// message (answered with status 413 on the bus). Nothing was written.
    pub fn payload_too_large(detail: impl std::fmt::Display) -> Self {
        Self::InvalidRequest(format!("payload too large: {detail}"))
    }

    /// True when this is the [`PluginError::payload_too_large`] answer.
    pub fn is_payload_too_large(&self) -> bool {
        matches!(self, Self::InvalidRequest(m) if m.starts_with("payload too large: "))
    }

    /// True when this is the [`PluginError::unknown_session`] answer.
    pub fn is_unknown_session(&self) -> bool {
        matches!(self, Self::Session(m) if m.starts_with("unknown session `"))
    }
}

/// The lash wire shape: adjacently tagged, snake_case, four variants.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "message", rename_all = "snake_case")]
enum WireError<'a> {
    Registration(std::borrow::Cow<'a, str>),
    Snapshot(std::borrow::Cow<'a, str>),
    Invoke(std::borrow::Cow<'a, str>),
    Session(std::borrow::Cow<'a, str>),
}

impl Serialize for PluginError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let message = std::borrow::Cow::Borrowed(self.message());
        let wire = match self {
            Self::Registration(_) => WireError::Registration(message),
            Self::Snapshot(_) => WireError::Snapshot(message),
            Self::Invoke(_) => WireError::Invoke(message),
            Self::Session(_) | Self::Conflict(_) | Self::Unavailable(_) | Self::InvalidRequest(_) => {
                WireError::Session(message)
            }
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
