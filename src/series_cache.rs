//! The in-memory map from label set to series id, shared by all writers of one instance.
//!
//! Keys are 128-bit hashes of the canonical label set under per-process random keys, so an
//! entry costs tens of bytes instead of the label text, and a sender cannot aim collisions
//! at it. Ids never change once assigned, so entries never go stale.

use crate::decode::LabelSet;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::RwLock;

pub type SeriesKey = u128;

pub struct SeriesCache {
    low: RandomState,
    high: RandomState,
    ids: RwLock<HashMap<SeriesKey, i64>>,
}

impl Default for SeriesCache {
    fn default() -> Self {
        SeriesCache {
            low: RandomState::new(),
            high: RandomState::new(),
            ids: RwLock::new(HashMap::new()),
        }
    }
}

impl SeriesCache {
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

    pub fn get(&self, key: SeriesKey) -> Option<i64> {
        let ids = self.ids.read().unwrap_or_else(|p| p.into_inner());
        ids.get(&key).copied()
    }

    /// Looks up many keys under one lock acquisition; `None` marks a miss.
    pub fn get_many(&self, keys: &[SeriesKey]) -> Vec<Option<i64>> {
        let ids = self.ids.read().unwrap_or_else(|p| p.into_inner());
        keys.iter().map(|k| ids.get(k).copied()).collect()
    }

    pub fn insert_many(&self, entries: impl IntoIterator<Item = (SeriesKey, i64)>) {
        let mut ids = self.ids.write().unwrap_or_else(|p| p.into_inner());
        ids.extend(entries);
    }

    pub fn len(&self) -> usize {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
