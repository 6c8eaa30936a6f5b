//! The store's own JetStream connection on its own runtime.
//!
//! lash calls part of its store contract synchronously (`AttachmentManifest`), and builds
//! stores from synchronous closures. A synchronous call cannot wait for I/O driven by the
//! runtime it is called from (a current-thread runtime would deadlock), so every store
//! call runs on this runtime, with a connection made on it; async callers await the
//! task, synchronous callers block on a channel.

use std::future::Future;
use std::sync::Arc;

use async_nats::jetstream;
use lash_core::StoreError;
use sessionbus_nats::Subjects;
use sessionbus_nats::jetstream::StateAccess;

use super::layout::{Buckets, StoreLayout};

/// How long one read or write of the session layout waits for its answer.
const STATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Where and how a [`StoreBackend`] connects.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreBackendConfig {
    /// The NATS server URL(s), comma-separated.
    pub url: String,
    /// The subject prefix shared with the bus.
    pub subjects: Subjects,
}

impl StoreBackendConfig {
    /// A config for `url` with the bus's default subject prefix.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), subjects: Subjects::default() }
    }

    /// This config with `subjects` as the subject prefix.
    #[must_use]
    pub fn with_subjects(mut self, subjects: Subjects) -> Self {
        self.subjects = subjects;
        self
    }
}

/// A JetStream connection on a runtime of its own (one worker thread), shared by every
/// store and factory made from it.
pub struct StoreBackend {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pub(super) context: jetstream::Context,
    pub(super) layout: StoreLayout,
    pub(super) buckets: Buckets,
    /// The bus's conditional writes and leader reads on the session layout.
    pub(super) state: StateAccess,
}

impl std::fmt::Debug for StoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreBackend").field("layout", &self.layout).finish_non_exhaustive()
    }
}

impl StoreBackend {
    /// Connects to `config.url` on a new runtime and checks the store's layout
    /// ([`super::ensure_store_layout`] creates it). Blocks the calling thread until
    /// connected; callable from inside or outside a runtime.
    pub fn connect(config: StoreBackendConfig) -> Result<Arc<Self>, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sessionbus-lash-store")
            .enable_all()
            .build()
            .map_err(|err| backend(format!("could not start the store's runtime: {err}")))?;
        let url = config.url.clone();
        let layout = StoreLayout::new(config.subjects);
        let verify = layout.clone();
        let connected = blocking(runtime.handle(), async move {
            let servers = server_addrs(&url)?;
            let client = async_nats::connect(servers)
                .await
                .map_err(|err| backend(format!("could not connect to NATS at `{url}`: {err}; is the server up?")))?;
            let context = jetstream::new(client);
            let buckets = verify.verify(&context).await?;
            Ok::<_, StoreError>((context, buckets))
        })?;
        let (context, buckets) = connected?;
        let handle = runtime.handle().clone();
        let state = StateAccess::new(context.client(), layout.subjects().clone(), STATE_TIMEOUT);
        Ok(Arc::new(Self { runtime: Some(runtime), handle, context, layout, buckets, state }))
    }

    /// Starts `work` on the store's runtime.
    pub(super) fn spawn<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        self.handle.spawn(work)
    }

    /// Runs `work` on the store's runtime and awaits it (from any runtime).
    pub(super) async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.spawn(work).await.map_err(|err| backend(format!("a store task failed: {err}")))?
    }

    /// Runs `work` on the store's runtime and blocks the calling thread until it ends.
    pub(super) fn run_blocking<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        blocking(&self.handle, work)?
    }
}

impl Drop for StoreBackend {
    fn drop(&mut self) {
        // A runtime may not be dropped inside another one (the last store handle is
        // often dropped in a test's async body); shutting it down in the background may.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn blocking<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    work: impl Future<Output = T> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(work.await);
    });
    rx.recv().map_err(|_| backend("a store task ended without an answer".into()))
}

/// The servers of a comma-separated URL list.
pub fn server_addrs(urls: &str) -> Result<Vec<async_nats::ServerAddr>, StoreError> {
    urls.split(',')
        .map(|url| url.trim().parse().map_err(|err| backend(format!("`{url}` is not a NATS server URL: {err}"))))
        .collect()
}

/// A backend failure with what happened (and what to do, where there is something).
pub(super) fn backend(message: String) -> StoreError {
    StoreError::Backend(message)
}
