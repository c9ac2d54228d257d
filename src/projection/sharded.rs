//! The roll's keyed indexes (a person → their household's number; a request_id → its
//! event's seq), each in shards that a checkpoint can read a few at a time while writes
//! change them. A shard is a sorted run of entries (see [`super::shard`]).
//!
//! ```text
//!   shard = the top bits of the key's spread (a hash), one of SHARDS
//!   shards   0 1 2 … written ┊ next … still to write ………………………………………… SHARDS-1
//!                            ┊ a write to a key here first notes its value at the
//!                            ┊ checkpoint's start in `before` (None: it had none)
//!   a piece:  whole shards from `next`, each merged with its notes, as it was at the start
//! ```
//!
//! One map could only be written whole while writes waited: the person index took ~0.1 s at
//! a million households (seconds at a national roll's hundred million people), and the
//! request index holds an entry for every event that carried a request_id. Shards also grow
//! one at a time, so a write never waits for a whole index to be rebuilt.
//!
//! Reads go through [`Sharded::get`]; every change goes through [`Sharded::insert`],
//! [`Sharded::insert_all`] (many entries, each shard merged with its share in one pass) or
//! [`Sharded::remove`], which keep the checkpoint's view. Pure data: no I/O (pieces are
//! encoded into the caller's buffer).

use std::hash::Hash;

use foldhash::HashMap;
use serde::de::{Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::capture::{only_section, under_way, Extent, Piecewise, Progress, Slot};
use super::checkpoint_failed;
use super::shard::{entry_bytes, order, FixedWidth, Shard, Spread};
use crate::error::Error;

/// Enough shards that one holds ~25,000 people at a national roll (a piece of a checkpoint
/// of ~3 ms), and few enough that empty ones cost nothing (~250 KB).
const SHARDS: usize = 4_096;

/// The number of bits of a key's spread that name its shard (the top ones).
pub(crate) const SHARD_BITS: u32 = SHARDS.trailing_zeros();

/// A key of a sharded index: the top bits of its spread name its shard.
pub(crate) trait ShardKey: Spread + FixedWidth {
    /// A number below [`SHARDS`], spread evenly over the keys.
    fn shard(&self) -> usize {
        (self.spread() >> (64 - SHARD_BITS)) as usize
    }
}

impl<K: Spread + FixedWidth> ShardKey for K {}

/// A person, as `IdNumber::compact` (a 17-digit integer).
impl Spread for u64 {
    fn spread(&self) -> u64 {
        // Fibonacci hashing: a multiplication spreads the ID numbers' digits (area, birth
        // date, sequence) over all the bits. It is a bijection (the factor is odd), so two
        // people never share a spread.
        self.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// A request_id, as the first 10 bytes of its SHA-256: with its seq in 6 bytes ([`Seq48`]), 16
/// bytes an entry, where a string would take 24 plus its text on the heap (and 16 bytes with a
/// u64 took 24, aligned). Two request_ids share a key with a probability of ~n²/2⁸¹: 4 × 10⁻⁸
/// for a national roll's 300 million events, 4 × 10⁻⁷ for a billion. The writer compares the
/// stored event with the command in any case, so even then it refuses the second request (as
/// a reused request_id) rather than mix the two up. 12 bytes (~n²/2⁹⁷) cost ~19 MiB more at
/// 10M events with request_ids, in memory and in every checkpoint.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(crate) struct RequestKey([u8; KEY_BYTES]);

/// The bytes of a request_id's digest that its key keeps.
const KEY_BYTES: usize = 10;

impl RequestKey {
    pub fn of(request_id: &str) -> Self {
        let digest = Sha256::digest(request_id.as_bytes());
        let mut key = [0u8; KEY_BYTES];
        key.copy_from_slice(&digest[..KEY_BYTES]);
        Self(key)
    }
}

/// A seq in 6 bytes, aligned to one: what lets a request index entry be 16 bytes instead of 24
/// (~76 MiB at 10M events). A log of 2⁴⁸ events (~2.8 × 10¹⁴, petabytes of bodies) is out of
/// reach. Checkpoints carry it in the same 6 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Seq48([u8; 6]);

/// A request key and a seq are their bytes in a checkpoint, as they are in memory.
macro_rules! fixed_width_bytes {
    ($($t:ty),*) => {$(
        impl FixedWidth for $t {
            const WIDTH: usize = std::mem::size_of::<$t>();
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.0);
            }
            fn take(bytes: &[u8]) -> Self {
                Self(bytes.try_into().expect("`take` is given exactly `WIDTH` bytes"))
            }
        }
    )*};
}

fixed_width_bytes!(RequestKey, Seq48);

impl From<Seq48> for u64 {
    fn from(seq: Seq48) -> u64 {
        let [a, b, c, d, e, f] = seq.0;
        u64::from_be_bytes([0, 0, a, b, c, d, e, f])
    }
}

impl TryFrom<u64> for Seq48 {
    type Error = String;

    fn try_from(seq: u64) -> Result<Self, String> {
        match seq.to_be_bytes() {
            [0, 0, a, b, c, d, e, f] => Ok(Self([a, b, c, d, e, f])),
            _ => Err(format!("seq {seq} does not fit in 48 bits")),
        }
    }
}

/// What a delta needs of an index's values: the seq of the event that wrote the entry, if the
/// value is one (see [`Extent`]).
pub(crate) trait Stamp {
    fn seq(&self) -> Option<u64>;
}

/// A request entry's value is the seq of the event it produced.
impl Stamp for Seq48 {
    fn seq(&self) -> Option<u64> {
        Some(u64::from(*self))
    }
}

/// A person's entry holds their household's number, which says nothing of when it was
/// written: a delta writes the person index whole.
impl Stamp for u32 {
    fn seq(&self) -> Option<u64> {
        None
    }
}

impl Spread for RequestKey {
    fn spread(&self) -> u64 {
        // A digest's bytes are evenly spread already.
        let [a, b, c, d, e, f, g, h, ..] = self.0;
        u64::from_be_bytes([a, b, c, d, e, f, g, h])
    }
}

/// An index in [`SHARDS`] shards, serialized as its shards alone (a checkpoint under way is
/// not part of the index).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(transparent)]
#[serde(bound(
    serialize = "K: ShardKey, V: FixedWidth",
    deserialize = "K: ShardKey, V: FixedWidth"
))]
pub(crate) struct Sharded<K: ShardKey, V: Copy> {
    #[serde(deserialize_with = "all_shards")]
    shards: Box<[Shard<K, V>]>,
    /// The checkpoint reading this index, if one is.
    #[serde(skip)]
    capture: Slot<Capture<K, V>>,
}

#[derive(Debug)]
struct Capture<K, V> {
    /// What it writes: of a delta, the entries whose value is a seq after its base.
    extent: Extent,
    /// Entries when the checkpoint began, and how many are written (or passed over).
    progress: Progress,
    /// The shards before this one are written.
    next: usize,
    /// Per shard, every key a write changed since the start while the shard was still to
    /// write, with its value then.
    before: Box<[HashMap<K, Option<V>>]>,
}

fn empty<T: Default>() -> Box<[T]> {
    (0..SHARDS).map(|_| T::default()).collect()
}

impl<K: ShardKey, V: Copy> Default for Sharded<K, V> {
    fn default() -> Self {
        Self {
            shards: empty(),
            capture: Slot::default(),
        }
    }
}

impl<K: ShardKey, V: Copy + Eq> Sharded<K, V> {
    pub fn get(&self, key: K) -> Option<V> {
        self.shards[key.shard()].get(&key)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(Shard::len).sum()
    }

    /// Notes `key`'s value for a checkpoint under way that has not written its shard.
    fn note(&mut self, key: K, then: Option<V>) {
        let at = key.shard();
        if let Some(capture) = self.capture.get_mut().filter(|c| at >= c.next) {
            capture.before[at].entry(key).or_insert(then);
        }
    }

    pub fn insert(&mut self, key: K, value: V) {
        let then = self.shards[key.shard()].insert(key, value);
        // Noted after the write, with what the write replaced: the note is what the shard
        // held when the checkpoint began, and an unchanged value needs none.
        if then != Some(value) {
            self.note(key, then);
        }
    }

    /// Sets every key of `entries` to its value, a later entry for a key winning over an
    /// earlier one: what `insert` of each in turn would leave. But each shard is merged with
    /// its entries, sorted, in one pass, instead of searched for each (a replay's request
    /// entries, one for nearly every event, each a cache miss in a run of thousands).
    pub fn insert_all(&mut self, mut entries: Vec<(K, V)>) {
        if self.capture.get_mut().is_some() {
            // A checkpoint under way needs a note of each key's value before its change.
            for (key, value) in entries {
                self.insert(key, value);
            }
            return;
        }
        // Stable, so that of two entries for one key the later stays later; the run's order
        // starts with the shard's bits, so each shard's entries end up side by side.
        entries.sort_by_key(|(key, _)| order(key));
        // `dedup_by` hands over the later of two neighbours first and keeps the earlier: the
        // kept one takes the later value.
        entries.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 = later.1;
            }
            same
        });
        for batch in entries.chunk_by(|a, b| a.0.shard() == b.0.shard()) {
            self.shards[batch[0].0.shard()].insert_sorted(batch);
        }
    }

    pub fn remove(&mut self, key: K) {
        if let Some(then) = self.get(key) {
            self.note(key, Some(then));
            self.shards[key.shard()].remove(&key);
        }
    }

    /// Sets every entry of `changes` (a delta's entries of this index, read back) in this
    /// index, shard by shard: what inserting each would leave, in one pass a shard.
    pub fn overlay(&mut self, changes: &Self) {
        for (shard, changed) in self.shards.iter_mut().zip(changes.shards.iter()) {
            shard.insert_sorted(&changed.sorted());
        }
    }
}

impl<K: ShardKey, V: FixedWidth + Eq + Stamp> Piecewise for Sharded<K, V> {
    /// Starts a checkpoint of the index as it is now. Refused while another is under way.
    fn begin_capture(&self, extent: Extent) -> Result<(), Error> {
        self.capture.begin(Capture {
            extent,
            progress: Progress::of(self.len()),
            next: 0,
            before: empty(),
        })
    }

    /// Encodes whole shards of the checkpoint under way onto `out`, at least `step` entries'
    /// worth unless none is left, each as it was when the checkpoint began; true once all are
    /// (and then on).
    ///
    /// The bytes are this index's serialized form: the number of shards, then each shard as
    /// the byte string of its entries (of a delta, only those it holds: an index of fewer
    /// entries). The shards' counts add up to the count at the start, or the checkpoint fails.
    fn write_captured(
        &self,
        section: usize,
        step: usize,
        out: &mut Vec<u8>,
    ) -> Result<bool, Error> {
        only_section(section)?;
        let mut guard = self.capture.lock();
        let capture = under_way(&mut guard)?;
        // Every call writes at least one shard, so only the first starts at shard 0.
        if capture.next == 0 {
            postcard::to_io(&SHARDS, &mut *out).map_err(checkpoint_failed)?;
        }
        let mut written = 0;
        while capture.next < SHARDS && written < step.max(1) {
            let at = capture.next;
            let notes = std::mem::take(&mut capture.before[at]);
            // Every key there now and not changed since, as it is; every key changed since, as
            // it was (None: not in the index then). In run order, as the shard itself is
            // written: read back without sorting. Of a delta, only the entries stamped after
            // its base; the count of all of them is what must add up.
            let extent = capture.extent;
            let stamped_after_base = (extent != Extent::Whole)
                .then_some(move |value: &V| value.seq().is_none_or(|seq| extent.holds(seq)));
            let (entries, in_all) = self.shards[at].sorted_with_where(&notes, stamped_after_base);
            written += in_all;
            postcard::to_io(serde_bytes::Bytes::new(&entry_bytes(&entries)), &mut *out)
                .map_err(checkpoint_failed)?;
            capture.next += 1;
        }
        capture.progress.written += written;
        if capture.next < SHARDS {
            return Ok(false);
        }
        let Progress { written, len, .. } = capture.progress;
        if written != len {
            return Err(Error::Io(format!(
                "checkpoint: a sharded index gave {written} entries where it held {len} at the start"
            )));
        }
        Ok(true)
    }

    /// Ends the checkpoint under way, if any.
    fn end_capture(&self) {
        self.capture.end();
    }
}

/// Reads exactly [`SHARDS`] shards.
fn all_shards<'de, D, K, V>(deserializer: D) -> Result<Box<[Shard<K, V>]>, D::Error>
where
    D: serde::Deserializer<'de>,
    K: ShardKey,
    V: FixedWidth,
{
    struct Shards<K, V>(std::marker::PhantomData<(K, V)>);
    impl<'de, K: ShardKey, V: FixedWidth> Visitor<'de> for Shards<K, V> {
        type Value = Box<[Shard<K, V>]>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{SHARDS} shards")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut shards = Vec::with_capacity(SHARDS);
            while let Some(shard) = seq.next_element()? {
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
    deserializer.deserialize_seq(Shards(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::capture::check_read_in_pieces;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    type PersonIndex = Sharded<u64, u32>;

    fn person(n: u64) -> u64 {
        // Compact ID numbers are 17-digit integers.
        61_060_219_800_101_000 + n * 7
    }

    /// `filled` keys, then, between pieces, insertions, changes and removals of keys (a fifth of
    /// them new) in written and unwritten shards: read back as the index was when the
    /// checkpoint began; the index cloned then is the oracle.
    fn check_index<K, V>(
        cases: &[(usize, usize)],
        filled: u64,
        key: impl Fn(u64) -> K,
        value: impl Fn(&mut ChaCha8Rng) -> V,
    ) where
        K: ShardKey + std::fmt::Debug,
        V: FixedWidth + Eq + Stamp + std::fmt::Debug,
    {
        check_read_in_pieces(
            cases,
            |rng: &mut ChaCha8Rng| {
                let mut index = Sharded::<K, V>::default();
                for n in 0..filled {
                    index.insert(key(n), value(rng));
                }
                index
            },
            |index, rng| {
                let k = key(rng.random_range(0..filled * 5 / 4));
                match rng.random_range(0..3) {
                    0 => index.remove(k),
                    _ => index.insert(k, value(rng)),
                }
            },
        );
    }

    #[test]
    fn an_index_of_people_read_in_pieces_between_changes_is_the_index_it_was() {
        let cases = [
            (1, 0),
            (1, 3),
            (2, 1),
            (7, 5),
            (500, 40),
            (4_000, 200),
            (100_000, 0),
        ];
        check_index(&cases, 20_000, person, |rng| rng.random_range(0..5_000u32));
    }

    #[test]
    fn an_index_of_requests_read_in_pieces_between_changes_is_the_index_it_was() {
        let request = |n: u64| RequestKey::of(&format!("baota-H{n}-1"));
        let cases = [(1, 2), (300, 30), (5_000, 0)];
        check_index(&cases, 10_000, request, |rng| {
            Seq48::try_from(rng.random_range(1..1_000_000u64)).unwrap()
        });
    }

    /// Entries written all at once leave the index as writing them one by one in their order
    /// does: a key given twice keeps its later value, a key the index held (or had removed)
    /// takes the new one, whatever the shard held in its run or its recent changes.
    #[test]
    fn entries_written_at_once_leave_what_writing_them_in_turn_leaves() {
        // (entries held before, entries written, keys drawn from): few keys, so that many are
        // written twice; many, so that runs are long and most keys are new.
        let cases = [
            (0, 1, 1),
            (0, 50, 10),
            (10, 0, 20),
            (100, 300, 150),
            (5_000, 2_000, 6_000),
            (40_000, 20_000, 80_000),
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for (held, written, keys) in cases {
            let mut in_turn = PersonIndex::default();
            for _ in 0..held {
                in_turn.insert(person(rng.random_range(0..keys)), rng.random_range(0..9));
            }
            for _ in 0..held / 10 {
                in_turn.remove(person(rng.random_range(0..keys)));
            }
            let mut at_once = in_turn.clone();
            let entries: Vec<(u64, u32)> = (0..written)
                .map(|_| (person(rng.random_range(0..keys)), rng.random_range(0..9)))
                .collect();
            for &(key, value) in &entries {
                in_turn.insert(key, value);
            }
            at_once.insert_all(entries);
            assert_eq!(at_once.len(), in_turn.len(), "{held}, {written}");
            for n in 0..keys {
                assert_eq!(
                    at_once.get(person(n)),
                    in_turn.get(person(n)),
                    "{held}, {written}"
                );
            }
            assert_eq!(at_once, in_turn);
        }
    }

    #[test]
    fn a_request_entry_is_16_bytes_and_its_seq_reads_back_as_it_was() {
        assert_eq!(std::mem::size_of::<(RequestKey, Seq48)>(), 16);
        let key = RequestKey::of("baota-H1-1");
        for seq in [0, 1, 255, 256, 10_045_146, (1 << 40) + 7, (1 << 48) - 1] {
            let packed = Seq48::try_from(seq).unwrap();
            assert_eq!(u64::from(packed), seq);
            // A checkpoint holds an entry in the same 16 bytes.
            let bytes = entry_bytes(&[(key, packed)]);
            assert_eq!(bytes.len(), 16);
            assert_eq!(bytes[10..], seq.to_be_bytes()[2..]);
            assert_eq!(RequestKey::take(&bytes[..10]), key);
            assert_eq!(Seq48::take(&bytes[10..]), packed);
        }
        for seq in [1 << 48, u64::MAX] {
            assert!(Seq48::try_from(seq).is_err());
        }
    }

    #[test]
    fn request_keys_are_their_digest_and_spread_over_the_shards() {
        assert_eq!(RequestKey::of("a"), RequestKey::of("a"));
        assert_ne!(RequestKey::of("a"), RequestKey::of("b"));
        // SHA-256("abc") begins ba7816bf 8f01cfea 414140de 5dae2223.
        let abc = RequestKey::of("abc");
        assert_eq!(abc.0[..4], [0xba, 0x78, 0x16, 0xbf]);
        assert_eq!(abc.shard(), 0xba7);
        let mut used = vec![0u32; SHARDS];
        for n in 0..100_000 {
            used[RequestKey::of(&n.to_string()).shard()] += 1;
            used[(61_060_219_800_101_000u64 + n * 1_000).shard()] += 1;
        }
        // ~49 keys a shard on average: none empty, none with four times that.
        assert!(
            used.iter().all(|&n| (1..200).contains(&n)),
            "{:?}",
            (used.iter().min(), used.iter().max())
        );
    }

    #[test]
    fn a_payload_with_the_wrong_number_of_shards_is_refused() {
        let mut index = PersonIndex::default();
        index.insert(person(1), 1);
        for shards in [0, 1, SHARDS - 1, SHARDS + 1] {
            let payload = postcard::to_stdvec(&vec![serde_bytes::ByteBuf::new(); shards]).unwrap();
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
        index.begin_capture(Extent::Whole).unwrap();
        index.insert(person(1), 7);
        index.remove(person(2));
        let guard = index.capture.lock();
        let capture = guard.as_ref().unwrap();
        assert!(capture.before.iter().all(HashMap::is_empty));
    }
}
