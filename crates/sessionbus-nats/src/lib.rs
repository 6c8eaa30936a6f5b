//! The sessionbus bus: the three session service traits over NATS.
//!
//! - [`subjects`]: the subject scheme;
//! - [`wire`]: headers, request and reply bodies, error replies;
//! - [`jetstream::JetStreamHost`]: the durable host on JetStream.

#![deny(missing_docs)]

pub mod client;
pub mod jetstream;
pub mod request_context;
pub mod subjects;
pub mod wire;
pub mod worker;

pub use client::{BusClient, BusClientConfig};
pub use jetstream::{JetStreamHost, JetStreamHostConfig};
pub use subjects::{DEFAULT_PREFIX, Op, Subjects};
pub use worker::{Worker, WorkerConfig};
