//! lash's session store on JetStream (issue 13; decision 0011).
//!
//! - [`JetStreamStore`]: lash's `RuntimePersistence` (Durable tier): each store is one
//!   log subject on the bus's state stream, appended with expected-sequence conditions
//!   and replayed into lash's own in-memory store, so every process sees one order of
//!   changes and lash's reference implementation decides each one; a session's commits
//!   are written onto its graph and meta in the same atomic batch, and what bus ops
//!   write there is imported, so bus ops and lash runtimes see one session;
//! - [`JetStreamStoreFactory`]: lash's `SessionStoreFactory`, one store per session;
//! - [`JetStreamAttachmentStore`], [`JetStreamProcessEnvStore`]: the durable peers lash's
//!   builder requires beside a Durable session store (object store and KV);
//! - [`StoreBackend`]: the connection (on a runtime of its own) they share;
//! - [`ensure_store_layout`]: creates the bus's streams and the store's buckets (once, as
//!   an admin).

mod append;
mod attachments;
mod backend;
mod blobs;
mod engine;
mod factory;
mod layout;
mod ops;
mod process_env;
mod projection;
#[allow(clippy::module_inception)]
mod store;

pub use attachments::JetStreamAttachmentStore;
pub use backend::{StoreBackend, StoreBackendConfig, server_addrs};
pub use factory::JetStreamStoreFactory;
pub use layout::{ATTACHMENTS_BUCKET, BLOBS_BUCKET, PROCESS_ENV_BUCKET};
pub use process_env::JetStreamProcessEnvStore;
pub use store::JetStreamStore;

/// Creates the bus's streams and the store's buckets with `replicas` copies
/// (idempotent; needs the right to create streams).
pub async fn ensure_store_layout(
    context: &async_nats::jetstream::Context,
    subjects: &sessionbus_nats::Subjects,
    replicas: usize,
) -> Result<(), lash_core::StoreError> {
    layout::StoreLayout::new(subjects.clone()).ensure(context, replicas).await
}
