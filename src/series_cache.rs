//! The in-memory map from label set to series id, shared by all writers of one instance.
//!
//! Keys are 128-bit hashes of the canonical label set under per-process random keys, so an
//! entry costs tens of bytes instead of the label text, and a sender cannot aim collisions
//! at it. Ids never change once assigned, so entries never go stale. Past `max_entries` the
//! cache starts over rather than grow without end as series churn: a full restart costs one
//! batched look-up per request until it is warm again, and needs no per-entry bookkeeping.

use crate::decode::LabelSet;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::RwLock;

pub type SeriesKey = u128;

pub struct SeriesCache {
    low: RandomState,
    high: RandomState,
    max_entries: usize,
    ids: RwLock<HashMap<SeriesKey, i64>>,
}

impl SeriesCache {
    pub fn new(max_entries: usize) -> Self {
        SeriesCache {
            low: RandomState::new(),
            high: RandomState::new(),
            max_entries,
            ids: RwLock::new(HashMap::new()),
        }
    }

    pub fn key(&self, labels: &LabelSet) -> SeriesKey {
        let half = |state: &RandomState| {
            let mut h = state.build_hasher();
            for l in labels.labels() {
                // str's Hash writes the bytes plus a 0xff terminator, which cannot occur in
                // UTF-8, so ("ab","c") and ("a","bc") hash differently.
                l.name.hash(&mut h);
                l.value.hash(&mut h);
            }
            h.finish()
        };
        (u128::from(half(&self.high)) << 64) | u128::from(half(&self.low))
    }

    /// Looks up many keys under one lock acquisition; `None` marks a miss.
    pub fn get_many(&self, keys: &[SeriesKey]) -> Vec<Option<i64>> {
        let ids = self.ids.read().unwrap_or_else(|p| p.into_inner());
        keys.iter().map(|k| ids.get(k).copied()).collect()
    }

    /// Adds entries; returns true when the cache was full and started over first.
    pub fn insert_many(&self, entries: &[(SeriesKey, i64)]) -> bool {
        let mut ids = self.ids.write().unwrap_or_else(|p| p.into_inner());
        let reset = ids.len() + entries.len() > self.max_entries;
        if reset {
            *ids = HashMap::new();
        }
        ids.extend(entries.iter().copied());
        reset
    }

    pub fn len(&self) -> usize {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Label;

    fn set(v: &str) -> LabelSet {
        crate::decode::LabelSet::from_sorted_for_tests(vec![Label {
            name: "__name__".into(),
            value: v.into(),
        }])
    }

    #[test]
    fn keys_differ_for_different_sets_and_cache_starts_over_when_full() {
        let cache = SeriesCache::new(2);
        let (a, b, c) = (
            cache.key(&set("a")),
            cache.key(&set("b")),
            cache.key(&set("c")),
        );
        assert_ne!(a, b);
        assert_eq!(a, cache.key(&set("a")));
        assert!(!cache.insert_many(&[(a, 1), (b, 2)]));
        assert_eq!(cache.get_many(&[a, b, c]), vec![Some(1), Some(2), None]);
        assert!(cache.insert_many(&[(c, 3)]));
        assert_eq!(cache.get_many(&[a, c]), vec![None, Some(3)]);
    }
}
