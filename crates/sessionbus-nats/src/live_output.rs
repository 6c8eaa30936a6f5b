//! Watching a session's live output: the running turn's events on
//! `<prefix>.live.<sid>` (decision 0018), not stored, each with the turn it belongs to.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_nats::Subscriber;
use futures::Stream;

use crate::client::LiveEvent;
use crate::wire;

/// One message of `<prefix>.live.<sid>`: the turn it belongs to and its event.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveOutput {
    /// The turn (`Sessionbus-Turn-Id`).
    pub turn_id: String,
    /// The event and its place in the run's live output.
    pub live: LiveEvent,
}

impl LiveOutput {
    /// The live output a message carries; `None` without a turn id or a live event.
    pub fn of(message: &async_nats::Message) -> Option<Self> {
        let turn_id = message.headers.as_ref()?.get(wire::TURN_ID)?.as_str().to_owned();
        Some(Self { turn_id, live: LiveEvent::of(message)? })
    }
}

/// A live stream of one session's [`LiveOutput`] (other messages are skipped). It is
/// as bounded as the subscription under it: a reader that falls behind loses events.
pub struct LiveStream {
    subscriber: Subscriber,
}

impl LiveStream {
    pub(crate) fn new(subscriber: Subscriber) -> Self {
        Self { subscriber }
    }
}

impl Stream for LiveStream {
    type Item = LiveOutput;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match Pin::new(&mut self.subscriber).poll_next(cx) {
                Poll::Ready(Some(message)) => {
                    if let Some(output) = LiveOutput::of(&message) {
                        return Poll::Ready(Some(output));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
