//! The request a host call is serving, carried as a task-local so hosts can derive
//! idempotency keys without changing the trait signatures.

use std::future::Future;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `future` with `request_id` as the current request id.
pub async fn with_request_id<F: Future>(request_id: String, future: F) -> F::Output {
    REQUEST_ID.scope(request_id, future).await
}

/// The current request id, or a fresh UUID when the call is not serving a bus request.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_else(|_| uuid::Uuid::new_v4().to_string())
}
