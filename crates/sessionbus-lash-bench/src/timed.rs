//! [`CommitLatencies`]: a `StoreObserver` (sessionbus-lash's) keeping the latency of every
//! commit a store accepted. The bench wraps each store's factory in an
//! `ObservedFactory` with it: every call still goes to the store unchanged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lash_core::store::RuntimeCommitResult;
use lash_core::{
    RuntimeCommit, SessionExecutionLease, SessionExecutionLeaseClaimOutcome, SessionExecutionLeaseFence, StoreError,
};
use sessionbus_api::sync::lock;
use sessionbus_lash::executor::capture::StoreObserver;

/// The latencies of the commits the observed stores accepted (clones share them).
#[derive(Clone, Debug, Default)]
pub struct CommitLatencies(Arc<Mutex<Vec<Duration>>>);

impl CommitLatencies {
    /// Every latency recorded so far, and forgets them.
    pub fn take(&self) -> Vec<Duration> {
        std::mem::take(&mut *lock(&self.0))
    }
}

impl StoreObserver for CommitLatencies {
    fn lease_claimed(&self, _: &str, _: &Result<SessionExecutionLeaseClaimOutcome, StoreError>) {}

    fn lease_renewed(&self, _: &SessionExecutionLeaseFence, _: &Result<SessionExecutionLease, StoreError>) {}

    fn committed(&self, _: &RuntimeCommit, outcome: &Result<RuntimeCommitResult, StoreError>, elapsed: Duration) {
        if outcome.is_ok() {
            lock(&self.0).push(elapsed);
        }
    }
}
