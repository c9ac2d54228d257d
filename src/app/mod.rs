//! The register's use cases: decide → append (group commit) → project; and the queries.
//!
//! ```text
//!   gRPC handlers ──Job──▶ [ channel ] ──▶ the writer (one; three threads, see `writer`)
//!                                           │ take every job waiting (a group)
//!                                           │ for each command: idempotency, expected_version,
//!                                           │   domain::decide against the roll + what is
//!                                           │   decided but not applied yet (a batch is all
//!                                           │   or nothing)
//!                                           │ Log::append(all bodies)  ── one flush + fsync
//!                                           │ Roll::apply(each event)  ── under the write lock
//!   reply ◀──────────────────────────────────┘ answer every job
//! ```
//!
//! One writer decides and commits, so decisions never race; readers take the roll's read lock
//! and never see an event that is not durable, because the roll moves only after the fsync.
//! A read at the head therefore sees every write acknowledged before it began.
//!
//! At start-up the roll is rebuilt by replaying the log (see [`Register::open`]).
//!
//! This layer knows neither protobuf nor sled keys.

pub mod audit;
mod staging;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use chrono::{DateTime, FixedOffset, Utc};
use tokio::sync::{mpsc, oneshot, watch};

use crate::domain::{
    state_at, Change, Command, Date, Event, HouseholdId, HouseholdState, PointInTime, Policy,
    RegionPrefix, Status,
};
use crate::error::Error;
use crate::projection::{Extent, Flows, History, Roll, RosterChange, RosterKey, Snapshot, Stats};
use crate::store::{checkpoint, Entry, Hash, Head, Log};

/// How the register runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub policy: Policy,
    /// Who is recorded as the actor of events appended without a named caller.
    pub actor: String,
    /// The offset of the register's calendar from UTC: "today", for the no-future-dates rule,
    /// is the date there. China Standard Time by default.
    pub utc_offset: FixedOffset,
    /// The most commands one batch may carry.
    pub max_batch: usize,
    /// Where `recorded_at` comes from.
    pub clock: Clock,
    /// Write a checkpoint of the whole roll in the background after this many events.
    pub checkpoint_every: u64,
    /// Between those, write a delta on the last one (what changed since) after this many
    /// events; 0: never. A start-up replays at most about this many events.
    pub delta_every: u64,
    /// Space both further apart on a roll of more households than `checkpoint_every`
    /// ([`Spacing`]); if not, they are exactly as set.
    pub checkpoints_spaced_by_roll: bool,
    /// Reopen the log's database at the first background checkpoint after this many events
    /// since it last opened (see [`crate::store::Log::reopen`]); 0: never.
    pub reopen_log_every: u64,
}

/// The source of `recorded_at`: the system clock, or a fixed instant (for reproducible logs:
/// the same commands then give the same bodies and the same head hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    System,
    Fixed(DateTime<Utc>),
}

impl Clock {
    pub fn now(self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Fixed(instant) => instant,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            actor: "anonymous".into(),
            utc_offset: FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset"),
            max_batch: 10_000,
            clock: Clock::System,
            checkpoint_every: 1_000_000,
            delta_every: 250_000,
            checkpoints_spaced_by_roll: true,
            reopen_log_every: 4_000_000,
        }
    }
}

/// The regions a write may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    /// The household must be within one of these before and after the change.
    Within(Vec<RegionPrefix>),
}

impl Scope {
    pub fn allows(&self, region: crate::domain::RegionCode) -> bool {
        match self {
            Scope::All => true,
            Scope::Within(scopes) => scopes.iter().any(|s| s.contains(region)),
        }
    }
}

/// Who writes: recorded as each event's actor, and the regions they may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    pub actor: String,
    pub scope: Scope,
}

/// What a durable append answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
    pub version: u64,
    pub hash: Hash,
    pub recorded_at: DateTime<Utc>,
    /// The request_id had been seen with the same content; nothing new was appended.
    pub replayed: bool,
}

/// An event as stored: decoded, with its exact body and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub event: Event,
    pub body: Vec<u8>,
    pub hash: Hash,
}

impl Recorded {
    /// Decodes a stored entry. A body that does not decode is corruption, never a panic.
    pub fn decode(entry: Entry) -> Result<Self, Error> {
        let event = Event::from_body(&entry.body)
            .map_err(|e| Error::Corrupt(format!("event {} does not decode: {e}", entry.seq)))?;
        if event.seq != entry.seq {
            return Err(Error::Corrupt(format!(
                "the entry at seq {} holds event {}",
                entry.seq, event.seq
            )));
        }
        Ok(Self {
            event,
            body: entry.body,
            hash: entry.hash,
        })
    }
}

/// One page of a roster.
#[derive(Debug, Clone)]
pub struct RosterPage {
    pub households: Vec<(HouseholdId, Snapshot)>,
    /// Where the next page starts, if there is one.
    pub next: Option<RosterKey>,
    /// The log position the page was read at.
    pub known_at: u64,
}

/// A log position as a caller names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownAt {
    /// The head, as the read begins.
    Head,
    /// This seq (0: before the first event).
    Seq(u64),
    /// The last seq recorded at or before this instant.
    Time(DateTime<Utc>),
}

/// A point in time as a caller names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub as_of: Option<Date>,
    pub known_at: KnownAt,
}

impl At {
    pub const NOW: At = At {
        as_of: None,
        known_at: KnownAt::Head,
    };
}

/// A household at a point in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HouseholdView {
    pub state: HouseholdState,
    /// How many of its events (corrections included) were known then.
    pub version: u64,
    /// The seq of the last of them.
    pub last_seq: u64,
    pub known_at: u64,
}

/// An event with the corrections that target it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub recorded: Recorded,
    pub corrected_by: Vec<u64>,
}

struct Shared {
    log: Log,
    roll: RwLock<Roll>,
    config: Config,
    closing: AtomicBool,
    /// The seq of the last durable event the roll has applied: what subscribers follow.
    committed: watch::Sender<u64>,
    /// Turns true when the server begins to shut down: subscriptions end.
    stopping: watch::Sender<bool>,
    /// A checkpoint is being written in the background.
    checkpointing: AtomicBool,
    /// The seq of the last checkpoint written.
    checkpointed: std::sync::atomic::AtomicU64,
    /// Where the next delta counts from: the seq of the last delta written on that
    /// checkpoint, or of the checkpoint, or where the log last reopened after it.
    deltaed: std::sync::atomic::AtomicU64,
    /// The roll's households when the last whole checkpoint was written (or the roll loaded):
    /// what spaces the checkpoints on a large roll ([`Spacing`]).
    households_at_whole: std::sync::atomic::AtomicU64,
    /// Set if the roll could not follow a committed event: writes stop until a restart
    /// rebuilds it from the log.
    failed: std::sync::Mutex<Option<String>>,
    #[cfg(test)]
    faults: writer::Faults,
}

/// Reads a household's events back from the log, for the roll's corrections.
struct LogHistory<'a>(&'a Log);

impl History for LogHistory<'_> {
    fn events(&self, seqs: &[u64]) -> Result<Vec<Event>, Error> {
        seqs.iter()
            .map(|seq| {
                let entry = self.0.get(*seq)?.ok_or_else(|| {
                    Error::Corrupt(format!("event {seq} is missing from the log"))
                })?;
                Recorded::decode(entry).map(|r| r.event)
            })
            .collect()
    }
}

/// The register: the log, the roll derived from it, and the writer that feeds both.
#[derive(Clone)]
pub struct Register {
    shared: Arc<Shared>,
    jobs: mpsc::Sender<writer::Job>,
    writer: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Register {
    /// Opens the store in `dir` (creating it if needed), rebuilds the roll from the log, and
    /// starts the writer.
    pub fn open(dir: &Path, config: Config) -> Result<Self, Error> {
        let (log, roll, from) = audit::open_with_roll(dir)?;
        // The log is open, so this process holds the store: a checkpoint file half-written is
        // a crashed run's, not another server's.
        if let Err(error) = checkpoint::remove_unfinished(dir) {
            tracing::warn!(%error, "a half-written checkpoint file stays until the next checkpoint");
        }
        tracing::info!(
            head = roll.head(),
            households = roll.households(),
            log_opened_ms = from.log_opened_in.as_millis(),
            checkpoint_read_ms = from.checkpoint_read_in.as_millis(),
            replayed_ms = from.replayed_in.as_millis(),
            "loaded the roll: {}",
            from.how
        );
        let head = roll.head();
        let households = roll.households() as u64;
        let shared = Arc::new(Shared {
            log,
            roll: RwLock::new(roll),
            config,
            closing: AtomicBool::new(false),
            committed: watch::channel(head).0,
            stopping: watch::channel(false).0,
            checkpointing: AtomicBool::new(false),
            // Counted from the checkpoint loaded, not from this start: after a crash, the
            // tail just replayed counts toward the next checkpoint, so that a start-up replays
            // at most about `checkpoint_every` events however often the server crashes.
            checkpointed: std::sync::atomic::AtomicU64::new(from.checkpoint_seq),
            deltaed: std::sync::atomic::AtomicU64::new(from.delta_seq),
            households_at_whole: std::sync::atomic::AtomicU64::new(households),
            failed: std::sync::Mutex::new(None),
            #[cfg(test)]
            faults: writer::Faults::default(),
        });
        let (jobs, receiver) = mpsc::channel(4096);
        let handle = writer::spawn(shared.clone(), receiver)?;
        // A tail that long (a store with no checkpoint, or a crash just before one was due)
        // gets its checkpoint now, in the background, not after the next write.
        shared.maybe_checkpoint();
        Ok(Self {
            shared,
            jobs,
            writer: Arc::new(std::sync::Mutex::new(Some(handle))),
        })
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Appends commands as one all-or-nothing commit and returns a receipt for each.
    pub async fn append(&self, commands: Vec<Command>) -> Result<Vec<Receipt>, Error> {
        let writer = Writer {
            actor: self.shared.config.actor.clone(),
            scope: Scope::All,
        };
        self.append_as(writer, commands).await
    }

    /// Appends commands for a named writer, within its scope, as one all-or-nothing commit.
    pub async fn append_as(
        &self,
        writer: Writer,
        commands: Vec<Command>,
    ) -> Result<Vec<Receipt>, Error> {
        if commands.len() > self.shared.config.max_batch {
            return Err(Error::TooLarge(format!(
                "a batch holds at most {} commands (max_batch), this one has {}",
                self.shared.config.max_batch,
                commands.len()
            )));
        }
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        if self.shared.closing.load(Ordering::SeqCst) {
            return Err(shutting_down());
        }
        if let Some(reason) = self
            .shared
            .failed
            .lock()
            .expect("the failure lock is never held across a panic")
            .clone()
        {
            return Err(Error::Unavailable(format!(
                "writes are stopped: {reason}; restart the server to rebuild the projections from the log"
            )));
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(writer::Job::Append {
                commands,
                writer,
                reply,
            })
            .await
            .map_err(|_| shutting_down())?;
        answer.await.map_err(|_| shutting_down())?
    }

    /// Appends one command.
    pub async fn append_one(&self, command: Command) -> Result<Receipt, Error> {
        let mut receipts = self.append(vec![command]).await?;
        receipts
            .pop()
            .ok_or_else(|| Error::Io("the writer answered no receipt".into()))
    }

    /// Begins a shutdown: new writes are refused as `Unavailable`, and subscriptions end with a
    /// status that says where to resume. Writes already queued are still committed.
    pub fn begin_shutdown(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.stopping.send_replace(true);
    }

    /// Stops taking writes, lets the writer finish what it already has, waits for it, and
    /// writes a checkpoint of the roll so that the next start replays nothing.
    pub async fn close(&self) {
        self.begin_shutdown();
        // The stop marker queues behind every job already sent, so those are still answered.
        let _ = self.jobs.send(writer::Job::Stop).await;
        let handle = self
            .writer
            .lock()
            .expect("the writer handle lock is never held across a panic")
            .take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
            let shared = self.shared.clone();
            let written = tokio::task::spawn_blocking(move || {
                // One checkpoint at a time: they share a temporary file. Wait out a background one.
                while shared.checkpointing.swap(true, Ordering::SeqCst) {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                let written = shared.checkpoint(Extent::Whole);
                shared.checkpointing.store(false, Ordering::SeqCst);
                written
            })
            .await;
            match written {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "no checkpoint written; the next start replays the log")
                }
                Err(error) => tracing::warn!(%error, "the checkpoint task failed"),
            }
        }
    }

    /// Follows the log from `from` (catch-up, then live), filtered.
    pub fn subscribe(
        &self,
        from: u64,
        filter: audit::Filter,
    ) -> mpsc::Receiver<Result<Recorded, Error>> {
        audit::subscribe(
            self.shared.clone(),
            from,
            filter,
            self.shared.committed.subscribe(),
            self.shared.stopping.subscribe(),
        )
    }

    /// Recomputes the hash chain over `[from, to]` (0: to the head).
    pub async fn verify_chain(&self, from: u64, to: u64) -> Result<audit::ChainReport, Error> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || audit::verify_chain(&shared.log, from, to, &|_| {}))
            .await
            .map_err(|e| Error::Io(format!("the verification task failed: {e}")))?
    }

    fn roll(&self) -> RwLockReadGuard<'_, Roll> {
        self.shared
            .roll
            .read()
            .expect("the roll lock is never held across a panic")
    }

    /// The last committed position of the log.
    ///
    /// This is the head the roll has applied, not the log's own (which moves a moment earlier,
    /// after the fsync and before the roll): a `known_at` taken from it is always accepted.
    pub fn head(&self) -> Head {
        let committed = *self.shared.committed.borrow();
        let log = self.shared.log.head();
        if log.seq == committed {
            return log;
        }
        match self.shared.log.get(committed) {
            Ok(Some(entry)) => Head {
                seq: committed,
                hash: entry.hash,
            },
            // Seq 0, or the log is unreadable for a moment: the log's head is the best answer.
            _ if committed == 0 => Head::EMPTY,
            _ => log,
        }
    }

    /// Resolves a caller's point in time against the roll. A `known_at` past the head is
    /// invalid; the head itself reads as "now", which takes the fast paths.
    fn resolve(roll: &Roll, at: At) -> Result<(PointInTime, u64), Error> {
        let head = roll.head();
        let known = match at.known_at {
            KnownAt::Head => head,
            KnownAt::Seq(seq) if seq > head => {
                return Err(Error::invalid(
                    "known_at",
                    format!("seq {seq} is beyond the head of the log ({head})"),
                ))
            }
            KnownAt::Seq(seq) => seq,
            KnownAt::Time(time) => roll.seq_known_at(time),
        };
        let point = PointInTime {
            as_of: at.as_of,
            known_at: (known != head).then_some(known),
        };
        Ok((point, known))
    }

    /// A household at a point in time.
    pub fn household(&self, id: &HouseholdId, at: At) -> Result<HouseholdView, Error> {
        let (point, known_at, seqs, now) = {
            let roll = self.roll();
            let (point, known_at) = Self::resolve(&roll, at)?;
            let entry = roll
                .household(id)
                .ok_or_else(|| Error::NotFound(format!("household {id} is not registered")))?;
            let now = (point == PointInTime::NOW).then(|| entry.state.clone());
            let seqs: Vec<u64> = entry.seqs.iter().filter(|seq| point.knows(*seq)).collect();
            (point, known_at, seqs, now)
        };
        let state = match now {
            Some(state) => Some(state.unpack()?),
            None => {
                let stream = LogHistory(&self.shared.log).events(&seqs)?;
                state_at(&stream, point)
            }
        };
        let state = state.ok_or_else(|| {
            Error::NotFound(format!(
                "household {id} was not in the register at that point in time"
            ))
        })?;
        Ok(HouseholdView {
            state,
            version: seqs.len() as u64,
            last_seq: seqs.last().copied().unwrap_or_default(),
            known_at,
        })
    }

    /// Every event of a household, in record order, each with the corrections that target it.
    pub fn history(&self, id: &HouseholdId) -> Result<Vec<HistoryEntry>, Error> {
        let seqs = self
            .roll()
            .household(id)
            .map(|entry| entry.seqs.to_vec())
            .ok_or_else(|| Error::NotFound(format!("household {id} is not registered")))?;
        let recorded: Vec<Recorded> = seqs
            .into_iter()
            .map(|seq| self.event(seq))
            .collect::<Result<_, _>>()?;
        let corrected_by = |seq: u64| -> Vec<u64> {
            recorded
                .iter()
                .filter_map(|r| match &r.event.change {
                    Change::Correct(c) if c.target_seq == seq => Some(r.event.seq),
                    _ => None,
                })
                .collect()
        };
        Ok(recorded
            .iter()
            .map(|r| HistoryEntry {
                corrected_by: corrected_by(r.event.seq),
                recorded: r.clone(),
            })
            .collect())
    }

    /// The event at `seq`.
    pub fn event(&self, seq: u64) -> Result<Recorded, Error> {
        let entry = self
            .shared
            .log
            .get(seq)?
            .ok_or_else(|| Error::NotFound(format!("there is no event {seq}")))?;
        Recorded::decode(entry)
    }

    /// Up to `limit` events from `from` on.
    pub fn events(&self, from: u64, limit: usize) -> Result<Vec<Recorded>, Error> {
        self.shared
            .log
            .scan(from)
            .take(limit)
            .map(|entry| entry.and_then(Recorded::decode))
            .collect()
    }

    /// One page of the roster under `prefix` at a point in time.
    pub fn roster(
        &self,
        prefix: RegionPrefix,
        statuses: &[Status],
        at: At,
        after: Option<&RosterKey>,
        limit: usize,
    ) -> Result<RosterPage, Error> {
        let roll = self.roll();
        let (point, known_at) = Self::resolve(&roll, at)?;
        let (households, more) = roll.roster(prefix, statuses, point, after, limit);
        let next = more
            .then(|| households.last())
            .flatten()
            .map(|(id, snapshot)| (snapshot.region_code, id.clone()));
        Ok(RosterPage {
            households,
            next,
            known_at,
        })
    }

    /// Counts under `prefix` at a point in time, and the log position they were read at.
    pub fn stats(&self, prefix: RegionPrefix, at: At) -> Result<(Stats, u64), Error> {
        let roll = self.roll();
        let (point, known_at) = Self::resolve(&roll, at)?;
        Ok((roll.stats(prefix, point), known_at))
    }

    /// Who entered and who left the roster under `prefix` between two points in time.
    pub fn diff(
        &self,
        prefix: RegionPrefix,
        from: At,
        to: At,
    ) -> Result<(Vec<RosterChange>, u64, u64), Error> {
        let roll = self.roll();
        let (from, from_known) = Self::resolve(&roll, from)?;
        let (to, to_known) = Self::resolve(&roll, to)?;
        Ok((roll.diff(prefix, from, to), from_known, to_known))
    }

    /// Flows under `prefix` with effective dates in `[from, to]`, as known at `known_at`.
    pub fn flows(
        &self,
        prefix: RegionPrefix,
        from: Date,
        to: Date,
        known_at: KnownAt,
    ) -> Result<(Flows, u64), Error> {
        if from > to {
            return Err(Error::invalid(
                "to_date",
                format!("{to} is before from_date {from}"),
            ));
        }
        let (point, known, streams) = {
            let roll = self.roll();
            let at = At {
                as_of: None,
                known_at,
            };
            let (point, known) = Self::resolve(&roll, at)?;
            let streams: Vec<Vec<u64>> = roll
                .ever_under(prefix)
                .into_iter()
                .filter_map(|id| roll.household(id))
                .map(|entry| entry.seqs.iter().filter(|seq| point.knows(*seq)).collect())
                .collect();
            (point, known, streams)
        };
        let history = LogHistory(&self.shared.log);
        let mut flows = Flows::default();
        for seqs in streams {
            let stream = history.events(&seqs)?;
            flows.count(prefix, from, to, point.known_at, &stream);
        }
        Ok((flows, known))
    }
}

impl Shared {
    /// Writes the roll as a checkpoint, whole or a delta on the last whole one ([`Extent`]):
    /// encoded to the file a piece at a time under the read lock (writes wait for one piece,
    /// not the whole roll), then synced and moved into place without it.
    fn checkpoint(&self, extent: Extent) -> Result<Head, Error> {
        if let Some(reason) = self
            .failed
            .lock()
            .expect("the failure lock is never held across a panic")
            .clone()
        {
            // A roll that missed an event must not be saved as if it were whole.
            return Err(Error::Unavailable(format!("no checkpoint: {reason}")));
        }
        let began = std::time::Instant::now();
        let cpu_began = thread_cpu_time();
        let base = match extent {
            Extent::Whole => None,
            Extent::After(seq) => Some(Head {
                seq,
                hash: self
                    .log
                    .get(seq)?
                    .ok_or_else(|| {
                        Error::Corrupt(format!("the checkpoint's event {seq} is not in the log"))
                    })?
                    .hash,
            }),
        };
        let written = audit::draft_checkpoint(&self.log, base, || {
            self.roll
                .read()
                .expect("the roll lock is never held across a panic")
        })
        .and_then(|drafted| {
            let encoded = began.elapsed();
            drafted.draft.commit()?;
            Ok((drafted.head, drafted.longest_hold, encoded))
        });
        let (head, longest_hold, encoded) = match written {
            Ok(written) => written,
            Err(error) => {
                // A checkpoint that failed half-way, most likely on a full disk, leaves its
                // temporary file, which holds the very space that ran out. Checkpoints are
                // written one at a time (`checkpointing`), so the file is this one's.
                if let Err(error) = checkpoint::remove_unfinished(self.log.dir()) {
                    tracing::warn!(%error, "the failed checkpoint's file stays");
                }
                return Err(error);
            }
        };
        if extent == Extent::Whole {
            self.checkpointed.store(head.seq, Ordering::SeqCst);
            let households = self
                .roll
                .read()
                .expect("the roll lock is never held across a panic")
                .households();
            self.households_at_whole
                .store(households as u64, Ordering::SeqCst);
            // A delta on the checkpoint before builds on nothing now (a start-up would not
            // use it either: its base is not this checkpoint).
            if let Err(error) = checkpoint::remove_delta(self.log.dir()) {
                tracing::warn!(%error, "the delta on the previous checkpoint stays");
            }
        }
        self.deltaed.store(head.seq, Ordering::SeqCst);
        tracing::info!(
            seq = head.seq,
            delta_on = base.map(|b| b.seq),
            encoded_ms = encoded.as_millis() as u64,
            synced_ms = (began.elapsed() - encoded).as_millis() as u64,
            // Its own CPU: under a load it shares the cores, so its wall time says little of
            // what it costs the writes.
            cpu_ms = thread_cpu_time().saturating_sub(cpu_began).as_millis() as u64,
            // The longest that writes waited for it.
            longest_hold_ms = longest_hold.as_millis() as u64,
            "{} written",
            if base.is_some() {
                "delta"
            } else {
                "checkpoint"
            }
        );
        crate::heap::report("after a checkpoint");
        Ok(head)
    }

    /// Reopens the log's database once enough was written since it last opened, just after a
    /// checkpoint at `checkpointed`. sled re-reads at its next open everything written since
    /// its last (2.3–3.8 s after 10M events written from an empty store), so without this a
    /// start-up after a crash would take longer the longer the server had run, whatever the
    /// checkpoints; with it, about `reopen_log_every` events' worth at most (0.25–0.56 s
    /// after a load of 9.9M events that reopened at 4.2M and 9.3M). After a checkpoint,
    /// because a start-up needs the log only from the checkpoint on. Writes wait while it
    /// reopens (0.7–0.9 s every 4M events at the default: `opened_ms` in the server's log).
    fn reopen_log_if_due(&self, checkpointed: u64) {
        let every = self.config.reopen_log_every;
        if every == 0 || checkpointed.saturating_sub(self.log.opened_at()) < every {
            return;
        }
        if let Err(error) = self.log.reopen() {
            // The checkpoint stands; the store stays closed until the next request reopens it.
            tracing::warn!(%error, "the log could not be reopened after the checkpoint");
            return;
        }
        // The next delta counts from here, not from the last one (written just before, by
        // `delta_if_due`, if one was due): for a few seconds after a reopen a load's RSS runs
        // higher (README, *Performance*), and a delta's notes on top of that took one scale
        // run's loading peak to 1,072 MiB (1,010 MiB since).
        let head = self.committed.borrow().to_owned();
        self.deltaed.fetch_max(head, Ordering::SeqCst);
    }

    /// Writes the delta that came due while a whole checkpoint was being written, at once and
    /// before the log may reopen. A whole checkpoint of a large roll takes seconds under a
    /// load (8–12.5 s for 1M households on the slowest host measured, ~600,000 events), and
    /// the next delta counts from a reopen: were the reopen first, a crash would replay all
    /// that came during the whole checkpoint and up to a delta's interval after it (743,000
    /// events in one crash at 9.94M, 8.6 s to serve: README, *What still limits the
    /// targets*). Written first, the delta leaves only what comes while it is written.
    ///
    /// Not on a closing server: [`Register::close`] writes a whole checkpoint as soon as this
    /// thread is done, and that removes the delta, so the delta would only keep the shutdown
    /// waiting (1–3 s on a roll of 1M households under a load).
    fn delta_if_due(&self) {
        if self.closing.load(Ordering::SeqCst) {
            return;
        }
        if let Some(extent @ Extent::After(_)) = self.checkpoint_due() {
            if let Err(error) = self.checkpoint(extent) {
                tracing::warn!(%error, "the delta after the checkpoint failed");
            }
        }
    }

    /// What is due, if anything: a whole checkpoint, or a delta on the last one, by
    /// [`Spacing`].
    fn checkpoint_due(&self) -> Option<Extent> {
        let head = self.committed.borrow().to_owned();
        let whole = self.checkpointed.load(Ordering::SeqCst);
        let latest = self.deltaed.load(Ordering::SeqCst).max(whole);
        let households = self.households_at_whole.load(Ordering::SeqCst);
        Spacing::of(&self.config, households).due(head, whole, latest)
    }

    /// Starts a background checkpoint (or delta) if enough events came since the last one.
    fn maybe_checkpoint(self: &Arc<Self>) {
        let Some(extent) = self.checkpoint_due() else {
            return;
        };
        if self.checkpointing.swap(true, Ordering::SeqCst) {
            return;
        }
        let shared = self.clone();
        let spawned = std::thread::Builder::new()
            .name("rollstore-checkpoint".into())
            .spawn(move || {
                match shared.checkpoint(extent) {
                    Ok(head) if extent == Extent::Whole => {
                        #[cfg(test)]
                        shared.faults.checkpoint.wait_if_held();
                        shared.delta_if_due();
                        shared.reopen_log_if_due(head.seq);
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "background checkpoint failed"),
                }
                shared.checkpointing.store(false, Ordering::SeqCst);
            });
        if spawned.is_err() {
            self.checkpointing.store(false, Ordering::SeqCst);
        }
    }
}

/// How many events apart the background checkpoints are. A whole checkpoint costs the whole
/// roll, a delta what changed since the whole checkpoint it builds on, so on a large roll both
/// are spaced by its size:
///
/// ```text
///   whole checkpoints   every max(checkpoint_every, households at the last one) events
///   deltas between      every max(delta_every, that / 4) events           (none if delta_every is 0)
/// ```
///
/// Up to a million households (the defaults) nothing changes. At 3M households and a whole
/// checkpoint every 1M events, each took 4–7 s of CPU and they ran nearly back to back, ~5.8 µs
/// an event in all (README, *Toward a national roll*); spaced by the roll, a whole checkpoint
/// costs about as many events as the roll has households, and three deltas between keep a
/// start-up's replay to about a quarter of that. The price on a large roll is that replay: a
/// crash at 3M households replays up to ~750,000 events (~2.5 s) where it would replay 250,000.
/// With `checkpoints_spaced_by_roll` off (`serve --fixed-checkpoint-spacing`), the intervals
/// are exactly as set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spacing {
    whole_every: u64,
    /// 0: no deltas.
    delta_every: u64,
}

impl Spacing {
    fn of(config: &Config, households: u64) -> Spacing {
        if !config.checkpoints_spaced_by_roll {
            return Spacing {
                whole_every: config.checkpoint_every,
                delta_every: config.delta_every,
            };
        }
        let whole_every = config.checkpoint_every.max(households);
        let delta_every = match config.delta_every {
            0 => 0,
            every => every.max(whole_every / 4),
        };
        Spacing {
            whole_every,
            delta_every,
        }
    }

    /// What is due at `head`, with the last whole checkpoint at `whole` and the last delta (or
    /// the whole checkpoint, or the log's reopening) at `latest`.
    fn due(self, head: u64, whole: u64, latest: u64) -> Option<Extent> {
        if head.saturating_sub(whole) >= self.whole_every {
            Some(Extent::Whole)
        } else if whole > 0
            && self.delta_every > 0
            && head.saturating_sub(latest) >= self.delta_every
        {
            // A delta needs a checkpoint on disk to build on (none is at seq 0).
            Some(Extent::After(whole))
        } else {
            None
        }
    }
}

fn shutting_down() -> Error {
    Error::Unavailable("the server is shutting down; retry against a running server".into())
}

/// The CPU time the calling thread has used so far (zero if the clock cannot be read).
fn thread_cpu_time() -> std::time::Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given, which lives for the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
        return std::time::Duration::ZERO;
    }
    let (Ok(secs), Ok(nanos)) = (u64::try_from(now.tv_sec), u32::try_from(now.tv_nsec)) else {
        return std::time::Duration::ZERO;
    };
    std::time::Duration::new(secs, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::checkpoint;

    #[test]
    fn a_large_roll_spaces_its_checkpoints_by_its_households() {
        // (checkpoint_every, delta_every, households at the last whole checkpoint)
        //   → (events between whole checkpoints, between deltas)
        type Set = (u64, u64, u64);
        let cases: [(Set, (u64, u64)); 6] = [
            ((1_000_000, 250_000, 0), (1_000_000, 250_000)),
            ((1_000_000, 250_000, 1_000_000), (1_000_000, 250_000)),
            ((1_000_000, 250_000, 3_000_000), (3_000_000, 750_000)),
            ((1_000_000, 250_000, 30_000_000), (30_000_000, 7_500_000)),
            // No deltas stays no deltas.
            ((1_000_000, 0, 3_000_000), (3_000_000, 0)),
            // Deltas set further apart than a quarter stay as set.
            ((100, 90, 200), (200, 90)),
        ];
        for ((checkpoint_every, delta_every, households), (whole, delta)) in cases {
            let config = Config {
                checkpoint_every,
                delta_every,
                ..Config::default()
            };
            assert_eq!(
                Spacing::of(&config, households),
                Spacing {
                    whole_every: whole,
                    delta_every: delta
                },
                "every {checkpoint_every}, deltas every {delta_every}, {households} households"
            );
            // Not spaced by the roll: exactly as set, whatever its size.
            let fixed = Config {
                checkpoints_spaced_by_roll: false,
                ..config
            };
            assert_eq!(
                Spacing::of(&fixed, households),
                Spacing {
                    whole_every: checkpoint_every,
                    delta_every
                },
                "fixed: every {checkpoint_every}, deltas every {delta_every}, {households} households"
            );
        }
    }

    #[test]
    fn a_checkpoint_is_due_by_the_events_since_the_last() {
        let spacing = Spacing {
            whole_every: 100,
            delta_every: 30,
        };
        // (head, last whole checkpoint, last delta or whole) → what is due
        let cases: [((u64, u64, u64), Option<Extent>); 7] = [
            ((99, 0, 0), None),
            ((100, 0, 0), Some(Extent::Whole)),
            // No whole checkpoint yet: nothing for a delta to build on.
            ((50, 0, 0), None),
            ((129, 100, 100), None),
            ((130, 100, 100), Some(Extent::After(100))),
            ((159, 100, 130), None),
            // A whole checkpoint due comes before a delta due.
            ((200, 100, 160), Some(Extent::Whole)),
        ];
        for ((head, whole, latest), expected) in cases {
            assert_eq!(
                spacing.due(head, whole, latest),
                expected,
                "head {head}, whole at {whole}, latest at {latest}"
            );
        }
        let no_deltas = Spacing {
            whole_every: 100,
            delta_every: 0,
        };
        assert_eq!(no_deltas.due(199, 100, 100), None);
    }

    /// One run of the server: its `checkpoint_every`, and the commands it appends.
    type Run = (u64, usize);

    /// The seq of the checkpoint on disk in `dir`; 0 when there is none.
    fn checkpoint_on_disk(dir: &Path) -> u64 {
        checkpoint::read(dir).map_or(0, |(at, _)| at.seq)
    }

    /// Waits, polling, until `done` holds: for what a background thread does without a
    /// signal a test can await. Never getting there in 30 s fails the test.
    pub(super) async fn until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..3_000 {
            if done() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{what} did not happen in 30 s");
    }

    /// Waits until no background checkpoint is under way (a checkpoint that is due has been
    /// started before the append that made it due was answered).
    async fn checkpoint_finished(register: &Register) {
        until("the end of the background checkpoint", || {
            !register.shared.checkpointing.load(Ordering::SeqCst)
        })
        .await;
    }

    /// Given runs of the server that each open the store with a `checkpoint_every`, append
    /// that many demo commands in one batch, let any background checkpoint finish and then
    /// crash (drop the register unclosed: no shutdown checkpoint), returns the checkpoint on
    /// disk after each run.
    async fn checkpoints_after_crashes(runs: &[Run]) -> Vec<u64> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut commands = crate::demo::baota::generate(1).commands.into_iter();
        let mut on_disk = Vec::new();
        for &(every, writes) in runs {
            let config = Config {
                checkpoint_every: every,
                // The demo's households outnumber these small intervals; spaced by the roll,
                // the checkpoints would fall elsewhere than these cases count.
                checkpoints_spaced_by_roll: false,
                ..Config::default()
            };
            let register = Register::open(dir.path(), config).expect("the store opens");
            let batch: Vec<_> = commands.by_ref().take(writes).collect();
            assert_eq!(batch.len(), writes, "the demo data set ran out");
            register.append(batch).await.expect("the batch lands");
            checkpoint_finished(&register).await;
            on_disk.push(checkpoint_on_disk(dir.path()));
            drop(register);
        }
        on_disk
    }

    #[tokio::test]
    async fn a_restart_counts_the_tail_it_replayed_toward_the_next_checkpoint() {
        // (runs as (checkpoint_every, commands), the checkpoint on disk after each run)
        let cases: Vec<(Vec<Run>, Vec<u64>)> = vec![
            // 40 replayed at the restart, 15 more: 55 since the last checkpoint (none).
            (vec![(50, 40), (50, 15)], vec![0, 55]),
            // A tail of 60 with no checkpoint: one is written at the start-up itself.
            (vec![(1_000, 60), (50, 0)], vec![0, 60]),
            // A checkpoint at 120; 10 more after a restart are not yet due.
            (vec![(50, 120), (50, 10), (50, 0)], vec![120, 120, 120]),
            // Due at 120 + 50, counting the 30 replayed.
            (vec![(50, 120), (50, 30), (50, 25)], vec![120, 120, 175]),
        ];
        for (runs, expected) in cases {
            assert_eq!(checkpoints_after_crashes(&runs).await, expected, "{runs:?}");
        }
    }

    /// How a start-up on the store in `dir` loads the roll (from a checkpoint, a delta and the
    /// tail after them, or by replay), checking that the roll so loaded is the replay of the
    /// whole log.
    fn start_up_of(dir: &Path, case: &str) -> String {
        let (log, roll, from) = audit::open_with_roll(dir).expect(case);
        let replayed = audit::replay(&log, &|_| {}).expect(case);
        assert!(
            roll == replayed,
            "{case}: the roll is not the replay of the log"
        );
        from.how
    }

    /// Given a server with a `checkpoint_every` and a `delta_every` that appends batches of
    /// demo commands, letting each background checkpoint or delta finish, and then crashes
    /// (and where the delta on disk is then damaged, if it is: a byte counted from its end, in
    /// its table of sections, or from its start, in a section): how a start-up loads the
    /// roll, which must be the replay of the whole log.
    #[tokio::test]
    async fn a_start_up_lays_the_delta_over_its_checkpoint_and_replays_only_what_came_after() {
        let delta_at = |delta, replayed| {
            format!("checkpoint at seq 110 and delta at seq {delta}, replayed {replayed} events after it")
        };
        let alone =
            |at, replayed| format!("checkpoint at seq {at}, replayed {replayed} events after it");
        // ((checkpoint_every, delta_every), batches, delta damaged at, how the start-up loads)
        let cases = vec![
            ((100, 30), vec![110, 40, 10], None, delta_at(150, 10)),
            // A second delta replaces the first, on the same checkpoint.
            ((100, 30), vec![110, 40, 35], None, delta_at(185, 0)),
            // A whole checkpoint is due before another delta, and the delta goes.
            ((100, 30), vec![110, 40, 60], None, alone(210, 0)),
            ((100, 0), vec![110, 40], None, alone(110, 40)),
            // No checkpoint to build on: no delta.
            ((100, 30), vec![50, 40], None, "replayed 90 events".into()),
            // A damaged delta is passed over for the checkpoint alone: one whose table is
            // refused as it is read, or one whose section is refused as it is decoded.
            ((100, 30), vec![110, 40, 10], Some(-5_i64), alone(110, 50)),
            ((100, 30), vec![110, 40, 10], Some(130), alone(110, 50)),
        ];
        for ((checkpoint_every, delta_every), batches, damaged, expected) in cases {
            let case = format!(
                "every {checkpoint_every}, deltas every {delta_every}, {batches:?}, {damaged:?}"
            );
            let dir = tempfile::tempdir().expect("a temporary directory");
            let config = Config {
                checkpoint_every,
                delta_every,
                // The demo's households outnumber these small intervals; spaced by the roll,
                // the checkpoints would fall elsewhere than these cases count.
                checkpoints_spaced_by_roll: false,
                ..Config::default()
            };
            let register = Register::open(dir.path(), config).expect("the store opens");
            let mut commands = crate::demo::baota::generate(1).commands.into_iter();
            for writes in batches {
                let batch: Vec<_> = commands.by_ref().take(writes).collect();
                register.append(batch).await.expect("the batch lands");
                checkpoint_finished(&register).await;
            }
            drop(register);
            if let Some(at) = damaged {
                let delta = dir.path().join("roll.delta");
                let mut bytes = std::fs::read(&delta).expect("a delta was written");
                let at = usize::try_from(at)
                    .unwrap_or_else(|_| bytes.len() - at.unsigned_abs() as usize);
                bytes[at] ^= 1;
                std::fs::write(&delta, bytes).expect("the delta is rewritten");
            }
            assert_eq!(start_up_of(dir.path(), &case), expected, "{case}");
        }
    }

    /// Given a server spaced by the roll, with a whole checkpoint every 50 events, when a
    /// checkpoint is written over a roll of more households than that, then the next whole
    /// checkpoint waits for as many events as that roll had households.
    #[tokio::test]
    async fn a_whole_checkpoint_spaces_the_next_by_the_households_it_held() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = Config {
            checkpoint_every: 50,
            delta_every: 0,
            ..Config::default()
        };
        let register = Register::open(dir.path(), config).expect("the store opens");
        let mut commands = crate::demo::baota::generate(1).commands.into_iter();
        let mut append = async |n: usize| {
            let batch: Vec<_> = commands.by_ref().take(n).collect();
            register.append(batch).await.expect("the batch lands");
            checkpoint_finished(&register).await;
        };
        // An empty roll: the first whole checkpoint comes after 50 events, here 120.
        append(120).await;
        assert_eq!(checkpoint_on_disk(dir.path()), 120);
        let households = register
            .shared
            .roll
            .read()
            .expect("the roll lock")
            .households() as u64;
        assert!(
            households > 60,
            "the demo's first 120 commands identify more than 60 households ({households})"
        );
        // 60 more would be a checkpoint at a fixed spacing of 50; spaced by the roll, not yet.
        append(60).await;
        assert_eq!(checkpoint_on_disk(dir.path()), 120);
        // Once as many events as it held households have come, the next is written.
        append(usize::try_from(households).expect("a small count") - 60).await;
        assert_eq!(checkpoint_on_disk(dir.path()), 120 + households);
    }

    /// Given a store closed with a checkpoint, and then a crash while its next checkpoint was
    /// being written (the draft left on disk), when a server opens it, then the draft is gone
    /// and the roll loads from the checkpoint before.
    #[tokio::test]
    async fn a_start_removes_the_checkpoint_a_crash_left_half_written() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let register = Register::open(dir.path(), Config::default()).expect("the store opens");
        let commands = crate::demo::baota::generate(1)
            .commands
            .into_iter()
            .take(50);
        register
            .append(commands.collect())
            .await
            .expect("the batch lands");
        register.close().await;
        drop(register);
        let (at, _) = checkpoint::read(dir.path()).expect("the close wrote a checkpoint");
        drop(checkpoint::Draft::create(dir.path(), at).expect("a draft"));
        let unfinished = || {
            std::fs::read_dir(dir.path())
                .expect("the store's directory lists")
                .filter(|entry| {
                    let entry = entry.as_ref().expect("an entry");
                    entry.file_name().to_string_lossy().ends_with(".tmp")
                })
                .count()
        };
        assert_eq!(unfinished(), 1);
        drop(Register::open(dir.path(), Config::default()).expect("the store opens again"));
        assert_eq!(unfinished(), 0);
        assert_eq!(
            start_up_of(dir.path(), "after the reopen"),
            "checkpoint at seq 50, replayed 0 events after it"
        );
    }

    /// Given a whole checkpoint every 100 events, when a batch of 110 makes one due and more
    /// events land while it is being written (the checkpoint thread held once it is), then a
    /// delta due by its end is written at once, before the log reopens after it, and a crash
    /// replays only what came after that delta; unless the server began to close meanwhile,
    /// when the close's own whole checkpoint comes next instead.
    #[tokio::test]
    async fn a_delta_due_after_a_whole_checkpoint_comes_before_the_reopen_unless_closing() {
        let delta_at = |delta| {
            format!("checkpoint at seq 110 and delta at seq {delta}, replayed 0 events after it")
        };
        let alone =
            |replayed| format!("checkpoint at seq 110, replayed {replayed} events after it");
        // ((delta_every, reopen_log_every), events landing during the checkpoint, whether the
        //  server begins to close before it ends, how a start-up after a crash loads the roll,
        //  where the log last opened)
        let cases = vec![
            ((30, 100), 40, false, delta_at(150), 150),
            // No reopen due: the delta comes at once all the same, not at the next write.
            ((30, 0), 40, false, delta_at(150), 0),
            // Not yet due: no delta, and the next counts from the reopen.
            ((30, 100), 20, false, alone(20), 130),
            ((0, 100), 40, false, alone(40), 150),
            // Closing: the close's whole checkpoint comes next, so no delta; the log still
            // reopens, which writes sled's snapshot for the next start.
            ((30, 100), 40, true, alone(40), 150),
            ((30, 0), 40, true, alone(40), 0),
        ];
        for ((delta_every, reopen_log_every), during, closing, expected, opened_at) in cases {
            let case = format!(
                "deltas every {delta_every}, reopen every {reopen_log_every}, {during} during, \
                 closing {closing}"
            );
            let dir = tempfile::tempdir().expect("a temporary directory");
            let config = Config {
                checkpoint_every: 100,
                delta_every,
                reopen_log_every,
                // The demo's households outnumber these small intervals; spaced by the roll,
                // the checkpoints would fall elsewhere than these cases count.
                checkpoints_spaced_by_roll: false,
                ..Config::default()
            };
            let register = Register::open(dir.path(), config).expect("the store opens");
            let gate = &register.shared.faults.checkpoint;
            let mut commands = crate::demo::baota::generate(1).commands.into_iter();
            let mut append = async |n: usize| {
                let batch: Vec<_> = commands.by_ref().take(n).collect();
                register.append(batch).await.expect("the batch lands");
            };
            gate.set(writer::Hold::Next);
            append(110).await;
            until("the whole checkpoint written and held", || {
                gate.is(writer::Hold::Holding)
            })
            .await;
            assert_eq!(checkpoint_on_disk(dir.path()), 110, "{case}");
            append(during).await;
            if closing {
                register.begin_shutdown();
            }
            gate.set(writer::Hold::Free);
            checkpoint_finished(&register).await;
            assert_eq!(register.shared.log.opened_at(), opened_at, "{case}");
            drop(register);
            assert_eq!(start_up_of(dir.path(), &case), expected, "{case}");
        }
    }

    #[tokio::test]
    async fn the_log_is_reopened_after_a_checkpoint_once_enough_was_written_since_it_opened() {
        // (reopen_log_every, then where sled last opened after each batch of 60 commands,
        // with a checkpoint every 50 events: at 60, 120, 180 and 240)
        let cases: Vec<(u64, Vec<u64>)> = vec![
            // 60 since the open at 0 is not 100; 120 is, and so is 240 after 120.
            (100, vec![0, 120, 120, 240]),
            // Every checkpoint, once it is due at each.
            (50, vec![60, 120, 180, 240]),
            (1, vec![60, 120, 180, 240]),
            // Never.
            (0, vec![0, 0, 0, 0]),
            (1_000, vec![0, 0, 0, 0]),
        ];
        for (every, expected) in cases {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let config = Config {
                checkpoint_every: 50,
                // The demo's households outnumber these small intervals; spaced by the roll,
                // the checkpoints would fall elsewhere than these cases count.
                checkpoints_spaced_by_roll: false,
                reopen_log_every: every,
                ..Config::default()
            };
            let register = Register::open(dir.path(), config).expect("the store opens");
            let mut commands = crate::demo::baota::generate(1).commands.into_iter();
            let mut opened_at = Vec::new();
            for _ in &expected {
                let batch: Vec<_> = commands.by_ref().take(60).collect();
                register.append(batch).await.expect("the batch lands");
                checkpoint_finished(&register).await;
                opened_at.push(register.shared.log.opened_at());
            }
            assert_eq!(opened_at, expected, "reopen_log_every {every}");
            // The reopened log reads and takes writes as before.
            let head = register.head();
            let read: Vec<_> = register
                .shared
                .log
                .scan(1)
                .collect::<Result<_, _>>()
                .expect("the log reads whole");
            assert_eq!(read.len() as u64, head.seq);
            let batch: Vec<_> = commands.by_ref().take(1).collect();
            register
                .append(batch)
                .await
                .expect("a write after the reopens lands");
            drop(register);
            // And a start-up reads it back, checkpoint and all.
            let reopened = Register::open(dir.path(), Config::default()).expect("it opens");
            assert_eq!(
                reopened.head().seq,
                head.seq + 1,
                "reopen_log_every {every}"
            );
        }
    }
}
