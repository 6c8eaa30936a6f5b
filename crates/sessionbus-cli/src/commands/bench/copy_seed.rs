//! Seeding `bench --scale` by copying: one session seeded through a JetStream host is read
//! back message by message, and every further session is written as the same messages
//! with the session id changed, as plain pipelined publishes (decision 0025).
//!
//! A host seeds a session with two atomic batches (its create and its turn's commit), and
//! nats-server stages every atomic batch of a one-replica file stream in a file store of
//! its own: a few hundred batches per second, so 10^6 sessions would take hours. The
//! copies hold what the host would have written: the same subjects, payloads and message
//! ids, with the id replaced. Only the conditions a write was sent with (expected
//! sequences, batch headers) are left out, since a copy has nothing to race with.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture};
use std::future::IntoFuture as _;

use bytes::Bytes;
use sessionbus_nats::jetstream::INDEX_STREAM;
use sessionbus_nats::{STATE_STREAM, TOOLS_STREAM, TRACE_STREAM};

use super::fixture::failed;

/// The streams a session's messages live in.
const STREAMS: [&str; 4] = [STATE_STREAM, TRACE_STREAM, TOOLS_STREAM, INDEX_STREAM];

/// Headers that condition a write (they are checked when it is stored, not read later).
const CONDITION_PREFIXES: [&str; 2] = ["Nats-Expected-", "Nats-Batch-"];

/// One stored message of the template session.
#[derive(Clone, Debug)]
struct Stored {
    subject: String,
    headers: Vec<(String, String)>,
    payload: String,
}

/// Every message one session left in the bus's streams, in the order each stream
/// stored them.
#[derive(Clone, Debug)]
pub struct Template {
    session_id: String,
    messages: Vec<Stored>,
}

impl Template {
    /// Reads every message naming `session_id` from the bus's streams. Meant for a
    /// freshly set up bus holding little else: it reads each stream from its start.
    pub async fn capture(js: &jetstream::Context, session_id: &str) -> Result<Self, String> {
        let mut messages = Vec::new();
        for name in STREAMS {
            let mut stream = js.get_stream(name).await.map_err(failed("reading the template's streams"))?;
            let state = &stream.info().await.map_err(failed("reading the template's streams"))?.state;
            if state.messages == 0 {
                continue;
            }
            for sequence in state.first_sequence..=state.last_sequence {
                let message = match stream.get_raw_message(sequence).await {
                    Ok(message) => message,
                    // Deleted or rolled up.
                    Err(error) if error.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => continue,
                    Err(error) => return Err(failed("reading the template's messages")(error)),
                };
                if !message.subject.contains(session_id) {
                    continue;
                }
                let payload = String::from_utf8(message.payload.to_vec())
                    .map_err(|_| format!("message {sequence} of {name} is not UTF-8; it cannot be copied"))?;
                let headers = message
                    .headers
                    .iter()
                    .flat_map(|(name, values)| values.iter().map(move |value| (name.to_string(), value.to_string())))
                    .filter(|(name, _)| !CONDITION_PREFIXES.iter().any(|prefix| name.starts_with(prefix)))
                    .collect();
                messages.push(Stored { subject: message.subject.to_string(), headers, payload });
            }
        }
        if messages.is_empty() {
            return Err(format!("no stored message names the template session `{session_id}`"));
        }
        Ok(Self { session_id: session_id.to_owned(), messages })
    }

    /// How many messages one copy writes.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Writes the template's messages again as session `session_id`, in order, and
    /// waits for every ack. A message id that does not name the session gets the new id
    /// appended, so the duplicate window never drops a copy.
    pub async fn copy_as(&self, js: &jetstream::Context, session_id: &str) -> Result<(), String> {
        let mut acks = Vec::with_capacity(self.messages.len());
        for message in &self.messages {
            let mut headers = HeaderMap::new();
            for (name, value) in &message.headers {
                let mut value = value.replace(&self.session_id, session_id);
                if name == "Nats-Msg-Id" && !value.contains(session_id) {
                    value = format!("{value}@{session_id}");
                }
                headers.append(name.as_str(), value.as_str());
            }
            let payload = Bytes::from(message.payload.replace(&self.session_id, session_id));
            let subject = message.subject.replace(&self.session_id, session_id);
            let ack: PublishAckFuture =
                js.publish_with_headers(subject, headers, payload).await.map_err(failed("copying a session"))?;
            acks.push(ack.into_future());
        }
        futures::future::try_join_all(acks).await.map_err(failed("copying a session"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::Value;
    use sessionbus_api::{
        EchoExecutor, SessionGraphService as _, SessionLifecycleService as _, SessionListQuery,
        SessionRegistryService as _, SessionStateService as _, SessionTurnRequest, TurnInput,
    };
    use sessionbus_launch::NatsServer;
    use sessionbus_nats::{JetStreamHost, JetStreamHostConfig, Subjects};

    use super::*;
    use crate::commands::bench::fixture::one_message;
    use crate::commands::bench::scale::seed;
    use crate::commands::setup::{LayoutArgs, setup_layout};

    /// `value` as JSON text with `from` replaced by `to`.
    fn renamed(value: &impl serde::Serialize, from: &str, to: &str) -> Value {
        let text = serde_json::to_string(value).expect("bus values serialize");
        serde_json::from_str(&text.replace(from, to)).expect("renaming an id keeps JSON valid")
    }

    #[tokio::test]
    async fn a_copied_session_reads_and_runs_as_the_session_it_was_copied_from() {
        let server = NatsServer::start().expect("nats-server starts");
        let nats = async_nats::connect(server.url()).await.expect("connects");
        let subjects = Subjects::default();
        setup_layout(&nats, &subjects, &LayoutArgs { replicas: 1 }, Duration::from_secs(30)).await.expect("layout");
        let host = JetStreamHost::connect(nats.clone(), Arc::new(EchoExecutor), JetStreamHostConfig::default())
            .await
            .expect("host");
        let (seeded, copied) = ("scale-00000000", "scale-00000001");
        seed(&host, 0..1, &indicatif::ProgressBar::hidden()).await.expect("seeds through the host");

        let js = jetstream::new(nats.clone());
        let template = Template::capture(&js, seeded).await.expect("captures");
        template.copy_as(&js, copied).await.expect("copies");

        let original = host.snapshot_session(seeded).await.expect("snapshot of the seeded session");
        let copy = host.snapshot_session(copied).await.expect("snapshot of the copy");
        assert_eq!(serde_json::to_value(&copy).expect("serializes"), renamed(&original, seeded, copied));
        let (tools, copied_tools) =
            (host.tool_state(seeded).await.expect("tools"), host.tool_state(copied).await.expect("tools"));
        assert_eq!(copied_tools.tools, tools.tools);
        assert_eq!(copied_tools.tools.len(), 4);

        let listed = host.list_sessions(&SessionListQuery::first(10)).await.expect("lists");
        let ids: Vec<_> = listed.sessions.iter().map(|entry| entry.session_id.as_str()).collect();
        assert_eq!(ids, [seeded, copied], "the copy has its registry entry, after the seeded one");

        // The copy takes a new turn and an append as a session the host made does.
        host.append_session_nodes(copied, one_message("after the copy".to_owned())).await.expect("appends");
        let turn = SessionTurnRequest::for_turn(copied, "after-copy", TurnInput::text("hello")).expect("turn");
        host.start_turn(turn).await.expect("runs a turn on the copy");
        // The seeded session was not touched by any of it.
        let after = host.snapshot_session(seeded).await.expect("snapshot");
        assert_eq!(
            serde_json::to_value(&after).expect("serializes"),
            serde_json::to_value(&original).expect("serializes")
        );
    }
}
