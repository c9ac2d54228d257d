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
//! (hashing each id once). They are written in [`SECTIONS`] sections of consecutive numbers,
//! each a whole number of chunks, so that a start-up decodes them side by side and joins them
//! by moving chunks:
//!
//! ```text
//!   numbers   0 ……… s ……… 2s ……… 3s …………………………… 7s ……… len
//!   sections  │  0   │  1   │  2   │       …        │  7   │     s = len / 8, in whole chunks
//! ```
//!
//! A checkpoint reads the entries a piece at a time while writes go on between pieces (see
//! [`Capture`]): a write to an entry the checkpoint has not reached yet first saves the entry as
//! it was, and the checkpoint writes that saved copy instead, so it still shows every household
//! as it stood when it began. Pure data: no I/O (a checkpoint's entries are encoded into the
//! caller's buffer).

use std::hash::BuildHasher;
use std::ops::Range;

use hashbrown::HashTable;
use serde::{Deserialize, Serialize};

use super::capture::{under_way, Extent, Piecewise, Progress, Slot};
use super::checkpoint_failed;
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
    /// What it writes: of a delta, the entries changed after its base.
    extent: Extent,
    /// `len`: the households on the roll when the checkpoint began; `written`: the entries
    /// before this number are written (or passed over).
    progress: Progress,
    /// The sections whose count is written: the ones before this.
    sections_begun: usize,
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

/// The sections a checkpoint writes the households in. A start-up decodes each on whichever
/// thread is free; as one section, the households were most of a checkpoint without request_ids
/// (one decoding thread had 25% of a start-up's samples, the other 4.7%), and a national roll's
/// households would be one thread's work however many cores the machine has.
pub(crate) const SECTIONS: usize = 8;

/// The numbers of the households in section `section` of a checkpoint of `len` households: an
/// eighth of them, rounded up to whole chunks (so that sections join by moving chunks), the
/// last ones empty when there are few households.
fn section_range(len: usize, section: usize) -> Range<usize> {
    let size = len.div_ceil(SECTIONS).div_ceil(CHUNK).max(1) * CHUNK;
    let start = size.saturating_mul(section).min(len);
    start..start.saturating_add(size).min(len)
}

impl Piecewise for Households {
    fn sections(&self) -> usize {
        SECTIONS
    }

    /// Starts a checkpoint of the households as they are now; [`Households::write_captured`]
    /// writes them. Refused while another checkpoint is under way: there is one capture.
    fn begin_capture(&self, extent: Extent) -> Result<(), Error> {
        self.capture.begin(Capture {
            extent,
            progress: Progress::of(self.entries.len()),
            sections_begun: 0,
            before: foldhash::HashMap::default(),
        })
    }

    /// Encodes up to `step` more entries of section `section` of the checkpoint under way onto
    /// `out`, each as it was when the checkpoint began, and says whether the section is
    /// written now; the capture ends with the last section. Into memory, for the caller to
    /// write out once it has released the roll: streamed to the file under the lock (hashing,
    /// the file's writes, and a call through `dyn Write` for each of an entry's many small
    /// fields), 16,384 households took ~45 ms under load; encoded into memory, ~13 ms.
    ///
    /// Of a whole checkpoint, a section is its count and then its entries (its serialized
    /// form). Of a delta, it is pieces, each the count of its entries and then each as
    /// (number, entry), up to the section's end: how many of a section's households changed
    /// is known only once each is looked at, a piece at a time ([`HouseholdChanges`]).
    fn write_captured(
        &self,
        section: usize,
        step: usize,
        out: &mut Vec<u8>,
    ) -> Result<bool, Error> {
        let mut guard = self.capture.lock();
        let capture = under_way(&mut guard)?;
        let Progress { written, len, .. } = capture.progress;
        let range = section_range(len, section);
        if section >= SECTIONS
            || capture.sections_begun < section
            || !(range.start..=range.end).contains(&written)
        {
            return Err(Error::Io(format!(
                "checkpoint: section {section} of the households was asked for out of order"
            )));
        }
        let whole = capture.extent == Extent::Whole;
        if capture.sections_begun == section {
            if whole {
                postcard::to_io(&range.len(), &mut *out).map_err(checkpoint_failed)?;
            }
            capture.sections_begun += 1;
        }
        let end = range.end.min(written.saturating_add(step.max(1)));
        // Each entry as the checkpoint began: the copy a write saved, or the entry itself.
        let (before, entries) = (&capture.before, &self.entries);
        let as_began = |number: usize| -> Option<&HouseholdEntry> {
            let saved = u32::try_from(number).ok().and_then(|n| before.get(&n));
            saved.or_else(|| entries.get(number))
        };
        let extent = capture.extent;
        let held = |entry: &HouseholdEntry| entry.seqs.last().is_some_and(|s| extent.holds(s));
        let as_began = |number: usize| {
            as_began(number)
                .expect("households are only ever added, so every captured number is there")
        };
        if whole {
            for number in written..end {
                postcard::to_io(as_began(number), &mut *out).map_err(checkpoint_failed)?;
            }
        } else {
            // One pass over the piece picks what changed (a handful of a million households
            // for a delta soon after its base), counted first as the piece is read back.
            let changed: Vec<(u32, &HouseholdEntry)> = (written..end)
                .map(|number| (number, as_began(number)))
                .filter(|(_, entry)| held(entry))
                .map(|(number, entry)| {
                    let number = u32::try_from(number)
                        .expect("a household's number is a u32: `next_number` refuses any other");
                    (number, entry)
                })
                .collect();
            postcard::to_io(&changed.len(), &mut *out).map_err(checkpoint_failed)?;
            for changed in &changed {
                postcard::to_io(changed, &mut *out).map_err(checkpoint_failed)?;
            }
        }
        // Written: writes need not keep these any longer. By the shorter of the two: the saved
        // copies are usually far fewer than the piece's households.
        let piece = written..end;
        if capture.before.len() < piece.len() {
            capture
                .before
                .retain(|&n, _| !usize::try_from(n).is_ok_and(|n| piece.contains(&n)));
        } else {
            for number in piece {
                if let Ok(n) = u32::try_from(number) {
                    capture.before.remove(&n);
                }
            }
        }
        capture.progress.written = end;
        let done = end == range.end;
        if done && section + 1 == SECTIONS {
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

/// The sections one after the other (postcard writes a tuple as its items one after the
/// other), each the sequence of its households: the bytes a checkpoint writes piece by piece.
impl Serialize for Households {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        /// One section's households, as a sequence.
        struct Section<'a>(&'a Chunked<HouseholdEntry>, Range<usize>);
        impl Serialize for Section<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.1.clone().map(|n| {
                    self.0
                        .get(n)
                        .expect("a section's numbers are those of households on the roll")
                }))
            }
        }
        let mut sections = serializer.serialize_tuple(SECTIONS)?;
        for section in 0..SECTIONS {
            sections.serialize_element(&Section(
                &self.entries,
                section_range(self.entries.len(), section),
            ))?;
        }
        sections.end()
    }
}

impl<'de> Deserialize<'de> for Households {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Sections;
        impl<'de> serde::de::Visitor<'de> for Sections {
            type Value = Vec<HouseholdsSection>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{SECTIONS} sections of households")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                (0..SECTIONS)
                    .map(|n| {
                        seq.next_element()?
                            .ok_or_else(|| serde::de::Error::invalid_length(n, &self))
                    })
                    .collect()
            }
        }
        let sections = deserializer.deserialize_tuple(SECTIONS, Sections)?;
        Self::from_sections(sections).map_err(serde::de::Error::custom)
    }
}

/// One section of a checkpoint's households, read back: [`Households::from_sections`] joins
/// them.
pub(crate) struct HouseholdsSection(Chunked<HouseholdEntry>);

impl<'de> Deserialize<'de> for HouseholdsSection {
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
        deserializer.deserialize_seq(Entries).map(Self)
    }
}

impl Households {
    /// The households of a checkpoint's [`SECTIONS`] sections, in order, joined and indexed.
    pub(crate) fn from_sections(sections: Vec<HouseholdsSection>) -> Result<Self, Error> {
        if sections.len() != SECTIONS {
            return Err(Error::Corrupt(format!(
                "the households are in {} sections, not {SECTIONS}",
                sections.len()
            )));
        }
        let mut entries = Chunked::default();
        for HouseholdsSection(section) in sections {
            entries.append(section);
        }
        Self::indexed(entries)
    }
}

/// The households of a delta's section, read back: each that changed after the delta's base,
/// with its number, in number order.
pub(crate) struct HouseholdChanges(pub Vec<(u32, HouseholdEntry)>);

impl Households {
    /// Lays a delta's households (its sections in order) over these, the households of the
    /// whole checkpoint it builds on: an entry in place of the one with its number, and the
    /// households that joined since at the end, in order. A delta that does not fit (a number
    /// out of order or beyond the next, another household under a number) is refused, so
    /// that a start-up replays the log from the whole checkpoint instead.
    ///
    /// Hands `replaced` each entry the delta replaces, with its number and the entry now in
    /// its place, and gives the numbers of the households that joined, in order.
    pub(crate) fn overlay(
        &mut self,
        changes: Vec<HouseholdChanges>,
        mut replaced: impl FnMut(u32, HouseholdEntry, &HouseholdEntry) -> Result<(), Error>,
    ) -> Result<Vec<u32>, Error> {
        let unfit = |why: String| Error::Corrupt(format!("the delta does not fit its base: {why}"));
        let mut last = None;
        let mut joined = Vec::new();
        for (number, entry) in changes.into_iter().flat_map(|c| c.0) {
            if last.is_some_and(|last| number <= last) {
                return Err(unfit(format!("household number {number} is out of order")));
            }
            last = Some(number);
            let next = self.next_number()?;
            if number == next {
                if self.number(&entry.id).is_some() {
                    return Err(unfit(format!("household {} joins twice", entry.id)));
                }
                self.push(entry)?;
                joined.push(number);
                continue;
            }
            let held = self
                .entries
                .get_mut(number as usize)
                .ok_or_else(|| unfit(format!("household number {number} skips {next}")))?;
            if held.id != entry.id {
                return Err(unfit(format!(
                    "household number {number} is {}, not {}",
                    held.id, entry.id
                )));
            }
            let then = std::mem::replace(held, entry);
            replaced(number, then, held)?;
        }
        Ok(joined)
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

/// Items per chunk: 16,384 households are ~2 MB. Small in unit tests, so that a few thousand
/// households fill many chunks and every section of a checkpoint.
const CHUNK: usize = if cfg!(test) { 1 << 6 } else { 1 << 14 };

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

    /// Puts `other`'s items after these: by moving its chunks when these fill whole chunks
    /// (every chunk but the last stays full), else item by item.
    fn append(&mut self, other: Self) {
        if self.len.is_multiple_of(CHUNK) {
            self.len += other.len;
            self.chunks
                .extend(other.chunks.into_iter().filter(|c| !c.is_empty()));
        } else {
            other
                .chunks
                .into_iter()
                .flatten()
                .for_each(|item| self.push(item));
        }
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

    /// Written section by section a piece at a time, with households changed and added between
    /// pieces, the households read back as they were when the checkpoint began; with nothing
    /// changed, byte for byte their encoding. From two households (seven sections empty) to
    /// three times as many as fill every section's first chunk.
    #[test]
    fn a_checkpoint_in_sections_shows_the_households_as_they_began() {
        use crate::projection::capture::check_read_in_pieces;
        use rand::RngExt;
        // (households a piece, changes between pieces)
        let cases = [
            (1, 0),
            (1, 1),
            (3, 2),
            (7, 1),
            (50, 0),
            (usize::MAX, 0),
            (1, 0),
        ];
        check_read_in_pieces(
            &cases,
            |rng: &mut rand_chacha::ChaCha8Rng| {
                let mut households = Households::default();
                for n in 0..rng.random_range(2..3 * SECTIONS * CHUNK) {
                    households.push(entry(&format!("H{n:07}"))).unwrap();
                }
                households
            },
            |households, rng| {
                let len = households.len();
                if rng.random_range(0..4) == 0 {
                    households.push(entry(&format!("N{len}"))).unwrap();
                } else if let Some(entry) =
                    households.by_number_mut(rng.random_range(0..len) as u32)
                {
                    entry.state = PackedState(Box::new([rng.random()]));
                }
            },
        );
    }

    /// Sections join whether or not the ones before fill whole chunks.
    #[test]
    fn sections_join_in_order() {
        for sizes in [
            [0, 0, 5],
            [CHUNK, 3, 0],
            [3, CHUNK, 2 * CHUNK + 1],
            [2 * CHUNK, CHUNK, 1],
        ] {
            let mut numbered = 0;
            let sections: Vec<HouseholdsSection> = sizes
                .iter()
                .chain(std::iter::repeat_n(&0, SECTIONS - sizes.len()))
                .map(|&size| {
                    let mut chunked = Chunked::default();
                    for _ in 0..size {
                        chunked.push(entry(&format!("H{numbered:07}")));
                        numbered += 1;
                    }
                    HouseholdsSection(chunked)
                })
                .collect();
            let households = Households::from_sections(sections).unwrap();
            assert_eq!(households.len(), numbered, "{sizes:?}");
            for n in 0..numbered {
                let id = HouseholdId::parse(&format!("H{n:07}")).unwrap();
                assert_eq!(households.number(&id), Some(n as u32), "{sizes:?}");
            }
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
        // In one section, and in two.
        let in_one: [Vec<HouseholdEntry>; SECTIONS] =
            std::array::from_fn(|n| if n == 0 { twice() } else { Vec::new() });
        let in_two: [Vec<HouseholdEntry>; SECTIONS] = std::array::from_fn(|n| match n {
            0 => vec![entry("H1")],
            1 => vec![entry("H1")],
            _ => Vec::new(),
        });
        for sections in [in_one, in_two] {
            let bytes = postcard::to_stdvec(&sections).expect("entries encode");
            assert!(postcard::from_bytes::<Households>(&bytes).is_err());
        }
        let sections = (0..SECTIONS).map(|n| {
            let mut chunked = Chunked::default();
            if n < 2 {
                chunked.push(entry("H1"));
            }
            HouseholdsSection(chunked)
        });
        let joined = Households::from_sections(sections.collect());
        assert!(joined.is_err_and(|e| e.to_string().contains("household H1 appears twice")));
    }
}
