//! The register's use cases: decide → append (group commit) → project; and the queries.
//!
//! ```text
//!   gRPC handlers ──Job──▶ [ channel ] ──▶ writer thread (one)
//!                                           │ take every job waiting (a group)
//!                                           │ for each command: idempotency, expected_version,
//!                                           │   domain::decide against the roll + what the group
//!                                           │   staged so far (a batch is all or nothing)
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

mod staging;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use chrono::{DateTime, FixedOffset, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::domain::{Command, Event, HouseholdId, Policy, RegionPrefix, Status};
use crate::error::Error;
use crate::projection::{HouseholdEntry, Roll, RosterKey, Stats};
use crate::store::{Entry, Hash, Head, Log};

/// How the register runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub policy: Policy,
    /// Who is recorded as the actor of every event (until authentication names the caller).
    pub actor: String,
    /// The offset of the register's calendar from UTC: "today", for the no-future-dates rule,
    /// is the date there. China Standard Time by default.
    pub utc_offset: FixedOffset,
    /// The most commands one batch may carry.
    pub max_batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            actor: "anonymous".into(),
            utc_offset: FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset"),
            max_batch: 10_000,
        }
    }
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
        let event: Event = serde_json::from_slice(&entry.body)
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
    pub households: Vec<(HouseholdId, HouseholdEntry)>,
    /// Where the next page starts, if there is one.
    pub next: Option<RosterKey>,
}

struct Shared {
    log: Log,
    roll: RwLock<Roll>,
    config: Config,
    closing: AtomicBool,
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
        let log = Log::open(dir)?;
        let mut roll = Roll::default();
        for entry in log.scan(1) {
            let recorded = Recorded::decode(entry?)?;
            roll.apply(&recorded.event);
        }
        let shared = Arc::new(Shared {
            log,
            roll: RwLock::new(roll),
            config,
            closing: AtomicBool::new(false),
        });
        let (jobs, receiver) = mpsc::channel(4096);
        let handle = writer::spawn(shared.clone(), receiver)?;
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
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(writer::Job::Append { commands, reply })
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

    /// Stops taking writes, lets the writer finish what it already has, and waits for it.
    /// Writes that arrive from now on are refused as `Unavailable`.
    pub async fn close(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        // The stop marker queues behind every job already sent, so those are still answered.
        let _ = self.jobs.send(writer::Job::Stop).await;
        let handle = self
            .writer
            .lock()
            .expect("the writer handle lock is never held across a panic")
            .take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    fn roll(&self) -> RwLockReadGuard<'_, Roll> {
        self.shared
            .roll
            .read()
            .expect("the roll lock is never held across a panic")
    }

    /// The last committed position of the log.
    pub fn head(&self) -> Head {
        self.shared.log.head()
    }

    /// A household as it stands now.
    pub fn household(&self, id: &HouseholdId) -> Result<HouseholdEntry, Error> {
        self.roll()
            .household(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("household {id} is not registered")))
    }

    /// Every event of a household, in record order.
    pub fn history(&self, id: &HouseholdId) -> Result<Vec<Recorded>, Error> {
        let seqs = self.household(id)?.seqs;
        seqs.into_iter().map(|seq| self.event(seq)).collect()
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

    /// One page of the roster under `prefix`.
    pub fn roster(
        &self,
        prefix: RegionPrefix,
        statuses: &[Status],
        after: Option<&RosterKey>,
        limit: usize,
    ) -> RosterPage {
        let roll = self.roll();
        let (page, more) = roll.roster(prefix, statuses, after, limit);
        let households: Vec<(HouseholdId, HouseholdEntry)> = page
            .into_iter()
            .map(|(id, entry)| (id.clone(), entry.clone()))
            .collect();
        let next = more
            .then(|| households.last())
            .flatten()
            .map(|(id, entry)| (entry.state.region_code, id.clone()));
        RosterPage { households, next }
    }

    pub fn stats(&self, prefix: RegionPrefix) -> Stats {
        self.roll().stats(prefix)
    }
}

fn shutting_down() -> Error {
    Error::Unavailable("the server is shutting down; retry against a running server".into())
}
