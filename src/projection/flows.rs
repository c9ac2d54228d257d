//! Flows over a period: how many households (and people) entered, left, moved and changed —
//! the annual dynamic-adjustment report (动态调整).
//!
//! Each event that counts at `known_at` (corrections applied) and takes effect within
//! `[from, to]` is counted once, under the region it concerns: an identification or exit where
//! the household is after it, a relocation on the side of the prefix it crosses. Households are
//! counted per event; people per person the event concerns. A correction counts on its own
//! date, under the region of its household as it stands at `known_at`.
//!
//! ```text
//!   stream ─effective_events(known_at)─▶ fold, one event at a time ─▶ Flows
//! ```
//!
//! Pure: the streams are passed in.

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::{
    apply, effective_events, Change, Date, Event, ExitReason, HouseholdState, Measure, MeasureKind,
    MemberAddedReason, MemberRemovedReason, RegionPrefix,
};

use super::Tally;

/// Counts of each kind of flow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flows {
    pub identified: Tally,
    pub exited: Tally,
    pub relapsed: Tally,
    pub removed: Tally,
    pub dissolved: Tally,
    pub corrected: Tally,
    pub relocated_in: Tally,
    pub relocated_out: Tally,
    /// Every relocation that starts or ends under the prefix, moves within it included.
    pub relocated: Tally,
    pub born: Tally,
    pub died: Tally,
    pub married_in: Tally,
    pub married_out: Tally,
    /// Assistance measures recorded in the period, by kind: events that carry at least one
    /// measure of the kind, and the members of their households.
    pub measures: BTreeMap<MeasureKind, Tally>,
}

fn add(tally: &mut Tally, households: u64, people: usize) {
    tally.households += households;
    tally.people += people as u64;
}

impl Flows {
    /// Counts one household's stream, as known at `known_at`.
    pub fn count(
        &mut self,
        prefix: RegionPrefix,
        from: Date,
        to: Date,
        known_at: Option<u64>,
        stream: &[Event],
    ) {
        let within = |date: Date| from <= date && date <= to;
        let inside = |state: &Option<HouseholdState>| {
            state
                .as_ref()
                .is_some_and(|s| prefix.contains(s.region_code))
        };
        let mut state: Option<HouseholdState> = None;
        for e in effective_events(stream, known_at) {
            let before = state.clone();
            state = apply(state, e.effective_date, e.change);
            if !within(e.effective_date) {
                continue;
            }
            let members = state.as_ref().map_or(0, |s| s.members.len());
            let measures: &[Measure] = match e.change {
                Change::Identify(id) => &id.measures,
                Change::Adjust(adjustment) => &adjustment.measures,
                _ => &[],
            };
            if inside(&state) {
                let kinds: BTreeSet<MeasureKind> = measures.iter().map(|m| m.kind).collect();
                for kind in kinds {
                    add(self.measures.entry(kind).or_default(), 1, members);
                }
            }
            match e.change {
                Change::Identify(_) if inside(&state) => add(&mut self.identified, 1, members),
                Change::Exit(exit) if inside(&state) => {
                    let tally = match exit.reason {
                        ExitReason::LiftedOut => &mut self.exited,
                        ExitReason::Removed => &mut self.removed,
                        ExitReason::Dissolved => &mut self.dissolved,
                    };
                    add(tally, 1, members);
                }
                Change::Relapse(_) if inside(&state) => add(&mut self.relapsed, 1, members),
                Change::Adjust(adjustment) => {
                    let (was, is) = (inside(&before), inside(&state));
                    if adjustment.relocate_to.is_some() && (was || is) {
                        add(&mut self.relocated, 1, members);
                    }
                    if adjustment.relocate_to.is_some() && was != is {
                        let tally = if is {
                            &mut self.relocated_in
                        } else {
                            &mut self.relocated_out
                        };
                        add(tally, 1, members);
                    }
                    if is {
                        let added = |reason| {
                            adjustment
                                .members_added
                                .iter()
                                .filter(|m| m.reason == reason)
                                .count()
                        };
                        let removed = |reason| {
                            adjustment
                                .members_removed
                                .iter()
                                .filter(|m| m.reason == reason)
                                .count()
                        };
                        for (tally, people) in [
                            (&mut self.born, added(MemberAddedReason::Birth)),
                            (&mut self.married_in, added(MemberAddedReason::MarriageIn)),
                            (&mut self.died, removed(MemberRemovedReason::Death)),
                            (
                                &mut self.married_out,
                                removed(MemberRemovedReason::MarriageOut),
                            ),
                        ] {
                            if people > 0 {
                                add(tally, 1, people);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if inside(&state) {
            let members = state.as_ref().map_or(0, |s| s.members.len());
            let corrections = stream.iter().filter(|e| {
                matches!(e.change, Change::Correct(_))
                    && known_at.is_none_or(|k| e.seq <= k)
                    && within(e.effective_date)
            });
            for _ in corrections {
                add(&mut self.corrected, 1, members);
            }
        }
    }
}
