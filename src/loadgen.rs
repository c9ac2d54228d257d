//! The load generator behind `rollstore bench`: many concurrent gRPC clients sending valid
//! register commands to a running server, with latencies in an HDR histogram.
//!
//! ```text
//!   worker 0 ─┐  own households (ids LG<run>-0-n), own ID-number space, Zipf-skewed picks
//!   worker 1 ─┼──▶ Identify (1 event per request) or AppendBatch (N per request) ──▶ server
//!   …        ─┘  each request timed; errors counted, never retried
//! ```
//!
//! The report gives events/s, requests/s, the latency percentiles and when the slowest request
//! was sent, in UTC as the server's log writes times: a maximum far above the percentiles is
//! usually something the server did then (a reopen of sled, a checkpoint), and its log says
//! what.
//!
//! By default each worker has a connection of its own, as separate systems would. With
//! `--connections N` the workers share N HTTP/2 connections instead (worker i on connection
//! i mod N), their calls in flight side by side, as the concurrent calls of one process on one
//! gRPC channel are: HTTP/2 then carries several calls' frames per read and write, so a call
//! costs less on both ends.
//!
//! With `--mix head` the workers send `GetHead` instead, a call that reads one value and writes
//! nothing: what it costs is what any call costs (HTTP/2, protobuf, TCP over loopback, the
//! runtimes on both ends), the floor under every write's figure on the same machine.
//!
//! Each worker keeps the state of its own households, so that every command it sends is one
//! the rules accept (an exit only of a household on the roll, in a later year than its
//! identification; a relapse only after an exit). Workers never touch each other's households,
//! so there are no conflicts, only load. A client of the API only: it knows nothing of the
//! store's insides.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use hdrhistogram::Histogram;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Zipf};
use serde::Serialize;
use tonic::transport::Channel;

use crate::api::convert;
use crate::domain::{
    Adjustment, Attribute, Cause, Change, Command, Date, ExitChecklist, ExitReason, ExitRecord,
    Health, HouseholdId, IdNumber, Identification, Labor, Member, Monitoring, RegionCode,
    RelapseRecord, Relation, Schooling,
};
use crate::pb;

/// Which commands the generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    /// Identifications of new households only.
    Identify,
    /// Identify 40%, adjust 30%, exit 20%, relapse 10%, over a Zipf-skewed population.
    Mixed,
    /// `GetHead` only, writing nothing: the cost of a call itself, the floor under the writes.
    Head,
}

/// How to load the server.
#[derive(Debug, Clone)]
pub struct Options {
    pub address: String,
    pub concurrency: usize,
    /// HTTP/2 connections the workers share (worker i on connection i mod N); `None`: one
    /// per worker.
    pub connections: Option<usize>,
    /// Events per request: 1 sends single RPCs, more sends `AppendBatch`.
    pub batch: usize,
    pub duration: Duration,
    /// Stop after this many requests in all (whichever of this and `duration` comes first).
    pub requests: Option<u64>,
    pub mix: Mix,
    /// Distinguishes this run's households from earlier runs' on the same server.
    pub run: u32,
    /// With the mixed load: stop identifying once this many households exist (in all), and
    /// keep adjusting, exiting and relapsing them. `None`: no limit.
    pub households: Option<u64>,
    /// Give every command a request_id (unique to the run), as a system that retries safely
    /// does, so that the server keeps one request index entry per event.
    pub request_ids: bool,
    pub seed: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub concurrency: usize,
    pub connections: usize,
    pub batch: usize,
    pub mix: Mix,
    pub requests: u64,
    pub events: u64,
    pub errors: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub requests_per_second: f64,
    /// Request latency in milliseconds.
    pub latency_ms: Latency,
    /// When the slowest request was sent (UTC, as the server's log writes times): what to look
    /// for in that log when the maximum is far above the percentiles (a reopen of sled, a
    /// checkpoint). `None` if no request was sent.
    pub slowest_sent_at: Option<DateTime<Utc>>,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Report {
    /// A human-readable table.
    pub fn table(&self) -> String {
        format!(
            "concurrency {}  connections {}  batch {}  mix {:?}\n\
             requests  {:>10}   ({:.0}/s)\n\
             events    {:>10}   ({:.0}/s)\n\
             errors    {:>10}\n\
             seconds   {:>10.2}\n\
             latency   p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   p999 {:.2} ms   max {:.2} ms{}{}",
            self.concurrency,
            self.connections,
            self.batch,
            self.mix,
            self.requests,
            self.requests_per_second,
            self.events,
            self.events_per_second,
            self.errors,
            self.seconds,
            self.latency_ms.p50,
            self.latency_ms.p90,
            self.latency_ms.p99,
            self.latency_ms.p999,
            self.latency_ms.max,
            self.slowest_sent_at
                .map(|at| format!(" (sent at {})", at.to_rfc3339_opts(SecondsFormat::Millis, true)))
                .unwrap_or_default(),
            self.first_error
                .as_ref()
                .map(|e| format!("\nfirst error: {e}"))
                .unwrap_or_default()
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    OnRoll,
    Exited,
}

/// The ID numbers of one area code: a birth date among 20,000 days from 1950 on, and a
/// sequence number from 1 to 999 on each.
const PEOPLE_PER_AREA: u64 = 20_000 * 999;

/// Where a worker's ID numbers begin: an area code, and its first person there (the n of
/// [`id_number`]), both drawn from the run and the worker; the worker numbers its people on
/// from there. Runs against one store must not meet, because the rules refuse a person
/// already active in another household: a run that reused an earlier run's ID numbers would
/// see its identifications fail. Each run has a random `run`, so its workers land in areas,
/// and at places in them, as if at random, and two workers' people meet only if they share
/// an area (one chance in 880,000) and overlap inside it (their lengths over 20 million).
/// Were every worker to begin at an area's first person, sharing an area would be enough:
/// a store that had taken 300–600 workers' runs would meet a new run's 32 workers about
/// once in 50–90 runs.
fn id_numbers_from(run: u32, worker: usize) -> (u32, u64) {
    let mut origin = ChaCha8Rng::seed_from_u64(u64::from(run) << 32 | worker as u64);
    (
        origin.random_range(110_000..990_000),
        origin.random_range(0..PEOPLE_PER_AREA),
    )
}

/// The `n`th ID number of an area: every `n` below [`PEOPLE_PER_AREA`] a different one, and
/// then the same again.
fn id_number(area: u32, n: u64) -> IdNumber {
    let n = n % PEOPLE_PER_AREA;
    let birth = day(1950, 1, 1) + chrono::Days::new(n / 999);
    IdNumber::from_parts(area, birth, (n % 999 + 1) as u16).expect("generated IDs are valid")
}

/// One of a worker's households, as the worker knows it.
struct Known {
    id: HouseholdId,
    stage: Stage,
    /// Exits so far: each exit and relapse moves a year on.
    cycle: i32,
    last: Date,
}

fn day(year: i32, month: u32, d: u32) -> Date {
    NaiveDate::from_ymd_opt(year, month, d).expect("load dates are valid")
}

/// One worker's command source.
struct Source {
    worker: usize,
    run: u32,
    rng: ChaCha8Rng,
    mix: Mix,
    households: Vec<Known>,
    /// This worker's share of `Options::households`.
    cap: usize,
    people: u64,
    area: u32,
    region: RegionCode,
    request_ids: bool,
    /// Commands made so far.
    made: u64,
}

impl Source {
    fn new(options: &Options, worker: usize) -> Self {
        let mut rng =
            ChaCha8Rng::seed_from_u64(options.seed ^ (worker as u64).wrapping_mul(0x9e37_79b9));
        let (area, first_person) = id_numbers_from(options.run, worker);
        let village = rng.random_range(1..=999u64);
        let region = RegionCode::parse(&format!(
            "61{:04}{:03}{:03}",
            600 + worker % 100,
            100 + worker % 20,
            village
        ))
        .expect("generated region codes are valid");
        let cap = options.households.map_or(usize::MAX, |total| {
            (total as usize).div_ceil(options.concurrency.max(1)).max(1)
        });
        Self {
            worker,
            run: options.run,
            rng,
            mix: options.mix,
            households: Vec::new(),
            cap,
            people: first_person,
            area,
            region,
            request_ids: options.request_ids,
            made: 0,
        }
    }

    fn person(&mut self, relation: Relation) -> Member {
        let n = self.people;
        self.people += 1;
        let id = id_number(self.area, n);
        Member {
            id_number: id,
            name: format!("测试{n}"),
            relation,
            health: Health::Healthy,
            labor: Labor::Ordinary,
            schooling: Schooling::Junior,
        }
    }

    fn command(&mut self, id: &HouseholdId, on: Date, change: Change) -> Command {
        self.made += 1;
        Command {
            household_id: id.clone(),
            effective_date: on,
            document_ref: "压测〔2026〕1号".into(),
            expected_version: None,
            request_id: self
                .request_ids
                .then(|| format!("LG{}-{}-r{}", self.run, self.worker, self.made)),
            change,
        }
    }

    fn identify(&mut self) -> Command {
        let id = HouseholdId::parse(&format!(
            "LG{}-{}-{}",
            self.run,
            self.worker,
            self.households.len()
        ))
        .expect("generated household ids are valid");
        let size = self.rng.random_range(1..=4);
        let members: Vec<Member> = (0..size)
            .map(|i| {
                self.person(if i == 0 {
                    Relation::Head
                } else {
                    Relation::Child
                })
            })
            .collect();
        let on = day(2016, 3, 1);
        let command = self.command(
            &id,
            on,
            Change::Identify(Identification {
                region_code: self.region,
                head_id: members[0].id_number,
                members,
                attribute: Attribute::General,
                primary_cause: Cause::LackOfFunds,
                other_causes: Vec::new(),
                income_per_capita: 2100,
                safety_net: false,
                monitoring: Monitoring::NotMonitored,
                helper: None,
                measures: Vec::new(),
                assessment: None,
                procedure: None,
            }),
        );
        self.households.push(Known {
            id,
            stage: Stage::OnRoll,
            cycle: 0,
            last: on,
        });
        command
    }

    fn next(&mut self, zipf: &Option<Zipf<f64>>) -> Command {
        let roll = self.rng.random_range(0..100);
        let room = self.households.len() < self.cap;
        if room && (self.mix == Mix::Identify || self.households.len() < 64 || roll < 40) {
            return self.identify();
        }
        // Zipf over the households, newest most likely: a skewed, realistic population.
        let rank = match zipf {
            Some(zipf) => zipf.sample(&mut self.rng) as usize,
            None => 1,
        };
        let index = self
            .households
            .len()
            .saturating_sub(rank.clamp(1, self.households.len()));
        let (id, stage, cycle, last) = {
            let h = &self.households[index];
            (h.id.clone(), h.stage, h.cycle, h.last)
        };
        let year = 2017 + cycle;
        match (stage, roll) {
            (Stage::OnRoll, 70..=89) if year <= 2025 => {
                let on = day(year, 11, 20);
                self.households[index].stage = Stage::Exited;
                self.households[index].last = on;
                self.command(
                    &id,
                    on,
                    Change::Exit(ExitRecord {
                        reason: ExitReason::LiftedOut,
                        checklist: Some(ExitChecklist::ALL_MET),
                        income_per_capita: Some(9000),
                        procedure: None,
                        note: String::new(),
                    }),
                )
            }
            (Stage::Exited, 90..) if year < 2025 => {
                let on = day(year + 1, 5, 1);
                let h = &mut self.households[index];
                h.stage = Stage::OnRoll;
                h.cycle += 1;
                h.last = on;
                self.command(
                    &id,
                    on,
                    Change::Relapse(RelapseRecord {
                        primary_cause: Cause::Illness,
                        income_per_capita: Some(2000),
                        note: String::new(),
                    }),
                )
            }
            _ => {
                let income = self.rng.random_range(2000..9000);
                self.command(
                    &id,
                    last,
                    // Income and monitoring, not measures: a Zipf-hot household takes thousands
                    // of adjustments here, far more than any real one, and should not also
                    // accumulate thousands of measures.
                    Change::Adjust(Adjustment {
                        income_per_capita: Some(income),
                        monitoring: Some(if income < 4000 {
                            Monitoring::Edge
                        } else {
                            Monitoring::NotMonitored
                        }),
                        ..Adjustment::default()
                    }),
                )
            }
        }
    }
}

/// Runs the load and reports what it measured.
pub async fn run(options: Options) -> Result<Report, String> {
    if options.mix == Mix::Head && options.batch > 1 {
        return Err("--mix head sends GetHead, one call per request: it takes no --batch".into());
    }
    let connections = options.connections.unwrap_or(options.concurrency);
    if connections == 0 || connections > options.concurrency {
        return Err(format!(
            "--connections {connections} cannot serve --concurrency {}: give between 1 and as many connections as clients",
            options.concurrency
        ));
    }
    let endpoint = format!("http://{}", options.address);
    let budget = Arc::new(AtomicU64::new(options.requests.unwrap_or(u64::MAX)));
    let started = Instant::now();
    let deadline = started
        .checked_add(options.duration)
        .ok_or_else(|| format!("--seconds {} is too long", options.duration.as_secs()))?;
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(
            Channel::from_shared(endpoint.clone())
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", options.address))?,
        );
    }
    let mut workers = Vec::new();
    for worker in 0..options.concurrency {
        // A channel's clone is another handle on the same connection.
        let channel = channels[worker % connections].clone();
        let options = options.clone();
        let budget = budget.clone();
        workers.push(tokio::spawn(async move {
            let mut audit = pb::audit_log_client::AuditLogClient::new(channel.clone());
            let mut client = pb::registry_client::RegistryClient::new(channel)
                .max_decoding_message_size(crate::api::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(crate::api::MAX_MESSAGE_BYTES);
            let mut source = Source::new(&options, worker);
            let zipf = Zipf::new(1_000_000.0, 1.1).ok();
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .expect("the histogram bounds are valid");
            let (mut requests, mut events, mut errors) = (0u64, 0u64, 0u64);
            let mut first_error = None;
            let mut slowest: Option<(u64, DateTime<Utc>)> = None;
            while Instant::now() < deadline
                && budget
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
                    .is_ok()
            {
                let sent = Instant::now();
                let sent_at = Utc::now();
                let result = if options.mix == Mix::Head {
                    audit.get_head(pb::GetHeadRequest {}).await.map(|_| 0)
                } else if options.batch <= 1 {
                    let command = source.next(&zipf);
                    send_one(&mut client, &command).await.map(|()| 1)
                } else {
                    let commands: Vec<pb::Command> = (0..options.batch)
                        .map(|_| convert::command_message(&source.next(&zipf)))
                        .collect();
                    client
                        .append_batch(pb::AppendBatchRequest { commands })
                        .await
                        .map(|r| r.into_inner().receipts.len() as u64)
                };
                let micros = sent.elapsed().as_micros() as u64;
                let _ = histogram.record(micros.max(1));
                keep_slowest(&mut slowest, (micros, sent_at));
                requests += 1;
                match result {
                    Ok(n) => events += n,
                    Err(status) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| status.to_string());
                    }
                }
            }
            (histogram, requests, events, errors, first_error, slowest)
        }));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let (mut requests, mut events, mut errors, mut first_error) = (0, 0, 0, None);
    let mut slowest: Option<(u64, DateTime<Utc>)> = None;
    for worker in workers {
        let (h, r, e, x, f, s) = worker.await.map_err(|e| format!("a worker failed: {e}"))?;
        if let Some(s) = s {
            keep_slowest(&mut slowest, s);
        }
        histogram.add(&h).map_err(|e| e.to_string())?;
        requests += r;
        events += e;
        errors += x;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(Report {
        concurrency: options.concurrency,
        connections,
        batch: options.batch.max(1),
        mix: options.mix,
        requests,
        events,
        errors,
        seconds,
        events_per_second: events as f64 / seconds,
        requests_per_second: requests as f64 / seconds,
        latency_ms: Latency {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: histogram.max() as f64 / 1000.0,
        },
        slowest_sent_at: slowest.map(|(_, at)| at),
        first_error,
    })
}

/// Keeps the request with the longer latency (in µs) and its send time; the first on a tie.
fn keep_slowest(slowest: &mut Option<(u64, DateTime<Utc>)>, request: (u64, DateTime<Utc>)) {
    if slowest.is_none_or(|(longest, _)| request.0 > longest) {
        *slowest = Some(request);
    }
}

async fn send_one(
    client: &mut pb::registry_client::RegistryClient<Channel>,
    command: &Command,
) -> Result<(), tonic::Status> {
    use pb::command::Command as Kind;
    match convert::command_message(command).command {
        Some(Kind::Identify(r)) => client.identify(*r).await.map(|_| ()),
        Some(Kind::Adjust(r)) => client.adjust(*r).await.map(|_| ()),
        Some(Kind::Exit(r)) => client.exit(*r).await.map(|_| ()),
        Some(Kind::Relapse(r)) => client.relapse(*r).await.map(|_| ()),
        Some(Kind::Correct(r)) => client.correct(*r).await.map(|_| ()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_against_one_store_never_share_an_id_number() {
        // 300 runs of 32 workers, 64 people each, each run random as `rollstore bench`
        // draws it (from a fixed seed here): were each worker to begin at its area's first
        // person, the ~50 pairs of workers that share an area would share people too.
        let mut runs = ChaCha8Rng::seed_from_u64(7);
        let mut seen = std::collections::HashMap::new();
        for _ in 0..300 {
            let run: u32 = runs.random();
            for worker in 0..32 {
                let (area, first) = id_numbers_from(run, worker);
                for n in first..first + 64 {
                    let id = id_number(area, n);
                    if let Some(earlier) = seen.insert(id, (run, worker)) {
                        panic!("run {run} worker {worker} reuses {id} of run/worker {earlier:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn an_area_holds_its_people_once_each_and_then_again() {
        // (two people's n in one area, whether they are the same person)
        let cases = [
            (0, 1, false),
            (998, 999, false),
            (0, PEOPLE_PER_AREA - 1, false),
            (0, PEOPLE_PER_AREA, true),
            (12_345, PEOPLE_PER_AREA + 12_345, true),
        ];
        for (a, b, same) in cases {
            assert_eq!(
                id_number(110_000, a) == id_number(110_000, b),
                same,
                "{a} and {b}"
            );
        }
    }

    #[test]
    fn the_slowest_request_is_the_longest_and_the_first_of_a_tie() {
        let at = |second| DateTime::from_timestamp(second, 0).expect("a valid time");
        // (latencies in µs, each sent a second after the one before; the one kept)
        let cases: &[(&[u64], usize)] = &[
            (&[5], 0),
            (&[5, 9, 7], 1),
            (&[9, 5, 9], 0),
            (&[1, 2, 3, 4], 3),
        ];
        for (latencies, kept) in cases {
            let mut slowest = None;
            for (i, micros) in latencies.iter().enumerate() {
                keep_slowest(&mut slowest, (*micros, at(i as i64)));
            }
            assert_eq!(
                slowest,
                Some((latencies[*kept], at(*kept as i64))),
                "{latencies:?}"
            );
        }
    }
}
