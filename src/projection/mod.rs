//! The roll: the register as it stands at the head of the log, with the indexes that reads and
//! the rules need. Derived data, built only from events.
//!
//! ```text
//!                      ┌ households   HouseholdId → state, version, its seqs (the stream index)
//!   Event ─▶ Roll::apply ┼ persons      IdNumber → the household holding them (one-per-person rule)
//!   (in seq order)     ├ requests     request_id → seq (idempotency)
//!                      ├ by_region    (RegionCode, HouseholdId), ordered: a county is a range
//!                      └ tallies      (RegionCode, Group) → households and people, by status
//! ```
//!
//! [`Roll::apply`] is the only way in, for live appends and for a rebuild alike, so a rebuild
//! from the log yields exactly what incremental updates produced. It must not be fed an event
//! out of seq order, and it touches no disk: persisting or rebuilding it is `app`'s job.

mod stats;

use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use stats::{Group, Stats, StatsRow, Tally};

use crate::domain::{
    apply, Event, HouseholdId, HouseholdState, IdNumber, PersonDirectory, RegionCode, RegionPrefix,
    Status,
};

/// One household in the roll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HouseholdEntry {
    pub state: HouseholdState,
    /// The seqs of its events, in record order; `seqs.len()` is its version.
    pub seqs: Vec<u64>,
}

impl HouseholdEntry {
    pub fn version(&self) -> u64 {
        self.seqs.len() as u64
    }
}

/// A position in the roster's order: `(region_code, household_id)`.
pub type RosterKey = (RegionCode, HouseholdId);

/// The register at the head of the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Roll {
    head: u64,
    households: HashMap<HouseholdId, HouseholdEntry>,
    persons: HashMap<IdNumber, HouseholdId>,
    requests: HashMap<String, u64>,
    by_region: BTreeSet<RosterKey>,
    tallies: BTreeMap<(RegionCode, Group), StatsRow>,
}

impl Roll {
    /// The seq of the last event applied.
    pub fn head(&self) -> u64 {
        self.head
    }

    pub fn household(&self, id: &HouseholdId) -> Option<&HouseholdEntry> {
        self.households.get(id)
    }

    pub fn request(&self, request_id: &str) -> Option<u64> {
        self.requests.get(request_id).copied()
    }

    pub fn households(&self) -> usize {
        self.households.len()
    }

    /// Folds one event in. Events must come in seq order, each exactly once.
    pub fn apply(&mut self, event: &Event) {
        debug_assert_eq!(event.seq, self.head + 1, "events are applied in seq order");
        self.head = event.seq;
        if let Some(request_id) = &event.request_id {
            self.requests.insert(request_id.clone(), event.seq);
        }
        let id = &event.household_id;
        let previous = self.households.remove(id);
        let (before, mut seqs) = match previous {
            Some(entry) => (Some(entry.state), entry.seqs),
            None => (None, Vec::new()),
        };
        let Some(after) = apply(before.clone(), event.effective_date, &event.change) else {
            // Only an identify starts a household, and the rules refuse anything else first;
            // a log that says otherwise leaves the roll as it was.
            if let Some(state) = before {
                self.households
                    .insert(id.clone(), HouseholdEntry { state, seqs });
            }
            return;
        };
        seqs.push(event.seq);
        if let Some(before) = &before {
            for person in before.active_members() {
                if self.persons.get(person) == Some(id) {
                    self.persons.remove(person);
                }
            }
            self.by_region.remove(&(before.region_code, id.clone()));
            stats::count(&mut self.tallies, before, -1);
        }
        for person in after.active_members() {
            self.persons.insert(person.clone(), id.clone());
        }
        self.by_region.insert((after.region_code, id.clone()));
        stats::count(&mut self.tallies, &after, 1);
        self.households
            .insert(id.clone(), HouseholdEntry { state: after, seqs });
    }

    /// The households under `prefix` whose status is one of `statuses`, in roster order,
    /// starting after `after`, at most `limit` of them. The second value is whether more follow.
    pub fn roster(
        &self,
        prefix: RegionPrefix,
        statuses: &[Status],
        after: Option<&RosterKey>,
        limit: usize,
    ) -> (Vec<(&HouseholdId, &HouseholdEntry)>, bool) {
        let (first, last) = prefix.range();
        let lower = match after {
            Some(key) => std::ops::Bound::Excluded(key.clone()),
            None => std::ops::Bound::Included((first, HouseholdId::before_all())),
        };
        let mut matching = self
            .by_region
            .range((lower, std::ops::Bound::Unbounded))
            .take_while(|(region, _)| *region <= last)
            .filter_map(|(_, id)| {
                let entry = self.households.get(id)?;
                statuses
                    .contains(&entry.state.status)
                    .then_some((id, entry))
            });
        let page: Vec<_> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        (page, more)
    }

    /// Households and people under `prefix`, by region one level down, attribute, cause and
    /// safety net.
    pub fn stats(&self, prefix: RegionPrefix) -> Stats {
        stats::gather(&self.tallies, prefix)
    }
}

impl PersonDirectory for Roll {
    fn household_of(&self, person: &IdNumber) -> Option<HouseholdId> {
        self.persons.get(person).cloned()
    }
}
