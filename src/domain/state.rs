//! A household's state, and the fold that produces it from its events.
//!
//! ```text
//!   None ──apply(identify)──▶ Some(state) ──apply(adjust | exit | relapse)──▶ Some(state') …
//! ```
//!
//! [`apply`] is total: it never refuses and never fails, because it also replays history that
//! the rules accepted long ago (under the policy of that day). Refusing is [`super::rules`]'s
//! job, and it happens before an event exists.
//!
//! Pure: no I/O, no clock, no storage keys.

use serde::{Deserialize, Serialize};

use super::change::{Assessment, Change, Helper, Measure, Member};
use super::values::{
    date_form, Attribute, Cause, Date, ExitReason, IdNumber, Monitoring, RegionCode, Status,
};

/// A helper as assigned from a date on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperAssignment {
    pub helper: Helper,
    #[serde(with = "date_form")]
    pub since: Date,
}

impl Status {
    /// Whether a household of this status holds its members in the register, for the
    /// one-household-per-person rule: every status but removed.
    pub fn holds_members(self) -> bool {
        self != Status::Removed
    }
}

/// Everything the register says of one household at one point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HouseholdState {
    pub status: Status,
    pub region_code: RegionCode,
    pub members: Vec<Member>,
    pub head_id: IdNumber,
    pub attribute: Attribute,
    pub primary_cause: Cause,
    pub other_causes: Vec<Cause>,
    pub income_per_capita: i64,
    pub safety_net: bool,
    pub monitoring: Monitoring,
    pub measures: Vec<Measure>,
    /// Oldest first; the last is the current helper.
    pub helpers: Vec<HelperAssignment>,
    pub assessment: Option<Assessment>,
    /// The latest identification's effective date.
    #[serde(with = "date_form")]
    pub identified_on: Date,
    /// The latest exit's effective date, while the household is exited or removed.
    #[serde(with = "date_form::option")]
    pub exited_on: Option<Date>,
    /// The latest effective date among the household's events.
    #[serde(with = "date_form")]
    pub last_effective_date: Date,
}

impl HouseholdState {
    /// The people this household holds in the register: its members, unless it was removed.
    /// These are the people the one-household-per-person rule counts.
    pub fn active_members(&self) -> impl Iterator<Item = &IdNumber> {
        let active = self.status.holds_members();
        self.members
            .iter()
            .filter(move |_| active)
            .map(|m| &m.id_number)
    }

    /// How many people the household counts for on the roll (0 once removed).
    pub fn people(&self) -> usize {
        if self.status == Status::Removed {
            0
        } else {
            self.members.len()
        }
    }

    pub fn has_member(&self, id: &IdNumber) -> bool {
        self.members.iter().any(|m| &m.id_number == id)
    }
}

/// Folds one event into a household's state.
pub fn apply(
    state: Option<HouseholdState>,
    effective_date: Date,
    change: &Change,
) -> Option<HouseholdState> {
    match (state, change) {
        (previous, Change::Identify(id)) => Some(HouseholdState {
            status: Status::OnRoll,
            region_code: id.region_code,
            members: id.members.clone(),
            head_id: id.head_id,
            attribute: id.attribute,
            primary_cause: id.primary_cause,
            other_causes: id.other_causes.clone(),
            income_per_capita: id.income_per_capita,
            safety_net: id.safety_net,
            monitoring: id.monitoring,
            // A re-identified household keeps the assistance and helpers it had before.
            measures: previous
                .as_ref()
                .map(|p| p.measures.clone())
                .unwrap_or_default()
                .into_iter()
                .chain(id.measures.iter().cloned())
                .collect(),
            helpers: previous
                .as_ref()
                .map(|p| p.helpers.clone())
                .unwrap_or_default()
                .into_iter()
                .chain(id.helper.iter().map(|helper| HelperAssignment {
                    helper: helper.clone(),
                    since: effective_date,
                }))
                .collect(),
            assessment: id.assessment.clone(),
            identified_on: effective_date,
            exited_on: None,
            last_effective_date: effective_date,
        }),
        (None, _) => None,
        // A correction acts on the stream, not on the state: `history::effective_events`
        // applies it before the fold ever sees the events it touches.
        (Some(state), Change::Correct(_)) => Some(state),
        (Some(mut state), Change::Adjust(adj)) => {
            state.members.retain(|m| {
                !adj.members_removed
                    .iter()
                    .any(|r| r.id_number == m.id_number)
            });
            state
                .members
                .extend(adj.members_added.iter().map(|a| a.member.clone()));
            if let Some(head) = &adj.head_id {
                state.head_id = *head;
            }
            if let Some(region) = adj.relocate_to {
                state.region_code = region;
            }
            if let Some(attribute) = adj.attribute {
                state.attribute = attribute;
            }
            if let Some(causes) = &adj.causes {
                state.primary_cause = causes.primary;
                state.other_causes = causes.others.clone();
            }
            if let Some(income) = adj.income_per_capita {
                state.income_per_capita = income;
            }
            if let Some(safety_net) = adj.safety_net {
                state.safety_net = safety_net;
            }
            if let Some(monitoring) = adj.monitoring {
                state.monitoring = monitoring;
            }
            if let Some(helper) = &adj.helper {
                state.helpers.push(HelperAssignment {
                    helper: helper.clone(),
                    since: effective_date,
                });
            }
            state.measures.extend(adj.measures.iter().cloned());
            state.last_effective_date = effective_date;
            Some(state)
        }
        (Some(mut state), Change::Exit(exit)) => {
            state.status = match exit.reason {
                ExitReason::LiftedOut => Status::Exited,
                ExitReason::Removed | ExitReason::Dissolved => Status::Removed,
            };
            if let Some(income) = exit.income_per_capita {
                state.income_per_capita = income;
            }
            state.exited_on = Some(effective_date);
            state.last_effective_date = effective_date;
            Some(state)
        }
        (Some(mut state), Change::Relapse(relapse)) => {
            state.status = Status::OnRoll;
            state.primary_cause = relapse.primary_cause;
            // The new primary cause is no longer one of the "other" causes.
            state.other_causes.retain(|c| *c != relapse.primary_cause);
            if let Some(income) = relapse.income_per_capita {
                state.income_per_capita = income;
            }
            state.exited_on = None;
            state.last_effective_date = effective_date;
            Some(state)
        }
    }
}
