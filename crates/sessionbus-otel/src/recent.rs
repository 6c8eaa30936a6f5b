//! Bounded memory of recent keys (finished span ids, turn trace parents), oldest evicted first.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A map that holds at most `capacity` entries and evicts the oldest inserted first.
#[derive(Clone, Debug)]
pub(crate) struct BoundedMap<K, V> {
    capacity: usize,
    order: VecDeque<K>,
    entries: HashMap<K, V>,
}

impl<K: Clone + Eq + Hash, V> BoundedMap<K, V> {
    /// An empty map holding at most `capacity` entries (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), order: VecDeque::new(), entries: HashMap::new() }
    }

    /// Inserts or replaces; a new key may evict the oldest.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        if self.entries.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
            while self.order.len() > self.capacity {
                if let Some(oldest) = self.order.pop_front() {
                    self.entries.remove(&oldest);
                }
            }
        }
    }

    /// The value for `key`.
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key)
    }

    /// Whether `key` is held.
    pub(crate) fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Keys from oldest to newest.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.order.iter()
    }

    /// How many entries are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::BoundedMap;

    #[test]
    fn evicts_oldest_first() {
        let mut map = BoundedMap::new(2);
        map.insert(1, ());
        map.insert(2, ());
        map.insert(1, ());
        assert_eq!(map.len(), 2);
        map.insert(3, ());
        assert!(!map.contains(&1));
        assert!(map.contains(&2) && map.contains(&3));
        assert_eq!(map.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
    }
}
