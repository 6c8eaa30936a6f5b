//! The request a host call is serving, carried as a task-local so hosts can derive
//! idempotency keys and trace parents without changing the trait signatures.

use std::future::Future;

/// What a host call knows about the bus request it serves.
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    /// The `Sessionbus-Request-Id` of the request.
    pub request_id: String,
    /// The `traceparent` of the span handling the request.
    pub traceparent: Option<String>,
}

tokio::task_local! {
    static CURRENT: RequestContext;
}

/// Runs `future` serving `context`.
pub async fn with_request<F: Future>(context: RequestContext, future: F) -> F::Output {
    CURRENT.scope(context, future).await
}

/// Runs `future` with `request_id` as the current request id.
pub async fn with_request_id<F: Future>(request_id: String, future: F) -> F::Output {
    with_request(RequestContext { request_id, traceparent: None }, future).await
}

/// The current request context, when the call serves a bus request.
pub fn current() -> Option<RequestContext> {
    CURRENT.try_with(Clone::clone).ok()
}

/// The current request id, or a fresh UUID when the call is not serving a bus request.
pub fn current_request_id() -> String {
    CURRENT.try_with(|c| c.request_id.clone()).unwrap_or_else(|_| uuid::Uuid::new_v4().to_string())
}

/// The current traceparent, when known.
pub fn current_traceparent() -> Option<String> {
    CURRENT.try_with(|c| c.traceparent.clone()).ok().flatten()
}
