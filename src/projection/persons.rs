//! The person index of the roll (a person's ID number, as `IdNumber::compact`, → the number of
//! the household holding them), in shards that a checkpoint can read a few at a time while
//! writes change them.
//!
//! ```text
//!   shard = a hash of the person, one of SHARDS
//!   shards   0 1 2 … written ┊ next … still to write ………………………………………… SHARDS-1
//!                            ┊ a write to a person here first notes their household
//!                            ┊ at the checkpoint's start in `before` (None: they had none)
//!   a piece:  whole shards from `next`, each merged with its notes, as it was at the start
//! ```
//!
//! One hash map of every person could only be written whole while writes waited: ~0.1 s at a
//! million households, seconds at a national roll's hundred million people. Shards also grow
//! one at a time, so a write never waits for the whole index to be rehashed.
//!
//! Reads go through [`PersonIndex::get`]; every change goes through [`PersonIndex::insert`] or
//! [`PersonIndex::remove`], which keep the checkpoint's view. Pure data: no I/O (pieces are
//! encoded into the caller's buffer).

use foldhash::HashMap;
use serde::de::{Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::capture::{under_way, Piecewise, Progress, Slot};
use super::{checkpoint_failed, presized};
use crate::error::Error;

/// Enough shards that one holds ~25,000 people at a national roll (a piece of a checkpoint
/// of ~3 ms), and few enough that their empty tables cost nothing (~160 KB).
const SHARDS: usize = 4_096;

/// Serialized as its shards alone (a checkpoint under way is not part of the index).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct PersonIndex {
    #[serde(deserialize_with = "presized_shards")]
    shards: Box<[HashMap<u64, u32>]>,
    /// The checkpoint reading this index, if one is.
    #[serde(skip)]
    capture: Slot<Capture>,
}

#[derive(Debug)]
struct Capture {
    /// People when the checkpoint began, and how many are written.
    progress: Progress,
    /// The shards before this one are written.
    next: usize,
    /// Per shard, every person a write changed since the start while the shard was still to
    /// write, with their household then.
    before: Box<[HashMap<u64, Option<u32>>]>,
}

fn shard(person: u64) -> usize {
    // Fibonacci hashing: the top bits of a multiplication spread the ID numbers' digits
    // (area, birth date, sequence) over the shards.
    (person.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARDS.trailing_zeros())) as usize
}

fn empty<T: Default>() -> Box<[T]> {
    (0..SHARDS).map(|_| T::default()).collect()
}

impl Default for PersonIndex {
    fn default() -> Self {
        Self {
            shards: empty(),
            capture: Slot::default(),
        }
    }
}

impl PersonIndex {
    pub fn get(&self, person: u64) -> Option<u32> {
        self.shards[shard(person)].get(&person).copied()
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    /// Notes `person`'s household for a checkpoint under way that has not written its shard.
    fn note(&mut self, person: u64, then: Option<u32>) {
        let at = shard(person);
        if let Some(capture) = self.capture.get_mut().filter(|c| at >= c.next) {
            capture.before[at].entry(person).or_insert(then);
        }
    }

    pub fn insert(&mut self, person: u64, number: u32) {
        let then = self.get(person);
        // Most events write their members again unchanged: nothing to note or store.
        if then != Some(number) {
            self.note(person, then);
            self.shards[shard(person)].insert(person, number);
        }
    }

    pub fn remove(&mut self, person: u64) {
        if let Some(then) = self.get(person) {
            self.note(person, Some(then));
            self.shards[shard(person)].remove(&person);
        }
    }
}

impl Piecewise for PersonIndex {
    /// Starts a checkpoint of the index as it is now. Refused while another is under way.
    fn begin_capture(&self) -> Result<(), Error> {
        self.capture.begin(Capture {
            progress: Progress::of(self.len()),
            next: 0,
            before: empty(),
        })
    }

    /// Encodes whole shards of the checkpoint under way onto `out`, at least `step` people's
    /// worth unless none is left, each as it was when the checkpoint began; true once all are
    /// (and then on).
    ///
    /// The bytes are this index's serialized form: the number of shards, then each shard as
    /// a map. The shards' counts add up to the count at the start, or the checkpoint fails.
    fn write_captured(&self, step: usize, out: &mut Vec<u8>) -> Result<bool, Error> {
        let mut guard = self.capture.lock();
        let capture = under_way(&mut guard)?;
        // Every call writes at least one shard, so only the first starts at shard 0.
        if capture.next == 0 {
            postcard::to_io(&SHARDS, &mut *out).map_err(checkpoint_failed)?;
        }
        let mut written = 0;
        let mut entries = Vec::new();
        while capture.next < SHARDS && written < step.max(1) {
            let at = capture.next;
            let notes = std::mem::take(&mut capture.before[at]);
            entries.clear();
            // Every person there now and not changed since: as they are.
            entries.extend(
                self.shards[at]
                    .iter()
                    .filter(|(person, _)| !notes.contains_key(person))
                    .map(|(person, number)| (*person, *number)),
            );
            // Every person changed since: as they were (None: not in the index then).
            entries.extend(
                notes
                    .into_iter()
                    .filter_map(|(person, then)| then.map(|number| (person, number))),
            );
            postcard::to_io(&entries.len(), &mut *out).map_err(checkpoint_failed)?;
            for entry in &entries {
                postcard::to_io(entry, &mut *out).map_err(checkpoint_failed)?;
            }
            written += entries.len();
            capture.next += 1;
        }
        capture.progress.written += written;
        if capture.next < SHARDS {
            return Ok(false);
        }
        let Progress { written, len, .. } = capture.progress;
        if written != len {
            return Err(Error::Io(format!(
                "checkpoint: the person index gave {written} people where it held {len} at the start"
            )));
        }
        Ok(true)
    }

    /// Ends the checkpoint under way, if any.
    fn end_capture(&self) {
        self.capture.end();
    }
}

/// Reads exactly [`SHARDS`] shards, each at its full size at once (see `presized`).
fn presized_shards<'de, D>(deserializer: D) -> Result<Box<[HashMap<u64, u32>]>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Shards;
    impl<'de> Visitor<'de> for Shards {
        type Value = Box<[HashMap<u64, u32>]>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{SHARDS} shards of people")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut shards = Vec::with_capacity(SHARDS);
            while let Some(Presized(shard)) = seq.next_element()? {
                if shards.len() == SHARDS {
                    return Err(A::Error::invalid_length(SHARDS + 1, &self));
                }
                shards.push(shard);
            }
            if shards.len() != SHARDS {
                return Err(A::Error::invalid_length(shards.len(), &self));
            }
            Ok(shards.into_boxed_slice())
        }
    }
    /// A shard read at its full size at once.
    struct Presized(HashMap<u64, u32>);
    impl<'de> Deserialize<'de> for Presized {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            presized(d).map(Presized)
        }
    }
    deserializer.deserialize_seq(Shards)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::capture::check_read_in_pieces;
    use rand::RngExt;
    use rand_chacha::ChaCha8Rng;

    fn person(n: u64) -> u64 {
        // Compact ID numbers are 17-digit integers.
        61_060_219_800_101_000 + n * 7
    }

    /// Pieces of every size, with insertions, moves and removals of people in written and
    /// unwritten shards in between, read back as the index was when the checkpoint began; the
    /// index cloned then is the oracle.
    #[test]
    fn an_index_read_in_pieces_between_changes_is_the_index_it_was() {
        let cases = [
            (1, 0),
            (1, 3),
            (2, 1),
            (7, 5),
            (500, 40),
            (4_000, 200),
            (100_000, 0),
        ];
        check_read_in_pieces(
            &cases,
            |rng: &mut ChaCha8Rng| {
                let mut index = PersonIndex::default();
                for n in 0..20_000 {
                    index.insert(person(n), rng.random_range(0..5_000));
                }
                index
            },
            |index, rng| {
                let p = person(rng.random_range(0..25_000));
                match rng.random_range(0..3) {
                    0 | 1 => index.insert(p, rng.random_range(0..5_000)),
                    _ => index.remove(p),
                }
            },
        );
    }

    #[test]
    fn a_payload_with_the_wrong_number_of_shards_is_refused() {
        let mut index = PersonIndex::default();
        index.insert(person(1), 1);
        for shards in [0, 1, SHARDS - 1, SHARDS + 1] {
            let payload =
                postcard::to_stdvec(&vec![HashMap::<u64, u32>::default(); shards]).unwrap();
            assert!(
                postcard::from_bytes::<PersonIndex>(&payload).is_err(),
                "{shards} shards were read"
            );
        }
        let whole = postcard::to_stdvec(&index).unwrap();
        assert_eq!(postcard::from_bytes::<PersonIndex>(&whole).unwrap(), index);
    }

    #[test]
    fn unchanged_writes_note_nothing() {
        let mut index = PersonIndex::default();
        index.insert(person(1), 7);
        index.begin_capture().unwrap();
        index.insert(person(1), 7);
        index.remove(person(2));
        let guard = index.capture.lock();
        let capture = guard.as_ref().unwrap();
        assert!(capture.before.iter().all(HashMap::is_empty));
    }
}
