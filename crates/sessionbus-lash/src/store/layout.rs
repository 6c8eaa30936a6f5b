//! What the store keeps in JetStream: a log subject per store on the bus's own state
//! stream, `<prefix>.state.<store token>.lash`, next to the session's graph and meta
//! (decision 0024), the `SESSIONBUS_BLOBS` object store
//! (checkpoint blobs, named `<store token>.<sha256 hex>`), the `SESSIONBUS_ATTACHMENTS`
//! object store and the `SESSIONBUS_PROCESS_ENV` KV bucket.

use async_nats::jetstream::{self, kv, object_store, stream};
use lash_core::StoreError;
use sessionbus_nats::Subjects;
use sessionbus_nats::jetstream::{LayoutConfig, STATE_STREAM, ensure_layout};

use super::backend::backend;

/// The store's buckets, opened once when the backend connects.
#[derive(Clone)]
pub(crate) struct Buckets {
    /// Checkpoint blobs.
    pub(crate) blobs: object_store::ObjectStore,
    /// Attachments.
    pub(crate) attachments: object_store::ObjectStore,
    /// Process execution environments.
    pub(crate) process_envs: kv::Store,
}

/// The object store holding checkpoint blobs.
pub const BLOBS_BUCKET: &str = "SESSIONBUS_BLOBS";
/// The object store holding lash attachments.
pub const ATTACHMENTS_BUCKET: &str = "SESSIONBUS_ATTACHMENTS";
/// The KV bucket holding lash process execution environments.
pub const PROCESS_ENV_BUCKET: &str = "SESSIONBUS_PROCESS_ENV";

/// Subject and name scheme of the store.
#[derive(Clone, Debug)]
pub(crate) struct StoreLayout {
    subjects: Subjects,
}

impl StoreLayout {
    pub(crate) fn new(subjects: Subjects) -> Self {
        Self { subjects }
    }

    /// The subject scheme shared with the bus.
    pub(crate) fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The filter matching every store's log subject.
    pub(crate) fn logs(&self) -> String {
        format!("{}.state.*.lash", self.subjects.prefix())
    }

    /// The log subject of the store keyed `key` (a session id, or any id).
    pub(crate) fn log(&self, key: &str) -> Result<String, StoreError> {
        Ok(format!("{}.state.{}.lash", self.subjects.prefix(), token(key)?))
    }

    /// The token naming `key`'s subjects.
    pub(crate) fn token(key: &str) -> Result<String, StoreError> {
        token(key)
    }

    /// The key's part of blob names: blobs of one store share it.
    pub(crate) fn blob_prefix(key: &str) -> Result<String, StoreError> {
        Ok(format!("{}.", token(key)?))
    }

    /// Opens the store's buckets, once per backend (each open is a JetStream API round
    /// trip); fails with what to do when the stream or a bucket is missing.
    pub(crate) async fn verify(&self, context: &jetstream::Context) -> Result<Buckets, StoreError> {
        let missing = |what: &str, err: &dyn std::fmt::Display| {
            backend(format!("the lash store's {what} is missing or unreadable ({err}); run ensure_store_layout once"))
        };
        context.get_stream_no_info(STATE_STREAM).await.map_err(|err| missing(STATE_STREAM, &err))?;
        let object_store = |bucket: &'static str| async move {
            context.get_object_store(bucket).await.map_err(|err| missing(bucket, &err))
        };
        Ok(Buckets {
            blobs: object_store(BLOBS_BUCKET).await?,
            attachments: object_store(ATTACHMENTS_BUCKET).await?,
            process_envs: context
                .get_key_value(PROCESS_ENV_BUCKET)
                .await
                .map_err(|err| missing(PROCESS_ENV_BUCKET, &err))?,
        })
    }

    /// Creates the bus's layout and the store's buckets with `replicas` copies
    /// (idempotent).
    pub(crate) async fn ensure(&self, context: &jetstream::Context, replicas: usize) -> Result<(), StoreError> {
        let failed = |what: &str, err: &dyn std::fmt::Display| backend(format!("could not create {what}: {err}"));
        let config = LayoutConfig::default().with_replicas(replicas);
        ensure_layout(context, &self.subjects, &config).await.map_err(|err| failed("the bus's streams", &err))?;
        for bucket in [BLOBS_BUCKET, ATTACHMENTS_BUCKET] {
            if context.get_object_store(bucket).await.is_err() {
                context
                    .create_object_store(object_store::Config {
                        bucket: bucket.to_owned(),
                        num_replicas: replicas,
                        storage: stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                    .map_err(|err| failed(bucket, &err))?;
            }
        }
        if context.get_key_value(PROCESS_ENV_BUCKET).await.is_err() {
            context
                .create_key_value(kv::Config {
                    bucket: PROCESS_ENV_BUCKET.to_owned(),
                    num_replicas: replicas,
                    storage: stream::StorageType::File,
                    history: 1,
                    ..Default::default()
                })
                .await
                .map_err(|err| failed(PROCESS_ENV_BUCKET, &err))?;
        }
        Ok(())
    }
}

fn token(key: &str) -> Result<String, StoreError> {
    sessionbus_nats::subjects::session_token(key)
        .map_err(|err| backend(format!("`{key}` cannot name a lash store: {err}")))
}
