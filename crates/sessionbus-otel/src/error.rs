//! The errors of this crate, as enums.

/// Why a [`TraceRecord`](sessionbus_api::TraceRecord) could not be turned into spans.
/// The assembler's state is unchanged when `push` returns one of these.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    /// The record is of a schema version this crate does not read.
    #[error("trace record {record_id}: unsupported schema version {found} (expected {expected})")]
    UnsupportedSchema {
        /// The record's id.
        record_id: String,
        /// The version found.
        found: u32,
        /// The version this crate reads.
        expected: u32,
    },
    /// The record's context names no session (the bus sets it; a record without one
    /// cannot be placed in a trace).
    #[error("trace record {record_id}: no session id in its context")]
    MissingSessionId {
        /// The record's id.
        record_id: String,
    },
    /// The record's timestamp is not RFC 3339.
    #[error("trace record {record_id}: invalid timestamp `{timestamp}`")]
    InvalidTimestamp {
        /// The record's id.
        record_id: String,
        /// The timestamp found.
        timestamp: String,
    },
    /// A turn, LLM call or tool record names no graph node and none can be derived
    /// (a turn record without turn id, an LLM record without `llm_call_id`).
    #[error("trace record {record_id} ({kind}): no graph node id and none can be derived")]
    MissingGraphNode {
        /// The record's id.
        record_id: String,
        /// The record's `type`.
        kind: String,
    },
}

/// Why a `traceparent` value was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    /// Not `<version>-<32 hex>-<16 hex>-<2 hex>` in lowercase hex.
    #[error("malformed traceparent `{0}`")]
    Malformed(String),
    /// Version `ff`, which the spec forbids.
    #[error("unsupported traceparent version `{0}`")]
    UnsupportedVersion(String),
    /// The trace id is all zeros.
    #[error("traceparent has an all-zero trace id")]
    ZeroTraceId,
    /// The parent id is all zeros.
    #[error("traceparent has an all-zero parent id")]
    ZeroParentId,
}
