//! The in-memory map from label set to series id, shared by all writers of one instance.
//!
//! Keys are 128-bit hashes of the canonical label set, so an entry costs tens of bytes instead
//! of the label text: 64 bits of SipHash under a per-process random key (a sender cannot aim
//! collisions at it without the key) and 64 bits of a cheap multiply-rotate hash (more bits
//! against chance collisions, for a fraction of a second SipHash pass). Ids never change once
//! assigned; an entry goes stale only when its series is removed (retention), and the writers
//! then evict it (`evict_ids`). Past `max_entries` the
//! cache starts over rather than grow without end as series churn: a full restart costs one
//! batched look-up per request until it is warm again, and needs no per-entry bookkeeping.

use crate::decode::LabelSet;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::RwLock;

pub type SeriesKey = u128;

pub struct SeriesCache {
    keyed: RandomState,
    seed: u64,
    max_entries: usize,
    ids: RwLock<HashMap<SeriesKey, i64>>,
}

impl SeriesCache {
    pub fn new(max_entries: usize) -> Self {
        let keyed = RandomState::new();
        let seed = keyed.hash_one(0x7072_6f6d_6772_6573u64);
        SeriesCache {
            keyed,
            seed,
            max_entries,
            ids: RwLock::new(HashMap::new()),
        }
    }

    pub fn key(&self, labels: &LabelSet) -> SeriesKey {
        let mut keyed = self.keyed.build_hasher();
        let mut cheap = self.seed;
        for (name, value) in labels.labels() {
            // str's Hash writes the bytes plus a 0xff terminator, which cannot occur in
            // UTF-8, so ("ab","c") and ("a","bc") hash differently; `fold` mixes in lengths.
            name.hash(&mut keyed);
            value.hash(&mut keyed);
            cheap = fold(fold(cheap, name.as_bytes()), value.as_bytes());
        }
        (u128::from(keyed.finish()) << 64) | u128::from(cheap)
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

    /// Bytes the map itself holds: each slot is a key, an id and a control byte.
    pub fn heap_bytes(&self) -> usize {
        let ids = self.ids.read().unwrap_or_else(|p| p.into_inner());
        ids.capacity() * (std::mem::size_of::<(SeriesKey, i64)>() + 1)
    }

    /// Forgets the given ids (those series were removed in the database).
    pub fn evict_ids(&self, removed: &[i64]) {
        if removed.is_empty() {
            return;
        }
        let removed: std::collections::HashSet<i64> = removed.iter().copied().collect();
        self.ids
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, id| !removed.contains(id));
    }

    /// Forgets every id.
    pub fn clear(&self) {
        *self.ids.write().unwrap_or_else(|p| p.into_inner()) = HashMap::new();
    }

    pub fn len(&self) -> usize {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Multiply-rotate mixing of `bytes` (and their length) into `h`.
fn fold(mut h: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    let mut tail = 0u64;
    for (i, b) in chunks.remainder().iter().enumerate() {
        tail |= u64::from(*b) << (8 * i);
    }
    (h ^ tail ^ ((bytes.len() as u64) << 56))
        .wrapping_mul(K)
        .rotate_left(29)
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
