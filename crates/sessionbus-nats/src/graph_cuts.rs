//! The graphs a worker cut into pages: the pages after the first are sliced from the
//! graph the first page was cut from, instead of re-reading a whole snapshot per page.
//!
//! Never stale: a session graph's nodes are append-only, so the first `as_of` nodes of
//! any later read are the same nodes. A cut answers a page only when it holds at least
//! `as_of` nodes; a page without `as_of` (an older client) always reads the host.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessionbus_api::SessionNode;

/// How many cut graphs a worker keeps.
const CAPACITY: usize = 16;
/// How long a cut graph is kept after it was last used (a client pages right away).
const KEEP_FOR: Duration = Duration::from_secs(30);

/// A bounded, short-lived set of cut graphs, by session.
#[derive(Default)]
pub(crate) struct GraphCuts {
    cuts: Mutex<VecDeque<Cut>>,
}

struct Cut {
    session_id: String,
    nodes: Arc<Vec<SessionNode>>,
    used: Instant,
}

impl GraphCuts {
    /// Keeps `nodes`, the whole graph of `session_id` whose first page was just cut.
    pub(crate) fn keep(&self, session_id: &str, nodes: Arc<Vec<SessionNode>>) {
        let mut cuts = crate::lock(&self.cuts);
        let now = Instant::now();
        cuts.retain(|cut| cut.session_id != session_id && now.duration_since(cut.used) < KEEP_FOR);
        if cuts.len() >= CAPACITY {
            cuts.pop_front();
        }
        cuts.push_back(Cut { session_id: session_id.to_owned(), nodes, used: now });
    }

    /// A kept graph of `session_id` holding at least `as_of` nodes.
    pub(crate) fn get(&self, session_id: &str, as_of: u64) -> Option<Arc<Vec<SessionNode>>> {
        let mut cuts = crate::lock(&self.cuts);
        let now = Instant::now();
        let cut = cuts.iter_mut().find(|cut| {
            cut.session_id == session_id && cut.nodes.len() as u64 >= as_of && now.duration_since(cut.used) < KEEP_FOR
        })?;
        cut.used = now;
        Some(Arc::clone(&cut.nodes))
    }
}

#[cfg(test)]
mod tests {
    use sessionbus_api::{SessionAppendNode, SessionNode};

    use super::*;

    fn nodes(count: usize) -> Arc<Vec<SessionNode>> {
        let node = |i: usize| {
            SessionNode::from_append(SessionAppendNode::message("User", "x"), format!("n{i}"), None, String::new())
        };
        Arc::new((0..count).map(node).collect())
    }

    #[test]
    fn a_cut_answers_only_pages_it_holds() {
        let cuts = GraphCuts::default();
        cuts.keep("s", nodes(5));
        assert_eq!(cuts.get("s", 5).map(|n| n.len()), Some(5));
        assert_eq!(cuts.get("s", 3).map(|n| n.len()), Some(5), "a longer graph holds an earlier cut");
        assert!(cuts.get("s", 6).is_none(), "a cut taken later than this graph");
        assert!(cuts.get("other", 1).is_none());
    }

    #[test]
    fn cuts_are_bounded_and_the_newest_wins() {
        let cuts = GraphCuts::default();
        for i in 0..CAPACITY + 4 {
            cuts.keep(&format!("s{i}"), nodes(1));
        }
        assert!(cuts.get("s0", 1).is_none(), "the oldest went");
        assert!(cuts.get(&format!("s{}", CAPACITY + 3), 1).is_some());
        cuts.keep("s0", nodes(1));
        cuts.keep("s0", nodes(2));
        assert_eq!(cuts.get("s0", 1).map(|n| n.len()), Some(2), "one cut per session, the newest");
        assert!(crate::lock(&cuts.cuts).len() <= CAPACITY);
    }
}
