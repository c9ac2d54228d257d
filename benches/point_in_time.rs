//! Point-in-time reads at scale, against a naive replay of the log.
//!
//! Builds, in memory, a roll of `ROLLSTORE_BENCH_HOUSEHOLDS` households (default 200,000; the
//! issue's scale is 1,000,000) spread over counties of 10,000 households each, every household
//! with an identification, an adjustment, an exit and, for some, a relapse and a correction.
//! Then times a county roster, a province's stats and one household at a point in time, and
//! the same county roster by naive replay of the whole log.
//!
//! `cargo bench --bench point_in_time` (`ROLLSTORE_BENCH_HOUSEHOLDS=1000000` for the full scale)

use std::hint::black_box;

use chrono::NaiveDate;
use criterion::{criterion_group, criterion_main, Criterion};
use rollstore::domain::{
    state_at, Adjustment, Attribute, Cause, Change, Correction, CorrectionAction, Date, Event,
    ExitChecklist, ExitReason, ExitRecord, Health, HouseholdId, IdNumber, Identification, Labor,
    Member, Monitoring, PointInTime, RegionCode, RegionPrefix, RelapseRecord, Relation, Schooling,
    Status,
};
use rollstore::projection::{History, Roll};

const PER_COUNTY: u64 = 10_000;

fn day(y: i32, m: u32, d: u32) -> Date {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

struct Log(Vec<Event>);

impl History for Log {
    fn events(&self, seqs: &[u64]) -> Result<Vec<Event>, rollstore::Error> {
        Ok(seqs
            .iter()
            .map(|s| self.0[*s as usize - 1].clone())
            .collect())
    }
}

fn member(n: u64, relation: Relation) -> Member {
    let birth = day(1950, 1, 1) + chrono::Days::new(n / 999 % 20_000);
    let area = 110_000 + (n / (999 * 20_000)) as u32;
    Member {
        id_number: IdNumber::from_parts(area, birth, (n % 999 + 1) as u16).unwrap(),
        name: format!("户{n}"),
        relation,
        health: Health::Healthy,
        labor: Labor::Ordinary,
        schooling: Schooling::Junior,
    }
}

/// The log and the roll built from it.
fn build(households: u64) -> (Log, Roll) {
    let mut log = Log(Vec::new());
    let mut roll = Roll::default();
    let push = |log: &mut Log,
                roll: &mut Roll,
                household: &HouseholdId,
                version: &mut u64,
                date: Date,
                change: Change| {
        *version += 1;
        let event = Event {
            seq: log.0.len() as u64 + 1,
            household_id: household.clone(),
            version: *version,
            effective_date: date,
            recorded_at: chrono::Utc::now(),
            actor: "bench".into(),
            document_ref: "bench".into(),
            request_id: None,
            change,
        };
        log.0.push(event);
        roll.apply(log.0.last().unwrap(), &*log).unwrap();
    };
    let mut people = 0u64;
    for h in 0..households {
        let county = h / PER_COUNTY;
        let region = RegionCode::parse(&format!(
            "{:02}{:04}{:03}{:03}",
            11 + county / 100 % 50,
            100 + county % 100,
            100 + h % 20,
            200 + h % 50
        ))
        .unwrap();
        let id = HouseholdId::parse(&format!("H{h}")).unwrap();
        let mut version = 0;
        let size = 1 + h % 4;
        let members: Vec<Member> = (0..size)
            .map(|i| {
                people += 1;
                member(
                    people,
                    if i == 0 {
                        Relation::Head
                    } else {
                        Relation::Child
                    },
                )
            })
            .collect();
        let identified = day(2014 + (h % 3) as i32, 3, 1);
        push(
            &mut log,
            &mut roll,
            &id,
            &mut version,
            identified,
            Change::Identify(Identification {
                region_code: region,
                head_id: members[0].id_number,
                members,
                attribute: Attribute::General,
                primary_cause: Cause::Illness,
                other_causes: vec![],
                income_per_capita: 2000,
                safety_net: h % 10 == 0,
                monitoring: Monitoring::NotMonitored,
                helper: None,
                measures: vec![],
                assessment: None,
                procedure: None,
            }),
        );
        push(
            &mut log,
            &mut roll,
            &id,
            &mut version,
            identified,
            Change::Adjust(Adjustment {
                income_per_capita: Some(2500),
                ..Adjustment::default()
            }),
        );
        if h % 10 != 0 {
            let exit = |_year: i32| {
                Change::Exit(ExitRecord {
                    reason: ExitReason::LiftedOut,
                    checklist: Some(ExitChecklist::ALL_MET),
                    income_per_capita: Some(5000),
                    procedure: None,
                    note: String::new(),
                })
            };
            push(
                &mut log,
                &mut roll,
                &id,
                &mut version,
                day(2017 + (h % 2) as i32, 11, 20),
                exit(2017),
            );
            if h % 7 == 0 {
                push(
                    &mut log,
                    &mut roll,
                    &id,
                    &mut version,
                    day(2019, 5, 1),
                    Change::Relapse(RelapseRecord {
                        primary_cause: Cause::Illness,
                        income_per_capita: Some(2000),
                        note: String::new(),
                    }),
                );
            }
            if h % 97 == 0 {
                let target = log
                    .0
                    .iter()
                    .rev()
                    .find(|e| e.household_id == id && matches!(e.change, Change::Exit(_)))
                    .unwrap()
                    .seq;
                push(
                    &mut log,
                    &mut roll,
                    &id,
                    &mut version,
                    day(2019, 6, 1),
                    Change::Correct(Correction {
                        target_seq: target,
                        action: CorrectionAction::Annul,
                        reason: "bench".into(),
                    }),
                );
            }
        }
    }
    (log, roll)
}

/// The county roster by replaying the whole log (the oracle's way).
fn naive_roster(log: &Log, county: RegionPrefix, at: PointInTime) -> usize {
    let mut streams: std::collections::HashMap<&HouseholdId, Vec<Event>> =
        std::collections::HashMap::new();
    for event in &log.0 {
        if at.knows(event.seq) {
            streams
                .entry(&event.household_id)
                .or_default()
                .push(event.clone());
        }
    }
    streams
        .values()
        .filter_map(|stream| state_at(stream, at))
        .filter(|s| s.status == Status::OnRoll && county.contains(s.region_code))
        .count()
}

fn point_in_time(c: &mut Criterion) {
    let households: u64 = std::env::var("ROLLSTORE_BENCH_HOUSEHOLDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let started = std::time::Instant::now();
    let (log, roll) = build(households);
    eprintln!(
        "built {} households, {} events in {:.1} s",
        households,
        log.0.len(),
        started.elapsed().as_secs_f64()
    );
    let county = RegionPrefix::parse("110100").unwrap();
    let province = RegionPrefix::parse("11").unwrap();
    let at = PointInTime {
        as_of: Some(day(2018, 12, 31)),
        known_at: Some(log.0.len() as u64 * 3 / 4),
    };
    let (page, _) = roll.roster(county, &[Status::OnRoll], at, None, 100_000);
    assert_eq!(
        page.len(),
        naive_roster(&log, county, at),
        "the index and the replay agree"
    );
    eprintln!(
        "county roster at the point: {} households on the roll",
        page.len()
    );

    let mut group = c.benchmark_group("point_in_time");
    group.sample_size(20);
    group.bench_function("county_roster_10k", |b| {
        b.iter(|| black_box(roll.roster(county, &[Status::OnRoll], at, None, 100_000)))
    });
    group.bench_function("province_stats", |b| {
        b.iter(|| black_box(roll.stats(province, at)))
    });
    let id = HouseholdId::parse("H4242").unwrap();
    group.bench_function("household", |b| {
        b.iter(|| {
            let entry = roll.household(&id).unwrap();
            let seqs: Vec<u64> = entry.seqs.iter().filter(|s| at.knows(*s)).collect();
            let stream = log.events(&seqs).unwrap();
            black_box(state_at(&stream, at))
        })
    });
    group.sample_size(10);
    group.bench_function("county_roster_naive_replay", |b| {
        b.iter(|| black_box(naive_roster(&log, county, at)))
    });
    group.finish();
}

criterion_group!(benches, point_in_time);
criterion_main!(benches);
