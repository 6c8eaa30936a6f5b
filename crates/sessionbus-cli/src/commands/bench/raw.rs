//! The raw NATS operations a bus call cannot avoid, measured beside it: a
//! request/reply echo (the one-round-trip floor), a leader read, a conditional publish.

use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures::StreamExt as _;

/// Raw operations over plain async-nats.
#[derive(Clone)]
pub struct Raw {
    client: Client,
    echo_subject: String,
}

fn failed(what: &str, err: impl std::fmt::Display) -> String {
    format!("raw {what} failed: {err}")
}

impl Raw {
    /// Starts an echo responder on its own connection (like a worker would be).
    pub async fn start(client: Client, responder: Client) -> Result<Self, String> {
        let echo_subject = format!("bench.echo.{}", uuid::Uuid::new_v4().simple());
        // Confirmed, not only flushed: a request from the other connection must find it.
        let mut requests = sessionbus_launch::subscribe_confirmed(&responder, echo_subject.clone())
            .await
            .map_err(|e| failed("subscribe", e))?;
        tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                if let Some(reply) = request.reply {
                    let _ = responder.publish(reply, request.payload).await;
                }
            }
        });
        let raw = Self { client, echo_subject };
        // On a cluster the responder's interest reaches the client's node over a route a
        // moment later ("no responders" until then): the first echo is retried for a while.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while let Err(error) = raw.echo(Bytes::from_static(b"{}")).await {
            if tokio::time::Instant::now() >= deadline {
                return Err(error);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(raw)
    }

    /// One request/reply round trip carrying `payload` both ways.
    pub async fn echo(&self, payload: Bytes) -> Result<(), String> {
        self.client.request(self.echo_subject.clone(), payload).await.map(drop).map_err(|e| failed("echo", e))
    }

    /// Reads the last message of `subject` from the stream leader.
    pub async fn leader_get(&self, stream: &str, subject: &str) -> Result<(), String> {
        let body = serde_json::json!({ "last_by_subj": subject }).to_string();
        let reply = self
            .client
            .request(format!("$JS.API.STREAM.MSG.GET.{stream}"), Bytes::from(body))
            .await
            .map_err(|e| failed("leader get", e))?;
        let value: serde_json::Value = serde_json::from_slice(&reply.payload).map_err(|e| failed("leader get", e))?;
        match value.get("error") {
            Some(error) => Err(failed("leader get", error)),
            None => Ok(()),
        }
    }

    /// Publishes with `Nats-Expected-Last-Subject-Sequence: expected`; returns the new sequence.
    pub async fn publish_expecting(&self, subject: &str, payload: Bytes, expected: u64) -> Result<u64, String> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Expected-Last-Subject-Sequence", expected.to_string().as_str());
        self.publish(subject, headers, payload).await
    }

    /// Publishes `writes` (subject and its expected last sequence each, all with
    /// `payload`) as one atomic batch; returns the sequence of its last message.
    pub async fn atomic_batch(&self, writes: &[(&str, u64)], payload: Bytes) -> Result<u64, String> {
        let Some(((last_subject, last_expected), staged)) = writes.split_last() else {
            return Err(failed("atomic batch", "no writes"));
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let headers = |sequence: usize, expected: u64| {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Batch-Id", id.as_str());
            headers.insert("Nats-Batch-Sequence", sequence.to_string().as_str());
            headers.insert("Nats-Expected-Last-Subject-Sequence", expected.to_string().as_str());
            headers
        };
        for (index, (subject, expected)) in staged.iter().enumerate() {
            self.client
                .publish_with_headers((*subject).to_owned(), headers(index + 1, *expected), payload.clone())
                .await
                .map_err(|e| failed("atomic batch", e))?;
        }
        let mut commit = headers(writes.len(), *last_expected);
        commit.insert("Nats-Batch-Commit", "1");
        self.publish(last_subject, commit, payload).await
    }

    /// Publishes to a stream and awaits the ack; returns the sequence.
    pub async fn publish(&self, subject: &str, headers: HeaderMap, payload: Bytes) -> Result<u64, String> {
        let reply = self
            .client
            .request_with_headers(subject.to_owned(), headers, payload)
            .await
            .map_err(|e| failed("publish", e))?;
        let ack: serde_json::Value = serde_json::from_slice(&reply.payload).map_err(|e| failed("publish", e))?;
        if let Some(error) = ack.get("error") {
            return Err(failed("publish", error));
        }
        ack["seq"].as_u64().ok_or_else(|| failed("publish", "an ack without a sequence"))
    }
}
