//! The register's rules: whether a command may become an event.
//!
//! [`decide`] is the whole of it. It looks at the command alone first (malformed input is
//! `InvalidInput`, naming each field), then at the household as it stands (a broken rule is
//! `Rule`, naming the rule), then at the household the event would leave behind (members, and
//! the one-household-per-person check against the rest of the register):
//!
//! ```text
//!   command ──well_formed──▶ allowed from this status? dates? exit checks? procedure?
//!                                   │
//!                                   ▼ state::apply
//!                            next state ──▶ members and head ──▶ people active elsewhere?
//! ```
//!
//! The status machine (DESIGN.md §1):
//!
//! ```text
//!             identify                exit(lifted_out)
//!   (none) ───────────▶ ON_ROLL ─────────────────────▶ EXITED
//!     ▲                  ▲  ◀─────────────────────────  │
//!     │ identify         │          relapse             │
//!     │                  │ exit(removed | dissolved)    │ exit(removed | dissolved)
//!     └──────────── REMOVED ◀───────────────────────────┘
//! ```
//!
//! Pure: the day of recording and the policy are passed in; the rest of the register is reached
//! only through [`PersonDirectory`]. No I/O, no clock, no storage.

use std::collections::BTreeMap;

// foldhash, not SipHash: these sets hold a command's few members, and SipHash's setup and
// rounds were ~1% of the server's samples under batches of identifications. Their order is
// never read, so the per-process seed changes no outcome.
use foldhash::{HashSet, HashSetExt};

use chrono::{Datelike, Days};

use super::change::{
    Adjustment, Causes, Change, Command, CorrectionAction, ExitRecord, Identification, Member,
    Procedure,
};
use super::state::{apply, HouseholdState};
use super::values::{Cause, Date, ExitReason, HouseholdId, IdNumber, Status};
use crate::error::{Error, FieldViolation, Rule};

/// The settings the rules depend on. Data, not code: a deployment overrides them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The poverty line by year, in yuan per person per year. A year not listed uses the latest
    /// listed year before it.
    pub poverty_lines: BTreeMap<i32, i64>,
    /// 当年识别当年不退出: a household identified in a year cannot be lifted out that year.
    pub forbid_same_year_exit: bool,
    /// The most members a household may have.
    pub max_members: usize,
    /// The longest a free-text field (name, note, document reference, …) may be, in characters.
    pub max_text_chars: usize,
    /// The shortest a public notice may run before the next step, in days.
    pub notice_days: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            poverty_lines: [
                (2014, 2800),
                (2015, 2855),
                (2016, 2952),
                (2017, 2952),
                (2018, 2995),
                (2019, 3218),
                (2020, 4000),
            ]
            .into_iter()
            .collect(),
            forbid_same_year_exit: true,
            max_members: 30,
            max_text_chars: 500,
            notice_days: 7,
        }
    }
}

impl Policy {
    /// The poverty line that applies in `year`, if any year up to it is configured.
    pub fn poverty_line(&self, year: i32) -> Option<i64> {
        self.poverty_lines
            .range(..=year)
            .next_back()
            .map(|(_, line)| *line)
    }
}

/// Who holds each person in the rest of the register.
pub trait PersonDirectory {
    /// The non-removed household in which `person` is an active member, if any.
    fn household_of(&self, person: &IdNumber) -> Option<HouseholdId>;
}

/// What the rules need to know about the moment of recording.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The day the event is recorded (no effective date may be later).
    pub today: Date,
    pub policy: &'a Policy,
}

/// Decides whether `command` may be appended to a household now in `current`, and returns the
/// state it would leave behind.
pub fn decide(
    ctx: Context<'_>,
    current: Option<&HouseholdState>,
    command: &Command,
    persons: &dyn PersonDirectory,
) -> Result<HouseholdState, Error> {
    well_formed(ctx.policy, command)?;
    let date = command.effective_date;
    let household = &command.household_id;
    if date > ctx.today {
        return Err(Error::rule(
            Rule::FutureDate,
            format!("effective date {date} is after today ({})", ctx.today),
        ));
    }
    if let Some(state) = current {
        if date < state.last_effective_date {
            return Err(Error::rule(
                Rule::EffectiveDateOrder,
                format!(
                    "effective date {date} is before household {household}'s latest event ({}); a back-dated entry may not precede it",
                    state.last_effective_date
                ),
            ));
        }
    }
    let status = current.map(|s| s.status);
    match &command.change {
        Change::Identify(identification) => {
            if let Some(status @ (Status::OnRoll | Status::Exited)) = status {
                return Err(transition(household, "identify", status, "new or removed"));
            }
            if let Some(procedure) = &identification.procedure {
                check_procedure(ctx.policy, procedure, date)?;
            }
        }
        Change::Adjust(adjustment) => {
            let state = current.ok_or_else(|| not_registered(household))?;
            if state.status == Status::Removed {
                return Err(transition(
                    household,
                    "adjust",
                    Status::Removed,
                    "on-roll or exited",
                ));
            }
            check_adjustment(state, adjustment)?;
        }
        Change::Exit(exit) => {
            let state = current.ok_or_else(|| not_registered(household))?;
            check_exit(ctx, household, state, exit, date)?;
        }
        Change::Relapse(_) => {
            let state = current.ok_or_else(|| not_registered(household))?;
            if state.status != Status::Exited {
                return Err(transition(household, "relapse", state.status, "exited"));
            }
        }
        Change::Correct(_) => {
            // A correction reaches back over the whole stream, so it is decided there.
            return Err(Error::invalid(
                "correct",
                "a correction is decided against the household's stream (history::decide_correction)",
            ));
        }
    }
    let next = apply(current.cloned(), date, &command.change)
        .expect("every change but identify was refused above when the household is absent");
    check_members(household, &next)?;
    check_people_free(household, current, &next, persons)?;
    Ok(next)
}

fn not_registered(household: &HouseholdId) -> Error {
    Error::NotFound(format!(
        "household {household} is not registered; identify it first"
    ))
}

fn transition(household: &HouseholdId, event: &str, status: Status, allowed: &str) -> Error {
    Error::rule(
        Rule::StatusTransition,
        format!(
            "household {household} is {} ({status:?}); {event} applies only to a {allowed} household",
            status.label()
        ),
    )
}

/// Checks what can be checked from the command alone.
pub(super) fn well_formed(policy: &Policy, command: &Command) -> Result<(), Error> {
    let mut violations = Vec::new();
    let mut violation = |field: &str, description: String| {
        violations.push(FieldViolation {
            field: field.to_owned(),
            description,
        })
    };
    // The field's name is formatted only for a violation: this runs for every member of every
    // command, and eager `format!`s of field paths were a visible share of deciding.
    let text =
        |field: std::fmt::Arguments<'_>, value: &str, violation: &mut dyn FnMut(&str, String)| {
            let chars = value.chars().count();
            if chars > policy.max_text_chars {
                violation(
                    &field.to_string(),
                    format!(
                        "is {chars} characters long; the limit (max_text_chars) is {}",
                        policy.max_text_chars
                    ),
                );
            }
        };
    if command.document_ref.trim().is_empty() {
        violation(
            "document_ref",
            "a document reference (文号) is required for every change".into(),
        );
    }
    text(
        format_args!("document_ref"),
        &command.document_ref,
        &mut violation,
    );
    if let Some(request_id) = &command.request_id {
        text(format_args!("request_id"), request_id, &mut violation);
    }
    match &command.change {
        Change::Identify(id) => {
            check_member_list(policy, "members", &id.members, &mut violation, &text);
            if id.members.is_empty() {
                violation("members", "a household has at least one member".into());
            }
            if !id.members.iter().any(|m| m.id_number == id.head_id) {
                violation(
                    "head_id",
                    format!("the head {} is not one of the members", id.head_id),
                );
            }
            check_causes(
                id.primary_cause,
                &id.other_causes,
                "other_causes",
                &mut violation,
            );
            check_income(
                Some(id.income_per_capita),
                "income_per_capita",
                &mut violation,
            );
            if let Some(helper) = &id.helper {
                text(format_args!("helper.name"), &helper.name, &mut violation);
                text(format_args!("helper.unit"), &helper.unit, &mut violation);
            }
            check_measures(&id.measures, "measures", &mut violation, &text);
            check_identification_text(id, &mut violation, &text);
        }
        Change::Adjust(adj) => {
            if adj.is_empty() {
                violation("adjust", "an adjustment must change something".into());
            }
            let added: Vec<Member> = adj.members_added.iter().map(|a| a.member.clone()).collect();
            check_member_list(policy, "members_added", &added, &mut violation, &text);
            let mut removed = HashSet::new();
            for (i, r) in adj.members_removed.iter().enumerate() {
                if !removed.insert(&r.id_number) {
                    violation(
                        &format!("members_removed[{i}].id_number"),
                        format!("{} is listed twice", r.id_number),
                    );
                }
            }
            if let Some(Causes { primary, others }) = &adj.causes {
                check_causes(*primary, others, "causes.other_causes", &mut violation);
            }
            check_income(adj.income_per_capita, "income_per_capita", &mut violation);
            if let Some(helper) = &adj.helper {
                text(format_args!("helper.name"), &helper.name, &mut violation);
                text(format_args!("helper.unit"), &helper.unit, &mut violation);
            }
            check_measures(&adj.measures, "measures", &mut violation, &text);
            text(format_args!("note"), &adj.note, &mut violation);
        }
        Change::Exit(exit) => {
            check_income(exit.income_per_capita, "income_per_capita", &mut violation);
            text(format_args!("note"), &exit.note, &mut violation);
        }
        Change::Correct(correction) => {
            if correction.reason.trim().is_empty() {
                violation("reason", "a correction states its reason (整改原因)".into());
            }
            text(format_args!("reason"), &correction.reason, &mut violation);
            if let CorrectionAction::Amend { change, .. } = &correction.action {
                if matches!(**change, Change::Correct(_)) {
                    violation("amend", "an amendment cannot carry a correction".into());
                } else {
                    let amended = Command {
                        change: (**change).clone(),
                        request_id: None,
                        ..command.clone()
                    };
                    if let Err(Error::InvalidInput(nested)) = well_formed(policy, &amended) {
                        for v in nested {
                            violation(&format!("amend.{}", v.field), v.description);
                        }
                    }
                }
            }
        }
        Change::Relapse(relapse) => {
            check_income(
                relapse.income_per_capita,
                "income_per_capita",
                &mut violation,
            );
            text(format_args!("note"), &relapse.note, &mut violation);
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidInput(violations))
    }
}

type Violation<'a> = dyn FnMut(&str, String) + 'a;
type TextCheck<'a> = dyn Fn(std::fmt::Arguments<'_>, &str, &mut dyn FnMut(&str, String)) + 'a;

fn check_member_list(
    policy: &Policy,
    field: &str,
    members: &[Member],
    violation: &mut Violation<'_>,
    text: &TextCheck<'_>,
) {
    if members.len() > policy.max_members {
        violation(
            field,
            format!(
                "has {} members; the limit (max_members) is {}",
                members.len(),
                policy.max_members
            ),
        );
    }
    let mut seen = HashSet::new();
    for (i, member) in members.iter().enumerate() {
        if !seen.insert(&member.id_number) {
            violation(
                &format!("{field}[{i}].id_number"),
                format!("{} is listed twice", member.id_number),
            );
        }
        if member.name.trim().is_empty() {
            violation(&format!("{field}[{i}].name"), "a name is required".into());
        }
        text(format_args!("{field}[{i}].name"), &member.name, violation);
    }
}

fn check_identification_text(
    id: &Identification,
    violation: &mut Violation<'_>,
    text: &TextCheck<'_>,
) {
    if let Some(assessment) = &id.assessment {
        for (name, criterion) in [
            ("income", &assessment.income),
            ("health", &assessment.health),
            ("education", &assessment.education),
            ("housing", &assessment.housing),
            ("potential", &assessment.potential),
            ("industry", &assessment.industry),
        ] {
            text(
                format_args!("assessment.{name}.note"),
                &criterion.note,
                violation,
            );
        }
    }
}

fn check_measures(
    measures: &[super::change::Measure],
    field: &str,
    violation: &mut Violation<'_>,
    text: &TextCheck<'_>,
) {
    for (i, measure) in measures.iter().enumerate() {
        if !(1949..=9999).contains(&measure.year) {
            violation(
                &format!("{field}[{i}].year"),
                format!("{} is not a plausible year", measure.year),
            );
        }
        text(format_args!("{field}[{i}].note"), &measure.note, violation);
    }
}

fn check_causes(primary: Cause, others: &[Cause], field: &str, violation: &mut Violation<'_>) {
    if others.len() > 2 {
        violation(
            field,
            format!("at most two other causes, not {}", others.len()),
        );
    }
    for (i, cause) in others.iter().enumerate() {
        if *cause == primary || others[..i].contains(cause) {
            violation(
                &format!("{field}[{i}]"),
                format!(
                    "{} ({cause:?}) is already the primary cause or listed before",
                    cause.label()
                ),
            );
        }
    }
}

fn check_income(income: Option<i64>, field: &str, violation: &mut Violation<'_>) {
    if let Some(income) = income {
        if !(0..=100_000_000).contains(&income) {
            violation(
                field,
                format!("{income} is not a yearly income per person in yuan (0 to 100000000)"),
            );
        }
    }
}

/// 六步三公示: the steps in order, each notice running at least `notice_days` before the next
/// step, and the event taking effect no earlier than the county's notice.
fn check_procedure(policy: &Policy, procedure: &Procedure, effective: Date) -> Result<(), Error> {
    let steps = [
        ("applied_on (农户申请)", procedure.applied_on),
        ("village_review_on (民主评议)", procedure.village_review_on),
        (
            "village_notice_on (第一次公示)",
            procedure.village_notice_on,
        ),
        (
            "township_notice_on (第二次公示)",
            procedure.township_notice_on,
        ),
        ("county_notice_on (第三次公告)", procedure.county_notice_on),
        ("effective_date", effective),
    ];
    for (i, pair) in steps.windows(2).enumerate() {
        let ((before_name, before), (after_name, after)) = (pair[0], pair[1]);
        // The village and township notices must each run their full period before the next
        // step; the others need only be in order.
        let notice = i == 2 || i == 3;
        let earliest = if notice {
            before
                .checked_add_days(Days::new(policy.notice_days))
                .unwrap_or(before)
        } else {
            before
        };
        if after < earliest {
            let message = if notice {
                format!(
                    "procedure: {after_name} is {after}, but the notice of {before_name} ({before}) must run at least {} days, until {earliest}",
                    policy.notice_days
                )
            } else {
                format!("procedure: {after_name} ({after}) is before {before_name} ({before})")
            };
            return Err(Error::rule(Rule::Procedure, message));
        }
    }
    Ok(())
}

fn check_adjustment(state: &HouseholdState, adj: &Adjustment) -> Result<(), Error> {
    for removed in &adj.members_removed {
        if !state.has_member(&removed.id_number) {
            return Err(Error::rule(
                Rule::Members,
                format!("{} is not a member of the household", removed.id_number),
            ));
        }
    }
    for added in &adj.members_added {
        let id = &added.member.id_number;
        let removed_now = adj.members_removed.iter().any(|r| &r.id_number == id);
        if state.has_member(id) && !removed_now {
            return Err(Error::rule(
                Rule::Members,
                format!("{id} is already a member of the household"),
            ));
        }
    }
    if let Some(region) = adj.relocate_to {
        if region == state.region_code {
            return Err(Error::rule(
                Rule::Relocation,
                format!(
                    "the household is already in region {region}; a relocation moves it elsewhere"
                ),
            ));
        }
    }
    Ok(())
}

fn check_exit(
    ctx: Context<'_>,
    household: &HouseholdId,
    state: &HouseholdState,
    exit: &ExitRecord,
    date: Date,
) -> Result<(), Error> {
    match exit.reason {
        ExitReason::LiftedOut => {
            if state.status != Status::OnRoll {
                return Err(transition(
                    household,
                    "exit (lifted out)",
                    state.status,
                    "on-roll",
                ));
            }
            let Some(checklist) = &exit.checklist else {
                return Err(Error::rule(
                    Rule::ExitChecklist,
                    "lifting a household out needs the 两不愁三保障 checklist",
                ));
            };
            let unmet = checklist.unmet();
            if !unmet.is_empty() {
                return Err(Error::rule(
                    Rule::ExitChecklist,
                    format!(
                        "not every item of 两不愁三保障 is met: {}",
                        unmet.join(", ")
                    ),
                ));
            }
            let year = date.year();
            let line = ctx.policy.poverty_line(year).ok_or_else(|| {
                Error::rule(
                    Rule::PovertyLine,
                    format!("no poverty line is configured for {year} or any year before it"),
                )
            })?;
            let income = exit.income_per_capita.unwrap_or(state.income_per_capita);
            if income <= line {
                return Err(Error::rule(
                    Rule::PovertyLine,
                    format!(
                        "income per person {income} yuan is not above the {year} poverty line of {line} yuan"
                    ),
                ));
            }
            if ctx.policy.forbid_same_year_exit && state.identified_on.year() == year {
                return Err(Error::rule(
                    Rule::SameYearExit,
                    format!(
                        "household {household} was identified on {} and cannot be lifted out in the same year (当年识别当年不退出)",
                        state.identified_on
                    ),
                ));
            }
            if let Some(procedure) = &exit.procedure {
                check_procedure(ctx.policy, procedure, date)?;
            }
        }
        ExitReason::Removed | ExitReason::Dissolved => {
            if state.status == Status::Removed {
                return Err(transition(
                    household,
                    "exit",
                    state.status,
                    "on-roll or exited",
                ));
            }
            if let Some(procedure) = &exit.procedure {
                check_procedure(ctx.policy, procedure, date)?;
            }
        }
    }
    Ok(())
}

/// A household always has at least one member, and its head is one of them.
fn check_members(household: &HouseholdId, next: &HouseholdState) -> Result<(), Error> {
    if next.members.is_empty() {
        return Err(Error::rule(
            Rule::Members,
            format!(
                "household {household} would have no members left; record exit (dissolved) instead"
            ),
        ));
    }
    if !next.has_member(&next.head_id) {
        return Err(Error::rule(
            Rule::Members,
            format!(
                "the head {} would not be a member of household {household}; name a new head_id",
                next.head_id
            ),
        ));
    }
    Ok(())
}

/// Every person the change makes active here must not be active in another household.
pub(super) fn check_people_free(
    household: &HouseholdId,
    current: Option<&HouseholdState>,
    next: &HouseholdState,
    persons: &dyn PersonDirectory,
) -> Result<(), Error> {
    let before: HashSet<&IdNumber> = current
        .map(|s| s.active_members().collect())
        .unwrap_or_default();
    for person in next.active_members().filter(|p| !before.contains(p)) {
        if let Some(other) = persons.household_of(person) {
            if &other != household {
                return Err(Error::rule(
                    Rule::PersonActiveElsewhere,
                    format!(
                        "{person} is an active member of household {other}; remove them there first"
                    ),
                ));
            }
        }
    }
    Ok(())
}
