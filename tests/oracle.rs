//! Property test: random histories (identifications, births, deaths, relocations, exits,
//! relapses, removals, corrections, back-dated entries; many households and regions) against a
//! naive oracle that replays the whole log from seq 1 and folds it per DESIGN.md §2. Rosters,
//! stats, single households, diffs and flows must agree at random points in time.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use rollstore::app::{At, KnownAt, Register};
use rollstore::domain::{
    apply, Adjustment, Change, Command, Correction, CorrectionAction, Date, Event, ExitReason,
    HouseholdId, HouseholdState, MemberAdded, MemberAddedReason, MemberRemoved,
    MemberRemovedReason, RegionCode, RegionPrefix, Status,
};
use rollstore::projection::{ChangeReason, Tally};

const VILLAGES: [&str; 4] = [
    "610602100001",
    "610602100002",
    "610602200001",
    "610603100001",
];
const PREFIXES: [&str; 7] = [
    "",
    "61",
    "610602",
    "610603",
    "610602100",
    "610602200",
    "610602100002",
];

#[derive(Debug, Clone)]
enum Op {
    /// `pool` is usually `hh`: people are drawn from that household's ten numbers, so that now
    /// and then a person is claimed by two households.
    Identify {
        hh: u8,
        pool: u8,
        people: Vec<u8>,
        village: u8,
    },
    Born {
        hh: u8,
        person: u8,
    },
    Died {
        hh: u8,
        index: u8,
    },
    Relocate {
        hh: u8,
        village: u8,
    },
    Lift {
        hh: u8,
        income: u16,
    },
    Exit {
        hh: u8,
        dissolve: bool,
    },
    Relapse {
        hh: u8,
    },
    Annul {
        pick: u16,
    },
    AmendDate {
        pick: u16,
        days: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let hh = 0u8..8;
    prop_oneof![
        3 => (hh.clone(), prop_oneof![4 => Just(None), 1 => (0u8..8).prop_map(Some)],
                prop::collection::vec(0u8..5, 1..4), 0u8..4)
            .prop_map(|(hh, pool, people, village)| Op::Identify { hh, pool: pool.unwrap_or(hh), people, village }),
        2 => (hh.clone(), 5u8..10).prop_map(|(hh, person)| Op::Born { hh, person }),
        1 => (hh.clone(), 0u8..4).prop_map(|(hh, index)| Op::Died { hh, index }),
        2 => (hh.clone(), 0u8..4).prop_map(|(hh, village)| Op::Relocate { hh, village }),
        3 => (hh.clone(), 2800u16..5000).prop_map(|(hh, income)| Op::Lift { hh, income }),
        1 => (hh.clone(), any::<bool>()).prop_map(|(hh, dissolve)| Op::Exit { hh, dissolve }),
        2 => hh.clone().prop_map(|hh| Op::Relapse { hh }),
        1 => any::<u16>().prop_map(|pick| Op::Annul { pick }),
        1 => (any::<u16>(), 0u8..90).prop_map(|(pick, days)| Op::AmendDate { pick, days }),
    ]
}

/// A day and how far back it is entered: (days since 2014-01-01 to advance, days to back-date).
fn step() -> impl Strategy<Value = (u16, u8)> {
    (0u16..40, prop_oneof![5 => Just(0u8), 1 => 1u8..120])
}

fn day(offset: u32) -> Date {
    date("2014-01-01") + chrono::Days::new(u64::from(offset))
}

/// Turns an op into a command, given what the log holds so far (for corrections).
fn to_command(op: &Op, on: Date, log: &[Event]) -> Option<Command> {
    let hh = |n: u8| format!("H{n}");
    let on_text = on.format("%Y-%m-%d").to_string();
    let pick = |p: u16| -> Option<&Event> {
        let candidates: Vec<&Event> = log
            .iter()
            .filter(|e| !matches!(e.change, Change::Correct(_)))
            .collect();
        (!candidates.is_empty()).then(|| candidates[p as usize % candidates.len()])
    };
    Some(match op {
        Op::Identify {
            hh: h,
            pool,
            people,
            village,
        } => {
            let people: Vec<u32> = people
                .iter()
                .map(|p| u32::from(*pool) * 10 + u32::from(*p))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            tweak(identify(&hh(*h), &on_text, &people), |c| {
                identification(c).region_code = region(VILLAGES[usize::from(*village)]);
            })
        }
        Op::Born { hh: h, person } => adjust(
            &hh(*h),
            &on_text,
            Adjustment {
                members_added: vec![MemberAdded {
                    member: member(u32::from(*h) * 10 + u32::from(*person)),
                    reason: MemberAddedReason::Birth,
                }],
                ..Adjustment::default()
            },
        ),
        Op::Died { hh: h, index } => adjust(
            &hh(*h),
            &on_text,
            Adjustment {
                members_removed: vec![MemberRemoved {
                    id_number: person(u32::from(*h) * 10 + u32::from(*index)),
                    reason: MemberRemovedReason::Death,
                }],
                ..Adjustment::default()
            },
        ),
        Op::Relocate { hh: h, village } => adjust(
            &hh(*h),
            &on_text,
            Adjustment {
                relocate_to: Some(region(VILLAGES[usize::from(*village)])),
                ..Adjustment::default()
            },
        ),
        Op::Lift { hh: h, income } => lift_out(&hh(*h), &on_text, i64::from(*income)),
        Op::Exit { hh: h, dissolve } => exit(
            &hh(*h),
            &on_text,
            if *dissolve {
                ExitReason::Dissolved
            } else {
                ExitReason::Removed
            },
        ),
        Op::Relapse { hh: h } => relapse(&hh(*h), &on_text),
        Op::Annul { pick: p } => {
            let target = pick(*p)?;
            command(
                target.household_id.as_str(),
                &on_text,
                Change::Correct(Correction {
                    target_seq: target.seq,
                    action: CorrectionAction::Annul,
                    reason: "oracle".into(),
                }),
            )
        }
        Op::AmendDate { pick: p, days } => {
            let target = pick(*p)?;
            command(
                target.household_id.as_str(),
                &on_text,
                Change::Correct(Correction {
                    target_seq: target.seq,
                    action: CorrectionAction::Amend {
                        change: Box::new(target.change.clone()),
                        effective_date: Some(
                            target.effective_date + chrono::Days::new(u64::from(*days)),
                        ),
                    },
                    reason: "oracle".into(),
                }),
            )
        }
    })
}

/// The oracle: DESIGN.md §2, literally, over the whole log.
struct Oracle {
    log: Vec<Event>,
}

impl Oracle {
    fn state(
        &self,
        hh: &HouseholdId,
        as_of: Option<Date>,
        known_at: u64,
    ) -> Option<HouseholdState> {
        let known: Vec<&Event> = self
            .log
            .iter()
            .filter(|e| &e.household_id == hh && e.seq <= known_at)
            .collect();
        let mut annulled = BTreeSet::new();
        let mut amended: BTreeMap<u64, (Change, Option<Date>)> = BTreeMap::new();
        for e in &known {
            if let Change::Correct(c) = &e.change {
                match &c.action {
                    CorrectionAction::Annul => {
                        annulled.insert(c.target_seq);
                    }
                    CorrectionAction::Amend {
                        change,
                        effective_date,
                    } => {
                        amended.insert(c.target_seq, ((**change).clone(), *effective_date));
                    }
                }
            }
        }
        let mut state = None;
        for e in known {
            if matches!(e.change, Change::Correct(_)) || annulled.contains(&e.seq) {
                continue;
            }
            let (change, date) = match amended.get(&e.seq) {
                Some((change, date)) => (change.clone(), date.unwrap_or(e.effective_date)),
                None => (e.change.clone(), e.effective_date),
            };
            if as_of.is_none_or(|as_of| date <= as_of) {
                state = apply(state, date, &change);
            }
        }
        state
    }

    fn households(&self) -> BTreeSet<HouseholdId> {
        self.log.iter().map(|e| e.household_id.clone()).collect()
    }

    /// (region, household) of everyone on the roll (or with one of `statuses`) under `prefix`.
    fn roster(
        &self,
        prefix: RegionPrefix,
        statuses: &[Status],
        as_of: Option<Date>,
        known: u64,
    ) -> Vec<(RegionCode, HouseholdId)> {
        let mut out: Vec<_> = self
            .households()
            .into_iter()
            .filter_map(|hh| {
                let s = self.state(&hh, as_of, known)?;
                (statuses.contains(&s.status) && prefix.contains(s.region_code))
                    .then_some((s.region_code, hh))
            })
            .collect();
        out.sort();
        out
    }
}

fn run_case(ops: Vec<(Op, (u16, u8))>, points: Vec<(Option<u16>, u16)>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let register = Register::open(dir.path(), Default::default()).unwrap();
        let mut clock = 0u32;
        let mut log: Vec<Event> = Vec::new();
        for (op, (advance, back)) in &ops {
            clock += u32::from(*advance);
            let on = day(clock.saturating_sub(u32::from(*back)));
            let Some(command) = to_command(op, on, &log) else {
                continue;
            };
            if register.append_one(command).await.is_ok() {
                log = register
                    .events(1, usize::MAX)
                    .unwrap()
                    .into_iter()
                    .map(|r| r.event)
                    .collect();
            }
        }
        let head = register.head().seq;
        let oracle = Oracle { log };
        let households = oracle.households();
        for (as_of, known) in points {
            let as_of = as_of.map(|d| day(u32::from(d) * 3));
            let known = u64::from(known) % (head + 1);
            let at = At {
                as_of,
                known_at: KnownAt::Seq(known),
            };
            for prefix in PREFIXES {
                let prefix = RegionPrefix::parse(prefix).unwrap();
                for statuses in [&[Status::OnRoll][..], &[Status::OnRoll, Status::Exited]] {
                    let expected = oracle.roster(prefix, statuses, as_of, known);
                    let page = register.roster(prefix, statuses, at, None, 10_000).unwrap();
                    let got: Vec<_> = page
                        .households
                        .iter()
                        .map(|(id, s)| (s.region_code, id.clone()))
                        .collect();
                    assert_eq!(
                        got, expected,
                        "roster {prefix} {statuses:?} at {as_of:?}/{known}"
                    );
                }
                // Stats: totals and the next level.
                let (stats, _) = register.stats(prefix, at).unwrap();
                let mut on_roll = Tally::default();
                let mut exited = Tally::default();
                let mut by_region: BTreeMap<String, u64> = BTreeMap::new();
                for hh in &households {
                    let Some(s) = oracle.state(hh, as_of, known) else {
                        continue;
                    };
                    if !prefix.contains(s.region_code) || s.status == Status::Removed {
                        continue;
                    }
                    let t = if s.status == Status::OnRoll {
                        &mut on_roll
                    } else {
                        &mut exited
                    };
                    t.households += 1;
                    t.people += s.members.len() as u64;
                    *by_region
                        .entry(s.region_code.truncate(prefix.next_level()).to_string())
                        .or_default() += 1;
                }
                assert_eq!(
                    (stats.total.on_roll, stats.total.exited),
                    (on_roll, exited),
                    "stats {prefix} at {as_of:?}/{known}"
                );
                let got: BTreeMap<String, u64> = stats
                    .by_region
                    .iter()
                    .map(|(r, row)| {
                        (
                            r.to_string(),
                            row.on_roll.households + row.exited.households,
                        )
                    })
                    .collect();
                assert_eq!(
                    got, by_region,
                    "stats by region {prefix} at {as_of:?}/{known}"
                );
            }
            for hh in &households {
                let expected = oracle.state(hh, as_of, known);
                let got = register.household(hh, at).ok().map(|v| v.state);
                assert_eq!(got, expected, "household {hh} at {as_of:?}/{known}");
            }
        }
        // Diffs and flows between consecutive points.
        let county = RegionPrefix::parse("610602").unwrap();
        for window in [(0u64, head), (head / 2, head), (head / 3, head / 3)] {
            let dates = [None, Some(day(700)), Some(day(1500))];
            for (a, b) in [
                (dates[1], dates[2]),
                (dates[2], dates[2]),
                (dates[0], dates[1]),
            ] {
                let from = At {
                    as_of: a,
                    known_at: KnownAt::Seq(window.0),
                };
                let to = At {
                    as_of: b,
                    known_at: KnownAt::Seq(window.1),
                };
                let (changes, _, _) = register.diff(county, from, to).unwrap();
                let before: BTreeSet<_> = oracle
                    .roster(county, &[Status::OnRoll], a, window.0)
                    .into_iter()
                    .map(|(_, h)| h)
                    .collect();
                let after: BTreeSet<_> = oracle
                    .roster(county, &[Status::OnRoll], b, window.1)
                    .into_iter()
                    .map(|(_, h)| h)
                    .collect();
                let expected: BTreeSet<(HouseholdId, bool)> = after
                    .difference(&before)
                    .map(|h| (h.clone(), true))
                    .chain(before.difference(&after).map(|h| (h.clone(), false)))
                    .collect();
                let got: BTreeSet<(HouseholdId, bool)> = changes
                    .iter()
                    .map(|c| (c.household_id.clone(), c.entered))
                    .collect();
                assert_eq!(
                    got, expected,
                    "diff {a:?}/{} → {b:?}/{}",
                    window.0, window.1
                );
                // With one knowledge, the reason follows from the statuses alone.
                if window.0 == window.1 {
                    for c in &changes {
                        let other = if c.entered {
                            oracle.state(&c.household_id, a, window.0)
                        } else {
                            oracle.state(&c.household_id, b, window.1)
                        };
                        let expected = match (c.entered, other.map(|s| s.status)) {
                            (true, None | Some(Status::Removed)) => ChangeReason::Identified,
                            (true, Some(Status::Exited)) => ChangeReason::Relapsed,
                            (true, Some(Status::OnRoll)) => ChangeReason::RelocatedIn,
                            (false, Some(Status::Exited)) => ChangeReason::Exited,
                            (false, Some(Status::Removed)) => ChangeReason::Removed,
                            (false, Some(Status::OnRoll)) => ChangeReason::RelocatedOut,
                            (false, None) => ChangeReason::Corrected,
                        };
                        assert_eq!(c.reason, expected, "{c:?}");
                    }
                }
            }
            // Flows over a period: identifications and exits counted from the oracle's fold.
            let (from, to) = (day(300), day(1400));
            let (flows, _) = register
                .flows(county, from, to, KnownAt::Seq(window.1))
                .unwrap();
            let (mut identified, mut exited) = (0u64, 0u64);
            for hh in &households {
                // The oracle's own stream walk: every effective event in the period.
                let events: Vec<&Event> = oracle
                    .log
                    .iter()
                    .filter(|e| &e.household_id == hh && e.seq <= window.1)
                    .collect();
                let annulled: BTreeSet<u64> = events
                    .iter()
                    .filter_map(|e| match &e.change {
                        Change::Correct(Correction {
                            target_seq,
                            action: CorrectionAction::Annul,
                            ..
                        }) => Some(*target_seq),
                        _ => None,
                    })
                    .collect();
                let amended: BTreeMap<u64, Option<Date>> = events
                    .iter()
                    .filter_map(|e| match &e.change {
                        Change::Correct(Correction {
                            target_seq,
                            action: CorrectionAction::Amend { effective_date, .. },
                            ..
                        }) => Some((*target_seq, *effective_date)),
                        _ => None,
                    })
                    .collect();
                let mut state: Option<HouseholdState> = None;
                for e in events {
                    if matches!(e.change, Change::Correct(_)) || annulled.contains(&e.seq) {
                        continue;
                    }
                    let date = amended
                        .get(&e.seq)
                        .copied()
                        .flatten()
                        .unwrap_or(e.effective_date);
                    state = apply(state, date, &e.change);
                    let inside = state
                        .as_ref()
                        .is_some_and(|s| county.contains(s.region_code));
                    if inside && from <= date && date <= to {
                        match &e.change {
                            Change::Identify(_) => identified += 1,
                            Change::Exit(x) if x.reason == ExitReason::LiftedOut => exited += 1,
                            _ => {}
                        }
                    }
                }
            }
            assert_eq!(
                (flows.identified.households, flows.exited.households),
                (identified, exited),
                "flows at {}",
                window.1
            );
        }
        // A rebuild from the log answers exactly as the roll that followed every append.
        let answers = |r: &Register| {
            let mut out = Vec::new();
            for (as_of, known) in [
                (None, head),
                (Some(day(1000)), head / 2),
                (Some(day(400)), head),
            ] {
                let at = At {
                    as_of,
                    known_at: KnownAt::Seq(known),
                };
                for prefix in PREFIXES {
                    let prefix = RegionPrefix::parse(prefix).unwrap();
                    let statuses = [Status::OnRoll, Status::Exited, Status::Removed];
                    let page = r
                        .roster(prefix, &statuses, at, None, 10_000)
                        .unwrap()
                        .households;
                    out.push(format!("{page:?} {:?}", r.stats(prefix, at).unwrap()));
                }
            }
            out
        };
        let incremental = answers(&register);
        register.close().await;
        drop(register);
        let rebuilt = Register::open(dir.path(), Default::default()).unwrap();
        assert_eq!(
            answers(&rebuilt),
            incremental,
            "a rebuild answers otherwise"
        );
        rebuilt.close().await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn point_in_time_reads_agree_with_a_naive_replay(
        ops in prop::collection::vec((op(), step()), 20..120),
        points in prop::collection::vec((prop::option::of(0u16..700), any::<u16>()), 4..8),
    ) {
        run_case(ops, points);
    }
}
