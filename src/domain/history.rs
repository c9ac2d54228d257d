//! A household's stream at a point in time: which events count, with which payload, and the
//! state they fold into (DESIGN.md §2).
//!
//! ```text
//!   stream (record order)   seq 3 identify · seq 9 adjust · seq 14 exit · seq 40 correct(annul 14)
//!   known_at = 20           identify, adjust, exit            (the correction is not known yet)
//!   known_at = head         identify, adjust                  (the exit is annulled)
//!   … then as_of            keep those with effective_date ≤ as_of, fold in record order
//! ```
//!
//! A correction annuls or amends its target (the latest amendment wins); it never deletes it.
//! [`decide_correction`] accepts a correction only if the whole stream, re-decided event by
//! event with it applied, still obeys every rule.
//!
//! Pure: the stream is passed in; no I/O, no clock.

use std::collections::{HashMap, HashSet};

use super::change::{Change, Command, CorrectionAction, Event};
use super::rules::{check_people_free, decide, Context, PersonDirectory};
use super::state::{apply, HouseholdState};
use super::values::{Date, HouseholdId, IdNumber};
use crate::error::{Error, Rule};

/// A point in time: the valid time `as_of` (a date; `None`, no limit) and the transaction time
/// `known_at` (a log position; `None`, the head).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PointInTime {
    pub as_of: Option<Date>,
    pub known_at: Option<u64>,
}

impl PointInTime {
    pub const NOW: PointInTime = PointInTime {
        as_of: None,
        known_at: None,
    };

    pub fn knows(&self, seq: u64) -> bool {
        self.known_at.is_none_or(|known| seq <= known)
    }

    pub fn covers(&self, date: Date) -> bool {
        self.as_of.is_none_or(|as_of| date <= as_of)
    }
}

/// An event as it counts after corrections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective<'a> {
    pub seq: u64,
    pub effective_date: Date,
    pub change: &'a Change,
    /// The original event.
    pub event: &'a Event,
}

/// The events of one household's stream that count as known at `known_at`, with every
/// correction known by then applied, in record order. Corrections themselves are left out.
pub fn effective_events(stream: &[Event], known_at: Option<u64>) -> Vec<Effective<'_>> {
    let known = |seq: u64| known_at.is_none_or(|k| seq <= k);
    let mut annulled = HashSet::new();
    let mut amended: HashMap<u64, (&Change, Option<Date>)> = HashMap::new();
    for event in stream.iter().filter(|e| known(e.seq)) {
        if let Change::Correct(correction) = &event.change {
            match &correction.action {
                CorrectionAction::Annul => {
                    annulled.insert(correction.target_seq);
                }
                CorrectionAction::Amend {
                    change,
                    effective_date,
                } => {
                    // Record order is seq order, so a later amendment overwrites an earlier one.
                    amended.insert(correction.target_seq, (&**change, *effective_date));
                }
            }
        }
    }
    stream
        .iter()
        .filter(|e| known(e.seq) && !matches!(e.change, Change::Correct(_)))
        .filter(|e| !annulled.contains(&e.seq))
        .map(|event| match amended.get(&event.seq) {
            Some((change, date)) => Effective {
                seq: event.seq,
                effective_date: date.unwrap_or(event.effective_date),
                change,
                event,
            },
            None => Effective {
                seq: event.seq,
                effective_date: event.effective_date,
                change: &event.change,
                event,
            },
        })
        .collect()
}

/// The state of a household at a point in time (DESIGN.md §2), from its whole stream.
pub fn state_at(stream: &[Event], at: PointInTime) -> Option<HouseholdState> {
    effective_events(stream, at.known_at)
        .into_iter()
        .filter(|e| at.covers(e.effective_date))
        .fold(None, |state, e| apply(state, e.effective_date, e.change))
}

/// Nobody holds anyone: re-deciding history checks each household's own rules; who else holds a
/// person is checked once, on the state the correction leaves.
struct Nobody;

impl PersonDirectory for Nobody {
    fn household_of(&self, _: &IdNumber) -> Option<HouseholdId> {
        None
    }
}

/// Decides whether `command` (a correction) may be appended to a household whose stream so far
/// is `stream`, and returns the state the corrected stream folds into.
pub fn decide_correction(
    ctx: Context<'_>,
    stream: &[Event],
    command: &Command,
    persons: &dyn PersonDirectory,
) -> Result<HouseholdState, Error> {
    let Change::Correct(correction) = &command.change else {
        return Err(Error::invalid("correct", "is not a correction"));
    };
    super::rules::well_formed(ctx.policy, command)?;
    let household = &command.household_id;
    let target_seq = correction.target_seq;
    let Some(target) = stream.iter().find(|e| e.seq == target_seq) else {
        return Err(Error::rule(
            Rule::CorrectionTarget,
            format!("event {target_seq} is not an event of household {household}"),
        ));
    };
    if matches!(target.change, Change::Correct(_)) {
        return Err(Error::rule(
            Rule::CorrectionTarget,
            format!(
                "event {target_seq} is itself a correction; corrections do not target corrections"
            ),
        ));
    }
    let current = effective_events(stream, None);
    if !current.iter().any(|e| e.seq == target_seq) {
        return Err(Error::rule(
            Rule::CorrectionTarget,
            format!("event {target_seq} is already annulled"),
        ));
    }
    if let CorrectionAction::Amend { change, .. } = &correction.action {
        if change.kind() != target.change.kind() {
            return Err(Error::invalid(
                "amend",
                format!(
                    "event {target_seq} is an {}; its amendment must carry an {}, not an {}",
                    target.change.kind(),
                    target.change.kind(),
                    change.kind()
                ),
            ));
        }
    }
    let before = current
        .iter()
        .fold(None, |state, e| apply(state, e.effective_date, e.change));

    // The stream as it would stand, re-decided from the first event. (The command is only
    // borrowed here: the writer records it once the decision stands.)
    let proposed = command.clone().recorded(
        stream.last().map_or(0, |e| e.seq) + 1,
        stream.len() as u64 + 1,
        chrono::DateTime::<chrono::Utc>::MIN_UTC,
        "",
    );
    let mut corrected: Vec<Event> = stream.to_vec();
    corrected.push(proposed);
    let mut state: Option<HouseholdState> = None;
    for e in effective_events(&corrected, None) {
        let replayed = Command {
            household_id: household.clone(),
            effective_date: e.effective_date,
            document_ref: e.event.document_ref.clone(),
            expected_version: None,
            request_id: None,
            change: e.change.clone(),
        };
        let next = decide(ctx, state.as_ref(), &replayed, &Nobody).map_err(|error| {
            Error::rule(
                Rule::CorrectionBreaksStream,
                format!(
                    "with this correction, event {} ({} of {}) would break: {error}",
                    e.seq,
                    e.change.kind(),
                    e.effective_date
                ),
            )
        })?;
        state = Some(next);
    }
    let Some(after) = state else {
        return Err(Error::rule(
            Rule::CorrectionBreaksStream,
            format!(
                "the correction would leave household {household} with no identification; record exit (removed) instead"
            ),
        ));
    };
    check_people_free(household, before.as_ref(), &after, persons)?;
    Ok(after)
}
