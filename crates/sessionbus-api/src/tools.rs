//! Tool manifests, the per-session [`ToolState`] and the catalog projection.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// When a tool is offered to the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolActivation {
    /// Offered whenever the tool is a member.
    #[default]
    Always,
    /// Used by the runtime only, never offered to the model.
    Internal,
}

/// A tool's description as lash writes it. Unknown fields are kept, not rejected, so
/// a manifest from a newer runtime survives a round trip through sessionbus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolManifest {
    /// Stable tool id (`tool:bash`).
    pub id: String,
    /// Name the model calls the tool by.
    pub name: String,
    /// What the tool does; may be empty (then it is left out, as lash does).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Runtime bindings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bindings: Option<Map<String, Value>>,
    /// When the tool is offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<ToolActivation>,
    /// The tool's compact contract (lash `CompactToolContract`: signature, parameters,
    /// examples), when it has one; the catalog shows it as `contract`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compact_contract: Option<Value>,
    /// Every other field, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ToolManifest {
    /// A manifest with only id, name and description set.
    pub fn new(id: impl Into<String>, name: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            description: description.into(),
            bindings: None,
            activation: None,
            compact_contract: None,
            extra: Map::new(),
        }
    }

    /// The catalog entry, as lash projects it: `{"id","name","description","bindings",
    /// "activation"}` plus `"contract"` (the compact contract) when present.
    pub fn catalog_entry(&self) -> Value {
        let mut entry = Map::with_capacity(6);
        entry.insert("id".into(), Value::String(self.id.clone()));
        entry.insert("name".into(), Value::String(self.name.clone()));
        entry.insert("description".into(), Value::String(self.description.clone()));
        entry.insert("bindings".into(), Value::Object(self.bindings.clone().unwrap_or_default()));
        let activation = self.activation.unwrap_or_default();
        entry.insert("activation".into(), serde_json::to_value(activation).unwrap_or(Value::Null));
        if let Some(contract) = &self.compact_contract {
            entry.insert("contract".into(), contract.clone());
        }
        Value::Object(entry)
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_true(value: &bool) -> bool {
    *value
}

fn yes() -> bool {
    true
}

/// One tool in a session's [`ToolState`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolEntry {
    manifest: ToolManifest,
    #[serde(default, skip_serializing_if = "is_false")]
    orphaned: bool,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    member: bool,
}

impl ToolEntry {
    /// A member, non-orphaned entry for `manifest`.
    pub fn new(manifest: ToolManifest) -> Self {
        Self { manifest, orphaned: false, member: true }
    }

    /// The tool's manifest.
    pub fn manifest(&self) -> &ToolManifest {
        &self.manifest
    }

    /// True when the provider that registered the tool is gone.
    pub fn is_orphaned(&self) -> bool {
        self.orphaned
    }

    /// True when the tool is offered in this session.
    pub fn is_member(&self) -> bool {
        self.member
    }

    /// Marks the entry orphaned (its provider is gone).
    pub fn set_orphaned(&mut self, orphaned: bool) {
        self.orphaned = orphaned;
    }
}

/// Why a [`ToolState`] edit was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ToolStateError {
    /// No tool has this id.
    #[error("unknown tool id `{0}`")]
    UnknownTool(String),
    /// An orphaned tool cannot become a member again.
    #[error("tool `{0}` is orphaned and cannot be enabled")]
    Orphaned(String),
}

/// A session's tools and their membership, at one `generation`.
///
/// `generation` is the compare-and-set token of `apply_tool_state`: 0 means "create",
/// any other value must equal the stored revision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolState {
    /// The revision this state was read at (0 for a state never stored).
    pub generation: u64,
    /// The tools, by id.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolEntry>,
}

impl ToolState {
    /// Every tool with its id, members or not.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &ToolEntry)> {
        self.tools.iter()
    }

    /// Adds or replaces a tool as a member.
    pub fn insert(&mut self, manifest: ToolManifest) {
        self.tools.insert(manifest.id.clone(), ToolEntry::new(manifest));
    }

    /// Sets whether tool `id` is a member. An orphaned tool cannot be enabled.
    pub fn set_membership(&mut self, id: &str, present: bool) -> Result<(), ToolStateError> {
        let entry = self.tools.get_mut(id).ok_or_else(|| ToolStateError::UnknownTool(id.to_owned()))?;
        if present && entry.orphaned {
            return Err(ToolStateError::Orphaned(id.to_owned()));
        }
        entry.member = present;
        Ok(())
    }

    /// The manifests of member tools that are not orphaned.
    pub fn tool_manifests(&self) -> Vec<ToolManifest> {
        self.members().cloned().collect()
    }

    /// The catalog of this state: one entry per member, non-orphaned tool.
    pub fn catalog(&self) -> Vec<Value> {
        self.members().map(ToolManifest::catalog_entry).collect()
    }

    fn members(&self) -> impl Iterator<Item = &ToolManifest> {
        self.tools.values().filter(|entry| entry.member && !entry.orphaned).map(|entry| &entry.manifest)
    }
}

/// Catalogs shared per session while the tool-state generation is unchanged: what
/// makes `shared_tool_catalog` reuse one `Arc` instead of rebuilding. Bounded: when
/// `capacity` sessions are cached, the cache starts over.
pub struct CatalogCache {
    capacity: usize,
    entries: std::sync::Mutex<std::collections::HashMap<String, CachedCatalog>>,
    /// Catalogs served from the cache, and built.
    hits: std::sync::atomic::AtomicU64,
    builds: std::sync::atomic::AtomicU64,
}

/// A catalog and the generation it was built at.
type CachedCatalog = (u64, std::sync::Arc<Vec<Value>>);

impl CatalogCache {
    /// An empty cache of at most `capacity` sessions.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Default::default(),
            hits: Default::default(),
            builds: Default::default(),
        }
    }

    /// How many [`Self::get_or_build`] calls were served from the cache, and built.
    pub fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.builds.load(Relaxed))
    }

    /// The cached catalog of `session_id` and its generation, if any.
    pub fn get(&self, session_id: &str) -> Option<(u64, std::sync::Arc<Vec<Value>>)> {
        let entries = crate::sync::lock(&self.entries);
        entries.get(session_id).map(|(generation, catalog)| (*generation, std::sync::Arc::clone(catalog)))
    }

    /// Drops the catalog of `session_id` cached at a generation older than `generation`
    /// (a write of this caller's made it stale).
    pub fn forget_older(&self, session_id: &str, generation: u64) {
        let mut entries = crate::sync::lock(&self.entries);
        if entries.get(session_id).is_some_and(|(cached, _)| *cached < generation) {
            entries.remove(session_id);
        }
    }

    /// The cached catalog of `session_id` at `generation`, or `build()`'s, cached.
    pub fn get_or_build(
        &self,
        session_id: &str,
        generation: u64,
        build: impl FnOnce() -> Vec<Value>,
    ) -> std::sync::Arc<Vec<Value>> {
        let mut entries = crate::sync::lock(&self.entries);
        if let Some((cached, catalog)) = entries.get(session_id)
            && *cached == generation
        {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return std::sync::Arc::clone(catalog);
        }
        self.builds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if entries.len() >= self.capacity {
            entries.clear();
        }
        let catalog = std::sync::Arc::new(build());
        entries.insert(session_id.to_owned(), (generation, std::sync::Arc::clone(&catalog)));
        catalog
    }
}

#[cfg(test)]
mod catalog_cache_tests {
    use super::*;

    #[test]
    fn a_newer_generation_drops_the_cached_catalog_and_keeps_a_newer_one() {
        let cache = CatalogCache::new(4);
        cache.get_or_build("s", 3, Vec::new);
        cache.forget_older("s", 3);
        assert_eq!(cache.get("s").map(|(generation, _)| generation), Some(3), "same generation kept");
        cache.forget_older("s", 5);
        assert!(cache.get("s").is_none(), "a catalog older than the caller's write is dropped");
        cache.get_or_build("s", 7, Vec::new);
        cache.forget_older("s", 5);
        assert_eq!(cache.get("s").map(|(generation, _)| generation), Some(7), "a newer catalog is kept");
    }
}
