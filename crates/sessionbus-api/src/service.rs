//! The three session service traits of the lash plugin contract, with the seed's
//! names, signatures, default bodies and error texts.

use std::sync::Arc;

use crate::{
    AppendSessionNodesRequest, AppendSessionNodesResult, AssembledTurn, PluginError, SessionCreateRequest,
    SessionHandle, SessionRegistryService, SessionSnapshot, SessionTurnRequest, ToolState, TraceContext, TraceEvent,
    TurnCancelService,
};

/// Session state: snapshots, the tool catalog and tool state.
#[async_trait::async_trait]
pub trait SessionStateService: Send + Sync {
    /// The snapshot of the session this service is bound to.
    async fn snapshot_current(&self) -> Result<SessionSnapshot, PluginError> {
        Err(PluginError::Session("session snapshots are unavailable in this runtime".to_string()))
    }

    /// The snapshot of `session_id`; ``unknown session `id` `` when it does not exist.
    async fn snapshot_session(&self, _session_id: &str) -> Result<SessionSnapshot, PluginError> {
        Err(PluginError::Session("session lookup is unavailable in this runtime".to_string()))
    }

    /// The member tools' catalog entries.
    async fn tool_catalog(&self, _session_id: &str) -> Result<Vec<serde_json::Value>, PluginError> {
        Err(PluginError::Session("tool catalogs are unavailable in this runtime".to_string()))
    }

    /// The catalog as a shared value; implementations reuse the `Arc` while the tool
    /// state revision is unchanged.
    async fn shared_tool_catalog(&self, session_id: &str) -> Result<Arc<Vec<serde_json::Value>>, PluginError> {
        Ok(Arc::new(self.tool_catalog(session_id).await?))
    }

    /// The session's tool state at its current generation.
    async fn tool_state(&self, _session_id: &str) -> Result<ToolState, PluginError> {
        Err(PluginError::Session("tool state is unavailable in this session".to_string()))
    }

    /// Stores `snapshot` if its generation is current (0 = create); returns the new generation.
    async fn apply_tool_state(&self, _session_id: &str, _snapshot: ToolState) -> Result<u64, PluginError> {
        Err(PluginError::Session("tool state mutation is unavailable in this session".to_string()))
    }

    /// Sets the membership of the tools named `tool_names`; returns the new generation.
    async fn set_tool_membership(
        &self,
        session_id: &str,
        tool_names: &[String],
        present: bool,
    ) -> Result<u64, PluginError> {
        let mut snapshot = self.tool_state(session_id).await?;
        toggle_membership(&mut snapshot, tool_names, present)?;
        self.apply_tool_state(session_id, snapshot).await
    }
}

/// Sets the membership of the tools named `tool_names` in `state` (the seed's loop).
pub fn toggle_membership(state: &mut ToolState, tool_names: &[String], present: bool) -> Result<(), PluginError> {
    for name in tool_names {
        let id = state
            .iter()
            .find(|(_, entry)| entry.manifest().name == *name)
            .map(|(id, _)| id.clone())
            .ok_or_else(|| PluginError::unknown_tool(name))?;
        state.set_membership(&id, present).map_err(|err| PluginError::Session(err.to_string()))?;
    }
    Ok(())
}

/// Session lifecycle: create, close, run a turn.
#[async_trait::async_trait]
pub trait SessionLifecycleService: Send + Sync {
    /// Creates a session.
    async fn create_session(&self, _request: SessionCreateRequest) -> Result<SessionHandle, PluginError> {
        Err(PluginError::Session("session creation is unavailable in this runtime".to_string()))
    }

    /// Closes a session.
    async fn close_session(&self, _session_id: &str) -> Result<(), PluginError> {
        Err(PluginError::Session("session closing is unavailable in this runtime".to_string()))
    }

    /// Runs (or returns the stored result of) one turn.
    async fn start_turn(&self, _request: SessionTurnRequest) -> Result<AssembledTurn, PluginError> {
        Err(PluginError::Session("session execution is unavailable in this runtime".to_string()))
    }
}

/// Session graph: append nodes, emit trace events.
#[async_trait::async_trait]
pub trait SessionGraphService: Send + Sync {
    /// Chains `request.nodes` onto the session's leaf.
    async fn append_session_nodes(
        &self,
        _session_id: &str,
        _request: AppendSessionNodesRequest,
    ) -> Result<AppendSessionNodesResult, PluginError> {
        Err(PluginError::Session("session graph mutation is unavailable in this session".to_string()))
    }

    /// Records a trace event; `Ok` means it is durably recorded.
    async fn emit_trace_event(&self, _context: TraceContext, _event: TraceEvent) -> Result<(), PluginError> {
        Ok(())
    }
}

/// A host serving all three traits, the session registry and turn cancellation.
pub trait SessionHost:
    SessionStateService + SessionLifecycleService + SessionGraphService + SessionRegistryService + TurnCancelService
{
}

impl<
    T: SessionStateService
        + SessionLifecycleService
        + SessionGraphService
        + SessionRegistryService
        + TurnCancelService
        + ?Sized,
> SessionHost for T
{
}

/// How often [`set_membership_with_retry`] re-reads after a lost compare-and-set before
/// giving up.
pub const MEMBERSHIP_ATTEMPTS: u32 = 64;

/// `set_tool_membership` as every sessionbus host implements it: read, toggle by
/// manifest name, apply; on a lost compare-and-set ([`PluginError::GenerationMismatch`]
/// or [`PluginError::Conflict`]) re-read and retry (bounded, with jitter), so
/// concurrent togglers never lose an update.
pub async fn set_membership_with_retry<S: SessionStateService + ?Sized>(
    service: &S,
    session_id: &str,
    tool_names: &[String],
    present: bool,
) -> Result<u64, PluginError> {
    let mut attempt = 0;
    loop {
        let mut state = service.tool_state(session_id).await?;
        toggle_membership(&mut state, tool_names, present)?;
        match service.apply_tool_state(session_id, state).await {
            Err(lost) if lost.is_lost_race() => {
                attempt += 1;
                if attempt >= MEMBERSHIP_ATTEMPTS {
                    return Err(PluginError::Conflict(format!(
                        "{lost} (gave up after {attempt} attempts: too many concurrent writers)"
                    )));
                }
                tokio::time::sleep(retry_pause(attempt)).await;
            }
            other => return other,
        }
    }
}

/// A random pause before retry `attempt` of a lost compare-and-set: grows with the
/// attempt, at most about 20 ms, so competing writers spread out.
pub fn retry_pause(attempt: u32) -> std::time::Duration {
    let random = (uuid::Uuid::new_v4().as_u128() & 0xffff) as u64;
    let ceiling_us = 250u64 * u64::from(attempt.min(80));
    std::time::Duration::from_micros(random % ceiling_us.max(1))
}
