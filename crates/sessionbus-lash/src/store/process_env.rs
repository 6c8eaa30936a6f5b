//! [`JetStreamProcessEnvStore`]: lash's `ProcessExecutionEnvStore` (Durable) on the KV
//! bucket `SESSIONBUS_PROCESS_ENV`. A ref is any string; its key is
//! `<namespace token>.<sha256 hex of the ref>` (KV keys allow few characters).

use std::sync::Arc;

use lash_core::{DurabilityTier, PluginError, ProcessExecutionEnvRef, ProcessExecutionEnvStore};
use sha2::Digest as _;

use super::backend::StoreBackend;

/// lash's process execution environment store on a JetStream KV bucket.
#[derive(Clone)]
pub struct JetStreamProcessEnvStore {
    backend: Arc<StoreBackend>,
    namespace: String,
}

impl std::fmt::Debug for JetStreamProcessEnvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamProcessEnvStore").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

fn failed(what: &str, err: impl std::fmt::Display) -> PluginError {
    PluginError::Session(format!("{what} failed: {err}; is JetStream up and the store's layout created?"))
}

impl JetStreamProcessEnvStore {
    /// The process-env store on `backend`.
    pub fn new(backend: Arc<StoreBackend>) -> Self {
        Self { backend, namespace: "default".to_owned() }
    }

    /// This store with its keys under `namespace` (a non-empty id).
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    fn key(&self, env_ref: &ProcessExecutionEnvRef) -> Result<String, PluginError> {
        let namespace = sessionbus_nats::subjects::session_token(&self.namespace).map_err(|err| {
            PluginError::Session(format!("`{}` cannot name a process-env namespace: {err}", self.namespace))
        })?;
        Ok(format!("{namespace}.{:x}", sha2::Sha256::digest(env_ref.as_str().as_bytes())))
    }
}

#[async_trait::async_trait]
impl ProcessExecutionEnvStore for JetStreamProcessEnvStore {
    fn durability_tier(&self) -> DurabilityTier {
        DurabilityTier::Durable
    }

    async fn put_process_execution_env(
        &self,
        env_ref: &ProcessExecutionEnvRef,
        bytes: &[u8],
    ) -> Result<(), PluginError> {
        let (key, bytes, backend) = (self.key(env_ref)?, bytes.to_vec(), Arc::clone(&self.backend));
        let task = self.backend.spawn(async move {
            let kv = &backend.buckets.process_envs;
            kv.put(key, bytes.into()).await.map_err(|e| failed("storing a process env", e))?;
            Ok(())
        });
        task.await.map_err(|err| failed("a process-env task", err))?
    }

    async fn get_process_execution_env(
        &self,
        env_ref: &ProcessExecutionEnvRef,
    ) -> Result<Option<Vec<u8>>, PluginError> {
        let (key, backend) = (self.key(env_ref)?, Arc::clone(&self.backend));
        let task = self.backend.spawn(async move {
            let kv = &backend.buckets.process_envs;
            let value = kv.get(key).await.map_err(|e| failed("reading a process env", e))?;
            Ok(value.map(|bytes| bytes.to_vec()))
        });
        task.await.map_err(|err| failed("a process-env task", err))?
    }
}
