//! The roll: the register at the head of the log, and the indexes that answer any point in
//! time without replaying the log. Derived data, built only from events.
//!
//! ```text
//!                        ┌ households  by number, and HouseholdId → number: its state now
//!                        │             (packed), its seqs (the stream index), the regions it
//!                        │             moved through, and its timeline (snapshots by seq and
//!                        │             date, per epoch)
//!   Event ─▶ Roll::apply ┼ persons     IdNumber (compact) → the number of the household holding
//!                        │             them (the one-household-per-person rule), in shards
//!   (in seq order)       ├ requests    request_id (a digest) → seq (idempotency), in shards
//!                        ├ by_region   (RegionCode, HouseholdId) now: a county is a range
//!                        ├ former      (RegionCode, HouseholdId) for every other region a
//!                        │             household was ever in: with by_region, the candidates
//!                        │             of a past roster
//!                        ├ tallies     (RegionCode, Group) → counts now, for GetStats
//!                        └ recorded    recorded_at → seq, for "known at" a timestamp
//! ```
//!
//! [`Roll::apply`] is the only way in, for live appends and for a rebuild alike, so a rebuild
//! from the log yields exactly what incremental updates produced. (The writer's
//! [`Roll::apply_decided`] is the same fold, handed the states the event was decided between
//! instead of decoding and re-applying them; a correction, or a state that is not the roll's,
//! takes the plain path.) It must be fed events in seq order. It touches no disk: a
//! correction re-folds its household's stream, which the caller supplies through [`History`].
//!
//! A checkpoint encodes the roll in sections, a piece at a time between writes
//! ([`Roll::begin_checkpoint`]); a delta encodes only what changed since a checkpoint, and
//! [`Roll::from_sections`] lays it over that checkpoint's households and request index
//! ([`Extent`]), and brings its person index and region trees up to the households the delta
//! changed (`Derived`). Encoding is into the caller's buffers: the files are the caller's.

mod capture;
mod flows;
mod households;
mod roster_index;
mod seqs;
mod shard;
mod sharded;
mod stats;
mod timeline;

use std::collections::{BTreeMap, BTreeSet};

use std::ops::Bound;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[cfg(test)]
pub(crate) use capture::check_payload;
pub use capture::Extent;
use capture::{Piecewise, Slot};
pub use flows::Flows;
use households::{HouseholdChanges, Households, HouseholdsSection};
use roster_index::RosterIndex;
pub use seqs::Seqs;
use sharded::{RequestKey, Seq48, Sharded};
pub use stats::{Group, Stats, StatsRow, Tally};
pub use timeline::{Snapshot, Timeline};

use crate::domain::{
    apply, effective_events, Change, Event, Health, HouseholdId, HouseholdState, IdNumber, Labor,
    PersonDirectory, PointInTime, RegionCode, RegionPrefix, Relation, Schooling, Status,
};
use crate::error::Error;

/// Where a correction finds the events of its household.
pub trait History {
    /// The events at `seqs`, in that order.
    fn events(&self, seqs: &[u64]) -> Result<Vec<Event>, Error>;
}

/// A household's state, packed into its compact binary encoding (postcard).
///
/// The roll keeps every household's state now for the writer's rules, and a national roll has
/// ~30 million of them: unpacked, a state is a dozen heap allocations (members, names, measures,
/// helpers, notes); packed, it is one. A checkpoint stores the bytes as they are, so a restart
/// copies them instead of rebuilding and re-validating every state. Unpacking costs once per
/// command decided. (At the 10M-event scale run, peak RSS fell from 3.4 GiB to 1.8 GiB with
/// this, the inline `IdNumber`, streamed checkpoints and a smaller sled cache:
/// `benches/scale-run.sh`.)
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedState(#[serde(with = "serde_bytes")] Box<[u8]>);

impl PackedState {
    pub fn pack(state: &HouseholdState) -> Self {
        let mut packed = Self(Box::default());
        packed.repack(state);
        packed
    }

    /// Packs `state` in place of the state held, in the same allocation where it can.
    ///
    /// Every event repacks its household, so this is on the writer's and the replay's hot
    /// path. `postcard::to_stdvec` grew a fresh vector byte by byte (several reallocations
    /// for a state of ~100 bytes: 5% of a replay's profile) and the old state was freed; a
    /// state is now encoded into a buffer kept by the thread, and its bytes are copied into
    /// the household's own allocation, resized by `realloc` (which mimalloc does in place when
    /// the new size fits the block) instead of freeing one block and allocating another. (That
    /// did not move the loading peak measurably: `benches/rss-during-load.sh`, two pairs.)
    pub fn repack(&mut self, state: &HouseholdState) {
        thread_local! {
            static ENCODED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        ENCODED.with_borrow_mut(|encoded| {
            encoded.clear();
            let buffer = std::mem::take(encoded);
            *encoded = postcard::to_extend(state, buffer)
                .expect("a state encodes: postcard fails only on unsized sequences or I/O");
            if self.0.len() == encoded.len() {
                self.0.copy_from_slice(encoded);
                return;
            }
            let mut bytes = std::mem::take(&mut self.0).into_vec();
            bytes.clear();
            // Exactly the size needed, so that `into_boxed_slice` has nothing to shrink when
            // the state grew, and shrinks in place when it did not.
            bytes.reserve_exact(encoded.len());
            bytes.extend_from_slice(encoded);
            self.0 = bytes.into_boxed_slice();
        });
    }

    /// The state. Fails only on bytes this code did not pack (a damaged or foreign checkpoint).
    pub fn unpack(&self) -> Result<HouseholdState, Error> {
        postcard::from_bytes(&self.0)
            .map_err(|e| Error::Corrupt(format!("a household's packed state does not decode: {e}")))
    }
}

impl PackedState {
    /// The state's first fields, read without the rest (see [`Footing`]).
    fn footing(&self) -> Result<Footing<'_>, Error> {
        postcard::from_bytes(&self.0)
            .map_err(|e| Error::Corrupt(format!("a household's packed state does not decode: {e}")))
    }
}

/// The first fields of a packed [`HouseholdState`], in its order: what the person index and
/// the region trees need of a household ([`HouseholdEntry::accounts`]), read without unpacking
/// its names, measures and helpers, since postcard writes a struct's fields one after the
/// other and reads no further than asked. A start-up reads it twice for every household a
/// delta changed; a test checks it against the whole state.
#[derive(Deserialize)]
struct Footing<'a> {
    status: Status,
    region_code: RegionCode,
    #[serde(borrow)]
    members: Vec<MemberId<'a>>,
}

/// A packed [`Member`](crate::domain::Member), field for field, of which only the ID number
/// is used.
#[derive(Deserialize)]
struct MemberId<'a> {
    id_number: IdNumber,
    _name: &'a str,
    _relation: Relation,
    _health: Health,
    _labor: Labor,
    _schooling: Schooling,
}

impl std::fmt::Debug for PackedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.unpack() {
            Ok(state) => state.fmt(f),
            Err(_) => write!(f, "PackedState({} undecodable bytes)", self.0.len()),
        }
    }
}

/// One household in the roll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HouseholdEntry {
    pub id: HouseholdId,
    /// Its state now: the fold of its stream with every correction applied.
    pub state: PackedState,
    /// The seqs of its events, corrections included, in record order; `seqs.len()` is its
    /// version.
    pub seqs: Seqs,
    /// The household's region just after each of those events, as recorded then (what a
    /// subscription filtered by region matches an event against), stored only where it
    /// changed: `(index into seqs, region from that event on)`, the first at index 0. Most
    /// households never move, and a national log has ~10 events per household.
    pub regions: Vec<(u32, RegionCode)>,
    /// What rosters and counts read of it at any point in time.
    timeline: Timeline,
}

impl HouseholdEntry {
    pub fn version(&self) -> u64 {
        self.seqs.len() as u64
    }

    /// The region just after the event at `index` of its stream.
    pub fn region_after(&self, index: usize) -> Option<RegionCode> {
        let changed = self
            .regions
            .partition_point(|(at, _)| (*at as usize) <= index);
        changed
            .checked_sub(1)
            .filter(|_| index < self.seqs.len())
            .map(|i| self.regions[i].1)
    }

    /// What this household accounts for in the roll's person index and region trees, from
    /// it alone: its active members (compact), its region now (its `by_region` key), and
    /// every other region its timeline holds, in any epoch (its `former` keys). [`Roll::fold`]
    /// keeps those structures so, event by event; [`Derived`] rebuilds them from this.
    fn accounts(&self) -> Result<(Vec<u64>, RegionCode, BTreeSet<RegionCode>), Error> {
        let footing = self.state.footing()?;
        let people = match footing.status.holds_members() {
            true => footing
                .members
                .iter()
                .map(|m| m.id_number.compact())
                .collect(),
            false => Vec::new(),
        };
        let region = footing.region_code;
        let elsewhere = self.timeline.regions().filter(|r| *r != region).collect();
        Ok((people, region, elsewhere))
    }
}

/// The structures of a roll that follow from its households alone ([`Roll::DERIVED`]), as a
/// start-up brings a whole checkpoint's up to the delta laid over its households: each
/// household the delta replaced takes out what its entry there accounted for, then each it
/// changed puts in what its entry now accounts for ([`HouseholdEntry::accounts`]), skipping
/// both where the two are the same (most changes: at 10M events, taking out and putting back
/// every changed household's entries added ~1.2 s to a start-up, `benches/start-up.sh`). The fold
/// keeps these structures equal to what the households account for, so this yields them as
/// the fold left them; an oracle test compares a roll laid over a delta with the roll itself.
struct Derived<'a> {
    persons: &'a mut Sharded<u64, u32>,
    by_region: &'a mut RosterIndex,
    former: &'a mut RosterIndex,
}

impl Derived<'_> {
    /// Takes out what household `number` accounted for `then`, unless it accounts for the
    /// same `now` (most changes move nobody and no region); true if it did, and `now` is to be
    /// put in.
    fn take_out(
        &mut self,
        number: u32,
        then: &HouseholdEntry,
        now: &HouseholdEntry,
    ) -> Result<bool, Error> {
        let accounted = then.accounts()?;
        if accounted == now.accounts()? {
            return Ok(false);
        }
        let (people, region, elsewhere) = accounted;
        for person in people {
            // As the fold does: a person another household holds now is that one's.
            if self.persons.get(person) == Some(number) {
                self.persons.remove(person);
            }
        }
        self.by_region.remove(&(region, then.id.clone()));
        for region in elsewhere {
            self.former.remove(&(region, then.id.clone()));
        }
        Ok(true)
    }

    fn put_in(&mut self, number: u32, now: &HouseholdEntry) -> Result<(), Error> {
        let (people, region, elsewhere) = now.accounts()?;
        for person in people {
            self.persons.insert(person, number);
        }
        self.by_region.insert((region, now.id.clone()), number);
        for region in elsewhere {
            self.former.insert((region, now.id.clone()), number);
        }
        Ok(())
    }
}

/// Notes the region after the newest event of `seqs`, if it differs from the last noted.
fn note_region(regions: &mut Vec<(u32, RegionCode)>, seqs: &Seqs, region: RegionCode) {
    if regions.last().map(|(_, r)| *r) != Some(region) {
        let index = u32::try_from(seqs.len().saturating_sub(1)).unwrap_or(u32::MAX);
        push_tight(regions, (index, region));
    }
}

/// `Roll::recorded` as `(seconds, nanoseconds, seq)`: chrono writes a time as RFC 3339 text,
/// which postcard lends out of its input, so a checkpoint read from a stream would have to hold
/// every such text at once.
mod recorded_form {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        recorded: &[(DateTime<Utc>, u64)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            recorded
                .iter()
                .map(|(at, seq)| (at.timestamp(), at.timestamp_subsec_nanos(), *seq)),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(DateTime<Utc>, u64)>, D::Error> {
        Vec::<(i64, u32, u64)>::deserialize(deserializer)?
            .into_iter()
            .map(|(seconds, nanos, seq)| {
                let at = DateTime::from_timestamp(seconds, nanos).ok_or_else(|| {
                    serde::de::Error::custom(format!("{seconds}.{nanos:09} is not a time"))
                })?;
                Ok((at, seq))
            })
            .collect()
    }
}

/// Two ascending runs of roster keys as one ascending run (the region trees hold disjoint keys).
fn in_key_order<'a>(
    a: impl Iterator<Item = (&'a RosterKey, &'a u32)>,
    b: impl Iterator<Item = (&'a RosterKey, &'a u32)>,
) -> impl Iterator<Item = (&'a RosterKey, &'a u32)> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some((x, _)), Some((y, _))) if y < x => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

/// Pushes onto one of the vectors the roll keeps per household (its region changes, its
/// timeline's marks; its seqs are [`Seqs`]), growing it by one item while it is short instead
/// of doubling it.
///
/// A national roll holds one such vector per household and field, most with a handful of
/// items; doubling (from a first capacity of 4) left a third to a half of them empty, ~150
/// bytes a household in all. Growing by one costs a reallocation per push, small next to the
/// rest of an event. Past 16 items a vector grows by half its length, so a long stream still
/// pushes in amortised constant time.
pub(crate) fn push_tight<T>(items: &mut Vec<T>, item: T) {
    if items.len() == items.capacity() {
        let more = if items.len() < 16 { 1 } else { items.len() / 2 };
        items.reserve_exact(more);
    }
    items.push(item);
}

/// A position in the roster's order: `(region_code, household_id)`.
pub type RosterKey = (RegionCode, HouseholdId);

/// What the writer worked out about an event while deciding it: its household's state after
/// the event, and what the state before counted for (its snapshot and active members), which
/// is what the roll's tallies and person index hold for the household until the event is
/// folded. [`Roll::apply_decided`] takes these instead of decoding the household's packed
/// state and applying the event a second time: in a batch, that repeated work was ~7% of
/// the server's instructions.
pub struct Decided {
    before: Option<(Snapshot, Vec<IdNumber>)>,
    /// Shared with the writer's staging, which reads it for the commands after.
    after: std::sync::Arc<HouseholdState>,
}

impl Decided {
    /// The states an event was decided between: `before` as the writer read it (roll and
    /// groups in flight), `after` as the rules made it.
    pub fn new(before: Option<&HouseholdState>, after: std::sync::Arc<HouseholdState>) -> Self {
        Self {
            before: before.map(Self::footprint),
            after,
        }
    }

    fn footprint(state: &HouseholdState) -> (Snapshot, Vec<IdNumber>) {
        (
            Snapshot::of(state),
            state.active_members().cloned().collect(),
        )
    }
}

/// The register at the head of the log.
///
/// Its serialized form (a checkpoint's sections, one after the other) is its fields in the
/// order here: first what a checkpoint writes in one piece, then the households, the indexes
/// and the region trees, which it writes a few thousand entries at a time, each in a section of
/// its own and the households in eight (see [`Roll::begin_checkpoint`]).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
pub struct Roll {
    head: u64,
    tallies: BTreeMap<(RegionCode, Group), StatsRow>,
    /// `(recorded_at, last seq recorded then)`, one entry per distinct time, ascending.
    #[serde(with = "recorded_form")]
    recorded: Vec<(DateTime<Utc>, u64)>,
    /// Every household, by number. Ahead of the indexes because a checkpoint writes the
    /// households first (see [`Roll::begin_checkpoint`]).
    households: Households,
    /// request_id (as a digest) → the seq of the event it produced.
    requests: Sharded<RequestKey, Seq48>,
    /// Person (`IdNumber::compact`) → the number of the household holding them: 12 bytes an
    /// entry instead of 42, for ~3 people per household.
    persons: Sharded<u64, u32>,
    /// The region indexes hold household numbers, so a scan of a region reads each timeline
    /// without a hash lookup.
    by_region: RosterIndex,
    /// The regions a household was in, in any epoch, and is not in now. A past roster reads
    /// this and `by_region` together; apart, a household that never moved (most) is in one
    /// tree instead of two (~50 MB at a million households).
    former: RosterIndex,
    /// The extent of the checkpoint under way, if one is: a delta leaves out the structures
    /// [`Roll::DERIVED`] from the households.
    #[serde(skip)]
    checkpoint: Slot<Extent>,
}

/// The first fields of a [`Roll`], in its order: what a checkpoint writes in one piece while
/// writes wait (the tallies, one entry per region and group, and the recorded times).
#[derive(Serialize)]
struct Indexes<'a> {
    head: u64,
    tallies: &'a BTreeMap<(RegionCode, Group), StatsRow>,
    #[serde(serialize_with = "recorded_form::serialize")]
    recorded: &'a [(DateTime<Utc>, u64)],
}

/// One section of a checkpoint, decoded: [`Roll::from_sections`] puts a roll together from
/// them, in order.
pub struct RollSection(Section);

enum Section {
    Indexes(ReadIndexes),
    Requests(Sharded<RequestKey, Seq48>),
    Persons(Sharded<u64, u32>),
    ByRegion(RosterIndex),
    Former(RosterIndex),
    /// One of the households' sections.
    Households(HouseholdsSection),
    /// One of a delta's households' sections.
    HouseholdChanges(HouseholdChanges),
    /// A section a delta leaves empty: the person index's or a region tree's, which the
    /// start-up derives from the households ([`Derived`]).
    Derived,
}

/// The first fields of a [`Roll`] as read back.
#[derive(Deserialize)]
struct ReadIndexes {
    head: u64,
    tallies: BTreeMap<(RegionCode, Group), StatsRow>,
    #[serde(with = "recorded_form")]
    recorded: Vec<(DateTime<Utc>, u64)>,
}

/// The same bytes as a checkpoint's sections one after the other (postcard writes a tuple as
/// its items one after the other, like a struct's fields), so that a roll encoded whole
/// decodes as `Roll`.
impl Serialize for Roll {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (
            self.indexes(),
            &self.households,
            &self.requests,
            &self.persons,
            &self.by_region,
            &self.former,
        )
            .serialize(serializer)
    }
}

/// A checkpoint's bytes could not be encoded or written (the encoder's or the file's error).
pub(crate) fn checkpoint_failed(error: impl std::fmt::Display) -> Error {
    Error::Io(format!("cannot write the checkpoint: {error}"))
}

/// Reads a map that was written in key order, building the tree in one pass instead of
/// inserting key by key: a checkpoint of a national roll holds millions of roster keys, and
/// one-by-one insertion (a search and a string comparison per level each) was a visible part
/// of the start-up. Checkpoints are postcard, where a map is written exactly as a sequence of
/// its pairs.
fn bulk_built<'de, D, K, V>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    K: Ord + Deserialize<'de>,
    V: Deserialize<'de>,
{
    let pairs = <Vec<(K, V)>>::deserialize(deserializer)?;
    // `from_iter` sorts (linear on sorted input) and builds the tree bottom-up.
    Ok(pairs.into_iter().collect())
}

impl Roll {
    /// Decodes section `n` of a checkpoint of `extent` (of [`Roll::CHECKPOINT_SECTIONS`]) from
    /// `bytes`, which must hold it and nothing after it; `scratch` holds any one item read (a
    /// packed state, a shard), reused from item to item. Sections decode independently of
    /// each other, so a start-up reads them side by side.
    pub fn decode_section(
        n: usize,
        extent: Extent,
        bytes: impl std::io::BufRead,
        scratch: &mut [u8],
    ) -> Result<RollSection, String> {
        fn read<T: serde::de::DeserializeOwned>(
            bytes: impl std::io::Read,
            scratch: &mut [u8],
        ) -> Result<T, String> {
            let (read, (mut rest, _)) =
                postcard::from_io((bytes, scratch)).map_err(|e| e.to_string())?;
            match rest.read(&mut [0]) {
                Ok(0) => Ok(read),
                Ok(_) => Err("bytes follow what it holds".into()),
                Err(e) => Err(e.to_string()),
            }
        }
        /// A section written as pieces, each a sequence, to its end (a delta's households).
        fn read_pieces<T: serde::de::DeserializeOwned>(
            mut bytes: impl std::io::BufRead,
            scratch: &mut [u8],
        ) -> Result<Vec<T>, String> {
            let mut items = Vec::new();
            while !bytes.fill_buf().map_err(|e| e.to_string())?.is_empty() {
                let (piece, (rest, _)): (Vec<T>, _) =
                    postcard::from_io((bytes, &mut *scratch)).map_err(|e| e.to_string())?;
                items.extend(piece);
                bytes = rest;
            }
            Ok(items)
        }
        const HOUSEHOLDS_END: usize = 1 + households::SECTIONS;
        let section = match (n, extent) {
            (0, _) => Section::Indexes(read(bytes, scratch)?),
            (1..HOUSEHOLDS_END, Extent::Whole) => Section::Households(read(bytes, scratch)?),
            (1..HOUSEHOLDS_END, Extent::After(_)) => {
                Section::HouseholdChanges(HouseholdChanges(read_pieces(bytes, scratch)?))
            }
            (HOUSEHOLDS_END, _) => Section::Requests(read(bytes, scratch)?),
            (n, Extent::After(_)) if n > HOUSEHOLDS_END && n < Self::CHECKPOINT_SECTIONS => {
                let mut bytes = bytes;
                if !bytes.fill_buf().map_err(|e| e.to_string())?.is_empty() {
                    return Err(format!(
                        "section {n} of a delta holds bytes where this version derives it"
                    ));
                }
                Section::Derived
            }
            (n, _) if n == HOUSEHOLDS_END + 1 => Section::Persons(read(bytes, scratch)?),
            (n, _) if n == HOUSEHOLDS_END + 2 => Section::ByRegion(read(bytes, scratch)?),
            (n, _) if n == HOUSEHOLDS_END + 3 => Section::Former(read(bytes, scratch)?),
            _ => return Err(format!("a roll has {} sections", Self::CHECKPOINT_SECTIONS)),
        };
        Ok(RollSection(section))
    }

    /// Whether a start-up decodes section `n` of a whole checkpoint that a delta builds on:
    /// every section but the first fields', which the delta holds whole. The delta's changes
    /// are laid over the households and the request index, and the person index and the
    /// region trees are brought up to them (`Derived`).
    pub fn is_under_delta(n: usize) -> bool {
        (1..Self::CHECKPOINT_SECTIONS).contains(&n)
    }

    /// The roll whose checkpoint's sections, in order, are `sections`: a whole checkpoint's,
    /// or those of one that [`Roll::is_under_delta`] and then all of a delta's on it, whose
    /// changes are laid over them (see `Derived` for the structures a delta leaves out).
    pub fn from_sections(sections: Vec<RollSection>) -> Result<Roll, String> {
        let not_a_roll = || "its sections are not a roll's, in a roll's order".to_string();
        let mut indexes = Vec::new();
        let mut households = Vec::new();
        let mut changes = Vec::new();
        let mut requests = Vec::new();
        let mut persons = Vec::new();
        let mut by_region = Vec::new();
        let mut former = Vec::new();
        let mut derived = 0;
        for RollSection(section) in sections {
            match section {
                Section::Indexes(s) => indexes.push(s),
                Section::Households(s) => households.push(s),
                Section::HouseholdChanges(s) => changes.push(s),
                Section::Requests(s) => requests.push(s),
                Section::Persons(s) => persons.push(s),
                Section::ByRegion(s) => by_region.push(s),
                Section::Former(s) => former.push(s),
                Section::Derived => derived += 1,
            }
        }
        // A delta brings the second request index, of its changes.
        let requests_expected = if changes.is_empty() { 1 } else { 2 };
        let derived_expected = if changes.is_empty() {
            0
        } else {
            Self::DERIVED.len()
        };
        if households.len() != households::SECTIONS
            || !(changes.is_empty() || changes.len() == households::SECTIONS)
            || requests.len() != requests_expected
            || derived != derived_expected
        {
            return Err(not_a_roll());
        }
        fn one<T>(mut found: Vec<T>) -> Option<T> {
            found.pop().filter(|_| found.is_empty())
        }
        let (Some(indexes), Some(persons), Some(by_region), Some(former)) =
            (one(indexes), one(persons), one(by_region), one(former))
        else {
            return Err(not_a_roll());
        };
        let ReadIndexes {
            head,
            tallies,
            recorded,
        } = indexes;
        let (mut persons, mut by_region, mut former) = (persons, by_region, former);
        let mut households = Households::from_sections(households).map_err(|e| e.to_string())?;
        let mut derived = Derived {
            persons: &mut persons,
            by_region: &mut by_region,
            former: &mut former,
        };
        // Every entry a replaced household accounted for leaves before any joins: a person may
        // have moved between two households the delta changed.
        let mut moved = Vec::new();
        let joined = households
            .overlay(changes, |number, then, now| {
                if derived.take_out(number, &then, now)? {
                    moved.push(number);
                }
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        for number in moved.into_iter().chain(joined) {
            let now = households.by_number(number).ok_or_else(|| {
                format!("the delta's household number {number} is not in the roll")
            })?;
            derived.put_in(number, now).map_err(|e| e.to_string())?;
        }
        let mut requests = requests.into_iter();
        let mut request_index = requests.next().ok_or_else(not_a_roll)?;
        for changed in requests {
            request_index.overlay(&changed);
        }
        Ok(Roll {
            head,
            tallies,
            recorded,
            households,
            requests: request_index,
            persons,
            by_region,
            former,
            checkpoint: Slot::default(),
        })
    }

    /// The structures a delta leaves out (by their place in [`Roll::structures`]): the person
    /// index and the region trees. Their entries do not know the event that put them there,
    /// so a delta held them whole: at a national roll, ~100 million people and ~30 million
    /// roster keys (over a gigabyte) every few hundred thousand events, however few changed.
    /// Each follows from the households alone, so a start-up brings the whole checkpoint's
    /// up to the delta's households instead ([`Derived`]).
    const DERIVED: [usize; 3] = [2, 3, 4];

    /// The seq of the last event applied.
    pub fn head(&self) -> u64 {
        self.head
    }

    fn indexes(&self) -> Indexes<'_> {
        Indexes {
            head: self.head,
            tallies: &self.tallies,
            recorded: &self.recorded,
        }
    }

    /// Starts a checkpoint of the roll as it is now, whole or a delta on the whole one at a
    /// seq ([`Extent`]): writes its first fields (the tallies,
    /// the recorded times) to `out`, and from here on keeps, for the checkpoint, the old
    /// version of any request, person, region entry or household a write changes before
    /// [`Roll::continue_checkpoint`] has encoded it.
    ///
    /// ```text
    ///   roll lock:  [begin]  writes  [piece]  writes  [piece] …
    ///   sections:   head tallies recorded │ households ×8 │ requests │ persons │ by_region │ former
    ///               └─ written by begin ─┘ └──── part 0 … part 11, ~4,096 entries a piece ───────┘
    /// ```
    ///
    /// Each is a section of the checkpoint, so that a start-up decodes them side by side
    /// ([`Roll::decode_section`]); one after the other, they are the roll's serialized form.
    /// The households, most of a roll without request_ids, are eight sections of their own,
    /// and come first: what a write saves for the checkpoint is a whole household (its state,
    /// seqs, regions and timeline, ~5 allocations) but one entry of an index or region tree,
    /// so the households are the structure to have written before the others' seconds of
    /// encoding (the request index is the largest part at 10M events with request_ids).
    /// The caller holds the roll's lock against writes during each call, not between them, so
    /// that writes wait for one piece, not for the whole roll (~2 s at 10M events). Every call
    /// after this one must continue or end it.
    pub fn begin_checkpoint(
        &self,
        extent: Extent,
        out: &mut dyn std::io::Write,
    ) -> Result<(), Error> {
        // The encoder writes each small field on its own; through a concrete buffer, each is
        // a copy into it, not a call through `dyn Write`.
        use std::io::Write as _;
        // Refused here, before anything is begun, if another checkpoint is under way.
        self.checkpoint.begin(extent)?;
        let mut buffered = std::io::BufWriter::with_capacity(64 * 1024, out);
        let written = self
            .structures()
            .iter()
            .enumerate()
            .filter(|(n, _)| Self::writes(extent, *n))
            .try_for_each(|(_, part)| part.begin_capture(extent))
            .and_then(|()| {
                postcard::to_io(&self.indexes(), &mut buffered).map_err(checkpoint_failed)
            })
            .and_then(|buffered| buffered.flush().map_err(checkpoint_failed));
        if written.is_err() {
            self.end_checkpoint();
        }
        written
    }

    /// Entries (households, then requests, people and region entries) a checkpoint encodes in
    /// one piece: ~3 ms under load, while writes wait.
    pub const CHECKPOINT_STEP: usize = 4_096;

    /// The parts [`Roll::continue_checkpoint`] writes, each a section after the first fields':
    /// one for each index and region tree, and the households' sections.
    pub const CHECKPOINT_PARTS: usize = 4 + households::SECTIONS;

    /// The households' sections, the first parts (sections 1 to this).
    pub const HOUSEHOLD_SECTIONS: usize = households::SECTIONS;

    /// The sections of a checkpoint of a roll: the first fields', then one for each part.
    pub const CHECKPOINT_SECTIONS: usize = 1 + Self::CHECKPOINT_PARTS;

    /// Encodes up to `step` more entries of `part` (the households' sections, then the request
    /// index, the person index and the two region trees: 0 to 11, each until it is done, in
    /// that order) of the checkpoint begun by [`Roll::begin_checkpoint`] onto `piece`, each as it
    /// was then, for the caller to write out once it has released the roll; true once every
    /// entry of the part is encoded (and the checkpoint has ended, after the last part).
    pub fn continue_checkpoint(
        &self,
        part: usize,
        step: usize,
        piece: &mut Vec<u8>,
    ) -> Result<bool, Error> {
        let extent = *capture::under_way(&mut self.checkpoint.lock())?;
        // Part by part, each structure's sections in turn.
        let mut section = part;
        let writing = self
            .structures()
            .into_iter()
            .enumerate()
            .find(|(_, structure)| {
                let found = section < structure.sections();
                if !found {
                    section -= structure.sections();
                }
                found
            });
        let Some((n, writing)) = writing else {
            return Err(checkpoint_failed(format!(
                "a roll has {} parts, not {}",
                Self::CHECKPOINT_PARTS,
                part + 1
            )));
        };
        // A structure a delta leaves out is an empty section of it.
        let done = !Self::writes(extent, n) || writing.write_captured(section, step, piece)?;
        if done && part + 1 == Self::CHECKPOINT_PARTS {
            self.end_checkpoint();
        }
        Ok(done)
    }

    /// Ends the checkpoint under way, if any (abandoned after an error, or written).
    pub fn end_checkpoint(&self) {
        for structure in self.structures() {
            structure.end_capture();
        }
        self.checkpoint.end();
    }

    /// Whether a checkpoint of `extent` writes structure `n` of [`Roll::structures`]: a whole
    /// one writes all; a delta leaves out those [`Roll::DERIVED`] from the households.
    fn writes(extent: Extent, n: usize) -> bool {
        extent == Extent::Whole || !Self::DERIVED.contains(&n)
    }

    /// What a checkpoint writes a piece at a time, in the payload's order (the fields' order),
    /// each in as many sections as it has.
    fn structures(&self) -> [&dyn Piecewise; 5] {
        [
            &self.households,
            &self.requests,
            &self.persons,
            &self.by_region,
            &self.former,
        ]
    }

    pub fn household(&self, id: &HouseholdId) -> Option<&HouseholdEntry> {
        self.households.get(id)
    }

    pub fn request(&self, request_id: &str) -> Option<u64> {
        self.requests.get(RequestKey::of(request_id)).map(u64::from)
    }

    pub fn households(&self) -> usize {
        self.households.len()
    }

    /// The last seq recorded at or before `time` (0 if none was).
    pub fn seq_known_at(&self, time: DateTime<Utc>) -> u64 {
        let after = self.recorded.partition_point(|(t, _)| *t <= time);
        after.checked_sub(1).map_or(0, |i| self.recorded[i].1)
    }

    /// Folds one event in. Events must come in seq order, each exactly once.
    pub fn apply(&mut self, event: &Event, history: &dyn History) -> Result<(), Error> {
        self.fold(event, history, None, None)
    }

    /// Folds in an event the writer has just decided, with the states it decided it between
    /// (see [`Decided`]): the same as [`Roll::apply`], without working them out again.
    pub fn apply_decided(
        &mut self,
        event: &Event,
        history: &dyn History,
        decided: Decided,
    ) -> Result<(), Error> {
        self.fold(event, history, None, Some(decided))
    }

    /// Starts folding many events in a row, as a start-up's replay or a rebuild does (see
    /// [`Replay`]).
    pub fn replay(&mut self) -> Replay<'_> {
        let gather = Replay::gather(self);
        Replay {
            roll: self,
            requests: Vec::new(),
            gather,
        }
    }

    /// [`Roll::apply`], with the event's request entry left in `requests` instead of written
    /// to the index, if it is given.
    fn fold(
        &mut self,
        event: &Event,
        history: &dyn History,
        requests: Option<&mut Vec<(RequestKey, Seq48)>>,
        decided: Option<Decided>,
    ) -> Result<(), Error> {
        if event.seq != self.head + 1 {
            return Err(Error::Corrupt(format!(
                "event {} follows {} in the log",
                event.seq, self.head
            )));
        }
        let id = &event.household_id;
        let known = self.households.number(id);
        let number = match known {
            Some(number) => number,
            None => self.households.next_number()?,
        };
        // A household new to the roll is built aside and joins it only if the event starts it
        // (only an identify does; the rules refuse anything else first).
        let mut newcomer = None;
        let entry = match known {
            Some(number) => self
                .households
                .by_number_mut(number)
                .expect("the index holds only numbers of entries"),
            None => newcomer.insert(HouseholdEntry {
                id: id.clone(),
                state: PackedState(Box::new([])),
                seqs: Seqs::default(),
                regions: Vec::new(),
                timeline: Timeline::default(),
            }),
        };
        // What can fail comes first, so that a failure leaves the household as it was.
        if let Some(last) = entry.seqs.last().filter(|last| *last >= event.seq) {
            // Only a roll that is not the fold of the log before `event` holds a later event
            // (a checkpoint that does not match the log it is tied to): refuse it rather than
            // fold it into a wrong stream.
            return Err(Error::Corrupt(format!(
                "household {id} already holds event {last}, not before event {}: the roll does not match the log",
                event.seq
            )));
        }
        // A decided event brings its states, unless it is a correction (folded from its
        // household's stream) or its household is not what the writer saw (never, since the
        // writer decides against this roll and the groups before; then it is folded as if
        // undecided, and the roll stays the fold of the log).
        let decided = decided.filter(|d| {
            !matches!(event.change, Change::Correct(_)) && d.before.is_some() == known.is_some()
        });
        let before = match (&decided, known) {
            (None, Some(_)) => Some(entry.state.unpack()?),
            _ => None,
        };
        let corrected_stream = match &event.change {
            Change::Correct(_) => {
                let seqs: Vec<u64> = entry.seqs.iter().chain([event.seq]).collect();
                Some(history.events(&seqs)?)
            }
            _ => None,
        };
        entry.seqs.push(event.seq);
        // What the old state counted for, taken before the state is folded (a household's
        // state is not cloned on the hot path).
        let (footprint, decided) = match decided {
            Some(Decided {
                before: footprint,
                after,
            }) => (footprint, Some(after)),
            None => (before.as_ref().map(Decided::footprint), None),
        };
        let folded = match (&decided, &corrected_stream) {
            (Some(_), _) => None,
            (None, Some(stream)) => entry
                .timeline
                .restart(event.seq, &effective_events(stream, None)),
            (None, None) => apply(before, event.effective_date, &event.change),
        };
        let after = decided.as_deref().or(folded.as_ref());
        if corrected_stream.is_none() {
            if let Some(state) = after {
                entry
                    .timeline
                    .push(event.seq, event.effective_date, Snapshot::of(state));
            }
        }
        self.head = event.seq;
        if let Some(request_id) = &event.request_id {
            let seq = Seq48::try_from(event.seq)
                .expect("a log never reaches 2^48 events: that is petabytes of bodies");
            match requests {
                Some(later) => later.push((RequestKey::of(request_id), seq)),
                None => self.requests.insert(RequestKey::of(request_id), seq),
            }
        }
        match self.recorded.last_mut() {
            Some((time, last)) if *time == event.recorded_at => *last = event.seq,
            _ => self.recorded.push((event.recorded_at, event.seq)),
        }
        let Some(after) = after else {
            // A correction that annulled the household's every event leaves its state as it
            // was; an event that starts no household leaves none.
            if let Some((snapshot, _)) = &footprint {
                note_region(&mut entry.regions, &entry.seqs, snapshot.region_code);
            }
            return Ok(());
        };
        note_region(&mut entry.regions, &entry.seqs, after.region_code);
        let now = Snapshot::of(after);
        // Most events change nothing the tallies count (an income, a helper, a measure): then
        // taking the household out of its groups and putting it back would be a wash.
        let recount = footprint.as_ref().is_none_or(|(then, _)| *then != now);
        if let Some((snapshot, members)) = &footprint {
            // Only the people the household no longer holds leave the index.
            for person in members {
                let stays = after.active_members().any(|p| p == person);
                if !stays && self.persons.get(person.compact()) == Some(number) {
                    self.persons.remove(person.compact());
                }
            }
            if snapshot.region_code != after.region_code {
                let left = (snapshot.region_code, id.clone());
                self.by_region.remove(&left);
                self.former.insert(left, number);
            }
            if recount {
                stats::count(&mut self.tallies, snapshot, -1);
            }
        }
        // Only the people active here now and not before join the index. Whoever stays is
        // indexed here already: the rules keep a person active in one household at most
        // (`check_people_free`, for every write and correction). Most events change no member,
        // and writing each one again was a search of the index per person per event.
        let held = footprint
            .as_ref()
            .map_or(&[][..], |(_, members)| &members[..]);
        for person in after.active_members().filter(|p| !held.contains(p)) {
            self.persons.insert(person.compact(), number);
        }
        // The region trees change only for a new household, a move, or a correction (which may
        // bring back regions of any epoch); most events are none of these, and skipping them
        // saves two tree searches per event.
        let moved = footprint
            .as_ref()
            .is_none_or(|(snapshot, _)| snapshot.region_code != after.region_code);
        if corrected_stream.is_some() {
            for region in entry.timeline.regions() {
                if region != after.region_code {
                    self.former.insert_if_absent((region, id.clone()), number);
                }
            }
        }
        if moved || corrected_stream.is_some() {
            let key = (after.region_code, id.clone());
            self.former.remove(&key);
            self.by_region.insert_if_absent(key, number);
        }
        if recount {
            stats::count(&mut self.tallies, &now, 1);
        }
        entry.state.repack(after);
        if let Some(newcomer) = newcomer {
            let pushed = self.households.push(newcomer)?;
            debug_assert_eq!(pushed, number, "a newcomer takes the next number");
        }
        Ok(())
    }

    /// The household's region before and after event `seq` of its stream, as recorded then.
    pub fn event_regions(
        &self,
        id: &HouseholdId,
        seq: u64,
    ) -> Option<(Option<RegionCode>, RegionCode)> {
        let entry = self.households.get(id)?;
        let index = entry.seqs.position(seq)?;
        let after = entry.region_after(index)?;
        let before = index.checked_sub(1).and_then(|i| entry.region_after(i));
        Some((before, after))
    }

    /// The households that may have been under `prefix` at `at`, each with its snapshot there,
    /// in roster order `(region then, household_id)`, starting after `after`. A household is
    /// yielded once, under the region it had at `at`.
    pub fn under(
        &self,
        prefix: RegionPrefix,
        at: PointInTime,
        after: Option<&RosterKey>,
    ) -> impl Iterator<Item = (&HouseholdId, Snapshot)> + '_ {
        let (first, last) = prefix.range();
        let lower = match after {
            Some(key) => Bound::Excluded(key.clone()),
            None => Bound::Included((first, HouseholdId::before_all())),
        };
        // Now, a household is where it is; at another point, wherever it ever was.
        let now = self.by_region.range((lower.clone(), Bound::Unbounded));
        let former = (at != PointInTime::NOW)
            .then(|| self.former.range((lower, Bound::Unbounded)))
            .into_iter()
            .flatten();
        in_key_order(now, former)
            .take_while(move |((region, _), _)| *region <= last)
            .filter_map(move |((region, id), number)| {
                let snapshot = self.households.by_number(*number)?.timeline.at(at)?;
                (snapshot.region_code == *region).then_some((id, snapshot))
            })
    }

    /// One page of the roster under `prefix` at `at`: households whose status is one of
    /// `statuses`, at most `limit`, and whether more follow.
    pub fn roster(
        &self,
        prefix: RegionPrefix,
        statuses: &[Status],
        at: PointInTime,
        after: Option<&RosterKey>,
        limit: usize,
    ) -> (Vec<(HouseholdId, Snapshot)>, bool) {
        let mut matching = self
            .under(prefix, at, after)
            .filter(|(_, snapshot)| statuses.contains(&snapshot.status));
        let page: Vec<_> = matching
            .by_ref()
            .take(limit)
            .map(|(id, snapshot)| (id.clone(), snapshot))
            .collect();
        let more = matching.next().is_some();
        (page, more)
    }

    /// Households and people under `prefix` at `at`, by region one level down, attribute,
    /// cause and safety net.
    pub fn stats(&self, prefix: RegionPrefix, at: PointInTime) -> Stats {
        if at == PointInTime::NOW {
            return stats::gather(&self.tallies, prefix);
        }
        let mut stats = Stats::default();
        for (_, snapshot) in self.under(prefix, at, None) {
            stats.count(prefix, &snapshot);
        }
        stats
    }
}

/// A roll folding many events in a row: a start-up's replay of the log's tail, or a rebuild.
/// Nothing reads the roll meanwhile (the replay holds it), so the request entries of the
/// events (one for nearly every event) are gathered and written to the request index in
/// batches, each shard merged with its share in one pass: written one by one, each was a
/// search of a run of thousands (a cache miss), and a fifth of the applying thread's time.
/// Every other part of the roll moves event by event, exactly as [`Roll::apply`] moves it.
/// Dropping the replay writes what is gathered, so the roll is whole however it ended.
pub struct Replay<'r> {
    roll: &'r mut Roll,
    requests: Vec<(RequestKey, Seq48)>,
    /// How many entries are gathered before they are written (see [`Replay::gather`]).
    gather: usize,
}

impl Replay<'_> {
    /// A batch is a million entries (18 MiB), or an eighth of the index if that is more: each
    /// batch copies the whole index once, so a fixed size would make a replay of a whole
    /// national log quadratic, and an eighth keeps the copying to ~8 entries per entry written
    /// while what waits stays an eighth of what the index holds.
    fn gather(roll: &Roll) -> usize {
        // The unit tests replay thousands of events, not millions: a smaller batch has them
        // cross batches too.
        let least = if cfg!(test) { 1_000 } else { 1 << 20 };
        roll.requests.len().div_ceil(8).max(least)
    }

    /// Folds one event in, as [`Roll::apply`] does.
    pub fn apply(&mut self, event: &Event, history: &dyn History) -> Result<(), Error> {
        self.roll
            .fold(event, history, Some(&mut self.requests), None)?;
        if self.requests.len() >= self.gather {
            self.write_requests();
            self.gather = Self::gather(self.roll);
        }
        Ok(())
    }

    fn write_requests(&mut self) {
        let gathered = std::mem::take(&mut self.requests);
        self.roll.requests.insert_all(gathered);
    }
}

impl Drop for Replay<'_> {
    fn drop(&mut self) {
        self.write_requests();
    }
}

/// Why a household entered or left a roster between two points in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeReason {
    Identified,
    Exited,
    Relapsed,
    Removed,
    RelocatedIn,
    RelocatedOut,
    /// A correction known at one point and not the other made the difference.
    Corrected,
}

/// One household that entered or left the roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterChange {
    pub household_id: HouseholdId,
    /// True: on the roster at `to` and not at `from`. False: the other way round.
    pub entered: bool,
    pub reason: ChangeReason,
    /// The household as it stood at each point (`None`: not yet registered there).
    pub from: Option<Snapshot>,
    pub to: Option<Snapshot>,
}

impl Roll {
    /// The households ever under `prefix`, each once.
    pub fn ever_under(&self, prefix: RegionPrefix) -> BTreeSet<&HouseholdId> {
        let (first, last) = prefix.range();
        [&self.by_region, &self.former]
            .into_iter()
            .flat_map(|tree| {
                tree.range((first, HouseholdId::before_all())..)
                    .take_while(|((region, _), _)| *region <= last)
                    .map(|((_, id), _)| id)
            })
            .collect()
    }

    /// Every household on the roster under `prefix` at one point and not the other, by id.
    pub fn diff(
        &self,
        prefix: RegionPrefix,
        from: PointInTime,
        to: PointInTime,
    ) -> Vec<RosterChange> {
        let on_roster = |s: &Option<Snapshot>| {
            s.is_some_and(|s| s.status == Status::OnRoll && prefix.contains(s.region_code))
        };
        let head = self.head;
        let (k1, k2) = (from.known_at.unwrap_or(head), to.known_at.unwrap_or(head));
        let window = k1.min(k2)..=k1.max(k2);
        let mut changes = Vec::new();
        for id in self.ever_under(prefix) {
            let Some(timeline) = self.households.get(id).map(|entry| &entry.timeline) else {
                continue;
            };
            let (before, after) = (timeline.at(from), timeline.at(to));
            let entered = match (on_roster(&before), on_roster(&after)) {
                (false, true) => true,
                (true, false) => false,
                _ => continue,
            };
            let corrected = k1 != k2
                && timeline
                    .corrections()
                    .any(|c| window.contains(&c) && c != *window.start());
            let other = if entered { before } else { after };
            let reason = match (corrected, entered, other.map(|s| s.status)) {
                (true, _, _) | (false, false, None) => ChangeReason::Corrected,
                (false, true, None | Some(Status::Removed)) => ChangeReason::Identified,
                (false, true, Some(Status::Exited)) => ChangeReason::Relapsed,
                (false, true, Some(Status::OnRoll)) => ChangeReason::RelocatedIn,
                (false, false, Some(Status::Exited)) => ChangeReason::Exited,
                (false, false, Some(Status::Removed)) => ChangeReason::Removed,
                (false, false, Some(Status::OnRoll)) => ChangeReason::RelocatedOut,
            };
            changes.push(RosterChange {
                household_id: id.clone(),
                entered,
                reason,
                from: before,
                to: after,
            });
        }
        changes
    }
}

impl PersonDirectory for Roll {
    fn household_of(&self, person: &IdNumber) -> Option<HouseholdId> {
        let number = self.persons.get(person.compact())?;
        self.households
            .by_number(number)
            .map(|entry| entry.id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts a checkpoint's writer asks for are the sections of the roll's structures.
    #[test]
    fn the_parts_are_the_structures_sections() {
        let roll = Roll::default();
        let sections: usize = roll.structures().iter().map(|s| s.sections()).sum();
        assert_eq!(sections, Roll::CHECKPOINT_PARTS);
    }

    /// What a delta leaves out, named by place in `structures`, is the person index and the
    /// two region trees, and nothing else: the structures `Derived` rebuilds.
    #[test]
    fn a_delta_leaves_out_the_structures_that_follow_from_the_households() {
        let roll = Roll::default();
        let address = |s: &dyn Piecewise| s as *const dyn Piecewise as *const ();
        let left_out: Vec<_> = Roll::DERIVED
            .iter()
            .map(|&n| address(roll.structures()[n]))
            .collect();
        let derived = [
            address(&roll.persons),
            address(&roll.by_region),
            address(&roll.former),
        ];
        assert_eq!(left_out, derived);
    }

    /// One packed state repacked through states of every size the demo's households reach,
    /// growing, shrinking and staying the same: its bytes are always those of a fresh encoding,
    /// and its first fields read alone ([`Footing`]) are the state's.
    #[test]
    fn a_repacked_state_is_the_state_packed_afresh() {
        let mut states: std::collections::HashMap<HouseholdId, HouseholdState> = Default::default();
        let mut packed = PackedState(Box::new([]));
        let mut sizes = std::collections::BTreeSet::new();
        for command in crate::demo::baota::generate(7).commands.iter().take(3_000) {
            let before = states.remove(&command.household_id);
            let Some(after) = apply(before, command.effective_date, &command.change) else {
                continue;
            };
            packed.repack(&after);
            let fresh = postcard::to_stdvec(&after).expect("a state encodes");
            assert_eq!(*packed.0, *fresh, "{}", command.household_id);
            assert_eq!(packed.unpack().expect("a packed state unpacks"), after);
            let footing = packed
                .footing()
                .expect("a packed state's first fields read");
            let ids: Vec<_> = footing.members.iter().map(|m| m.id_number).collect();
            let members: Vec<_> = after.members.iter().map(|m| m.id_number).collect();
            assert_eq!(
                (footing.status, footing.region_code, ids),
                (after.status, after.region_code, members),
                "{}",
                command.household_id
            );
            sizes.insert(fresh.len());
            states.insert(command.household_id.clone(), after);
        }
        assert!(sizes.len() > 10, "states of only {} sizes", sizes.len());
    }

    /// The person index and the tallies are kept by writing only what an event changes (the
    /// people who join or leave, the groups a household moves between). Folded over the demo's
    /// events, they must equal what a count of the households' final states gives afresh.
    struct NoCorrections;

    impl History for NoCorrections {
        fn events(&self, _: &[u64]) -> Result<Vec<Event>, Error> {
            unreachable!("the corrections were left out")
        }
    }

    /// The first `n` of the demo's events but its corrections (which need the log), each with
    /// the request_id `request_id(seq)` gives.
    fn demo_events(n: usize, request_id: impl Fn(u64) -> Option<String>) -> Vec<Event> {
        let commands = crate::demo::baota::generate(7).commands;
        let commands = commands
            .into_iter()
            .filter(|c| !matches!(c.change, Change::Correct(_)))
            .take(n);
        (1..)
            .zip(commands)
            .map(|(seq, command)| Event {
                seq,
                household_id: command.household_id,
                version: 0,
                effective_date: command.effective_date,
                recorded_at: DateTime::<Utc>::UNIX_EPOCH,
                actor: String::new(),
                document_ref: command.document_ref,
                request_id: request_id(seq),
                change: command.change,
            })
            .collect()
    }

    #[test]
    fn the_person_index_and_the_tallies_are_those_of_the_final_states() {
        let mut roll = Roll::default();
        for event in demo_events(20_000, |_| None) {
            roll.apply(&event, &NoCorrections).expect("the demo folds");
        }
        let mut people = 0;
        let mut tallies = BTreeMap::new();
        for number in 0..u32::try_from(roll.households.len()).unwrap() {
            let entry = roll.households.by_number(number).unwrap();
            let state = entry.state.unpack().unwrap();
            for person in state.active_members() {
                assert_eq!(roll.persons.get(person.compact()), Some(number), "{person}");
                people += 1;
            }
            stats::count(&mut tallies, &Snapshot::of(&state), 1);
        }
        assert_eq!(roll.persons.len(), people);
        assert!(people > 10_000, "only {people} people");
        assert_eq!(roll.tallies, tallies);
    }

    /// A replay gathers request entries and writes them in batches (here of a thousand and
    /// more) and at the end: the roll it leaves is the one that applying each event in turn
    /// leaves, a request_id given twice (as an import of a log written elsewhere might hold)
    /// included, in one batch or in two.
    #[test]
    fn a_replay_leaves_the_roll_that_applying_each_event_leaves() {
        // None for every seventh event; the same id for two events 15,000 apart (in two
        // batches), and for two events 7 apart (mostly in one).
        let request_id = |seq: u64| match seq % 7 {
            0 => None,
            3 => Some(format!("near-{}", seq / 14)),
            _ => Some(format!("req-{}", seq % 15_000)),
        };
        let events = demo_events(20_000, request_id);
        let mut applied = Roll::default();
        for event in &events {
            applied
                .apply(event, &NoCorrections)
                .expect("the demo folds");
        }
        let mut replayed = Roll::default();
        let mut replay = replayed.replay();
        for event in &events {
            replay.apply(event, &NoCorrections).expect("the demo folds");
        }
        drop(replay);
        assert_eq!(replayed, applied);
        for id in [
            "req-1",
            "req-2",
            "req-14999",
            "req-15001",
            "near-0",
            "near-500",
        ] {
            assert_eq!(replayed.request(id), applied.request(id), "{id}");
        }
        assert_eq!(applied.request("req-2"), Some(15_002));
        assert_eq!(applied.request("near-0"), Some(10));
    }

    /// Regions noted event by event read back event by event, though only changes are kept.
    #[test]
    fn regions_are_kept_as_changes_and_read_back_per_event() {
        let region = |n: u64| RegionCode::parse(&format!("{:012}", 610_602_201_000 + n)).unwrap();
        let cases: [&[u64]; 5] = [&[1], &[1, 1, 1], &[1, 2], &[1, 1, 2, 2, 1], &[3, 2, 1, 1]];
        for after_each in cases {
            let mut entry = HouseholdEntry {
                id: HouseholdId::parse("H1").expect("a valid household id"),
                state: PackedState(Box::new([])),
                seqs: Seqs::default(),
                regions: Vec::new(),
                timeline: Timeline::default(),
            };
            for (i, n) in after_each.iter().enumerate() {
                entry.seqs.push(10 * (i as u64 + 1));
                note_region(&mut entry.regions, &entry.seqs, region(*n));
            }
            let changes = 1 + after_each.windows(2).filter(|w| w[0] != w[1]).count();
            assert_eq!(entry.regions.len(), changes, "{after_each:?}");
            for (i, n) in after_each.iter().enumerate() {
                assert_eq!(
                    entry.region_after(i),
                    Some(region(*n)),
                    "{after_each:?} at {i}"
                );
            }
            assert_eq!(
                entry.region_after(after_each.len()),
                None,
                "{after_each:?} past the end"
            );
        }
    }
}
