//! The sessionbus bus: the three session service traits over NATS.
//!
//! - [`subjects`]: the subject scheme;
//! - [`wire`]: headers, request and reply bodies, error replies;
//! - [`client::BusClient`]: the traits over request/reply, for runtimes;
//! - [`worker::Worker`]: serves any host's traits on the bus;
//! - [`reply_policy`]: which reply subjects a worker answers;
//! - [`jetstream::JetStreamHost`]: the durable host on JetStream;
//! - [`events`]: the typed stream of session events for watchers and dashboards.

#![deny(missing_docs)]

/// Builder-style `with_<field>` setters for a `#[non_exhaustive]` config struct, so other
/// crates build it from `Default` (`Config::default().with_timeout(..)`).
macro_rules! with_setters {
    ($config:ty { $($setter:ident => $field:ident: $ty:ty),* $(,)? }) => {
        impl $config {
            $(
                #[doc = concat!("This config with `", stringify!($field), "` set to `value`.")]
                #[must_use]
                pub fn $setter(mut self, value: $ty) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

pub mod client;
pub mod events;
mod generations;
mod graph_cuts;
pub mod jetstream;
pub mod live_output;
pub mod propagation;
pub mod replay;
pub mod reply_policy;
pub mod request_context;
pub mod subjects;
mod trace_batch;
pub mod wire;
pub mod worker;

pub use client::{BusClient, BusClientConfig, LiveEvent};
pub use events::{EventKind, EventStream, SessionEvent};
pub use jetstream::{JetStreamHost, JetStreamHostConfig, STATE_STREAM, TOOLS_BUCKET, TOOLS_STREAM, TRACE_STREAM};
pub use live_output::{LiveOutput, LiveStream};
pub use replay::{ReplayStart, replay_events};
pub use subjects::{DEFAULT_PREFIX, Endpoint, Op, Subjects};
pub use worker::{HostStats, Worker, WorkerConfig};

use sessionbus_api::sync::lock;
