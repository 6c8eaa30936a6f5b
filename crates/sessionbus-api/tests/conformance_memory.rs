//! The conformance suite against the in-memory reference host.

use std::sync::Arc;

use sessionbus_api::TurnExecutor;
use sessionbus_api::conformance::{ConformanceHost, HostFactory};
use sessionbus_api::memory::InMemoryHost;

struct MemoryFactory;

#[async_trait::async_trait]
impl HostFactory for MemoryFactory {
    async fn host(&self, executor: Arc<dyn TurnExecutor>) -> Arc<dyn ConformanceHost> {
        Arc::new(InMemoryHost::new(executor))
    }
}

sessionbus_api::conformance_tests!(MemoryFactory);
