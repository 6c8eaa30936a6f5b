//! A worker's bounded cache of sessions' materialised state: the graph with its node
//! index and active path, plus the last known meta and lease. Only an optimisation:
//! every write is fenced by a JetStream condition, so a stale view makes a write fail
//! and be retried after a refresh, never succeed wrongly.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use sessionbus_api::{SessionGraph, SessionNode};

use super::records::{GraphRecord, LeaseRecord, MetaRecord};

/// One session's materialised state as of `graph_seq` / `session_seq`.
#[derive(Default)]
pub(crate) struct SessionView {
    /// False until the first full load (and after an invalidation of everything).
    pub(crate) loaded: bool,
    /// Last known sequence of any write to the session: the fence of appends.
    pub(crate) session_seq: u64,
    /// Sequence of the last graph record applied.
    pub(crate) graph_seq: u64,
    pub(crate) meta: Option<(u64, MetaRecord)>,
    pub(crate) lease: Option<(u64, LeaseRecord)>,
    pub(crate) nodes: Vec<SessionNode>,
    pub(crate) leaf: Option<String>,
    index: HashMap<String, usize>,
    active: HashSet<String>,
    /// Per graph record: its sequence, the node count after it, its request id.
    records: Vec<(u64, usize, String)>,
    /// Record position by request id.
    by_request: HashMap<String, usize>,
    /// The request body digest of each append record that has one, by request id.
    digests: HashMap<String, String>,
}

impl SessionView {
    pub(crate) fn exists(&self) -> bool {
        self.meta.is_some()
    }

    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.lease, Some((_, LeaseRecord::Closed))) || self.meta.as_ref().is_some_and(|(_, m)| m.closed)
    }

    /// The session's current agent frame, where its appended nodes are stored.
    pub(crate) fn current_agent_frame(&self) -> Option<&String> {
        self.meta.as_ref().and_then(|(_, meta)| meta.current_agent_frame_id.as_ref())
    }

    pub(crate) fn contains_node(&self, node_id: &str) -> bool {
        self.index.contains_key(node_id)
    }

    pub(crate) fn is_on_active_path(&self, node_id: &str) -> bool {
        self.active.contains(node_id)
    }

    /// Applies one stored graph record.
    pub(crate) fn apply_graph(&mut self, seq: u64, record: GraphRecord) {
        let leaf = record.leaf.clone();
        if seq <= self.graph_seq {
            return;
        }
        if record.replace {
            self.drop_graph();
        }
        let mut expected_parent = self.leaf.clone();
        let mut extends_leaf = true;
        for node in &record.nodes {
            extends_leaf &= node.parent_node_id == expected_parent;
            expected_parent = Some(node.node_id.clone());
        }
        extends_leaf &= leaf == expected_parent;
        for node in record.nodes {
            self.index.insert(node.node_id.clone(), self.nodes.len());
            self.nodes.push(node);
        }
        self.leaf = leaf;
        if extends_leaf {
            let start = self.records.last().map_or(0, |r| r.1);
            for node in &self.nodes[start..] {
                self.active.insert(node.node_id.clone());
            }
        } else {
            self.rebuild_active_path();
        }
        self.by_request.insert(record.request_id.clone(), self.records.len());
        if let Some(digest) = record.digest {
            self.digests.insert(record.request_id.clone(), digest);
        }
        self.records.push((seq, self.nodes.len(), record.request_id));
        self.graph_seq = seq;
    }

    /// Forgets every node and record (a `replace` record follows): the results of
    /// requests stored before it are no longer known.
    fn drop_graph(&mut self) {
        self.nodes.clear();
        self.leaf = None;
        self.index.clear();
        self.active.clear();
        self.records.clear();
        self.by_request.clear();
        self.digests.clear();
    }

    fn rebuild_active_path(&mut self) {
        self.active.clear();
        let mut cursor = self.leaf.clone();
        while let Some(id) = cursor {
            let Some(&position) = self.index.get(&id) else { break };
            if !self.active.insert(id) {
                break;
            }
            cursor = self.nodes[position].parent_node_id.clone();
        }
    }

    /// True when request `request_id` was stored for a body with another digest than
    /// `digest`.
    pub(crate) fn stored_for_another_body(&self, request_id: &str, digest: Option<&str>) -> bool {
        matches!((self.digests.get(request_id), digest), (Some(stored), Some(ours)) if stored != ours)
    }

    /// The node ids and leaf a stored request produced, when it is in the graph.
    pub(crate) fn result_of(&self, request_id: &str) -> Option<(Vec<String>, String)> {
        let position = *self.by_request.get(request_id)?;
        let start = position.checked_sub(1).map_or(0, |p| self.records[p].1);
        let end = self.records[position].1;
        let ids: Vec<String> = self.nodes[start..end].iter().map(|n| n.node_id.clone()).collect();
        let leaf = ids.last().cloned()?;
        Some((ids, leaf))
    }

    /// The graph as it was right after the record of `request_id`, when it is stored.
    pub(crate) fn graph_as_of(&self, request_id: &str) -> Option<SessionGraph> {
        let end = self.records[*self.by_request.get(request_id)?].1;
        let nodes = self.nodes[..end].to_vec();
        let leaf_node_id = nodes.last().map(|n| n.node_id.clone());
        Some(SessionGraph { nodes, leaf_node_id })
    }

    pub(crate) fn graph(&self) -> SessionGraph {
        SessionGraph { nodes: self.nodes.clone(), leaf_node_id: self.leaf.clone() }
    }
}

/// The bounded set of cached session views, one async lock per session so one
/// worker's calls to a session queue up instead of racing each other. Bounded twice:
/// by sessions, and by the nodes all views hold together (a few huge sessions must not
/// take the memory of thousands of small ones). When a bound is reached, the least
/// recently used views nobody holds are dropped, an eighth of the bound at a time, so
/// a cache that is full does not scan itself on every miss.
pub(crate) struct ViewCache {
    capacity: usize,
    node_budget: usize,
    inner: Mutex<Views>,
}

#[derive(Default)]
struct Views {
    by_token: HashMap<String, CachedView>,
    /// A counter of calls: each view remembers the one it was last used at.
    clock: u64,
    /// Views added since the nodes all views hold were last counted.
    added_since_count: usize,
    /// Calls that found their session's view cached.
    hits: u64,
    /// Calls that created their session's view.
    misses: u64,
}

struct CachedView {
    view: Arc<tokio::sync::Mutex<SessionView>>,
    used_at: u64,
}

/// The nodes of all views are counted once per this many added views (and whenever the
/// cache is full): counting locks every view.
const COUNT_NODES_EVERY: usize = 16;

impl ViewCache {
    pub(crate) fn new(capacity: usize, node_budget: usize) -> Self {
        Self { capacity: capacity.max(1), node_budget: node_budget.max(1), inner: Mutex::default() }
    }

    /// The view of session token `token`, created empty when absent.
    pub(crate) fn get(&self, token: &str) -> Arc<tokio::sync::Mutex<SessionView>> {
        let mut views = crate::lock(&self.inner);
        views.clock += 1;
        let now = views.clock;
        if let Some(cached) = views.by_token.get_mut(token) {
            cached.used_at = now;
            let view = Arc::clone(&cached.view);
            views.hits += 1;
            return view;
        }
        views.misses += 1;
        views.added_since_count += 1;
        let full = views.by_token.len() >= self.capacity;
        if full || views.added_since_count >= COUNT_NODES_EVERY {
            views.added_since_count = 0;
            let nodes: usize = views.by_token.values().map(CachedView::held_nodes).sum();
            if full || nodes > self.node_budget {
                self.drop_least_recently_used(&mut views.by_token, nodes);
            }
        }
        let view = Arc::new(tokio::sync::Mutex::new(SessionView::default()));
        views.by_token.insert(token.to_owned(), CachedView { view: Arc::clone(&view), used_at: now });
        view
    }

    /// Drops idle views, least recently used first, until both bounds have an eighth of
    /// room (or no idle view is left).
    fn drop_least_recently_used(&self, by_token: &mut HashMap<String, CachedView>, mut nodes: usize) {
        let (count_goal, nodes_goal) = (self.capacity - self.capacity / 8 - 1, self.node_budget - self.node_budget / 8);
        let mut idle: Vec<(u64, &String)> = by_token
            .iter()
            .filter(|(_, cached)| Arc::strong_count(&cached.view) == 1)
            .map(|(token, cached)| (cached.used_at, token))
            .collect();
        idle.sort_unstable();
        let mut count = by_token.len();
        let mut dropped = Vec::new();
        for (_, token) in idle {
            if count <= count_goal && nodes <= nodes_goal {
                break;
            }
            nodes = nodes.saturating_sub(by_token[token].held_nodes());
            count -= 1;
            dropped.push(token.clone());
        }
        for token in dropped {
            by_token.remove(&token);
        }
    }

    /// Views cached now, and the calls that found (hits) or created (misses) theirs.
    pub(crate) fn counts(&self) -> (usize, u64, u64) {
        let views = crate::lock(&self.inner);
        (views.by_token.len(), views.hits, views.misses)
    }
}

impl CachedView {
    /// The nodes the view holds (none counted for a view in use: it is never dropped).
    fn held_nodes(&self) -> usize {
        self.view.try_lock().map_or(0, |view| view.nodes.len())
    }
}

#[cfg(test)]
mod tests {
    use sessionbus_api::{SessionAppendNode, SessionNode};

    use super::*;

    fn node(id: &str, parent: Option<&str>) -> SessionNode {
        SessionNode::from_append(SessionAppendNode::message("User", id), id.into(), parent.map(Into::into), "t".into())
    }

    fn record(request: &str, nodes: Vec<SessionNode>, replace: bool) -> GraphRecord {
        let leaf = nodes.last().map(|n| n.node_id.clone());
        GraphRecord { request_id: request.into(), turn_id: None, nodes, leaf, digest: None, replace }
    }

    fn filled(cache: &ViewCache, token: &str, nodes: usize) {
        let view = cache.get(token);
        let mut view = view.try_lock().expect("idle");
        view.nodes = (0..nodes).map(|i| node(&format!("{token}-{i}"), None)).collect();
    }

    #[test]
    fn a_full_cache_drops_the_least_recently_used_idle_views_never_a_held_one() {
        let cache = ViewCache::new(16, 1_000_000);
        let held = cache.get("s0");
        for n in 1..16 {
            filled(&cache, &format!("s{n}"), 1);
        }
        // s1 and s2 are used again: the oldest idle views are now s3, s4, ...
        cache.get("s1");
        cache.get("s2");
        filled(&cache, "new", 1);
        let cached = cache.counts().0;
        assert!(cached <= 16 - 16 / 8, "an eighth of room is made at once: {cached}");
        let kept = |token: &str| crate::lock(&cache.inner).by_token.contains_key(token);
        assert!(kept("s0") && Arc::strong_count(&held) == 2, "a held view is never dropped");
        assert!(kept("s1") && kept("s2") && kept("new") && kept("s15"), "recently used views stay");
        assert!(!kept("s3") && !kept("s4"), "the least recently used go first");
    }

    #[test]
    fn views_holding_too_many_nodes_are_dropped_oldest_first() {
        let cache = ViewCache::new(1_000, 800);
        for n in 0..(2 * COUNT_NODES_EVERY) {
            filled(&cache, &format!("s{n}"), 100);
        }
        let nodes: usize = crate::lock(&cache.inner).by_token.values().map(CachedView::held_nodes).sum();
        // Counted every COUNT_NODES_EVERY added views: over the budget by at most that many views.
        assert!(nodes <= 800 + COUNT_NODES_EVERY * 100, "{nodes} nodes cached");
        let kept = |token: &str| crate::lock(&cache.inner).by_token.contains_key(token);
        assert!(!kept("s0") && kept(&format!("s{}", 2 * COUNT_NODES_EVERY - 1)));
    }

    #[test]
    fn a_replace_record_drops_the_graph_before_it() {
        let mut view = SessionView::default();
        view.apply_graph(1, record("a", vec![node("n1", None), node("n2", Some("n1"))], false));
        view.apply_graph(2, record("b", vec![node("m1", None)], true));
        view.apply_graph(3, record("c", vec![node("m2", Some("m1"))], false));
        let ids: Vec<&str> = view.nodes.iter().map(|n| n.node_id.as_str()).collect();
        assert_eq!(ids, ["m1", "m2"]);
        assert_eq!(view.leaf.as_deref(), Some("m2"));
        assert!(!view.contains_node("n1") && view.is_on_active_path("m1") && view.is_on_active_path("m2"));
        assert_eq!(view.result_of("a"), None);
        assert_eq!(view.result_of("c"), Some((vec!["m2".to_owned()], "m2".to_owned())));
        assert_eq!(view.graph_as_of("b").map(|g| g.nodes.len()), Some(1));
    }
}
