//! The session registry: every session's latest meta, read from the state stream for
//! operators and dashboards (`sessionbus sessions`).

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures::StreamExt as _;
use sessionbus_api::{PluginError, ids};

use super::layout::STATE_STREAM;
use super::records::{MetaRecord, decode};
use crate::subjects::Subjects;

/// One session as the registry records it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SessionSummary {
    /// The session.
    pub session_id: String,
    /// The parent, for a child session.
    pub parent_session_id: Option<String>,
    /// Closed sessions refuse turns and appends.
    pub closed: bool,
    /// Turns committed.
    pub turn_index: u64,
    /// Tokens used by committed turns (input + output).
    pub tokens: u64,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// Lists every session in the registry (the last meta message of each session).
pub async fn list_sessions(
    client: &async_nats::Client,
    subjects: &Subjects,
) -> Result<Vec<SessionSummary>, PluginError> {
    let unavailable = |err: &dyn std::fmt::Display| {
        PluginError::Unavailable(format!("could not read the session registry ({STATE_STREAM}): {err}"))
    };
    let context = async_nats::jetstream::new(client.clone());
    let mut stream = context.get_stream(STATE_STREAM).await.map_err(|e| unavailable(&e))?;
    let filter = subjects.meta_all();
    let info = stream.info().await.map_err(|e| unavailable(&e))?;
    if info.state.messages == 0 {
        return Ok(Vec::new());
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: filter,
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
    let mut sessions = Vec::new();
    loop {
        let next = match tokio::time::timeout(Duration::from_secs(2), messages.next()).await {
            Ok(Some(next)) => next.map_err(|e| unavailable(&e))?,
            // No meta at all, or the end of a quiet stream.
            Ok(None) | Err(_) => break,
        };
        let meta: MetaRecord = decode("meta", &next.payload)?;
        let token = next.subject.split('.').rev().nth(1).unwrap_or_default();
        let session_id = ids::decode_id("session id", token).unwrap_or_else(|_| meta.handle.session_id.clone());
        sessions.push(summary(session_id, &meta));
        if next.info().map_err(|e| unavailable(&e))?.pending == 0 {
            break;
        }
    }
    sessions.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.session_id.cmp(&b.session_id)));
    Ok(sessions)
}

/// One session's registry entry, read from the stream leader; `None` when unknown.
pub async fn describe_session(
    client: &async_nats::Client,
    subjects: &Subjects,
    session_id: &str,
) -> Result<Option<SessionSummary>, PluginError> {
    let token = crate::subjects::session_token(session_id)?;
    let context = async_nats::jetstream::new(client.clone());
    let stream = context
        .get_stream_no_info(STATE_STREAM)
        .await
        .map_err(|err| PluginError::Unavailable(format!("could not read {STATE_STREAM}: {err}")))?;
    let message = match stream.get_last_raw_message_by_subject(&subjects.meta(&token)).await {
        Ok(message) => message,
        Err(err) if err.kind() == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
            return Ok(None);
        }
        Err(err) => return Err(PluginError::Unavailable(format!("could not read a session's meta: {err}"))),
    };
    let meta: MetaRecord = decode("meta", &message.payload)?;
    Ok(Some(summary(session_id.to_owned(), &meta)))
}

fn summary(session_id: String, meta: &MetaRecord) -> SessionSummary {
    SessionSummary {
        session_id,
        parent_session_id: meta.handle.parent_session_id.clone(),
        closed: meta.closed,
        turn_index: meta.turn_index,
        tokens: meta.token_usage.input_tokens + meta.token_usage.output_tokens,
        created_at: meta.created_at.clone(),
    }
}
