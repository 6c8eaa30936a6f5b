//! The sessionbus bus: the three session service traits over NATS.
//!
//! - [`subjects`]: the subject scheme;
//! - [`wire`]: headers, request and reply bodies, error replies;
//! - [`jetstream::JetStreamHost`]: the durable host on JetStream.

#![deny(missing_docs)]

pub mod jetstream;
pub mod request_context;
pub mod subjects;
pub mod wire;

pub use jetstream::{JetStreamHost, JetStreamHostConfig};
pub use subjects::{DEFAULT_PREFIX, Op, Subjects};
