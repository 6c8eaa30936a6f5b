//! [`SessionBinding`]: the session a service object is bound to, and the rules that
//! follow from it (shared by every host and client).

use crate::{PluginError, TraceContext};

/// The session a service is bound to, if any. A bound service answers
/// `snapshot_current`, resolves `current_session` start points, and claims trace
/// contexts that name no session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionBinding(Option<String>);

impl SessionBinding {
    /// Not bound to any session.
    pub fn unbound() -> Self {
        Self(None)
    }

    /// Bound to `session_id`.
    pub fn to(session_id: impl Into<String>) -> Self {
        Self(Some(session_id.into()))
    }

    /// The bound session, if any.
    pub fn session_id(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// The session `snapshot_current` answers; unbound, the seed's "unavailable" error.
    pub fn current(&self) -> Result<&str, PluginError> {
        self.session_id()
            .ok_or_else(|| PluginError::Session("session snapshots are unavailable in this runtime".to_string()))
    }

    /// The session a `current_session` start point copies.
    pub fn start_point(&self) -> Result<&str, PluginError> {
        self.session_id().ok_or_else(|| {
            PluginError::InvalidRequest(
                "a `current_session` start point needs a service bound to a session".to_string(),
            )
        })
    }

    /// The session a trace event is for: the bound one, else the one its context names.
    pub fn trace_session(&self, context: &TraceContext) -> Result<String, PluginError> {
        self.session_id().or(context.session_id.as_deref()).map(str::to_owned).ok_or_else(|| {
            PluginError::InvalidRequest(
                "a trace context must name its session (or the service must be bound to one)".to_string(),
            )
        })
    }

    /// The one session a batch of trace events is for ([`SessionBinding::trace_session`]
    /// of each); `None` for an empty batch, `InvalidRequest` when they name different
    /// sessions.
    pub fn trace_batch_session<'a>(
        &self,
        contexts: impl IntoIterator<Item = &'a TraceContext>,
    ) -> Result<Option<String>, PluginError> {
        let mut batch: Option<String> = None;
        for context in contexts {
            let session = self.trace_session(context)?;
            match &batch {
                Some(first) if *first != session => {
                    return Err(PluginError::InvalidRequest(format!(
                        "a trace batch mixes sessions `{first}` and `{session}`: send each session's records in a \
                         batch of their own"
                    )));
                }
                Some(_) => {}
                None => batch = Some(session),
            }
        }
        Ok(batch)
    }
}
