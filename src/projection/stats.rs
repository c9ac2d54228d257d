//! Counters for `GetStats`: households and people, by status, per village and group.
//!
//! Each household on the roll or exited counts once in each group it belongs to, under its own
//! 12-digit region code:
//!
//! ```text
//!   (610602100201, Total)                 on_roll {households, people}, exited {…}
//!   (610602100201, SafetyNet)             …
//!   (610602100201, Attribute(LowIncome))  …
//!   (610602100201, Cause(Illness))        …
//! ```
//!
//! A query for a prefix sums the range of codes it covers, so its cost grows with the villages
//! under it, not with the households. Removed households count nowhere.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Snapshot;
use crate::domain::{Attribute, Cause, RegionCode, RegionPrefix, Status};

/// A group a household is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Group {
    Total,
    SafetyNet,
    Attribute(Attribute),
    Cause(Cause),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub households: u64,
    pub people: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.households += other.households;
        self.people += other.people;
    }
}

/// Counts of one group, by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRow {
    pub on_roll: Tally,
    pub exited: Tally,
}

impl StatsRow {
    fn add(&mut self, other: &StatsRow) {
        self.on_roll.add(other.on_roll);
        self.exited.add(other.exited);
    }

    fn is_zero(&self) -> bool {
        *self == StatsRow::default()
    }
}

/// The answer to a stats query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub total: StatsRow,
    pub safety_net: StatsRow,
    /// Keyed by the prefix one level below the query's.
    pub by_region: BTreeMap<RegionPrefix, StatsRow>,
    pub by_attribute: BTreeMap<Attribute, StatsRow>,
    pub by_cause: BTreeMap<Cause, StatsRow>,
}

impl Stats {
    /// Counts one household. The point-in-time path counts snapshots with this; the tallies
    /// of the head count them with `count`; both share `groups` and `row_of`.
    pub fn count(&mut self, prefix: RegionPrefix, snapshot: &Snapshot) {
        let Some(row) = row_of(snapshot) else { return };
        for group in groups(snapshot) {
            self.add(prefix, snapshot.region_code, group, &row);
        }
    }

    fn add(&mut self, prefix: RegionPrefix, region: RegionCode, group: Group, row: &StatsRow) {
        let target = match group {
            Group::Total => {
                self.by_region
                    .entry(region.truncate(prefix.next_level()))
                    .or_default()
                    .add(row);
                &mut self.total
            }
            Group::SafetyNet => &mut self.safety_net,
            Group::Attribute(attribute) => self.by_attribute.entry(attribute).or_default(),
            Group::Cause(cause) => self.by_cause.entry(cause).or_default(),
        };
        target.add(row);
    }
}

/// The groups a household counts in.
fn groups(state: &Snapshot) -> impl Iterator<Item = Group> {
    [
        Some(Group::Total),
        state.safety_net.then_some(Group::SafetyNet),
        Some(Group::Attribute(state.attribute)),
        Some(Group::Cause(state.primary_cause)),
    ]
    .into_iter()
    .flatten()
}

/// What one household adds to each of its groups, or nothing if it is removed.
fn row_of(state: &Snapshot) -> Option<StatsRow> {
    let tally = Tally {
        households: 1,
        people: u64::from(state.people),
    };
    match state.status {
        Status::OnRoll => Some(StatsRow {
            on_roll: tally,
            exited: Tally::default(),
        }),
        Status::Exited => Some(StatsRow {
            on_roll: Tally::default(),
            exited: tally,
        }),
        Status::Removed => None,
    }
}

/// Adds (`sign` = 1) or takes back (`sign` = -1) one household's counts.
pub(super) fn count(
    tallies: &mut BTreeMap<(RegionCode, Group), StatsRow>,
    state: &Snapshot,
    sign: i8,
) {
    let Some(row) = row_of(state) else { return };
    for group in groups(state) {
        let key = (state.region_code, group);
        let entry = tallies.entry(key).or_default();
        let apply = |total: &mut Tally, delta: Tally| {
            if sign > 0 {
                total.add(delta);
            } else {
                total.households -= delta.households;
                total.people -= delta.people;
            }
        };
        apply(&mut entry.on_roll, row.on_roll);
        apply(&mut entry.exited, row.exited);
        if entry.is_zero() {
            tallies.remove(&key);
        }
    }
}

/// Sums the tallies under `prefix`.
pub(super) fn gather(
    tallies: &BTreeMap<(RegionCode, Group), StatsRow>,
    prefix: RegionPrefix,
) -> Stats {
    let (first, last) = prefix.range();
    let mut stats = Stats::default();
    for ((region, group), row) in tallies.range((first, Group::Total)..) {
        if *region > last {
            break;
        }
        stats.add(prefix, *region, *group, row);
    }
    stats
}
