//! One shard of a sharded index ([`super::sharded`]): a map kept as a sorted run of its
//! entries, plus a small table of the changes not yet merged into the run.
//!
//! ```text
//!   run     (k₁,v₁) (k₂,v₂) (k₃,v₃) … (kₙ,vₙ)   sorted by spread(k): entries side by side
//!                      ▲ a lookup starts where spread(k) says it should be (the spreads are
//!                      │ even), and gallops to it: a few probes near each other
//!   recent  k → Some(v)   a key not in the run      merged into the run once it holds a
//!           k → None      a run key since removed   32nd as many entries as the run
//! ```
//!
//! Why not a hash map: a hash table is at most 7/8 full and grows by doubling, so its slots
//! are ~65% used on average, and the shards of an index fill at the same pace (their keys are
//! evenly spread), so they all double at about the same time. The request index held ~350 MiB
//! at 10M events that way, for 18-byte entries (~172 MiB of them). A run holds its entries at
//! their size; the table of recent changes, which keeps its capacity between merges, adds ~1
//! byte an entry.
//!
//! A key's *spread* (see [`Spread`]) is a 64-bit hash whose top bits name its shard and whose
//! other bits are evenly spread: the run is sorted by it, so a key's place in the run is
//! about `spread's lower bits × len`. Ties (two request digests sharing 64 bits) are ordered by
//! the key itself, so the order is total and every lookup is exact.
//!
//! Serialized as one byte string: its entries in run order, side by side, each key and value in
//! its fixed width (see [`FixedWidth`]); entries read in any other order are sorted once when
//! read. Pure data: no I/O.

use std::hash::Hash;

// foldhash, not SipHash: shards are probed several times per event on the writer's hot path,
// and SipHash was 5% of a batch load's profile. foldhash is seeded per process.
use foldhash::HashMap;
use serde::de::Visitor;
use serde::{Deserialize, Serialize};

/// A key with an evenly spread 64-bit hash.
pub(crate) trait Spread: Copy + Ord + Hash {
    /// Evenly spread over `u64`; its top bits choose the key's shard.
    fn spread(&self) -> u64;
}

/// A key or a value as a checkpoint holds it: in exactly `WIDTH` bytes, so that a shard is
/// written as one byte string of its entries side by side and read back by slicing it.
///
/// As a postcard map, a shard was read an entry at a time and a request key a byte at a time
/// (twelve calls into the reader, then a varint): the request index's 10M entries were ~28% of
/// a restart's decoding at the scale run with request_ids, the person index's ~5%.
pub(crate) trait FixedWidth: Copy {
    /// Never zero.
    const WIDTH: usize;
    /// Appends exactly `WIDTH` bytes.
    fn put(&self, out: &mut Vec<u8>);
    /// Reads it back from exactly `WIDTH` bytes (any such bytes are one: a checkpoint's digest
    /// is checked before it is decoded, and a key that is out of place is refused anyway).
    fn take(bytes: &[u8]) -> Self;
}

macro_rules! fixed_width_integer {
    ($($t:ty),*) => {$(
        impl FixedWidth for $t {
            const WIDTH: usize = std::mem::size_of::<$t>();
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
            fn take(bytes: &[u8]) -> Self {
                Self::from_be_bytes(bytes.try_into().expect("`take` is given exactly `WIDTH` bytes"))
            }
        }
    )*};
}

fixed_width_integer!(u16, u32, u64);

/// Entries as a shard is written: each key, then its value, side by side.
pub(crate) fn entry_bytes<K: FixedWidth, V: FixedWidth>(entries: &[(K, V)]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(entries.len() * (K::WIDTH + V::WIDTH));
    for (key, value) in entries {
        key.put(&mut bytes);
        value.put(&mut bytes);
    }
    bytes
}

/// A run is merged with the recent changes once they are a [`RECENT_SHARE`]th of it, or this
/// many: small shards would otherwise rebuild their run on nearly every insertion.
const MIN_RECENT: usize = 32;

/// How small a share of the run the recent changes may grow to before a merge. A merge copies
/// the run, so a write copies ~this many entries on average (~600 bytes for a request entry:
/// nothing beside the rest of an event); the recent table, which keeps its capacity, holds room
/// for up to twice this share. At an eighth, the recent tables held ~31 MiB more at 10M events
/// with request_ids (`benches/heap-split.sh`: 736 MiB live loaded against 705).
const RECENT_SHARE: usize = 32;

/// See the module documentation.
#[derive(Clone)]
pub(crate) struct Shard<K, V> {
    /// Sorted by `order`, no key twice.
    run: Box<[(K, V)]>,
    /// `Some`: a key that is not in the run. `None`: a key of the run that was removed.
    recent: HashMap<K, Option<V>>,
    len: usize,
}

impl<K, V> Default for Shard<K, V> {
    fn default() -> Self {
        Self {
            run: Box::default(),
            recent: HashMap::default(),
            len: 0,
        }
    }
}

/// The run's order: by spread, then by key.
pub(crate) fn order<K: Spread>(key: &K) -> (u64, K) {
    (key.spread(), *key)
}

/// Sorts entries as a run is.
fn sort_as_run<K: Spread, V>(entries: &mut [(K, V)]) {
    entries.sort_unstable_by_key(|(key, _)| order(key));
}

impl<K: Spread, V: Copy> Shard<K, V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, key: &K) -> Option<V> {
        match self.recent.get(key) {
            Some(change) => *change,
            None => self.find(key).ok().map(|at| self.run[at].1),
        }
    }

    /// Sets `key` to `value`, and returns what it held before: one search where a `get` and
    /// then an insert took two (a replay inserts a request entry for nearly every event).
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(change) = self.recent.get_mut(&key) {
            return match change {
                Some(held) => Some(std::mem::replace(held, value)),
                None => {
                    // A run key removed and now back: the run holds it again.
                    self.recent.remove(&key);
                    self.set_in_run(&key, value);
                    self.len += 1;
                    None
                }
            };
        }
        if let Ok(at) = self.find(&key) {
            return Some(std::mem::replace(&mut self.run[at].1, value));
        }
        self.recent.insert(key, Some(value));
        self.len += 1;
        if self.recent.len() >= MIN_RECENT.max(self.run.len() / RECENT_SHARE) {
            self.merge();
        }
        None
    }

    /// Sets each key of `batch` to its value: `batch` is sorted as a run is, with no key twice.
    /// The run is rebuilt once with the batch merged in, where inserting one entry at a time
    /// searched the run for each and rebuilt it every [`RECENT_SHARE`]th of its length.
    pub fn insert_sorted(&mut self, batch: &[(K, V)]) {
        if batch.is_empty() {
            return;
        }
        if !self.recent.is_empty() {
            self.merge();
        }
        let mut merged = Vec::with_capacity(self.run.len() + batch.len());
        let mut held = self.run.iter().copied().peekable();
        for &(key, value) in batch {
            while let Some(entry) = held.next_if(|(k, _)| order(k) < order(&key)) {
                merged.push(entry);
            }
            // The batch's value replaces the one the run holds for the key.
            held.next_if(|(k, _)| *k == key);
            merged.push((key, value));
        }
        merged.extend(held);
        self.len = merged.len();
        self.run = merged.into_boxed_slice();
    }

    /// Removes `key`, if it is there.
    pub fn remove(&mut self, key: &K) {
        match self.recent.get(key) {
            Some(Some(_)) => {
                self.recent.remove(key);
                self.len -= 1;
            }
            Some(None) => {}
            None => {
                if self.find(key).is_ok() {
                    self.recent.insert(*key, None);
                    self.len -= 1;
                }
            }
        }
    }

    /// Every entry, in no particular order.
    fn iter(&self) -> impl Iterator<Item = (K, V)> + '_ {
        let kept = self
            .run
            .iter()
            .filter(|(key, _)| !self.recent.contains_key(key))
            .copied();
        let added = self
            .recent
            .iter()
            .filter_map(|(key, change)| change.map(|value| (*key, value)));
        kept.chain(added)
    }

    /// Every entry, sorted as a run is (how a shard is written).
    pub fn sorted(&self) -> Vec<(K, V)> {
        self.sorted_with(&HashMap::default())
    }

    /// Every entry sorted as a run is, with `overrides` in place of what the shard holds for
    /// their keys (`None`: absent): how a checkpoint writes a shard as it was when it began.
    pub fn sorted_with(&self, overrides: &HashMap<K, Option<V>>) -> Vec<(K, V)> {
        self.sorted_with_where(overrides, None::<fn(&V) -> bool>).0
    }

    /// Of the entries [`Shard::sorted_with`] gives, those whose value `keep` holds (all of
    /// them without `keep`), and how many it gives in all: what a checkpoint writes of a shard
    /// (a delta, only the entries stamped after its base), and the count it checks against
    /// the index's length.
    ///
    /// The run is in order already; only the few other entries (recent changes, overrides)
    /// are sorted, and the two are merged, so a shard is written in one pass. An entry of the
    /// run that `keep` leaves out is only read: a delta on an index of 10M request entries,
    /// nearly all of them older than its base, had copied every one of them first (~180 MB)
    /// and looked each up in the shards' tables of changes: over a third of the delta's
    /// thread in a profile, and about half its CPU at 20M events (`cpu_ms` in the server's
    /// `delta written` lines).
    ///
    /// Without `keep` the result is sized once, and counted as it is.
    pub fn sorted_with_where(
        &self,
        overrides: &HashMap<K, Option<V>>,
        keep: Option<impl Fn(&V) -> bool>,
    ) -> (Vec<(K, V)>, usize) {
        let keep_all = keep.is_none();
        let keep = |value: &V| keep.as_ref().is_none_or(|keep| keep(value));
        let replaced = |key: &K| self.recent.contains_key(key) || overrides.contains_key(key);
        let recent = self
            .recent
            .iter()
            .filter(|(key, _)| !overrides.contains_key(key));
        let mut others_in_all = 0;
        let mut others: Vec<(K, V)> = recent
            .clone()
            .chain(overrides)
            .filter_map(|(key, change)| change.map(|value| (*key, value)))
            .inspect(|_| others_in_all += 1)
            .filter(|(_, value)| keep(value))
            .collect();
        sort_as_run(&mut others);
        // Kept all, the count is what is written. Otherwise the run's entries that the others
        // replace are every key of the recent table or the overrides that the run holds (a
        // recent `None` is one, by definition): a search each, which a merge of the recent
        // changes into the run (`sorted`, on the folder's path) does not pay for.
        let in_all = (!keep_all).then(|| {
            let replaced_in_run = recent
                .map(|(key, _)| key)
                .chain(overrides.keys())
                .filter(|key| self.find(key).is_ok())
                .count();
            self.run.len() - replaced_in_run + others_in_all
        });
        let mut kept = self
            .run
            .iter()
            .filter(|(key, value)| keep(value) && !replaced(key))
            .copied()
            .peekable();
        let mut others = others.into_iter().peekable();
        let mut entries =
            Vec::with_capacity(in_all.map_or(self.len + overrides.len(), |_| others.len()));
        loop {
            let next = match (kept.peek(), others.peek()) {
                (Some(a), Some(b)) if order(&a.0) < order(&b.0) => kept.next(),
                (_, Some(_)) => others.next(),
                (Some(_), None) => kept.next(),
                (None, None) => break,
            };
            entries.extend(next);
        }
        let in_all = in_all.unwrap_or(entries.len());
        (entries, in_all)
    }

    fn set_in_run(&mut self, key: &K, value: V) {
        let at = self
            .find(key)
            .expect("a removal is noted in `recent` only for a key of the run");
        self.run[at].1 = value;
    }

    /// Rebuilds the run with the recent changes in it.
    fn merge(&mut self) {
        self.run = self.sorted().into_boxed_slice();
        self.recent.clear();
    }

    /// Where `key` is in the run (`Ok`), or would go (`Err`).
    ///
    /// The run's spreads are even, so `key`'s place is about its spread's fraction of the
    /// shard's range times the run's length. From there the search gallops (1, 2, 4… entries)
    /// until it has the key between two probes, then bisects that stretch: a few probes, near
    /// each other, where a binary search of the whole run would take ~log₂ n scattered ones.
    /// A poor guess (uneven spreads) costs time, never a wrong answer.
    fn find(&self, key: &K) -> Result<usize, usize> {
        let run = &self.run;
        let n = run.len();
        let want = order(key);
        let below = |i: usize| order(&run[i].0) < want;
        let guess = guess(key.spread(), n);
        // The answer (the first entry not below the key) is in lo..=hi.
        let (mut lo, mut hi) = (0, n);
        if guess < n && below(guess) {
            lo = guess + 1;
            let mut step = 1;
            loop {
                let probe = lo + step - 1;
                if probe >= n {
                    break;
                }
                if below(probe) {
                    lo = probe + 1;
                    step *= 2;
                } else {
                    hi = probe;
                    break;
                }
            }
        } else {
            hi = guess.min(n);
            let mut step = 1;
            while hi > 0 {
                let probe = hi.saturating_sub(step);
                if below(probe) {
                    lo = probe + 1;
                    break;
                }
                hi = probe;
                step *= 2;
            }
        }
        let at = lo + run[lo..hi].partition_point(|(k, _)| order(k) < want);
        match run.get(at) {
            Some((k, _)) if k == key => Ok(at),
            _ => Err(at),
        }
    }
}

/// The place in a run of `n` entries where a key of this spread should be if the spreads are
/// even: the fraction of its shard's range below it (the bits under the shard's), times `n`.
fn guess(spread: u64, n: usize) -> usize {
    let within = spread << super::sharded::SHARD_BITS;
    // Below n: `within` is below 2⁶⁴.
    ((u128::from(within) * n as u128) >> 64) as usize
}

impl<K: Spread, V: Copy + PartialEq> PartialEq for Shard<K, V> {
    /// Holds the same entries (however they are laid out).
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self
                .iter()
                .all(|(key, value)| other.get(&key) == Some(value))
    }
}

impl<K: Spread, V: Copy + Eq> Eq for Shard<K, V> {}

impl<K: Spread + std::fmt::Debug, V: Copy + std::fmt::Debug> std::fmt::Debug for Shard<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.sorted()).finish()
    }
}

impl<K: Spread + FixedWidth, V: FixedWidth> Serialize for Shard<K, V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&entry_bytes(&self.sorted()))
    }
}

impl<'de, K: Spread + FixedWidth, V: FixedWidth> Deserialize<'de> for Shard<K, V> {
    /// Reads the entries straight into the run (sorting them if they come in another order),
    /// refusing a key that appears twice.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries<K, V>(std::marker::PhantomData<(K, V)>);
        impl<K: Spread + FixedWidth, V: FixedWidth> Visitor<'_> for Entries<K, V> {
            type Value = Shard<K, V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "entries of {} bytes each", K::WIDTH + V::WIDTH)
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
                let width = K::WIDTH + V::WIDTH;
                if !bytes.len().is_multiple_of(width) {
                    return Err(E::invalid_length(bytes.len(), &self));
                }
                let mut run: Vec<(K, V)> = bytes
                    .chunks_exact(width)
                    .map(|entry| {
                        let (key, value) = entry.split_at(K::WIDTH);
                        (K::take(key), V::take(value))
                    })
                    .collect();
                if !run.is_sorted_by(|a, b| order(&a.0) < order(&b.0)) {
                    sort_as_run(&mut run);
                    if run.windows(2).any(|pair| pair[0].0 == pair[1].0) {
                        return Err(E::custom("a key appears twice in an index shard"));
                    }
                }
                Ok(Shard {
                    len: run.len(),
                    run: run.into_boxed_slice(),
                    recent: HashMap::default(),
                })
            }
        }
        // A byte buffer, not borrowed bytes: a checkpoint is read through one reused buffer,
        // which postcard lends out only for owned reads (borrowed ones use it up).
        deserializer.deserialize_byte_buf(Entries(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A key whose spread is whatever the test says, so that the cases can be even, skewed, or
    /// all alike.
    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
    struct Key(u64, u16);

    impl Spread for Key {
        fn spread(&self) -> u64 {
            self.0
        }
    }

    impl FixedWidth for Key {
        const WIDTH: usize = 10;
        fn put(&self, out: &mut Vec<u8>) {
            self.0.put(out);
            self.1.put(out);
        }
        fn take(bytes: &[u8]) -> Self {
            let (spread, tie) = bytes.split_at(8);
            Key(u64::take(spread), u16::take(tie))
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(Key, u32),
        Remove(Key),
        /// Write the shard out and read it back.
        Reload,
    }

    /// Keys from a small pool (so that operations meet the same keys again), spread evenly,
    /// piled into one spread, or in a narrow band.
    fn key() -> impl Strategy<Value = Key> {
        let spreads = prop_oneof![
            any::<u64>(),
            Just(7u64 << 52),
            (0u64..40).prop_map(|n| n << 30),
        ];
        (spreads, 0u16..4).prop_map(|(spread, tie)| Key(spread, tie))
    }

    fn op(keys: Vec<Key>) -> impl Strategy<Value = Op> {
        let pick = proptest::sample::select(keys);
        prop_oneof![
            6 => (pick.clone(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => pick.prop_map(Op::Remove),
            1 => Just(Op::Reload),
        ]
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(key(), 1..300)
            .prop_flat_map(|keys| proptest::collection::vec(op(keys), 0..1_500))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// A `BTreeMap` is the oracle: after every operation the shard holds exactly its entries
        /// (every key of the pool looked up, the length, a write out and read back), and an
        /// insertion returns what the key held.
        #[test]
        fn a_shard_holds_what_a_map_would(
            ops in ops(),
            overrides in proptest::collection::vec((key(), proptest::option::of(any::<u32>())), 0..40),
            modulus in 1u32..4,
        ) {
            let mut shard = Shard::<Key, u32>::default();
            let mut oracle = BTreeMap::new();
            let mut seen = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        prop_assert_eq!(shard.insert(k, v), oracle.insert(k, v));
                        seen.push(k);
                    }
                    Op::Remove(k) => {
                        shard.remove(&k);
                        oracle.remove(&k);
                    }
                    Op::Reload => {
                        let bytes = postcard::to_stdvec(&shard).unwrap();
                        shard = postcard::from_bytes(&bytes).unwrap();
                    }
                }
                prop_assert_eq!(shard.len(), oracle.len());
            }
            for k in &seen {
                prop_assert_eq!(shard.get(k), oracle.get(k).copied());
            }
            let entries: Vec<(Key, u32)> = oracle.clone().into_iter().collect();
            let mut sorted = entries.clone();
            sort_as_run(&mut sorted);
            prop_assert_eq!(shard.sorted(), sorted);
            // As a checkpoint writes it: the map with the overrides in place (what each key
            // held when the checkpoint began), and of a delta only the entries `keep` holds,
            // with the count of all of them.
            let overrides: HashMap<Key, Option<u32>> = overrides.into_iter().collect();
            let mut then = oracle;
            for (k, v) in &overrides {
                match v {
                    Some(v) => then.insert(*k, *v),
                    None => then.remove(k),
                };
            }
            let mut as_began: Vec<(Key, u32)> = then.into_iter().collect();
            sort_as_run(&mut as_began);
            prop_assert_eq!(shard.sorted_with(&overrides), as_began.clone());
            let keep = |v: &u32| v.is_multiple_of(modulus);
            let in_all = as_began.len();
            as_began.retain(|(_, v)| keep(v));
            prop_assert_eq!(shard.sorted_with_where(&overrides, Some(keep)), (as_began, in_all));
        }
    }

    #[test]
    fn a_shard_read_in_any_order_is_sorted_and_a_repeated_key_is_refused() {
        let entries = [(Key(9, 0), 1u32), (Key(3, 0), 2), (Key(3, 1), 3)];
        let written = |entries: &[(Key, u32)]| {
            postcard::to_stdvec(serde_bytes::Bytes::new(&entry_bytes(entries))).unwrap()
        };
        let shard: Shard<Key, u32> = postcard::from_bytes(&written(&entries)).unwrap();
        assert_eq!(shard.get(&Key(3, 1)), Some(3));
        assert_eq!(shard.len(), 3);
        assert_eq!(
            postcard::to_stdvec(&shard).unwrap(),
            written(&[entries[1], entries[2], entries[0]])
        );
        let twice = written(&[entries[0], entries[1], entries[0]]);
        assert!(postcard::from_bytes::<Shard<Key, u32>>(&twice).is_err());
        // Bytes that are not whole entries are refused, not cut short.
        let mut torn = entry_bytes(&entries);
        torn.pop();
        let torn = postcard::to_stdvec(serde_bytes::Bytes::new(&torn)).unwrap();
        assert!(postcard::from_bytes::<Shard<Key, u32>>(&torn).is_err());
    }

    #[test]
    fn a_full_shard_keeps_its_entries_in_the_run_at_their_size() {
        // People, as the person index holds them: 16 bytes an entry.
        let mut shard = Shard::<u64, u32>::default();
        for n in 0..10_000u64 {
            shard.insert(61_060_219_800_101_000 + n * 7, n as u32);
        }
        // Every merge leaves a run of exactly its entries; at most a 32nd of them wait.
        assert!(shard.recent.len() <= MIN_RECENT.max(shard.run.len() / RECENT_SHARE));
        assert_eq!(shard.run.len() + shard.recent.len(), 10_000);
        // The recent table keeps its capacity between merges: with its buckets (a control byte
        // each, at most 7/8 used), the shard holds ~1 byte an entry beyond the entries' own 16.
        let buckets = (shard.recent.capacity() * 8 / 7).next_power_of_two();
        let table = buckets * (std::mem::size_of::<(u64, Option<u32>)>() + 1);
        let bytes = std::mem::size_of_val(&*shard.run) + table;
        assert!(
            bytes <= 10_000 * (16 + 2),
            "{bytes} bytes for 10,000 entries"
        );
    }
}
