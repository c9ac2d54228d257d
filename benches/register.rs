//! The register in-process, without gRPC: the append path (one event; a batch of 1,000), the
//! domain's decide, body encoding and apply, and replay (rebuild) throughput.
//!
//! `cargo bench --bench register`

use std::hint::black_box;

use chrono::NaiveDate;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rollstore::app::{audit, Config, Register};
use rollstore::domain::{
    apply, decide, Attribute, Cause, Change, Command, Context, Date, Event, Health, HouseholdId,
    IdNumber, Identification, Labor, Member, Monitoring, Policy, RegionCode, Relation, Schooling,
};
use rollstore::projection::Roll;
use rollstore::store::Log;

/// The server's allocator (see `src/main.rs`), so that these figures are the server's.
#[global_allocator]
static ALLOCATOR: rollstore::heap::Allocator = rollstore::heap::Allocator;

fn day(y: i32, m: u32, d: u32) -> Date {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// Identification number `n`: three members, all new people.
fn identify(n: u64) -> Command {
    let members: Vec<Member> = (0..3)
        .map(|k| {
            let person = n * 3 + k;
            Member {
                id_number: IdNumber::from_parts(
                    110_000 + (person / (999 * 30_000)) as u32,
                    day(1930, 1, 1) + chrono::Days::new(person / 999 % 30_000),
                    (person % 999 + 1) as u16,
                )
                .unwrap(),
                name: format!("户{person}"),
                relation: if k == 0 {
                    Relation::Head
                } else {
                    Relation::Child
                },
                health: Health::Healthy,
                labor: Labor::Ordinary,
                schooling: Schooling::Junior,
            }
        })
        .collect();
    Command {
        household_id: HouseholdId::parse(&format!("B{n}")).unwrap(),
        effective_date: day(2016, 3, 1),
        document_ref: "bench".into(),
        expected_version: None,
        request_id: None,
        change: Change::Identify(Identification {
            region_code: RegionCode::parse("610602201001").unwrap(),
            head_id: members[0].id_number,
            members,
            attribute: Attribute::General,
            primary_cause: Cause::Illness,
            other_causes: vec![],
            income_per_capita: 2000,
            safety_net: false,
            monitoring: Monitoring::NotMonitored,
            helper: None,
            measures: vec![],
            assessment: None,
            procedure: None,
        }),
    }
}

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let register = Register::open(dir.path(), Config::default()).unwrap();
    let mut next = 0u64;
    let mut group = c.benchmark_group("register_append");
    group.sample_size(20);
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_event", |b| {
        b.iter_batched(
            || {
                next += 1;
                identify(next)
            },
            |command| runtime.block_on(register.append_one(command)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(1000));
    group.bench_function("batch_of_1000", |b| {
        b.iter_batched(
            || {
                (0..1000)
                    .map(|_| {
                        next += 1;
                        identify(next)
                    })
                    .collect::<Vec<_>>()
            },
            |commands| runtime.block_on(register.append(commands)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
    runtime.block_on(register.close());
}

fn decide_and_apply(c: &mut Criterion) {
    let policy = Policy::default();
    let ctx = Context {
        today: day(2026, 1, 1),
        policy: &policy,
    };
    let roll = Roll::default();
    let command = identify(1);
    c.bench_function("domain/decide_identify", |b| {
        b.iter(|| black_box(decide(ctx, None, &command, &roll).unwrap()))
    });
    // What the decider writes for each event: its body, the JSON the log stores and hashes.
    let recorded_at = chrono::DateTime::from_timestamp(1_795_000_000, 123_456_789).unwrap();
    let event = command.clone().recorded(1, 1, recorded_at, "bench");
    c.bench_function("domain/encode_identify_body", |b| {
        b.iter(|| black_box(serde_json::to_vec(&event).unwrap()))
    });
    // What every reader of the log does for each event: a replay, a history, a subscriber.
    let body = serde_json::to_vec(&event).unwrap();
    c.bench_function("domain/decode_identify_body", |b| {
        b.iter(|| black_box(Event::from_body(black_box(&body)).unwrap()))
    });
    let state = decide(ctx, None, &command, &roll).unwrap();
    let adjust = Change::Adjust(rollstore::domain::Adjustment {
        income_per_capita: Some(3000),
        ..Default::default()
    });
    c.bench_function("domain/apply_adjust", |b| {
        b.iter_batched(
            || Some(state.clone()),
            |state| black_box(apply(state, day(2017, 1, 1), &adjust)),
            BatchSize::SmallInput,
        )
    });
}

fn replay(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let register = Register::open(dir.path(), Config::default()).unwrap();
    for chunk in 0..20u64 {
        let commands = (0..1000)
            .map(|i| identify(1_000_000 + chunk * 1000 + i))
            .collect();
        runtime.block_on(register.append(commands)).unwrap();
    }
    runtime.block_on(register.close());
    drop(register);
    let log = Log::open(dir.path()).unwrap();
    let mut group = c.benchmark_group("rebuild");
    group.sample_size(10);
    group.throughput(Throughput::Elements(20_000));
    group.bench_function("replay_20k_events", |b| {
        b.iter(|| black_box(audit::replay(&log, &|_| {}).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, append, decide_and_apply, replay);
criterion_main!(benches);
