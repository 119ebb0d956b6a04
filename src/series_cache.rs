//! The in-memory map from label set to series id, shared by all writers of one instance.
//!
//! Keys are 128-bit hashes of the canonical label set, so an entry costs tens of bytes instead
//! of the label text: 64 bits of SipHash under a per-process random key (a sender cannot aim
//! collisions at it without the key) and 64 bits of a cheap multiply-rotate hash (more bits
//! against chance collisions, for a fraction of a second SipHash pass). Ids never change once
//! assigned; an entry goes stale only when its series is removed (retention), and the cache
//! then moves to the removal's generation, evicting it (`advance`). Past `max_entries` the
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
    ids: RwLock<Cached>,
}

/// The ids, and the series generation (`promgres.series_generation`) they are all valid in.
/// Both change under one lock: an id resolved under an older generation is never added, and
/// moving to a newer one evicts what was removed in between, so every cached id is valid in
/// the cache's generation.
struct Cached {
    ids: HashMap<SeriesKey, i64>,
    /// -1 before the first reading.
    generation: i64,
}

impl SeriesCache {
    pub fn new(max_entries: usize) -> Self {
        let keyed = RandomState::new();
        let seed = keyed.hash_one(0x7072_6f6d_6772_6573u64);
        SeriesCache {
            keyed,
            seed,
            max_entries,
            ids: RwLock::new(Cached {
                ids: HashMap::new(),
                generation: -1,
            }),
        }
    }

    /// The generation the cached ids are valid in; read it before resolving ids.
    pub fn generation(&self) -> i64 {
        self.ids
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .generation
    }

    /// Moves the cache from generation `from` to `to`, forgetting `removed` (the ids removed
    /// in between), or every id when the removals are not known. Returns false, changing
    /// nothing, when the cache is no longer at `from` (another writer moved it).
    pub fn advance(&self, from: i64, to: i64, removed: Option<&[i64]>) -> bool {
        let mut cached = self.ids.write().unwrap_or_else(|p| p.into_inner());
        if cached.generation != from {
            return false;
        }
        match removed {
            Some(removed) if from >= 0 => {
                let removed: std::collections::HashSet<i64> = removed.iter().copied().collect();
                cached.ids.retain(|_, id| !removed.contains(id));
            }
            _ => cached.ids = HashMap::new(),
        }
        cached.generation = to;
        true
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
        let cached = self.ids.read().unwrap_or_else(|p| p.into_inner());
        keys.iter().map(|k| cached.ids.get(k).copied()).collect()
    }

    /// Adds entries resolved under `generation`, unless the cache has moved past it (they
    /// may name series removed since). Returns true when the cache was full and started over.
    pub fn insert_many(&self, entries: &[(SeriesKey, i64)], generation: i64) -> bool {
        let mut cached = self.ids.write().unwrap_or_else(|p| p.into_inner());
        if cached.generation != generation {
            return false;
        }
        let reset = cached.ids.len() + entries.len() > self.max_entries;
        if reset {
            cached.ids = HashMap::new();
        }
        cached.ids.extend(entries.iter().copied());
        reset
    }

    /// Bytes the map itself holds: each slot is a key, an id and a control byte.
    pub fn heap_bytes(&self) -> usize {
        let cached = self.ids.read().unwrap_or_else(|p| p.into_inner());
        cached.ids.capacity() * (std::mem::size_of::<(SeriesKey, i64)>() + 1)
    }

    pub fn len(&self) -> usize {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).ids.len()
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
        assert!(cache.advance(-1, 0, None));
        let (a, b, c) = (
            cache.key(&set("a")),
            cache.key(&set("b")),
            cache.key(&set("c")),
        );
        assert_ne!(a, b);
        assert_eq!(a, cache.key(&set("a")));
        assert!(!cache.insert_many(&[(a, 1), (b, 2)], 0));
        assert_eq!(cache.get_many(&[a, b, c]), vec![Some(1), Some(2), None]);
        assert!(cache.insert_many(&[(c, 3)], 0));
        assert_eq!(cache.get_many(&[a, c]), vec![None, Some(3)]);
        // Series 3 is removed in generation 1: the cache forgets it, and an id resolved under
        // generation 0 is not added any more.
        assert!(cache.advance(0, 1, Some(&[3])));
        assert_eq!(cache.get_many(&[c]), vec![None]);
        assert!(!cache.advance(0, 2, Some(&[])), "no longer at 0");
        cache.insert_many(&[(c, 3)], 0);
        assert_eq!(cache.get_many(&[c]), vec![None]);
    }
}
