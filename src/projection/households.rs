//! The roll's households: their entries side by side, by household number, and a hash index
//! from household id to number.
//!
//! ```text
//!   index: hash(id) → number            entries, by number
//!   ┌────────────┐                      ┌──────────────────────────────────────────────┐
//!   │ h("61…01") ┼─────────────────────▶│ 0  id, state, seqs, regions, timeline        │
//!   │ h("61…07") ┼──────┐               │ 1  …                                         │
//!   │     …      │      └──────────────▶│ 2  …                                         │
//!   └────────────┘                      └──────────────────────────────────────────────┘
//!   4 bytes a slot                      one entry a household, no empty slots
//! ```
//!
//! Why not a `HashMap<HouseholdId, HouseholdEntry>`: a hash table keeps its entries in its own
//! slots, is at most 7/8 full and grows by doubling, so at a million households about half of
//! its ~200 MB of ~100-byte slots held nothing, and each growth briefly held the old table and
//! the new one. Here a slot is a 4-byte number; the entries sit densely in fixed-size chunks
//! (one vector would also double, and copy ~100 MB at a time) that the region indexes and the
//! person index address by that same number. A household's number is the order in which it
//! entered the roll, so a rebuild from the log numbers every household as the live roll did.
//!
//! Only the entries are written to a checkpoint; the index is rebuilt when one is read
//! (hashing each id once).
//!
//! A checkpoint reads the entries a piece at a time while writes go on between pieces (see
//! [`Capture`]): a write to an entry the checkpoint has not reached yet first saves the entry as
//! it was, and the checkpoint writes that saved copy instead, so it still shows every household
//! as it stood when it began. Pure data: no I/O (a checkpoint's entries are encoded into the
//! caller's buffer).

use std::hash::BuildHasher;

use hashbrown::HashTable;
use serde::{Deserialize, Serialize};

use super::capture::{under_way, Piecewise, Progress, Slot};
use super::HouseholdEntry;
use crate::domain::HouseholdId;
use crate::error::Error;

/// Every household of the roll, by number and by id.
#[derive(Clone, Default)]
pub(crate) struct Households {
    entries: Chunked<HouseholdEntry>,
    index: HashTable<u32>,
    /// foldhash, seeded per process: the index is never written anywhere.
    hasher: foldhash::fast::RandomState,
    /// The checkpoint reading the entries, if one is.
    capture: Slot<Capture>,
}

/// A checkpoint of the households under way: entries `written..len` are still to be written,
/// as they were when it began.
///
/// ```text
///   numbers   0 ……… written ……………… len ……… (households that joined since: not in it)
///             └ written ┘└ to write: a write here first saves the entry in `before` ┘
/// ```
#[derive(Debug)]
struct Capture {
    /// `len`: the households on the roll when the checkpoint began; `written`: the entries
    /// before this number are written.
    progress: Progress,
    /// Entries a write changed before the checkpoint reached them, as they were at its start.
    before: foldhash::HashMap<u32, HouseholdEntry>,
}

impl Households {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The number of household `id`, if it is on the roll.
    pub fn number(&self, id: &HouseholdId) -> Option<u32> {
        let entries = &self.entries;
        self.index
            .find(self.hasher.hash_one(id), |n| entries.id_is(*n, id))
            .copied()
    }

    pub fn get(&self, id: &HouseholdId) -> Option<&HouseholdEntry> {
        self.number(id).and_then(|n| self.by_number(n))
    }

    pub fn by_number(&self, number: u32) -> Option<&HouseholdEntry> {
        self.entries.get(number as usize)
    }

    /// The entry of household `number`, to change it. If a checkpoint is under way and has not
    /// written this entry yet, the entry is saved as it is first (once) for the checkpoint.
    pub fn by_number_mut(&mut self, number: u32) -> Option<&mut HouseholdEntry> {
        let entry = self.entries.get_mut(number as usize)?;
        if let Some(capture) = self.capture.get_mut() {
            let Progress { written, len, .. } = capture.progress;
            if (written..len).contains(&(number as usize)) {
                capture
                    .before
                    .entry(number)
                    .or_insert_with(|| entry.clone());
            }
        }
        Some(entry)
    }
}

impl Piecewise for Households {
    /// Starts a checkpoint of the households as they are now; [`Households::write_captured`]
    /// writes them. Refused while another checkpoint is under way: there is one capture.
    fn begin_capture(&self) -> Result<(), Error> {
        self.capture.begin(Capture {
            progress: Progress::of(self.entries.len()),
            before: foldhash::HashMap::default(),
        })
    }

    /// Encodes up to `step` more entries of the checkpoint under way onto `out` (the count
    /// first), each as it was when the checkpoint began, and says whether all are written now;
    /// the capture ends when they are. Into memory, for the caller to write out once it has
    /// released the roll: streamed to the file under the lock (hashing, the file's writes, and
    /// a call through `dyn Write` for each of an entry's many small fields), 16,384 households
    /// took ~45 ms under load; encoded into memory, ~13 ms.
    fn write_captured(&self, step: usize, out: &mut Vec<u8>) -> Result<bool, Error> {
        let mut guard = self.capture.lock();
        let capture = under_way(&mut guard)?;
        capture.progress.lead(out)?;
        let Progress { written, len, .. } = capture.progress;
        let end = len.min(written.saturating_add(step.max(1)));
        for number in written..end {
            let saved = u32::try_from(number)
                .ok()
                .and_then(|n| capture.before.remove(&n));
            let entry = match &saved {
                Some(entry) => entry,
                None => self
                    .entries
                    .get(number)
                    .expect("households are only ever added, so every captured number is there"),
            };
            postcard::to_io(entry, &mut *out).map_err(super::checkpoint_failed)?;
        }
        capture.progress.written = end;
        let done = end == len;
        if done {
            *guard = None;
        }
        Ok(done)
    }

    /// Ends the checkpoint under way, if any (one abandoned on an error): writes stop saving
    /// entries for it.
    fn end_capture(&self) {
        self.capture.end();
    }
}

impl Households {
    /// The number the next household to join will take.
    pub fn next_number(&self) -> Result<u32, Error> {
        u32::try_from(self.entries.len())
            .map_err(|_| Error::Corrupt("more than 4 billion households".into()))
    }

    /// Adds a household not yet on the roll and returns its number.
    pub fn push(&mut self, entry: HouseholdEntry) -> Result<u32, Error> {
        let number = self.next_number()?;
        let hash = self.hasher.hash_one(&entry.id);
        self.entries.push(entry);
        let Self {
            entries,
            index,
            hasher,
            ..
        } = self;
        index.insert_unique(hash, number, |n| entries.hash_of(*n, hasher));
        Ok(number)
    }

    /// Rebuilds the index over entries read back, refusing a household that appears twice.
    fn indexed(entries: Chunked<HouseholdEntry>) -> Result<Self, Error> {
        let mut households = Self {
            index: HashTable::with_capacity(entries.len()),
            entries,
            ..Self::default()
        };
        let Self {
            entries,
            index,
            hasher,
            ..
        } = &mut households;
        for (number, entry) in entries.iter().enumerate() {
            let hash = hasher.hash_one(&entry.id);
            if index.find(hash, |n| entries.id_is(*n, &entry.id)).is_some() {
                return Err(Error::Corrupt(format!(
                    "household {} appears twice in the roll",
                    entry.id
                )));
            }
            let number = u32::try_from(number)
                .map_err(|_| Error::Corrupt("more than 4 billion households".into()))?;
            index.insert_unique(hash, number, |n| entries.hash_of(*n, hasher));
        }
        Ok(households)
    }
}

/// Two rolls hold the same households when their entries are the same, number for number.
impl PartialEq for Households {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for Households {}

impl std::fmt::Debug for Households {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entries.iter()).finish()
    }
}

impl Serialize for Households {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.entries.len()))?;
        for entry in self.entries.iter() {
            seq.serialize_element(entry)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Households {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = Chunked<HouseholdEntry>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence of households")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut entries = Chunked::default();
                while let Some(entry) = seq.next_element()? {
                    entries.push(entry);
                }
                Ok(entries)
            }
        }
        let entries = deserializer.deserialize_seq(Entries)?;
        Self::indexed(entries).map_err(serde::de::Error::custom)
    }
}

/// A vector grown a fixed-size chunk at a time: it never reallocates, so it never holds its
/// old and new buffers at once, and never more than one chunk stands empty.
#[derive(Clone, PartialEq, Eq)]
struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

/// Items per chunk: 16,384 households are ~2 MB.
const CHUNK: usize = 1 << 14;

impl<T> Chunked<T> {
    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, index: usize) -> Option<&T> {
        self.chunks.get(index / CHUNK)?.get(index % CHUNK)
    }

    fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.chunks.get_mut(index / CHUNK)?.get_mut(index % CHUNK)
    }

    fn push(&mut self, item: T) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(item),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(item);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

impl Chunked<HouseholdEntry> {
    /// Whether household `number` is `id`: the index's equality test.
    fn id_is(&self, number: u32, id: &HouseholdId) -> bool {
        self.get(number as usize)
            .is_some_and(|entry| entry.id == *id)
    }

    /// The hash of household `number`'s id: the index's rehash when it grows.
    fn hash_of(&self, number: u32, hasher: &foldhash::fast::RandomState) -> u64 {
        let entry = self.get(number as usize);
        hasher.hash_one(&entry.expect("the index holds only numbers of entries").id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::{PackedState, Timeline};

    fn entry(id: &str) -> HouseholdEntry {
        HouseholdEntry {
            id: HouseholdId::parse(id).expect("a valid household id"),
            state: PackedState(Box::new([])),
            seqs: crate::projection::Seqs::default(),
            regions: Vec::new(),
            timeline: Timeline::default(),
        }
    }

    /// Numbers follow arrival, every id finds its own entry, and a checkpoint's round trip
    /// rebuilds the same index.
    #[test]
    fn ids_find_their_numbers_before_and_after_a_round_trip() {
        // More than a chunk, so that numbers cross from one chunk to the next.
        let ids: Vec<String> = (0..CHUNK + 5_000).map(|n| format!("H{n:07}")).collect();
        let mut households = Households::default();
        for (n, id) in ids.iter().enumerate() {
            assert_eq!(households.push(entry(id)).ok(), Some(n as u32));
        }
        let bytes = postcard::to_stdvec(&households).expect("households encode");
        let read: Households = postcard::from_bytes(&bytes).expect("households decode");
        assert_eq!(read, households);
        for both in [&households, &read] {
            for (n, id) in ids.iter().enumerate() {
                let id = HouseholdId::parse(id).expect("a valid household id");
                assert_eq!(both.number(&id), Some(n as u32), "{id}");
                assert_eq!(both.get(&id).map(|e| &e.id), Some(&id));
            }
            let stranger = HouseholdId::parse("H9999999").expect("a valid household id");
            assert_eq!(both.number(&stranger), None);
        }
    }

    /// A checkpoint that lists a household twice is refused, not half-indexed.
    #[test]
    fn a_household_listed_twice_is_refused() {
        let twice = || vec![entry("H1"), entry("H2"), entry("H1")];
        let mut chunked = Chunked::default();
        twice().into_iter().for_each(|entry| chunked.push(entry));
        let indexed = Households::indexed(chunked);
        assert!(indexed.is_err_and(|e| e.to_string().contains("household H1 appears twice")));
        let bytes = postcard::to_stdvec(&twice()).expect("entries encode");
        assert!(postcard::from_bytes::<Households>(&bytes).is_err());
    }
}
