//! The sessionbus test kit: real processes for tests, and tools only tests need.
//!
//! - The launcher ([`sessionbus_launch`], re-exported here): [`NatsServer`] (a
//!   throw-away JetStream server on a free loopback port, never 4222, killed on drop
//!   also when a test panics), [`NatsCluster`] (three nodes, SIGKILL and restart of
//!   single nodes), [`WorkerProcess`] (a real `sessionbus worker`, SIGKILL, SIGSTOP,
//!   SIGCONT, memory), [`ServerProcess`] (a nats-server of a configuration file kept
//!   elsewhere). The `sessionbus` command starts its servers and workers with the same
//!   types.
//! - [`AckDropper`]: a protocol-aware proxy in front of a server that drops one chosen
//!   reply (a JetStream ack) while the connection stays up.
//! - [`subscribe_confirmed`] (the launcher's): a subscription the server has
//!   registered when it is returned, for tests that watch what other connections send.
//!
//! Why the launcher is a crate of its own rather than part of this one:
//! `docs/decisions/0006-one-launcher.md`.
//!
//! ```no_run
//! use sessionbus_testkit::{AckDropper, NatsServer, WorkerProcess};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let server = NatsServer::start()?;
//! let _worker = WorkerProcess::start(&server.url(), &[]).await?;
//! // A client behind the proxy loses the ack of its next JetStream publish.
//! let proxy = AckDropper::start(server.port()).await?;
//! proxy.drop_reply_to(|publish| publish.subject.starts_with("sessionbus.v1.state."));
//! let client = async_nats::connect(proxy.url()).await?;
//! # drop(client);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs, unreachable_pub, rustdoc::broken_intra_doc_links)]

mod proxy;

pub use proxy::{AckDropper, Publish};
pub use sessionbus_launch::{
    CLUSTER_SIZE, LaunchError, MAX_PAYLOAD, NATS_SERVER_VERSION, NatsCluster, NatsServer, ServerConfig, ServerProcess,
    SubscribeError, WorkerConfig, WorkerProcess, find_nats_server, free_port, monitoring_get, rss_kib,
    sessionbus_binary, subscribe_confirmed,
};
