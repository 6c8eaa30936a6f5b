//! Subscriptions a test can rely on from the moment they are returned.

use std::time::Duration;

use async_nats::{Client, Subscriber};
use futures::StreamExt;

/// How long the server may take to hand back the probe that confirms a subscription.
const CONFIRM_WITHIN: Duration = Duration::from_secs(10);

/// Why a subscription could not be confirmed.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The server refused or the connection failed.
    #[error("could not subscribe to {subject}: {reason}")]
    Failed {
        /// The subject asked for.
        subject: String,
        /// What the client reported.
        reason: String,
    },
    /// The probe did not come back in time: the server is overloaded or gone.
    #[error("the server did not confirm the subscription to {subject} within {CONFIRM_WITHIN:?}")]
    Unconfirmed {
        /// The subject asked for.
        subject: String,
    },
}

/// Subscribes `client` to `subject`, and returns once the server has registered the
/// subscription: every message published after this returns, from any connection to
/// this server, is delivered to it.
///
/// `Client::flush` alone does not give that: it only writes the `SUB` to the socket,
/// and the server may route another connection's message before it reads it. The
/// confirmation is a probe on a private subject of the same connection: the server
/// handles one connection's operations in order, so once the probe comes back the
/// `SUB` sent before it is in place.
pub async fn subscribe_confirmed(client: &Client, subject: impl Into<String>) -> Result<Subscriber, SubscribeError> {
    let subject = subject.into();
    let failed = |reason: String| SubscribeError::Failed { subject: subject.clone(), reason };
    let subscriber = client.subscribe(subject.clone()).await.map_err(|e| failed(e.to_string()))?;
    let probe_subject = client.new_inbox();
    let mut probe = client.subscribe(probe_subject.clone()).await.map_err(|e| failed(e.to_string()))?;
    client.publish(probe_subject, "probe".into()).await.map_err(|e| failed(e.to_string()))?;
    match tokio::time::timeout(CONFIRM_WITHIN, probe.next()).await {
        Ok(Some(_)) => Ok(subscriber),
        _ => Err(SubscribeError::Unconfirmed { subject }),
    }
}
