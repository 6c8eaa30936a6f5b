//! Replaying stored session events (`sessionbus watch --since`): what the streams hold
//! from a start point on, as the [`SessionEvent`]s their republish made, oldest first.
//!
//! Each stream (state, trace, tools) is read by an ordered consumer up to the number of
//! messages pending when the replay starts; events from the three streams are merged by
//! the time they were stored. Reading streams needs JetStream rights (an operator's or
//! worker's user, not the deploy/ dashboard user).

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures::StreamExt as _;
use sessionbus_api::PluginError;

use crate::events::SessionEvent;
use crate::jetstream::{STATE_STREAM, TOOLS_STREAM, TRACE_STREAM};
use crate::subjects::{Subjects, session_token};

/// The longest a replay waits for the next stored message before giving up.
const READ_STALL: Duration = Duration::from_secs(5);

/// Where a replay starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayStart {
    /// Everything stored within this long before now.
    Since(Duration),
    /// The state stream from this sequence on (`SessionEvent::sequence` of a state
    /// event), and the trace and tools streams from the time that message was stored.
    StateSequence(u64),
}

/// The events stored from `start` on, of one session or (`None`) every session,
/// oldest first.
pub async fn replay_events(
    client: &async_nats::Client,
    subjects: &Subjects,
    session_id: Option<&str>,
    start: ReplayStart,
) -> Result<Vec<SessionEvent>, PluginError> {
    let token = session_id.map(session_token).transpose()?;
    let context = async_nats::jetstream::new(client.clone());
    let (state_policy, others) = match start {
        ReplayStart::Since(age) => {
            let start_time = time::OffsetDateTime::now_utc() - age;
            (DeliverPolicy::ByStartTime { start_time }, DeliverPolicy::ByStartTime { start_time })
        }
        ReplayStart::StateSequence(sequence) => {
            let state = context.get_stream_no_info(STATE_STREAM).await.map_err(|e| failed(STATE_STREAM, &e))?;
            let first = state
                .raw_message_builder()
                .sequence(sequence.max(1))
                .next_by_subject(subjects.state_all())
                .send()
                .await;
            let start_time = match first {
                Ok(message) => message.time,
                // Nothing stored from there on: the other streams from now on.
                Err(_) => time::OffsetDateTime::now_utc(),
            };
            (
                DeliverPolicy::ByStartSequence { start_sequence: sequence.max(1) },
                DeliverPolicy::ByStartTime { start_time },
            )
        }
    };
    let token = token.as_deref();
    let reads = [
        (STATE_STREAM, token.map_or_else(|| subjects.state_all(), |t| subjects.state_session(t)), state_policy),
        (TRACE_STREAM, token.map_or_else(|| subjects.trace_all(), |t| subjects.trace(t)), others),
        (TOOLS_STREAM, token.map_or_else(|| subjects.tools_all(), |t| subjects.tool_key(t)), others),
    ];
    let mut events = Vec::new();
    for (stream, filter, policy) in reads {
        events.extend(read_stream(&context, subjects, stream, filter, policy).await?);
    }
    events.sort_by_key(|(stored_at, event): &(time::OffsetDateTime, SessionEvent)| {
        (*stored_at, event.stream.clone(), event.sequence)
    });
    Ok(events.into_iter().map(|(_, event)| event).collect())
}

fn failed(stream: &str, err: &dyn std::fmt::Display) -> PluginError {
    PluginError::Unavailable(format!(
        "could not replay the events stored in {stream}: {err} (replaying reads the streams: use a user with \
         JetStream rights, or watch without --since)"
    ))
}

/// The events of the messages `stream` holds under `filter` from `policy` on, up to
/// what was pending when the read started, with the time each was stored.
async fn read_stream(
    context: &async_nats::jetstream::Context,
    subjects: &Subjects,
    stream: &str,
    filter: String,
    policy: DeliverPolicy,
) -> Result<Vec<(time::OffsetDateTime, SessionEvent)>, PluginError> {
    let handle = context.get_stream_no_info(stream).await.map_err(|e| failed(stream, &e))?;
    let consumer = handle
        .create_consumer(OrderedConfig { filter_subject: filter, deliver_policy: policy, ..Default::default() })
        .await
        .map_err(|e| failed(stream, &e))?;
    let pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await.map_err(|e| failed(stream, &e))?;
    let mut events = Vec::new();
    for _ in 0..pending {
        let message = tokio::time::timeout(READ_STALL, messages.next())
            .await
            .map_err(|_| failed(stream, &"no message within 5 s"))?
            .ok_or_else(|| failed(stream, &"the consumer ended early"))?
            .map_err(|e| failed(stream, &e))?;
        let info = message.info().map_err(|e| failed(stream, &e))?;
        let (sequence, stored_at) = (info.stream_sequence, info.published);
        if let Some(event) =
            SessionEvent::from_stored(subjects, stream, &message.subject, sequence, message.payload.clone())
        {
            events.push((stored_at, event));
        }
    }
    Ok(events)
}
