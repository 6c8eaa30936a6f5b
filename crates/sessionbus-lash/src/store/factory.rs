//! [`JetStreamStoreFactory`]: lash's `SessionStoreFactory` on JetStream: one
//! [`JetStreamStore`] per session, keyed by its session id.

use std::collections::BTreeSet;
use std::sync::Arc;

use lash_core::{
    AttachmentId, AttachmentManifest as _, Clock, DurabilityTier, RuntimePersistence, SessionMeta,
    SessionStoreCreateRequest, SessionStoreFactory, StoreError,
};

use super::backend::{StoreBackend, backend};
use super::blobs;
use sessionbus_nats::STATE_STREAM;

use super::layout::StoreLayout;
use super::store::JetStreamStore;

/// Opens (and creates, and deletes) the JetStream store of each session.
///
/// Stores of one factory are keyed `<namespace><session id>`: the namespace is empty for a
/// deployment, and tells test factories sharing one server apart.
#[derive(Clone)]
pub struct JetStreamStoreFactory {
    backend: Arc<StoreBackend>,
    clock: Arc<dyn Clock>,
    namespace: String,
}

impl std::fmt::Debug for JetStreamStoreFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamStoreFactory").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

impl JetStreamStoreFactory {
    /// A factory on `backend` whose stores stamp their writes with `clock`.
    pub fn new(backend: Arc<StoreBackend>, clock: Arc<dyn Clock>) -> Self {
        Self { backend, clock, namespace: String::new() }
    }

    /// This factory with its stores' keys prefixed by `namespace`.
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The store of `session_id` (whether or not anything was written to it).
    pub fn store(&self, session_id: &str) -> Result<JetStreamStore, StoreError> {
        JetStreamStore::open(
            Arc::clone(&self.backend),
            format!("{}{session_id}", self.namespace),
            Arc::clone(&self.clock),
        )
    }

    /// The stores this factory has written to, read from the stream's subjects.
    async fn stores(&self) -> Result<Vec<JetStreamStore>, StoreError> {
        let backend = Arc::clone(&self.backend);
        let logs = self
            .backend
            .run(async move {
                use futures::TryStreamExt as _;
                let filter = backend.layout.logs();
                let stream = backend
                    .context
                    .get_stream(STATE_STREAM)
                    .await
                    .map_err(|err| self::backend(format!("reading the lash stream failed: {err}")))?;
                let subjects: Vec<(String, usize)> = stream
                    .info_with_subjects(filter)
                    .await
                    .map_err(|err| self::backend(format!("listing lash stores failed: {err}")))?
                    .try_collect()
                    .await
                    .map_err(|err| self::backend(format!("listing lash stores failed: {err}")))?;
                Ok(subjects.into_iter().map(|(subject, _)| subject).collect::<Vec<_>>())
            })
            .await?;
        let mut stores = Vec::new();
        for subject in logs {
            let Some(token) = subject.rsplit('.').nth(1) else { continue };
            let Ok(key) = sessionbus_api::ids::decode_id("store key", token) else { continue };
            if let Some(session_id) = key.strip_prefix(&self.namespace) {
                stores.push(self.store(session_id)?);
            }
        }
        Ok(stores)
    }
}

#[async_trait::async_trait]
impl SessionStoreFactory for JetStreamStoreFactory {
    fn durability_tier(&self) -> DurabilityTier {
        DurabilityTier::Durable
    }

    async fn create_store(&self, request: &SessionStoreCreateRequest) -> Result<Arc<dyn RuntimePersistence>, String> {
        let store = self.store(&request.session_id).map_err(|err| err.to_string())?;
        let meta = SessionMeta {
            session_id: request.session_id.clone(),
            session_name: request.session_id.clone(),
            created_at: self.clock.timestamp_rfc3339(),
            model: request.policy.model.id.clone(),
            cwd: None,
            relation: request.relation.clone(),
        };
        store.seed_session_meta(meta).await.map_err(|err| err.to_string())?;
        Ok(Arc::new(store))
    }

    async fn open_existing_store(
        &self,
        request: &SessionStoreCreateRequest,
    ) -> Result<Option<Arc<dyn RuntimePersistence>>, String> {
        let store = self.store(&request.session_id).map_err(|err| err.to_string())?;
        let exists = store.exists().await.map_err(|err| err.to_string())?;
        Ok(exists.then(|| Arc::new(store) as Arc<dyn RuntimePersistence>))
    }

    async fn delete_session(&self, session_id: &str) -> Result<(), String> {
        let store = self.store(session_id).map_err(|err| err.to_string())?;
        let backend = Arc::clone(&self.backend);
        let key = store.key().to_owned();
        self.backend
            .run(async move {
                // The log and, for a session on the bus's layout, everything else of it.
                let subject = backend.layout.subjects().state_session(&StoreLayout::token(&key)?);
                let stream = backend
                    .context
                    .get_stream_no_info(STATE_STREAM)
                    .await
                    .map_err(|err| self::backend(format!("reading the lash stream failed: {err}")))?;
                stream
                    .purge()
                    .filter(subject)
                    .await
                    .map_err(|err| self::backend(format!("deleting the lash store `{key}` failed: {err}")))?;
                blobs::delete_all(&backend, &key).await
            })
            .await
            .map_err(|err| err.to_string())
    }

    async fn live_attachment_refs(
        &self,
        intent_grace_cutoff_epoch_ms: u64,
    ) -> Result<BTreeSet<AttachmentId>, StoreError> {
        let mut refs = BTreeSet::new();
        for store in self.stores().await? {
            let refs_of = tokio::task::spawn_blocking(move || {
                store.forget_aged_uncommitted_intents(intent_grace_cutoff_epoch_ms)?;
                store.list_all_refs()
            })
            .await
            .map_err(|err| backend(format!("listing attachment refs failed: {err}")))??;
            refs.extend(refs_of);
        }
        Ok(refs)
    }

    async fn has_live_attachment_ref(
        &self,
        attachment_id: &AttachmentId,
        intent_grace_cutoff_epoch_ms: u64,
    ) -> Result<bool, StoreError> {
        for store in self.stores().await? {
            let id = attachment_id.clone();
            let live =
                tokio::task::spawn_blocking(move || store.has_live_ref_for_id(&id, intent_grace_cutoff_epoch_ms))
                    .await
                    .map_err(|err| backend(format!("checking an attachment ref failed: {err}")))??;
            if live {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
