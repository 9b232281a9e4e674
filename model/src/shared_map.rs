//! A hash map whose clones share their storage, for tables that change a
//! few entries at a time: the Snapshot's Service map, the planes' views.
//!
//! The entries live in a fixed number of shards, each an `Arc`ed std
//! `HashMap`. Cloning the map copies one pointer per shard; changing an
//! entry copies only its shard (`Arc::make_mut`), and not even that when
//! no older version still holds it. So a one-Service change in a
//! 10,000-Service map costs a shard of ~40 entries, and every other shard
//! stays shared with the previous Snapshot. Two versions of one map can be
//! compared shard by shard: shards that are the same pointer are skipped
//! ([`SharedMap::diff`]), which is how a plane finds what changed.
//!
//! Why this and not a persistent-map crate (im, rpds): lookups stay one
//! std `HashMap` probe plus a shard index (the DNS and L4 request paths do
//! them), the code is small and has no dependency, and a diff by shard is
//! what the followers need.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

/// Shards per map: one shard of a 250,000-name DNS table is ~60 entries,
/// so a change that touches a few dozen names copies a few thousand
/// entries, not the table. A new map's shards all point at one empty map
/// (copied on first write), so an empty map is one small allocation.
const SHARDS: usize = 4096;

pub struct SharedMap<K, V> {
    shards: Arc<Vec<Arc<HashMap<K, V>>>>,
    /// Picks the shard; shared by every clone so keys stay where they are
    /// (and so two versions of one map can be compared shard by shard).
    hasher: Arc<RandomState>,
    len: usize,
}

/// One difference between two versions of a map.
#[derive(Debug, PartialEq, Eq)]
pub enum Diff<'a, K, V> {
    Added(&'a K, &'a V),
    Removed(&'a K, &'a V),
    /// (key, old value, new value)
    Changed(&'a K, &'a V, &'a V),
}

impl<K, V> Clone for SharedMap<K, V> {
    fn clone(&self) -> Self {
        SharedMap {
            shards: self.shards.clone(),
            hasher: self.hasher.clone(),
            len: self.len,
        }
    }
}

impl<K, V> Default for SharedMap<K, V> {
    fn default() -> Self {
        SharedMap {
            shards: {
                // One empty map behind every shard on purpose: each shard
                // gets its own copy when first written (make_mut).
                let empty = Arc::new(HashMap::new());
                Arc::new(vec![empty; SHARDS])
            },
            hasher: Arc::new(RandomState::new()),
            len: 0,
        }
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for SharedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K, V> SharedMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// In no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Whether both are the same version (nothing to diff).
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shards, &other.shards)
    }
}

impl<K: Hash + Eq, V> SharedMap<K, V> {
    fn shard_of<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard_of(key)].get(key)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    /// What changed from `old` to `self`, comparing values with `same`.
    /// Meant for two versions of one map (a clone, then edits): shards they
    /// still share are skipped without looking at their entries. For maps
    /// that are not related, every entry is compared.
    pub fn diff<'a>(&'a self, old: &'a Self, same: impl Fn(&V, &V) -> bool) -> Vec<Diff<'a, K, V>> {
        let mut out = Vec::new();
        if self.ptr_eq(old) {
            return out;
        }
        if self.hasher_eq(old) {
            for (new_shard, old_shard) in self.shards.iter().zip(old.shards.iter()) {
                if !Arc::ptr_eq(new_shard, old_shard) {
                    diff_maps(new_shard, old_shard, &same, &mut out);
                }
            }
        } else {
            for (k, v) in self.iter() {
                match old.get(k) {
                    None => out.push(Diff::Added(k, v)),
                    Some(o) if !same(o, v) => out.push(Diff::Changed(k, o, v)),
                    Some(_) => {}
                }
            }
            for (k, v) in old.iter() {
                if !self.contains_key(k) {
                    out.push(Diff::Removed(k, v));
                }
            }
        }
        out
    }

    /// Same shard for every key: true for versions of one map.
    fn hasher_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.hasher, &other.hasher)
    }
}

fn diff_maps<'a, K: Hash + Eq, V>(
    new: &'a HashMap<K, V>,
    old: &'a HashMap<K, V>,
    same: &impl Fn(&V, &V) -> bool,
    out: &mut Vec<Diff<'a, K, V>>,
) {
    for (k, v) in new {
        match old.get(k) {
            None => out.push(Diff::Added(k, v)),
            Some(o) if !same(o, v) => out.push(Diff::Changed(k, o, v)),
            Some(_) => {}
        }
    }
    for (k, v) in old {
        if !new.contains_key(k) {
            out.push(Diff::Removed(k, v));
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> SharedMap<K, V> {
    fn shard_mut(&mut self, i: usize) -> &mut HashMap<K, V> {
        Arc::make_mut(&mut Arc::make_mut(&mut self.shards)[i])
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let i = self.shard_of(&key);
        let old = self.shard_mut(i).insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = self.shard_of(key);
        // Do not copy a shard that does not hold the key.
        self.shards[i].get(key)?;
        let old = self.shard_mut(i).remove(key);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }
}

impl<K: Hash + Eq + Clone, V: Clone> FromIterator<(K, V)> for SharedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = SharedMap::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

impl<K: Hash + Eq, V: PartialEq> PartialEq for SharedMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove_len() {
        let mut m = SharedMap::new();
        assert!(m.is_empty());
        for i in 0..1000 {
            assert_eq!(m.insert(i, i * 2), None);
        }
        assert_eq!(m.insert(7, 0), Some(14));
        assert_eq!(m.len(), 1000);
        assert_eq!(m.get(&7), Some(&0));
        assert_eq!(m.remove(&7), Some(0));
        assert_eq!(m.remove(&7), None);
        assert_eq!(m.len(), 999);
        assert_eq!(m.iter().count(), 999);
        assert!(!m.contains_key(&7) && m.contains_key(&8));
    }

    #[test]
    fn clones_share_all_but_the_changed_shard() {
        let a: SharedMap<u32, Arc<u32>> = (0..10_000).map(|i| (i, Arc::new(i))).collect();
        let mut b = a.clone();
        b.insert(5, Arc::new(50));
        let shared = a
            .shards
            .iter()
            .zip(b.shards.iter())
            .filter(|(x, y)| Arc::ptr_eq(x, y))
            .count();
        assert_eq!(shared, SHARDS - 1);
        // The old version is untouched.
        assert_eq!(**a.get(&5).unwrap(), 5);
        assert_eq!(**b.get(&5).unwrap(), 50);
    }

    #[test]
    fn diff_finds_added_removed_changed() {
        let a: SharedMap<u32, Arc<u32>> = (0..1000).map(|i| (i, Arc::new(i))).collect();
        let mut b = a.clone();
        b.insert(1000, Arc::new(1000));
        b.remove(&3);
        b.insert(4, Arc::new(40));
        // Same value, new Arc: changed for a pointer comparison only.
        b.insert(5, Arc::new(5));
        let mut d: Vec<String> = b
            .diff(&a, Arc::ptr_eq)
            .into_iter()
            .map(|d| format!("{d:?}"))
            .collect();
        d.sort();
        assert_eq!(
            d,
            [
                "Added(1000, 1000)",
                "Changed(4, 4, 40)",
                "Changed(5, 5, 5)",
                "Removed(3, 3)"
            ]
        );
        assert_eq!(b.diff(&a, |x, y| x == y).len(), 3);
        assert!(b.diff(&b.clone(), |_, _| false).is_empty());
        // Unrelated maps are compared entry by entry.
        let c: SharedMap<u32, Arc<u32>> = b.iter().map(|(k, v)| (*k, v.clone())).collect();
        assert!(c.diff(&b, |x, y| x == y).is_empty());
        assert_eq!(c.diff(&a, |x, y| x == y).len(), 3);
    }
}
