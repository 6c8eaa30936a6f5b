//! The request a host call is serving, carried as a task-local so hosts can derive
//! idempotency keys and trace parents without changing the trait signatures.

use std::future::Future;

/// What a host call knows about the bus request it serves.
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    /// The idempotency key of the request (its `Sessionbus-Request-Id`, scoped by
    /// subject); `None` where calls are not retries of one request (an executor's own
    /// calls during a turn), so each gets a fresh key.
    pub request_id: Option<String>,
    /// A digest of the request's body: a write stored under the same idempotency key
    /// with another digest is a reused request id, refused (400).
    pub body_digest: Option<String>,
    /// The `traceparent` of the span handling the request.
    pub traceparent: Option<String>,
    /// Where a `start_turn` caller that asked for live events (`Sessionbus-Progress:
    /// stream`) receives them: its reply subject.
    pub live_reply: Option<String>,
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
    with_request(RequestContext { request_id: Some(request_id), ..RequestContext::default() }, future).await
}

/// The current request context, when the call serves a bus request.
pub fn current() -> Option<RequestContext> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Namespace of [`scoped_request_id`].
const REQUEST_SCOPE_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5e55_10b0_5c0e_4d1d_9a7e_2f3c_8b1a_0d6e);

/// The idempotency key of a request: its `Sessionbus-Request-Id` scoped by the subject
/// it was sent to (so by session and op). JetStream deduplicates message ids per
/// stream, so an unscoped id reused on another session or op would be taken for a
/// retry of the first call; scoped, it is a new write.
///
/// ```
/// use sessionbus_nats::request_context::scoped_request_id;
///
/// let a = scoped_request_id("sessionbus.v1.session.a.append_nodes", "req-1");
/// assert_eq!(a, scoped_request_id("sessionbus.v1.session.a.append_nodes", "req-1"));
/// assert_ne!(a, scoped_request_id("sessionbus.v1.session.b.append_nodes", "req-1"));
/// assert_ne!(a, scoped_request_id("sessionbus.v1.session.a.close", "req-1"));
/// ```
pub fn scoped_request_id(subject: &str, request_id: &str) -> String {
    let mut name = Vec::with_capacity(subject.len() + request_id.len() + 1);
    name.extend_from_slice(subject.as_bytes());
    name.push(b'\n');
    name.extend_from_slice(request_id.as_bytes());
    uuid::Uuid::new_v5(&REQUEST_SCOPE_NAMESPACE, &name).to_string()
}

/// The current request id, or a fresh UUID when the call is not serving a bus request.
pub fn current_request_id() -> String {
    CURRENT.try_with(|c| c.request_id.clone()).ok().flatten().unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The digest of the current request's body, when the call serves a bus request.
pub fn current_body_digest() -> Option<String> {
    CURRENT.try_with(|c| c.body_digest.clone()).ok().flatten()
}

/// The digest [`RequestContext::body_digest`] holds for `body`.
pub fn body_digest(body: &[u8]) -> String {
    uuid::Uuid::new_v5(&REQUEST_SCOPE_NAMESPACE, body).simple().to_string()
}

/// The current traceparent, when known.
pub fn current_traceparent() -> Option<String> {
    CURRENT.try_with(|c| c.traceparent.clone()).ok().flatten()
}
