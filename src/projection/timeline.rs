//! A household's timeline: what the roll needs of it at any point in time, without replaying.
//!
//! A [`Snapshot`] is the part of a household's state that rosters and stats read. The timeline
//! keeps the snapshot after each event that changed it, as a *mark* `(seq, effective_date,
//! snapshot)`. Within one *epoch* (a fixed set of known corrections) the marks are in record
//! order and their effective dates never go backwards (the rules see to that), so the events
//! that count at `(as_of, known_at)` are a prefix, and the answer is its last mark:
//!
//! ```text
//!   epoch from seq 0      marks: (3, 2015-03-01, ON_ROLL) (14, 2018-12-20, EXITED) …
//!   epoch from seq 40     marks: (3, 2015-03-01, ON_ROLL) …          (after: correct annuls 14)
//!
//!   at(as_of, known_at): the last epoch starting at or before known_at,
//!                        then its last mark with seq ≤ known_at and effective_date ≤ as_of
//! ```
//!
//! A correction starts a new epoch, re-folded from the corrected stream; the old epoch stays
//! for the points in time that did not know the correction yet. Pure data, no I/O.

use serde::{Deserialize, Serialize};

use crate::domain::{
    apply, Attribute, Cause, Date, Effective, HouseholdState, PointInTime, RegionCode, Status,
};

/// What a roster or a count needs of a household.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub status: Status,
    pub region_code: RegionCode,
    pub people: u32,
    pub attribute: Attribute,
    pub primary_cause: Cause,
    pub safety_net: bool,
}

impl Snapshot {
    pub fn of(state: &HouseholdState) -> Self {
        Self {
            status: state.status,
            region_code: state.region_code,
            people: u32::try_from(state.people()).unwrap_or(u32::MAX),
            attribute: state.attribute,
            primary_cause: state.primary_cause,
            safety_net: state.safety_net,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Mark {
    seq: u64,
    #[serde(with = "crate::domain::date_form")]
    date: Date,
    snapshot: Snapshot,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Epoch {
    /// The correction that started it (0 for the first epoch).
    from_seq: u64,
    marks: Vec<Mark>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// Oldest first; never empty.
    epochs: Vec<Epoch>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self {
            epochs: vec![Epoch {
                from_seq: 0,
                marks: Vec::new(),
            }],
        }
    }
}

impl Timeline {
    /// Records the snapshot after event `seq`, in the current epoch.
    pub fn push(&mut self, seq: u64, date: Date, snapshot: Snapshot) {
        let epoch = self.epochs.last_mut().expect("a timeline has an epoch");
        if epoch.marks.last().map(|m| m.snapshot) != Some(snapshot) {
            super::push_tight(
                &mut epoch.marks,
                Mark {
                    seq,
                    date,
                    snapshot,
                },
            );
        }
    }

    /// Starts a new epoch at correction `from_seq`, from the stream as it counts after it, and
    /// returns the state it folds into.
    pub fn restart(
        &mut self,
        from_seq: u64,
        effective: &[Effective<'_>],
    ) -> Option<HouseholdState> {
        self.epochs.push(Epoch {
            from_seq,
            marks: Vec::new(),
        });
        let mut state = None;
        for e in effective {
            state = apply(state, e.effective_date, e.change);
            if let Some(state) = &state {
                self.push(e.seq, e.effective_date, Snapshot::of(state));
            }
        }
        state
    }

    /// The household at a point in time, or `None` if it had not entered the register then.
    pub fn at(&self, at: PointInTime) -> Option<Snapshot> {
        let epoch = match at.known_at {
            None => self.epochs.last(),
            Some(known) => self.epochs.iter().rev().find(|e| e.from_seq <= known),
        }?;
        let known = epoch.marks.partition_point(|m| at.knows(m.seq));
        let covered = epoch.marks.partition_point(|m| at.covers(m.date));
        let end = known.min(covered);
        end.checked_sub(1).map(|i| epoch.marks[i].snapshot)
    }

    /// Every region the household was ever in, in any epoch (with repeats).
    pub fn regions(&self) -> impl Iterator<Item = RegionCode> + '_ {
        self.epochs
            .iter()
            .flat_map(|e| e.marks.iter().map(|m| m.snapshot.region_code))
    }

    /// The seqs of the corrections known to this household.
    pub fn corrections(&self) -> impl Iterator<Item = u64> + '_ {
        self.epochs.iter().skip(1).map(|e| e.from_seq)
    }
}
