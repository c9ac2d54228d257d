//! The register's rules as given/when/then cases: given these accepted events, when this
//! command arrives, then it is accepted (leaving this status) or refused (for this rule, or
//! this field). No disk: the "given" register is the in-memory roll.

mod common;

use common::*;
use rollstore::domain::{
    decide, Adjustment, Cause, Causes, Context, Event, ExitReason, MemberAdded, MemberAddedReason,
    MemberRemoved, MemberRemovedReason, Policy, Procedure, Status,
};
use rollstore::error::{Error, Rule};
use rollstore::projection::{History, Roll};

const TODAY: &str = "2019-10-15";

#[derive(Debug, Clone, PartialEq)]
enum Then {
    /// Accepted; the household is left in this status.
    Accepted(Status),
    /// Refused for this rule.
    Refused(Rule),
    /// Refused as malformed, naming this field.
    Invalid(&'static str),
    /// Refused: no such household.
    NotFound,
}

struct Case {
    name: &'static str,
    given: Vec<rollstore::domain::Command>,
    when: rollstore::domain::Command,
    then: Then,
    policy: Policy,
}

fn case(
    name: &'static str,
    given: Vec<rollstore::domain::Command>,
    when: rollstore::domain::Command,
    then: Then,
) -> Case {
    Case {
        name,
        given,
        when,
        then,
        policy: Policy::default(),
    }
}

/// Builds the "given" register by deciding and applying each command in turn.
fn given(policy: &Policy, commands: &[rollstore::domain::Command]) -> Roll {
    let ctx = Context {
        today: date(TODAY),
        policy,
    };
    let mut roll = Roll::default();
    for (i, command) in commands.iter().enumerate() {
        let current = roll
            .household(&command.household_id)
            .map(|e| e.state.unpack().unwrap());
        if let Err(error) = decide(ctx, current.as_ref(), command, &roll) {
            panic!("given[{i}] was refused: {error}");
        }
        let version = roll
            .household(&command.household_id)
            .map_or(0, |e| e.version());
        roll.apply(
            &command
                .clone()
                .recorded(roll.head() + 1, version + 1, chrono::Utc::now(), "test"),
            &NoCorrections,
        )
        .expect("the roll follows accepted events");
    }
    roll
}

/// These cases hold no corrections, so the roll never asks for a stream.
struct NoCorrections;

impl History for NoCorrections {
    fn events(&self, _: &[u64]) -> Result<Vec<Event>, Error> {
        Err(Error::Io("no corrections in these cases".into()))
    }
}

fn outcome(result: Result<rollstore::domain::HouseholdState, Error>) -> Then {
    match result {
        Ok(state) => Then::Accepted(state.status),
        Err(Error::Rule { rule, .. }) => Then::Refused(rule),
        Err(Error::InvalidInput(violations)) => {
            let field = violations[0].field.clone();
            Then::Invalid(Box::leak(field.into_boxed_str()))
        }
        Err(Error::NotFound(_)) => Then::NotFound,
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

fn run(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for case in cases {
        let roll = given(&case.policy, &case.given);
        let ctx = Context {
            today: date(TODAY),
            policy: &case.policy,
        };
        let current = roll
            .household(&case.when.household_id)
            .map(|e| e.state.unpack().unwrap());
        let got = outcome(decide(ctx, current.as_ref(), &case.when, &roll));
        if got != case.then {
            failures.push(format!(
                "{}: expected {:?}, got {:?}",
                case.name, case.then, got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "failed cases:\n{}",
        failures.join("\n")
    );
}

fn adjustment(change: impl FnOnce(&mut Adjustment)) -> Adjustment {
    let mut adjustment = Adjustment::default();
    change(&mut adjustment);
    adjustment
}

fn born(n: u32) -> Adjustment {
    adjustment(|a| {
        a.members_added.push(MemberAdded {
            member: member(n),
            reason: MemberAddedReason::Birth,
        })
    })
}

fn gone(n: u32, reason: MemberRemovedReason) -> Adjustment {
    adjustment(|a| {
        a.members_removed.push(MemberRemoved {
            id_number: person(n),
            reason,
        })
    })
}

fn procedure(
    applied: &str,
    review: &str,
    village: &str,
    township: &str,
    county: &str,
) -> Procedure {
    Procedure {
        applied_on: date(applied),
        village_review_on: date(review),
        village_notice_on: date(village),
        township_notice_on: date(township),
        county_notice_on: date(county),
    }
}

use Then::*;

#[test]
fn identifications() {
    let h1 = || identify("H1", "2015-03-01", &[1, 2, 3]);
    run(vec![
        case(
            "a new household enters the roll",
            vec![],
            h1(),
            Accepted(Status::OnRoll),
        ),
        case(
            "identify twice",
            vec![h1()],
            identify("H1", "2015-04-01", &[1, 2, 3]),
            Refused(Rule::StatusTransition),
        ),
        case(
            "identify an exited household",
            vec![h1(), lift_out("H1", "2016-11-01", 4000)],
            identify("H1", "2017-03-01", &[1, 2, 3]),
            Refused(Rule::StatusTransition),
        ),
        case(
            "re-identify a removed household",
            vec![h1(), exit("H1", "2015-09-01", ExitReason::Removed)],
            identify("H1", "2017-03-01", &[1, 2]),
            Accepted(Status::OnRoll),
        ),
        case(
            "a person active elsewhere",
            vec![h1()],
            identify("H2", "2015-03-02", &[10, 3]),
            Refused(Rule::PersonActiveElsewhere),
        ),
        case(
            "a person of a removed household is free again",
            vec![h1(), exit("H1", "2015-09-01", ExitReason::Removed)],
            identify("H2", "2016-03-02", &[3, 10]),
            Accepted(Status::OnRoll),
        ),
        case(
            "a person of a dissolved household is free again",
            vec![h1(), exit("H1", "2015-09-01", ExitReason::Dissolved)],
            identify("H2", "2016-03-02", &[1]),
            Accepted(Status::OnRoll),
        ),
        case(
            "a person of an exited household is still held (四个不摘)",
            vec![h1(), lift_out("H1", "2016-11-01", 4000)],
            identify("H2", "2017-03-02", &[3]),
            Refused(Rule::PersonActiveElsewhere),
        ),
        case(
            "an empty household",
            vec![],
            identify("H1", "2015-03-01", &[]),
            Invalid("members"),
        ),
        case(
            "a head who is not a member",
            vec![],
            tweak(h1(), |c| identification(c).head_id = person(99)),
            Invalid("head_id"),
        ),
        case(
            "a member listed twice",
            vec![],
            identify("H1", "2015-03-01", &[1, 1]),
            Invalid("members[1].id_number"),
        ),
        case(
            "a nameless member",
            vec![],
            tweak(h1(), |c| identification(c).members[1].name = " ".into()),
            Invalid("members[1].name"),
        ),
        case(
            "a name longer than the limit",
            vec![],
            tweak(h1(), |c| {
                identification(c).members[0].name = "长".repeat(501)
            }),
            Invalid("members[0].name"),
        ),
        case(
            "three other causes",
            vec![],
            tweak(h1(), |c| {
                identification(c).other_causes =
                    vec![Cause::Disaster, Cause::LackOfFunds, Cause::LackOfLand]
            }),
            Invalid("other_causes"),
        ),
        case(
            "an other cause that is the primary",
            vec![],
            tweak(h1(), |c| {
                identification(c).other_causes = vec![Cause::Illness]
            }),
            Invalid("other_causes[0]"),
        ),
        case(
            "a negative income",
            vec![],
            tweak(h1(), |c| identification(c).income_per_capita = -1),
            Invalid("income_per_capita"),
        ),
        case(
            "no document reference",
            vec![],
            tweak(h1(), |c| c.document_ref.clear()),
            Invalid("document_ref"),
        ),
        case(
            "more members than the limit",
            vec![],
            identify("H1", "2015-03-01", &(1..=31).collect::<Vec<_>>()),
            Invalid("members"),
        ),
    ]);
}

#[test]
fn dates() {
    let h1 = || identify("H1", "2015-03-01", &[1, 2]);
    run(vec![
        case(
            "an effective date after today",
            vec![],
            identify("H1", "2019-10-16", &[1]),
            Refused(Rule::FutureDate),
        ),
        case(
            "today is allowed",
            vec![],
            identify("H1", TODAY, &[1]),
            Accepted(Status::OnRoll),
        ),
        case(
            "back-dated before the latest event",
            vec![h1()],
            adjust("H1", "2015-02-28", born(5)),
            Refused(Rule::EffectiveDateOrder),
        ),
        case(
            "back-dated to the latest event's day",
            vec![h1()],
            adjust("H1", "2015-03-01", born(5)),
            Accepted(Status::OnRoll),
        ),
        case(
            "a procedure in order",
            vec![],
            tweak(h1(), |c| {
                identification(c).procedure = Some(procedure(
                    "2015-01-05",
                    "2015-01-10",
                    "2015-01-12",
                    "2015-01-19",
                    "2015-01-26",
                ))
            }),
            Accepted(Status::OnRoll),
        ),
        case(
            "a village notice of six days",
            vec![],
            tweak(h1(), |c| {
                identification(c).procedure = Some(procedure(
                    "2015-01-05",
                    "2015-01-10",
                    "2015-01-12",
                    "2015-01-18",
                    "2015-01-26",
                ))
            }),
            Refused(Rule::Procedure),
        ),
        case(
            "a township notice of six days",
            vec![],
            tweak(h1(), |c| {
                identification(c).procedure = Some(procedure(
                    "2015-01-05",
                    "2015-01-10",
                    "2015-01-12",
                    "2015-01-19",
                    "2015-01-25",
                ))
            }),
            Refused(Rule::Procedure),
        ),
        case(
            "a review before the application",
            vec![],
            tweak(h1(), |c| {
                identification(c).procedure = Some(procedure(
                    "2015-01-11",
                    "2015-01-10",
                    "2015-01-12",
                    "2015-01-19",
                    "2015-01-26",
                ))
            }),
            Refused(Rule::Procedure),
        ),
        case(
            "effective before the county notice",
            vec![],
            tweak(h1(), |c| {
                identification(c).procedure = Some(procedure(
                    "2015-01-05",
                    "2015-01-10",
                    "2015-01-12",
                    "2015-01-19",
                    "2015-03-02",
                ))
            }),
            Refused(Rule::Procedure),
        ),
        case(
            "an exit whose procedure is too short",
            vec![h1()],
            tweak(lift_out("H1", "2016-11-20", 4000), |c| {
                exit_record(c).procedure = Some(procedure(
                    "2016-10-01",
                    "2016-10-05",
                    "2016-10-06",
                    "2016-10-10",
                    "2016-11-20",
                ))
            }),
            Refused(Rule::Procedure),
        ),
    ]);
}

#[test]
fn adjustments() {
    let h1 = || identify("H1", "2015-03-01", &[1, 2, 3]);
    run(vec![
        case(
            "a birth",
            vec![h1()],
            adjust("H1", "2016-05-01", born(4)),
            Accepted(Status::OnRoll),
        ),
        case(
            "a death",
            vec![h1()],
            adjust("H1", "2016-05-01", gone(3, MemberRemovedReason::Death)),
            Accepted(Status::OnRoll),
        ),
        case(
            "an adjustment of nothing",
            vec![h1()],
            adjust("H1", "2016-05-01", Adjustment::default()),
            Invalid("adjust"),
        ),
        case(
            "a household that does not exist",
            vec![],
            adjust("H1", "2016-05-01", born(4)),
            NotFound,
        ),
        case(
            "removing a non-member",
            vec![h1()],
            adjust("H1", "2016-05-01", gone(9, MemberRemovedReason::Death)),
            Refused(Rule::Members),
        ),
        case(
            "adding a member twice",
            vec![h1()],
            adjust("H1", "2016-05-01", born(2)),
            Refused(Rule::Members),
        ),
        case(
            "adding a person active elsewhere",
            vec![h1(), identify("H2", "2015-03-01", &[7])],
            adjust("H1", "2016-05-01", born(7)),
            Refused(Rule::PersonActiveElsewhere),
        ),
        case(
            "a marriage: out of one household, into another",
            vec![
                h1(),
                identify("H2", "2015-03-01", &[7]),
                adjust(
                    "H2",
                    "2016-04-01",
                    adjustment(|a| {
                        a.members_added.push(MemberAdded {
                            member: member(8),
                            reason: MemberAddedReason::Birth,
                        });
                        a.members_removed.push(MemberRemoved {
                            id_number: person(7),
                            reason: MemberRemovedReason::MarriageOut,
                        });
                        a.head_id = Some(person(8));
                    }),
                ),
            ],
            adjust(
                "H1",
                "2016-05-01",
                adjustment(|a| {
                    a.members_added.push(MemberAdded {
                        member: member(7),
                        reason: MemberAddedReason::MarriageIn,
                    })
                }),
            ),
            Accepted(Status::OnRoll),
        ),
        case(
            "the last member leaves",
            vec![identify("H1", "2015-03-01", &[1])],
            adjust("H1", "2016-05-01", gone(1, MemberRemovedReason::Death)),
            Refused(Rule::Members),
        ),
        case(
            "the head leaves with no new head",
            vec![h1()],
            adjust("H1", "2016-05-01", gone(1, MemberRemovedReason::Death)),
            Refused(Rule::Members),
        ),
        case(
            "the head leaves and a new head is named",
            vec![h1()],
            adjust(
                "H1",
                "2016-05-01",
                adjustment(|a| {
                    a.members_removed.push(MemberRemoved {
                        id_number: person(1),
                        reason: MemberRemovedReason::Death,
                    });
                    a.head_id = Some(person(2));
                }),
            ),
            Accepted(Status::OnRoll),
        ),
        case(
            "a new head who is not a member",
            vec![h1()],
            adjust(
                "H1",
                "2016-05-01",
                adjustment(|a| a.head_id = Some(person(9))),
            ),
            Refused(Rule::Members),
        ),
        case(
            "a relocation",
            vec![h1()],
            adjust(
                "H1",
                "2016-05-01",
                adjustment(|a| a.relocate_to = Some(region(OTHER_VILLAGE))),
            ),
            Accepted(Status::OnRoll),
        ),
        case(
            "a relocation to where it already is",
            vec![h1()],
            adjust(
                "H1",
                "2016-05-01",
                adjustment(|a| a.relocate_to = Some(region(VILLAGE))),
            ),
            Refused(Rule::Relocation),
        ),
        case(
            "new causes that repeat the primary",
            vec![h1()],
            adjust(
                "H1",
                "2016-05-01",
                adjustment(|a| {
                    a.causes = Some(Causes {
                        primary: Cause::Disaster,
                        others: vec![Cause::Disaster],
                    })
                }),
            ),
            Invalid("causes.other_causes[0]"),
        ),
        case(
            "an exited household is still adjusted (四个不摘)",
            vec![h1(), lift_out("H1", "2016-11-01", 4000)],
            adjust("H1", "2017-05-01", born(4)),
            Accepted(Status::Exited),
        ),
        case(
            "a removed household is not adjusted",
            vec![h1(), exit("H1", "2015-09-01", ExitReason::Removed)],
            adjust("H1", "2016-05-01", born(4)),
            Refused(Rule::StatusTransition),
        ),
    ]);
}

#[test]
fn exits_and_relapses() {
    let h1 = || identify("H1", "2015-03-01", &[1, 2, 3]);
    let lifted = || lift_out("H1", "2016-11-01", 4000);
    let same_year = lift_out("H1", "2015-11-01", 4000);
    let mut allowed = case(
        "same-year exit when the policy allows it",
        vec![h1()],
        same_year.clone(),
        Accepted(Status::Exited),
    );
    allowed.policy.forbid_same_year_exit = false;
    let mut higher_line = case(
        "a configured line is honoured",
        vec![h1()],
        lift_out("H1", "2016-11-01", 3500),
        Refused(Rule::PovertyLine),
    );
    higher_line.policy.poverty_lines.insert(2016, 3600);
    run(vec![
        case(
            "lifted out above the line",
            vec![h1()],
            lifted(),
            Accepted(Status::Exited),
        ),
        case(
            "lifted out at the line exactly (2016: 2952)",
            vec![h1()],
            lift_out("H1", "2016-11-01", 2952),
            Refused(Rule::PovertyLine),
        ),
        case(
            "lifted out below the line",
            vec![h1()],
            lift_out("H1", "2016-11-01", 2000),
            Refused(Rule::PovertyLine),
        ),
        case(
            "lifted out on the household's own income",
            vec![h1()],
            tweak(lifted(), |c| exit_record(c).income_per_capita = None),
            Refused(Rule::PovertyLine),
        ),
        case(
            "lifted out in the identification year",
            vec![h1()],
            same_year,
            Refused(Rule::SameYearExit),
        ),
        allowed,
        higher_line,
        case(
            "lifted out before any configured line",
            vec![identify("H1", "2012-03-01", &[1])],
            lift_out("H1", "2013-11-01", 4000),
            Refused(Rule::PovertyLine),
        ),
        case(
            "lifted out without the checklist",
            vec![h1()],
            tweak(lifted(), |c| exit_record(c).checklist = None),
            Refused(Rule::ExitChecklist),
        ),
        case(
            "lifted out with safe water unmet",
            vec![h1()],
            tweak(lifted(), |c| {
                exit_record(c)
                    .checklist
                    .as_mut()
                    .unwrap()
                    .safe_drinking_water = false
            }),
            Refused(Rule::ExitChecklist),
        ),
        case(
            "lifted out twice",
            vec![h1(), lifted()],
            lift_out("H1", "2017-11-01", 4000),
            Refused(Rule::StatusTransition),
        ),
        case(
            "removed from the roll",
            vec![h1()],
            exit("H1", "2015-09-01", ExitReason::Removed),
            Accepted(Status::Removed),
        ),
        case(
            "removed after exiting",
            vec![h1(), lifted()],
            exit("H1", "2017-01-01", ExitReason::Removed),
            Accepted(Status::Removed),
        ),
        case(
            "dissolved after exiting",
            vec![h1(), lifted()],
            exit("H1", "2017-01-01", ExitReason::Dissolved),
            Accepted(Status::Removed),
        ),
        case(
            "removed twice",
            vec![h1(), exit("H1", "2015-09-01", ExitReason::Removed)],
            exit("H1", "2016-01-01", ExitReason::Removed),
            Refused(Rule::StatusTransition),
        ),
        case("an exit of nothing", vec![], lifted(), NotFound),
        case(
            "a relapse",
            vec![h1(), lifted()],
            relapse("H1", "2018-02-01"),
            Accepted(Status::OnRoll),
        ),
        case(
            "a relapse of a household on the roll",
            vec![h1()],
            relapse("H1", "2018-02-01"),
            Refused(Rule::StatusTransition),
        ),
        case(
            "a relapse of a removed household",
            vec![h1(), exit("H1", "2015-09-01", ExitReason::Removed)],
            relapse("H1", "2018-02-01"),
            Refused(Rule::StatusTransition),
        ),
        case(
            "lifted out again after a relapse",
            vec![h1(), lifted(), relapse("H1", "2018-02-01")],
            lift_out("H1", "2018-11-01", 4000),
            Accepted(Status::Exited),
        ),
    ]);
}

#[test]
fn the_fold_keeps_history() {
    let policy = Policy::default();
    let roll = given(
        &policy,
        &[
            identify("H1", "2015-03-01", &[1, 2, 3]),
            adjust("H1", "2016-05-01", born(4)),
            adjust(
                "H1",
                "2016-06-01",
                gone(2, MemberRemovedReason::MarriageOut),
            ),
            adjust(
                "H1",
                "2016-07-01",
                adjustment(|a| a.relocate_to = Some(region(OTHER_VILLAGE))),
            ),
            lift_out("H1", "2016-11-01", 4000),
            relapse("H1", "2018-02-01"),
        ],
    );
    let entry = roll.household(&hid("H1")).unwrap();
    assert_eq!(entry.version(), 6);
    let state = &entry.state.unpack().unwrap();
    assert_eq!(state.status, Status::OnRoll);
    assert_eq!(state.region_code, region(OTHER_VILLAGE));
    let ids: Vec<_> = state.members.iter().map(|m| m.id_number).collect();
    assert_eq!(ids, vec![person(1), person(3), person(4)]);
    assert_eq!(state.identified_on, date("2015-03-01"));
    assert_eq!(state.exited_on, None);
    assert_eq!(state.income_per_capita, 2000);
    assert_eq!(state.last_effective_date, date("2018-02-01"));
}
