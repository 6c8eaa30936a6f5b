//! Checkpoint snapshots as content-addressed blobs in `SESSIONBUS_BLOBS`.
//!
//! A commit's tool state, plugin snapshot and execution state are written as one blob,
//! named `<store token>.<sha256 hex of its bytes>`, before the commit is appended; the
//! log record names the blob and carries the rest. A blob no commit names any more is
//! reclaimed by [`collect`]: only blobs stored before the live one, so a blob whose
//! commit is still being appended is never taken.

use async_nats::jetstream::object_store::{ObjectInfo, ObjectStore};
use futures::StreamExt as _;
use lash_core::store::PersistedSessionRead;
use lash_core::{GcReport, RuntimeCommit, StoreError};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::backend::{StoreBackend, backend};
use super::layout::StoreLayout;

/// The snapshots a checkpoint blob holds.
#[derive(Default, Serialize, Deserialize)]
struct Snapshots {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool_state: Option<lash_core::ToolState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plugin_snapshot: Option<lash_core::PluginSessionSnapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    execution_state: Option<Vec<u8>>,
}

impl Snapshots {
    fn is_empty(&self) -> bool {
        self.tool_state.is_none() && self.plugin_snapshot.is_none() && self.execution_state.is_none()
    }
}

/// Moves `commit`'s snapshots into a blob; returns the commit without them and the
/// blob's name (`None` when it had none).
pub(crate) async fn store_checkpoint(
    backend: &StoreBackend,
    key: &str,
    mut commit: RuntimeCommit,
) -> Result<(RuntimeCommit, Option<String>), StoreError> {
    let snapshots = Snapshots {
        tool_state: commit.checkpoint.tool_state.take(),
        plugin_snapshot: commit.checkpoint.plugin_snapshot.take(),
        execution_state: commit.checkpoint.execution_state.take(),
    };
    if snapshots.is_empty() {
        return Ok((commit, None));
    }
    let bytes = serde_json::to_vec(&snapshots)
        .map_err(|err| self::backend(format!("a checkpoint could not be encoded: {err}")))?;
    let name = format!("{}{:x}", StoreLayout::blob_prefix(key)?, sha2::Sha256::digest(&bytes));
    let bucket = &backend.buckets.blobs;
    if bucket.info(&name).await.is_err() {
        bucket
            .put(name.as_str(), &mut bytes.as_slice())
            .await
            .map_err(|err| self::backend(format!("writing checkpoint blob `{name}` failed: {err}")))?;
    }
    Ok((commit, Some(name)))
}

/// Puts the snapshots of blob `name` back into `read`'s checkpoint.
pub(crate) async fn hydrate(
    backend: &StoreBackend,
    name: &str,
    read: &mut PersistedSessionRead,
) -> Result<(), StoreError> {
    let mut object = backend
        .buckets
        .blobs
        .get(name)
        .await
        .map_err(|err| self::backend(format!("checkpoint blob `{name}` is unreadable: {err}")))?;
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut object, &mut bytes)
        .await
        .map_err(|err| self::backend(format!("checkpoint blob `{name}` could not be read: {err}")))?;
    let snapshots: Snapshots = serde_json::from_slice(&bytes)
        .map_err(|err| self::backend(format!("checkpoint blob `{name}` is unreadable: {err}")))?;
    if let Some(checkpoint) = read.checkpoint.as_mut() {
        checkpoint.tool_state = snapshots.tool_state;
        checkpoint.plugin_snapshot = snapshots.plugin_snapshot;
        checkpoint.execution_state = snapshots.execution_state;
    }
    Ok(())
}

/// The store's blobs (not deleted ones).
async fn list(bucket: &ObjectStore, key: &str) -> Result<Vec<ObjectInfo>, StoreError> {
    let prefix = StoreLayout::blob_prefix(key)?;
    let listing = |err: &dyn std::fmt::Display| self::backend(format!("listing checkpoint blobs failed: {err}"));
    let mut objects = bucket.list().await.map_err(|err| listing(&err))?;
    let mut mine = Vec::new();
    while let Some(info) = objects.next().await {
        let info = info.map_err(|err| listing(&err))?;
        if info.name.starts_with(&prefix) && !info.deleted {
            mine.push(info);
        }
    }
    Ok(mine)
}

async fn delete(bucket: &ObjectStore, name: &str) -> Result<(), StoreError> {
    bucket.delete(name).await.map_err(|err| self::backend(format!("deleting checkpoint blob `{name}` failed: {err}")))
}

/// Deletes the store's blobs other than `live` that were stored before it.
pub(crate) async fn collect(backend: &StoreBackend, key: &str, live: Option<&str>) -> Result<GcReport, StoreError> {
    let bucket = &backend.buckets.blobs;
    let mine = list(bucket, key).await?;
    let live_modified = live.and_then(|live| mine.iter().find(|info| info.name == live).map(|info| info.modified));
    let mut report = GcReport { root_count: usize::from(live.is_some()), ..GcReport::default() };
    for info in mine {
        let reclaimable = Some(info.name.as_str()) != live && live_modified.is_some_and(|at| info.modified < at);
        if reclaimable {
            delete(bucket, &info.name).await?;
            report.deleted_blob_count += 1;
        } else {
            report.retained_blob_count += 1;
        }
    }
    Ok(report)
}

/// Deletes every blob of the store keyed `key`.
pub(crate) async fn delete_all(backend: &StoreBackend, key: &str) -> Result<(), StoreError> {
    let bucket = &backend.buckets.blobs;
    for info in list(bucket, key).await? {
        delete(bucket, &info.name).await?;
    }
    Ok(())
}
