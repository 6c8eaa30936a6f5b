//! lash on sessionbus.
//!
//! This crate is where the bus meets the lash runtime itself (lash-core, lash-trace
//! `=0.1.0-alpha.113`, Rust 1.90). Its tests prove the contract both ways: every lash
//! fixture read by sessionbus's types and written again, and every value the bus
//! produces (through `InMemoryHost` and through a real nats-server with a worker), is
//! read by lash's own type and written back as the same JSON. `sessionbus-api` stays
//! free of any lash dependency: its types are the contract, lash is its test.
//!
//! How a lash session's state maps onto the bus's JetStream layout, for the lash
//! executor and lash's store on JetStream alike, is decision 0008
//! (`docs/decisions/0008-lash-session-layout.md`).
//!
//! [`provider::openai`] is a lash `Provider` for OpenAI-compatible chat completions;
//! [`install_crypto_provider`] settles the rustls crypto provider for a binary that links
//! both lash and async-nats (decision 0010).
//!
//! [`executor`] is the `LashExecutor`: real lash turns on sessionbus workers (decision
//! 0009).
//!
//! [`store`] is lash's session store on JetStream, with the durable attachment and
//! process-env stores lash's builder requires beside it (decision 0011,
//! `docs/decisions/0011-lash-store-on-jetstream.md`).
//!
//! [`traces::RuntimeTraces`] stores a `LashCore`'s trace records on the bus, where the
//! trace exporter reads them.
//!
//! [`peer`] is a lash runtime on those stores, run by the `lash-on-nats` binary: two of
//! them in two processes share sessions (`tests/lash_two_processes.rs`).

#![deny(missing_docs)]

pub mod executor;
pub mod peer;
pub mod provider;
pub mod store;
mod tls;
pub mod traces;

pub use tls::install_crypto_provider;
