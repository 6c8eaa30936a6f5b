//! [`JetStreamAttachmentStore`]: lash's `AttachmentStore` (Durable) on the JetStream
//! object store `SESSIONBUS_ATTACHMENTS`, one object per content id.
//!
//! Objects are named `<namespace><content id>`. A `put` of content already stored writes
//! it again: the object's modification time is lash's freshness signal, so a GC sweep
//! that read its roots before this `put` does not reclaim the blob (as lash's in-memory
//! store refreshes its timestamp on a dedup hit).

use std::sync::Arc;

use async_nats::jetstream::object_store::ObjectStore;
use futures::StreamExt as _;
use lash_core::attachments::{StoredAttachment, StoredBlobRef, content_id};
use lash_core::{
    AttachmentCreateMeta, AttachmentId, AttachmentMeta, AttachmentRef, AttachmentStore, AttachmentStoreError,
    AttachmentStorePersistence,
};

use super::backend::StoreBackend;

/// lash's attachment store on a JetStream object store.
#[derive(Clone)]
pub struct JetStreamAttachmentStore {
    backend: Arc<StoreBackend>,
    namespace: String,
}

impl std::fmt::Debug for JetStreamAttachmentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamAttachmentStore").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

fn failed(what: &str, err: impl std::fmt::Display) -> AttachmentStoreError {
    AttachmentStoreError::Backend(format!("{what} failed: {err}; is JetStream up and the store's layout created?"))
}

impl JetStreamAttachmentStore {
    /// The attachment store on `backend`.
    pub fn new(backend: Arc<StoreBackend>) -> Self {
        Self { backend, namespace: String::new() }
    }

    /// This store with its object names prefixed by `namespace` (stores of distinct
    /// namespaces share no content).
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    fn name(&self, id: &AttachmentId) -> String {
        format!("{}{}", self.namespace, id.as_str())
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(ObjectStore, String) -> futures::future::BoxFuture<'static, Result<T, AttachmentStoreError>>
        + Send
        + 'static,
    ) -> Result<T, AttachmentStoreError> {
        let backend = Arc::clone(&self.backend);
        let namespace = self.namespace.clone();
        let task = self.backend.spawn(async move { work(backend.buckets.attachments.clone(), namespace).await });
        task.await.map_err(|err| failed("an attachment task", err))?
    }
}

/// Epoch milliseconds of an object's modification time.
fn epoch_ms(modified: Option<time::OffsetDateTime>) -> Option<u64> {
    modified.and_then(|at| u64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok())
}

#[async_trait::async_trait]
impl AttachmentStore for JetStreamAttachmentStore {
    fn persistence(&self) -> AttachmentStorePersistence {
        AttachmentStorePersistence::Durable
    }

    async fn put(&self, bytes: Vec<u8>, meta: AttachmentCreateMeta) -> Result<AttachmentRef, AttachmentStoreError> {
        let stored = AttachmentMeta::new(
            content_id(&bytes),
            meta.media_type,
            bytes.len() as u64,
            meta.type_metadata,
            meta.label,
        );
        let name = self.name(&stored.id);
        self.run(move |bucket, _| {
            Box::pin(async move {
                bucket
                    .put(name.as_str(), &mut bytes.as_slice())
                    .await
                    .map_err(|e| failed("storing an attachment", e))?;
                Ok(())
            })
        })
        .await?;
        Ok(stored.as_ref())
    }

    async fn get(&self, id: &AttachmentId) -> Result<StoredAttachment, AttachmentStoreError> {
        let (name, missing) = (self.name(id), id.clone());
        self.run(move |bucket, _| {
            Box::pin(async move {
                let mut object = match bucket.get(&name).await {
                    Ok(object) => object,
                    Err(err) if err.kind() == async_nats::jetstream::object_store::GetErrorKind::NotFound => {
                        return Err(AttachmentStoreError::NotFound(missing));
                    }
                    Err(err) => return Err(failed("reading an attachment", err)),
                };
                let mut bytes = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(&mut object, &mut bytes)
                    .await
                    .map_err(|e| failed("reading an attachment", e))?;
                Ok(StoredAttachment { bytes })
            })
        })
        .await
    }

    async fn delete(&self, id: &AttachmentId) -> Result<(), AttachmentStoreError> {
        let name = self.name(id);
        self.run(move |bucket, _| {
            Box::pin(async move {
                match bucket.delete(&name).await {
                    Ok(()) => Ok(()),
                    Err(err) if err.kind() == async_nats::jetstream::object_store::DeleteErrorKind::NotFound => Ok(()),
                    Err(err) => Err(failed("deleting an attachment", err)),
                }
            })
        })
        .await
    }

    async fn list(&self) -> Result<Vec<StoredBlobRef>, AttachmentStoreError> {
        self.run(move |bucket, namespace| {
            Box::pin(async move {
                let mut objects = bucket.list().await.map_err(|e| failed("listing attachments", e))?;
                let mut blobs = Vec::new();
                while let Some(info) = objects.next().await {
                    let info = info.map_err(|e| failed("listing attachments", e))?;
                    if let Some(id) = info.name.strip_prefix(&namespace).filter(|_| !info.deleted) {
                        blobs.push(StoredBlobRef {
                            id: AttachmentId::new(id),
                            last_modified_epoch_ms: epoch_ms(info.modified),
                        });
                    }
                }
                Ok(blobs)
            })
        })
        .await
    }
}
