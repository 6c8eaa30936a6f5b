//! Tool state in the `SESSIONBUS_TOOLS` KV bucket: the generation is the KV revision.
//!
//! Writes publish to `$KV.SESSIONBUS_TOOLS.<key>` directly (not `kv.update()`, which
//! cannot carry a message id) with `Nats-Expected-Last-Subject-Sequence` = the
//! generation and `Nats-Msg-Id` = `<request-id>/<n>`.

use std::sync::Arc;

use serde_json::Value;
use sessionbus_api::{MEMBERSHIP_ATTEMPTS, PluginError, ToolState, retry_pause, toggle_membership};

use super::JetStreamHost;
use super::api::{JsErrorExt as _, JsErrorKind, StoredMessage, Write};
use super::layout::TOOLS_STREAM;
use crate::subjects::session_token;

/// A stored entry as tool state (a delete marker reads as an empty state at its revision).
fn state_of(message: Option<StoredMessage>) -> Result<ToolState, PluginError> {
    let Some(message) = message else { return Ok(ToolState::default()) };
    if message.kv_operation.is_some() {
        return Ok(ToolState { generation: message.seq, ..ToolState::default() });
    }
    let mut state: ToolState = super::records::decode("tool state", &message.payload)?;
    state.generation = message.seq;
    Ok(state)
}

impl JetStreamHost {
    async fn last_tool_entry(&self, token: &str) -> Result<Option<StoredMessage>, PluginError> {
        self.inner
            .api
            .last(TOOLS_STREAM, &self.inner.config.subjects.tool_key(token))
            .await
            .map_err(|err| err.into_plugin("reading tool state"))
    }

    /// The tool state, read from the stream leader.
    pub(super) async fn read_tool_state(&self, session_id: &str) -> Result<ToolState, PluginError> {
        let token = session_token(session_id)?;
        state_of(self.last_tool_entry(&token).await?)
    }

    /// Compare-and-set of `state` on its generation.
    pub(super) async fn write_tool_state(
        &self,
        session_id: &str,
        mut state: ToolState,
        msg_id: String,
    ) -> Result<u64, PluginError> {
        let token = session_token(session_id)?;
        let expected = state.generation;
        state.generation = 0;
        let payload = super::records::encode(&state)?;
        let limit = self.max_payload();
        if payload.len() + 256 > limit {
            return Err(self.too_large("the tool state", payload.len()));
        }
        let write = Write::new(self.inner.config.subjects.tool_key(&token), payload, msg_id.clone())
            .if_last_sequence(expected, None);
        match self.inner.api.publish(&write).await {
            Ok(ack) => Ok(ack.sequence),
            Err(err) if err.kind() == JsErrorKind::WrongLastSequence => {
                // A retry whose first attempt was stored meets its own write: on a
                // single node (R1) the condition is checked before dedupe. A write
                // conditioned on `expected` can only have been stored as the key's first
                // entry after `expected`, even when other writes followed it.
                let first_after = self
                    .inner
                    .api
                    .next(TOOLS_STREAM, &self.inner.config.subjects.tool_key(&token), expected + 1)
                    .await
                    .map_err(|err| err.into_plugin("reading tool state"))?;
                if let Some(stored) = first_after.filter(|m| m.msg_id.as_deref() == Some(msg_id.as_str())) {
                    if stored.written_for_another_body(&write) {
                        return Err(super::api::reused_request_id());
                    }
                    return Ok(stored.seq);
                }
                // What is stored now (at or after the write that won).
                let actual = self.last_tool_entry(&token).await?.map_or(0, |m| m.seq);
                Err(PluginError::GenerationMismatch { expected, actual })
            }
            Err(err) => Err(err.into_plugin("writing tool state")),
        }
    }

    /// `set_tool_membership`: read, toggle, compare-and-set, retried on conflict with
    /// one message id per attempt.
    pub(super) async fn toggle_tools(
        &self,
        session_id: &str,
        tool_names: &[String],
        present: bool,
    ) -> Result<u64, PluginError> {
        let request_id = crate::request_context::current_request_id();
        let mut attempt = 0u32;
        loop {
            let mut state = self.read_tool_state(session_id).await?;
            toggle_membership(&mut state, tool_names, present)?;
            match self.write_tool_state(session_id, state, format!("{request_id}/{attempt}")).await {
                Err(lost) if lost.is_lost_race() && attempt + 1 < MEMBERSHIP_ATTEMPTS => {
                    tracing::debug!(session_id, attempt, %lost, "tool membership conflict, retrying");
                    attempt += 1;
                    tokio::time::sleep(retry_pause(attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// The catalog, reusing the cached `Arc` while the generation is unchanged.
    pub(super) async fn cached_catalog(&self, session_id: &str) -> Result<Arc<Vec<Value>>, PluginError> {
        let state = self.read_tool_state(session_id).await?;
        Ok(self.inner.catalogs.get_or_build(session_id, state.generation, || state.catalog()))
    }
}
