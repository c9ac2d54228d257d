//! The one writer, as a three-stage pipeline: the decider decides and encodes jobs as they
//! arrive, a part of up to about `PART_EVENTS` events at a time, and leaves the parts in the
//! hand-off; the committer takes every part waiting there as one group and commits it with one
//! flush + fsync; the folder moves the roll by each committed group and answers its jobs.
//! Deciding the next part overlaps with syncing this group, and syncing the next group with
//! folding this one. A group is closed only when the committer is free to take it, so it holds
//! every part decided during the sync before it (group commit).
//!
//! ```text
//!   decider thread            committer thread              folder thread
//!   ──────────────            ────────────────              ─────────────
//!   take the jobs queued;
//!   decide each against the
//!   roll + what is in flight
//!   encode the events ─parts─▶ take all parts waiting
//!                              Log::append(bodies): ─group─▶ Roll::apply(events), under
//!   decide the next jobs       one flush + fsync              the write lock; answer
//!   meanwhile                  commit the next group          every job of the group
//!                              meanwhile
//!          ◀──── epoch ─────── (moves only if a commit failed)
//! ```
//!
//! A job whose commands break a rule is answered with that error and leaves nothing behind;
//! the rest of the group still commits. Parts commit in the order they were decided, and
//! groups are folded and answered in the order they committed, so a client that has its
//! receipt reads its write. If a commit fails, every job of that group is answered with the
//! failure and neither the log head nor the roll moves; once the folder has applied every group
//! committed before it, the committer advances its *epoch*: every part decided before the
//! decider saw the new epoch was decided over the failed one, so it is refused unwritten
//! (`Unavailable`, retry), and the decider drops what it had in flight.
//!
//! This module touches the roll only under its lock and the log only through `Log::append`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use chrono::{DateTime, SubsecRound, Utc};
use tokio::sync::{mpsc, oneshot};

use super::staging::{Changes, InFlight, Staged, View};
use super::{LogHistory, Receipt, Recorded, Shared, Writer};
use crate::domain::{decide, decide_correction, Change, Command, Context, Event};
use crate::error::Error;
use crate::projection::{Decided, History};
use crate::store::Head;

/// The decider waits while this many decided events wait for the committer: a bound on the
/// memory and latency of one commit, far above what group commit needs to amortize the fsync.
const MAX_GROUP_EVENTS: usize = 20_000;

/// The decider hands a part over once it holds this many events, and leaves the jobs queued
/// after it for the next part. Deciding every queued job as one part kept the committer idle
/// until the last was decided: four clients' batches of 1,000 became one part of ~20 ms of
/// deciding, then a commit and a fold while the decider waited, and all four clients were
/// answered at once and came back together, a convoy that left the two cores ~22% idle. With
/// parts of one batch, or of up to 100 single events, the committer syncs one part while the
/// next is decided (`benches/JOURNAL.md`, 2026-12-01's thirteenth session). It still takes
/// every part waiting as one group, so the fsyncs are no more than the disk makes necessary.
/// 100 events are ~0.5 ms of deciding, against a part's own cost of a lock and a wake-up.
const PART_EVENTS: usize = 100;

pub(super) enum Job {
    Append {
        commands: Vec<Command>,
        writer: Writer,
        reply: oneshot::Sender<Result<Vec<Receipt>, Error>>,
    },
    /// Finish what is queued before this, then stop.
    Stop,
}

type Reply = oneshot::Sender<Result<Vec<Receipt>, Error>>;

/// What one command came to.
enum Outcome {
    /// Appended as the event at this seq, in this group.
    Appended(u64),
    /// Its request_id had already produced the event at this seq, with the same content.
    Replay(u64),
}

/// Decided jobs, on their way from the decider to the committer.
#[derive(Default)]
struct Part {
    /// The committer's epoch the part was decided in.
    epoch: u64,
    /// The part's events, in seq order, their encoded bodies, and the states each was decided
    /// between (for the roll to take instead of working them out again; none for a
    /// correction).
    events: Vec<Arc<Event>>,
    bodies: Vec<Vec<u8>>,
    decided: Vec<Option<Decided>>,
    answers: Answers,
}

type Answers = Vec<(Reply, Result<Vec<Outcome>, Error>)>;

/// A group the committer has made durable, on its way to the folder.
struct Committed {
    events: Vec<Arc<Event>>,
    decided: Vec<Option<Decided>>,
    answers: Answers,
    /// Each event's position in the log.
    positions: Vec<Head>,
}

/// What the committer hands the folder, which takes them in order.
enum Fold {
    Group(Committed),
    /// Answered once every group sent before it is in the roll.
    Barrier(SyncSender<()>),
}

/// Committed groups that may wait for the folder before the committer waits for it: one, so
/// that syncing the next group overlaps with folding this one, and no more, which bounds the
/// events held in flight.
const GROUPS_TO_FOLD: usize = 1;

/// The largest group the committer folds itself when the folder is idle (see `Folder::fold`).
const FOLD_HERE_EVENTS: usize = 64;

/// Where a unit test holds the folder or the checkpoint thread, fails commits and follows the
/// decider, to force an ordering that real timing makes too narrow to hit: a commit failing
/// while the group before it is still being folded (see `commit`), or writes landing while a
/// whole checkpoint is being written (see `Shared::maybe_checkpoint`). Test builds only; a
/// server has none of this.
#[cfg(test)]
#[derive(Default)]
pub(super) struct Faults {
    /// Every append fails while this is set; `appends_failed` counts them.
    fail_appends: std::sync::atomic::AtomicBool,
    appends_failed: AtomicU64,
    /// Parts the decider has decided and handed over.
    parts_decided: AtomicU64,
    /// Stops the folder before the next group it applies.
    pub(super) folder: Gate,
    /// Stops the checkpoint thread once a whole checkpoint is written, before what follows it.
    pub(super) checkpoint: Gate,
}

/// A place in a thread's work where a test can stop it: set to [`Hold::Next`], the thread
/// stops there the next time it passes, says so ([`Hold::Holding`]), and waits until set
/// [`Hold::Free`].
#[cfg(test)]
#[derive(Default)]
pub(super) struct Gate {
    hold: Mutex<Hold>,
    moved: Condvar,
}

#[cfg(test)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    #[default]
    Free,
    /// The thread stops the next time it passes...
    Next,
    /// ...and has: it waits there until set free.
    Holding,
}

#[cfg(test)]
impl Gate {
    pub(super) fn set(&self, hold: Hold) {
        *self.hold.lock().expect("a test's lock") = hold;
        self.moved.notify_all();
    }

    pub(super) fn is(&self, hold: Hold) -> bool {
        *self.hold.lock().expect("a test's lock") == hold
    }

    /// Called by the thread where it may be held.
    pub(super) fn wait_if_held(&self) {
        let mut hold = self.hold.lock().expect("a test's lock");
        if *hold == Hold::Next {
            *hold = Hold::Holding;
            self.moved.notify_all();
            while *hold == Hold::Holding {
                hold = self.moved.wait(hold).expect("a test's lock");
            }
        }
    }
}

#[cfg(test)]
impl Faults {
    /// Called by `append`: the failure a full disk or a failing device would give.
    fn append_fails(&self) -> Result<(), Error> {
        if self.fail_appends.load(Ordering::SeqCst) {
            self.appends_failed.fetch_add(1, Ordering::SeqCst);
            return Err(Error::Io("the device failed (a test's fault)".into()));
        }
        Ok(())
    }
}

/// Where decided parts wait for the committer.
///
/// Each side signals the other only when the other is asleep, and after letting go of the
/// lock: a condition variable's signal is a system call whether or not anyone waits, and one
/// made while holding the lock keeps the woken thread waiting for it. Signalling every part
/// and every take, under the lock, made ~0.3 needless calls an event with 32 single-event
/// clients (the committer was asleep for one signal in a hundred), and the decider and the
/// committer met on the lock itself about once every two commits, each meeting a sleep and a
/// wake-up more (`strace -f -e trace=futex`, `benches/JOURNAL.md`, 2026-12-02's nineteenth
/// session).
#[derive(Default)]
struct Handoff {
    waiting: Mutex<Waiting>,
    /// Signalled when parts arrive while the committer sleeps, and at the end.
    parts_arrived: Condvar,
    /// Signalled when the committer takes the parts while the decider sleeps for room.
    room_made: Condvar,
}

#[derive(Default)]
struct Waiting {
    parts: Vec<Part>,
    events: usize,
    /// The decider has stopped: once `parts` is empty, so does the committer.
    closed: bool,
    /// The committer sleeps on `parts_arrived`.
    committer_asleep: bool,
    /// The decider sleeps on `room_made`.
    decider_asleep: bool,
}

impl Handoff {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting
            .lock()
            .expect("the hand-off lock is never held across a panic")
    }

    /// Leaves a part for the committer, first waiting while a full group is already waiting,
    /// so that a fast decider cannot run arbitrarily far ahead of the disk.
    fn put(&self, part: Part) {
        let mut waiting = self.lock();
        while waiting.events >= MAX_GROUP_EVENTS {
            waiting.decider_asleep = true;
            waiting = self
                .room_made
                .wait(waiting)
                .expect("the hand-off lock is never held across a panic");
        }
        waiting.decider_asleep = false;
        waiting.events += part.events.len();
        waiting.parts.push(part);
        let wake = std::mem::take(&mut waiting.committer_asleep);
        drop(waiting);
        if wake {
            self.parts_arrived.notify_one();
        }
    }

    /// Takes every part waiting, waiting for one if there is none; `None` once closed and empty.
    fn take(&self) -> Option<Vec<Part>> {
        let mut waiting = self.lock();
        while waiting.parts.is_empty() && !waiting.closed {
            waiting.committer_asleep = true;
            waiting = self
                .parts_arrived
                .wait(waiting)
                .expect("the hand-off lock is never held across a panic");
        }
        waiting.committer_asleep = false;
        if waiting.parts.is_empty() {
            return None;
        }
        waiting.events = 0;
        let parts = std::mem::take(&mut waiting.parts);
        let wake = std::mem::take(&mut waiting.decider_asleep);
        drop(waiting);
        if wake {
            self.room_made.notify_one();
        }
        Some(parts)
    }

    fn close(&self) {
        self.lock().closed = true;
        self.parts_arrived.notify_one();
    }
}

/// What the decider has handed to the committer that the roll has not applied yet.
#[derive(Default)]
struct Pending {
    /// The committer's epoch these were decided in.
    epoch: u64,
    /// The seq of the last event the roll had applied when `events` was last trimmed.
    base: u64,
    /// Every decided event after `base`, in seq order.
    events: Vec<Arc<Event>>,
    /// Each in-flight group's staged changes, oldest first, with its last seq.
    groups: VecDeque<(u64, Changes)>,
}

impl Pending {
    /// Forgets what the roll has applied by now (`applied`), or everything if a commit failed
    /// since (`epoch` moved): then nothing in flight will ever be applied.
    fn catch_up(&mut self, applied: u64, epoch: u64) {
        if epoch != self.epoch {
            *self = Pending {
                epoch,
                base: applied,
                ..Pending::default()
            };
            return;
        }
        let done = usize::try_from(applied.saturating_sub(self.base))
            .expect("fewer events are in flight than fit in memory")
            .min(self.events.len());
        self.events.drain(..done);
        self.base = applied;
        while self
            .groups
            .front()
            .is_some_and(|(last, _)| *last <= applied)
        {
            self.groups.pop_front();
        }
    }
}

pub(super) fn spawn(
    shared: Arc<Shared>,
    mut jobs: mpsc::Receiver<Job>,
) -> Result<JoinHandle<()>, Error> {
    let epoch = Arc::new(AtomicU64::new(0));
    let handoff = Arc::new(Handoff::default());
    let (mut folder, folding) = Folder::spawn(&shared)
        .map_err(|e| Error::Io(format!("cannot start the folder thread: {e}")))?;
    let committer = {
        let shared = shared.clone();
        let epoch = epoch.clone();
        let handoff = handoff.clone();
        std::thread::Builder::new()
            .name("rollstore-commit".into())
            .spawn(move || {
                while let Some(parts) = handoff.take() {
                    stop_writes_on_panic(&shared, "committer", || {
                        commit(&shared, &epoch, parts, &mut folder)
                    });
                }
                // The folder ends once it has folded and answered every group sent to it.
                drop(folder);
                if folding.join().is_err() {
                    tracing::error!("the folder panicked");
                }
            })
            .map_err(|e| Error::Io(format!("cannot start the committer thread: {e}")))?
    };
    std::thread::Builder::new()
        .name("rollstore-writer".into())
        .spawn(move || {
            // recorded_at never goes backwards, even if the clock does, so that "known at a
            // time" always names a prefix of the log.
            let mut clock = DateTime::<Utc>::MIN_UTC;
            let mut pending = Pending::default();
            while let Some(first) = jobs.blocking_recv() {
                let (group, stop) = next_part(first, &mut jobs);
                clock = clock.max(shared.config.clock.now().trunc_subsecs(6));
                handoff.put(decide_part(&shared, &epoch, &mut pending, group, clock));
                #[cfg(test)]
                shared.faults.parts_decided.fetch_add(1, Ordering::SeqCst);
                if stop {
                    break;
                }
            }
            // Jobs still queued are dropped here; their callers are told the server is stopping.
            // Parts already handed over are committed before the writer counts as stopped.
            handoff.close();
            if committer.join().is_err() {
                tracing::error!("the committer panicked");
            }
        })
        .map_err(|e| Error::Io(format!("cannot start the writer thread: {e}")))
}

/// A queued job, taken apart.
type Queued = (Vec<Command>, Writer, Reply);

/// The jobs of the next part: `first`, then those already queued after it, until the part
/// holds `PART_EVENTS` commands. `true` if a `Stop` was among them: decide what was taken
/// before it, then stop (the jobs queued after it are not taken).
fn next_part(first: Job, jobs: &mut mpsc::Receiver<Job>) -> (Vec<Queued>, bool) {
    let mut part = Vec::new();
    let mut size = 0;
    let mut next = Some(first);
    while let Some(job) = next.take() {
        match job {
            Job::Stop => return (part, true),
            Job::Append {
                commands,
                writer,
                reply,
            } => {
                size += commands.len();
                part.push((commands, writer, reply));
            }
        }
        if size < PART_EVENTS {
            next = jobs.try_recv().ok();
        }
    }
    (part, false)
}

/// Decides and encodes jobs against the roll and what is in flight.
fn decide_part(
    shared: &Shared,
    epoch: &AtomicU64,
    pending: &mut Pending,
    jobs: Vec<Queued>,
    now: DateTime<Utc>,
) -> Part {
    let today = now.with_timezone(&shared.config.utc_offset).date_naive();
    let ctx = Context {
        today,
        policy: &shared.config.policy,
    };
    let roll = shared
        .roll
        .read()
        .expect("the roll lock is never held across a panic");
    // Read under the roll's lock. The committer moves the epoch only once the roll holds every
    // group committed before the failed one, and commits nothing more until parts of the new
    // epoch arrive: so with a new epoch the roll read here is the log's whole durable head,
    // and nothing in flight is lost by starting again from it.
    let current = epoch.load(Ordering::SeqCst);
    pending.catch_up(roll.head(), current);
    let first = pending.events.len();
    let mut decided = Vec::new();
    let mut answers = Vec::with_capacity(jobs.len());
    let view = InFlight {
        roll: &roll,
        groups: &pending.groups,
    };
    let mut group_layer = Staged::over(&view);
    for (commands, writer, reply) in jobs {
        let mut job = Staged::sized(&group_layer, commands.len());
        let first_event = pending.events.len();
        let batch = commands.len() > 1;
        let mut outcomes = Vec::with_capacity(commands.len());
        let mut failure = None;
        for (i, command) in commands.into_iter().enumerate() {
            let staging = Staging {
                shared,
                base: pending.base,
                now,
                ctx,
                events: &pending.events,
                writer: &writer,
            };
            match staging.stage(&mut job, command) {
                Ok(Decision::Append(event, states)) => {
                    outcomes.push(Outcome::Appended(event.seq));
                    pending.events.push(Arc::new(*event));
                    decided.push(states);
                }
                Ok(Decision::Replay(seq)) => outcomes.push(Outcome::Replay(seq)),
                Err(error) => {
                    failure = Some(if batch {
                        error.within(&format!("commands[{i}]"))
                    } else {
                        error
                    });
                    break;
                }
            }
        }
        match failure {
            None => {
                let changes = job.into_changes();
                group_layer.absorb(changes);
                answers.push((reply, Ok(outcomes)));
            }
            Some(error) => {
                pending.events.truncate(first_event);
                decided.truncate(first_event - first);
                answers.push((reply, Err(error)));
            }
        }
    }
    let changes = group_layer.into_changes();
    // Encoding is a third of deciding, and needs nothing of the roll: done after its lock is
    // released, the committer can apply the previous group meanwhile.
    drop(roll);
    let events = pending.events[first..].to_vec();
    if let Some(last) = events.last() {
        pending.groups.push_back((last.seq, changes));
    }
    // Each body is encoded into one buffer, reused, and copied out at its exact size: encoded
    // into a new Vec of its own, a body grew from 128 bytes by doubling, ~2.4 reallocations
    // (each a copy) an event.
    let mut scratch = Vec::with_capacity(4096);
    let bodies = events
        .iter()
        .map(|event| {
            scratch.clear();
            serde_json::to_writer(&mut scratch, &**event).expect(
                "an event encodes as JSON: it holds strings, integers, dates, enums and lists, and \
                 no Serialize of its types can fail",
            );
            scratch.clone()
        })
        .collect();
    Part {
        epoch: current,
        events,
        bodies,
        decided,
        answers,
    }
}

/// Commits the parts waiting as one group and hands it to the folder.
fn commit(shared: &Arc<Shared>, epoch: &AtomicU64, parts: Vec<Part>, folder: &mut Folder) {
    let stopped = shared
        .failed
        .lock()
        .expect("the failure lock is never held across a panic")
        .clone();
    let mut group = Part::default();
    for part in parts {
        let refusal = if part.epoch != epoch.load(Ordering::SeqCst) {
            Some(Error::Unavailable(
                "an earlier commit failed and this write was decided after it, so it was not appended; retry".into(),
            ))
        } else {
            stopped.as_ref().map(|reason| {
                Error::Unavailable(format!(
                    "writes are stopped: {reason}; restart the server to rebuild the projections from the log"
                ))
            })
        };
        match refusal {
            Some(error) => {
                for (reply, _) in part.answers {
                    let _ = reply.send(Err(error.clone()));
                }
            }
            // Parts of the current epoch follow every refused one and continue the log.
            None => {
                group.events.extend(part.events);
                group.bodies.extend(part.bodies);
                group.decided.extend(part.decided);
                group.answers.extend(part.answers);
            }
        }
    }
    let committed = if group.events.is_empty() {
        Ok(Vec::new())
    } else {
        append(shared, &group.events, &group.bodies)
    };
    let positions = match committed {
        Ok(positions) => positions,
        Err(error) => {
            tracing::error!(%error, events = group.events.len(), "commit failed; nothing was appended");
            // The decider starts again from the roll once it sees the new epoch, so the roll
            // must first hold every group committed before this one (see `decide_part`).
            folder.wait();
            epoch.fetch_add(1, Ordering::SeqCst);
            for (reply, _) in group.answers {
                let _ = reply.send(Err(error.clone()));
            }
            return;
        }
    };
    folder.fold(
        shared,
        Committed {
            events: group.events,
            decided: group.decided,
            answers: group.answers,
            positions,
        },
    );
}

/// The committer's end of the folder thread.
struct Folder {
    groups: SyncSender<Fold>,
    /// Groups handed over so far, and groups the folder has finished: equal when it is idle.
    sent: u64,
    finished: Arc<AtomicU64>,
}

impl Folder {
    fn spawn(shared: &Arc<Shared>) -> std::io::Result<(Folder, JoinHandle<()>)> {
        let (groups, to_fold) = std::sync::mpsc::sync_channel(GROUPS_TO_FOLD);
        let finished = Arc::new(AtomicU64::new(0));
        let thread = {
            let shared = shared.clone();
            let finished = finished.clone();
            std::thread::Builder::new()
                .name("rollstore-fold".into())
                .spawn(move || {
                    for fold in to_fold {
                        match fold {
                            Fold::Group(group) => {
                                #[cfg(test)]
                                shared.faults.folder.wait_if_held();
                                stop_writes_on_panic(&shared, "folder", || apply(&shared, group))
                            }
                            Fold::Barrier(done) => {
                                let _ = done.send(());
                            }
                        }
                        finished.fetch_add(1, Ordering::SeqCst);
                    }
                })?
        };
        let folder = Folder {
            groups,
            sent: 0,
            finished,
        };
        Ok((folder, thread))
    }

    /// Has a committed group applied to the roll and answered, after every group before it.
    /// A small group is folded right here when the folder is idle: handing over a few events
    /// (single writes come in groups of ten or so) cost a thread's wake-up for each group, and
    /// nothing is sent to the folder meanwhile, so the order holds. Even a group with nothing
    /// to append (only replays) is folded in order, so that every answer follows the groups
    /// committed before it.
    fn fold(&mut self, shared: &Arc<Shared>, group: Committed) {
        if group.events.len() <= FOLD_HERE_EVENTS
            && self.finished.load(Ordering::SeqCst) == self.sent
        {
            apply(shared, group);
            return;
        }
        match self.groups.send(Fold::Group(group)) {
            Ok(()) => self.sent += 1,
            // Only if the folder has died, which stopped writes: the events are durable, so the
            // answers say so, but the roll will not show them until a restart.
            Err(unsent) => {
                if let Fold::Group(group) = unsent.0 {
                    answer(shared, &group.events, &group.positions, group.answers);
                }
            }
        }
    }

    /// Returns once every group handed over so far is in the roll.
    fn wait(&mut self) {
        let (done, folded) = std::sync::mpsc::sync_channel(1);
        if self.groups.send(Fold::Barrier(done)).is_ok() {
            self.sent += 1;
            let _ = folded.recv();
        }
    }
}

/// Applies a committed group to the roll, then answers its jobs.
fn apply(shared: &Arc<Shared>, group: Committed) {
    let Committed {
        events,
        decided,
        answers,
        positions,
    } = group;
    let stopped = shared
        .failed
        .lock()
        .expect("the failure lock is never held across a panic")
        .is_some();
    // Once the roll could not follow the log it is not moved again: writes are stopped, and a
    // restart rebuilds it. A group committed meanwhile is durable, and answered so.
    if !stopped {
        let mut roll = shared
            .roll
            .write()
            .expect("the roll lock is never held across a panic");
        let history = LogHistory(&shared.log);
        // The roll's growth goes to pages of its own, apart from the requests' churn: see
        // `crate::heap`.
        crate::heap::long_lived(|| {
            // Aligned with the events by construction; were it ever shorter, the rest would
            // simply be folded without their states.
            let mut decided = decided.into_iter();
            for event in &events {
                let folded = match decided.next().flatten() {
                    Some(decided) => roll.apply_decided(event, &history, decided),
                    None => roll.apply(event, &history),
                };
                if let Err(error) = folded {
                    // The events are durable and every job is still answered truthfully, but
                    // the roll no longer matches the log: stop taking writes until a rebuild.
                    tracing::error!(%error, seq = event.seq, "the roll could not follow the log");
                    stop_writes(
                        shared,
                        format!("the roll could not apply event {}: {error}", event.seq),
                    );
                    break;
                }
            }
        });
        shared.committed.send_replace(roll.head());
    }
    shared.maybe_checkpoint();
    answer(shared, &events, &positions, answers);
}

/// Answers a committed group's jobs.
fn answer(shared: &Shared, events: &[Arc<Event>], positions: &[Head], answers: Answers) {
    for (reply, outcome) in answers {
        let receipts = outcome.and_then(|outcomes| {
            outcomes
                .into_iter()
                .map(|outcome| receipt(shared, events, positions, outcome))
                .collect()
        });
        let _ = reply.send(receipts);
    }
}

/// Runs one stage's step; if it panics, stops writes. The step's callers were answered by
/// their dropped replies, but whatever the panic left half done, the roll may no longer match
/// the log.
fn stop_writes_on_panic(shared: &Shared, stage: &str, step: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).is_err() {
        tracing::error!("the {stage} panicked; writes are stopped");
        stop_writes(
            shared,
            format!("the {stage} failed unexpectedly (see the server log)"),
        );
    }
}

/// Refuses every write from now on, with `reason`, until a restart rebuilds the roll.
fn stop_writes(shared: &Shared, reason: String) {
    *shared
        .failed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
}

/// Appends the encoded events durably.
fn append(shared: &Shared, events: &[Arc<Event>], bodies: &[Vec<u8>]) -> Result<Vec<Head>, Error> {
    #[cfg(test)]
    shared.faults.append_fails()?;
    let positions = shared.log.append(bodies)?;
    for (event, position) in events.iter().zip(&positions) {
        assert_eq!(
            event.seq, position.seq,
            "the writer is the log's only appender and groups commit in order, so seqs agree"
        );
    }
    Ok(positions)
}

/// The receipt for a command of a committed group: its event is in this group, or (a replay
/// of an earlier request) in the log, since groups commit in order.
fn receipt(
    shared: &Shared,
    events: &[Arc<Event>],
    positions: &[Head],
    outcome: Outcome,
) -> Result<Receipt, Error> {
    let (seq, replayed) = match outcome {
        Outcome::Appended(seq) => (seq, false),
        Outcome::Replay(seq) => (seq, true),
    };
    let first = events.first().map_or(u64::MAX, |e| e.seq);
    if seq >= first {
        let index = usize::try_from(seq - first).expect("a group's index fits in memory");
        let event = &events[index];
        return Ok(Receipt {
            seq,
            version: event.version,
            hash: positions[index].hash,
            recorded_at: event.recorded_at,
            replayed,
        });
    }
    let original = original_event(shared, seq)?;
    Ok(Receipt {
        seq,
        version: original.event.version,
        hash: original.hash,
        recorded_at: original.event.recorded_at,
        replayed,
    })
}

fn original_event(shared: &Shared, seq: u64) -> Result<Recorded, Error> {
    let entry = shared.log.get(seq)?.ok_or_else(|| {
        Error::Corrupt(format!(
            "request index names event {seq}, which is not in the log"
        ))
    })?;
    Recorded::decode(entry)
}

/// What staging one command produced.
enum Decision {
    /// A new event, with the states it was decided between (none for a correction).
    Append(Box<Event>, Option<Decided>),
    Replay(u64),
}

/// Everything one command is staged against.
struct Staging<'a> {
    shared: &'a Shared,
    /// The seq of the last event in the roll.
    base: u64,
    now: DateTime<Utc>,
    ctx: Context<'a>,
    /// Every event decided after `base` before this command: in flight, then this group's.
    events: &'a [Arc<Event>],
    writer: &'a Writer,
}

impl Staging<'_> {
    fn check_scope(
        &self,
        id: &crate::domain::HouseholdId,
        region: crate::domain::RegionCode,
    ) -> Result<(), Error> {
        if self.writer.scope.allows(region) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "{} may not write household {id} in region {region}: it is outside their scopes",
                self.writer.actor
            )))
        }
    }

    /// The event at `seq`: decided but not in the roll yet (borrowed), or read from the log.
    fn event(&self, seq: u64) -> Result<Option<std::borrow::Cow<'_, Event>>, Error> {
        if seq > self.base {
            let index = usize::try_from(seq - self.base - 1).unwrap_or(usize::MAX);
            return Ok(self
                .events
                .get(index)
                .map(|e| std::borrow::Cow::Borrowed(&**e)));
        }
        if seq == 0 {
            return Ok(None);
        }
        Ok(Some(std::borrow::Cow::Owned(
            original_event(self.shared, seq)?.event,
        )))
    }

    /// A household's whole stream, committed and staged, for a correction that targets
    /// `target_seq`. A target that does not exist, or belongs to another household, is refused
    /// here with the reason.
    fn stream(
        &self,
        view: &Staged<'_>,
        id: &crate::domain::HouseholdId,
        target_seq: u64,
    ) -> Result<Vec<Event>, Error> {
        match self.event(target_seq)? {
            None => {
                return Err(Error::NotFound(format!(
                    "there is no event {target_seq} to correct"
                )))
            }
            Some(target) if &target.household_id != id => {
                return Err(Error::rule(
                    crate::error::Rule::CorrectionTarget,
                    format!(
                        "event {target_seq} belongs to household {}, not {id}; a correction targets its own household",
                        target.household_id
                    ),
                ))
            }
            Some(_) => {}
        }
        let committed = view.committed_seqs(id);
        let mut stream = LogHistory(&self.shared.log).events(&committed)?;
        stream.extend(
            self.events
                .iter()
                .filter(|e| &e.household_id == id)
                .map(|e| Event::clone(e)),
        );
        Ok(stream)
    }

    fn stage(&self, view: &mut Staged<'_>, command: Command) -> Result<Decision, Error> {
        if let Some(request_id) = &command.request_id {
            if let Some(seq) = view.request(request_id) {
                let original = self.event(seq)?.ok_or_else(|| {
                    Error::Corrupt(format!(
                        "request index names event {seq}, which is neither decided nor in the log"
                    ))
                })?;
                return if command.is_recorded_by(&original) {
                    Ok(Decision::Replay(seq))
                } else {
                    Err(Error::RequestReused {
                        request_id: request_id.clone(),
                        seq,
                    })
                };
            }
        }
        let id = &command.household_id;
        let current = view.household(id)?;
        let before = current.as_ref().map(|(state, _)| &**state);
        // The scope is checked before versions and rules, so that a refusal says nothing of a
        // household the writer may not see; and again on the state left behind.
        let target = match &command.change {
            Change::Identify(identification) => Some(identification.region_code),
            Change::Adjust(adjustment) => adjustment.relocate_to,
            _ => None,
        };
        for region in before.map(|s| s.region_code).into_iter().chain(target) {
            self.check_scope(id, region)?;
        }
        let version = current.as_ref().map_or(0, |(_, version)| *version);
        if let Some(expected) = command.expected_version {
            if expected != version {
                return Err(Error::VersionConflict {
                    household_id: id.to_string(),
                    expected,
                    actual: version,
                });
            }
        }
        let next = match &command.change {
            Change::Correct(correction) => {
                let stream = self.stream(view, id, correction.target_seq)?;
                decide_correction(self.ctx, &stream, &command, &*view)?
            }
            _ => decide(self.ctx, before, &command, &*view)?,
        };
        let seq = self.base + self.events.len() as u64 + 1;
        let version = version + 1;
        self.check_scope(id, next.region_code)?;
        let next = Arc::new(next);
        let states = (!matches!(command.change, Change::Correct(_)))
            .then(|| Decided::new(before, next.clone()));
        view.record(
            id,
            before,
            next,
            version,
            command.request_id.as_deref().map(|r| (r, seq)),
        );
        let event = command.recorded(seq, version, self.now, &self.writer.actor);
        Ok(Decision::Append(Box::new(event), states))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::tests::until;
    use crate::app::{Config, Register};
    use crate::domain::{Adjustment, Cause, HouseholdId, RelapseRecord};

    fn command() -> Command {
        Command {
            household_id: HouseholdId::parse("H1").expect("a valid id"),
            effective_date: chrono::NaiveDate::from_ymd_opt(2020, 1, 1).expect("a date"),
            document_ref: "test".into(),
            expected_version: None,
            request_id: None,
            change: Change::Relapse(RelapseRecord {
                primary_cause: Cause::Illness,
                income_per_capita: None,
                note: String::new(),
            }),
        }
    }

    fn event(seq: u64) -> Arc<Event> {
        Arc::new(command().recorded(seq, seq, DateTime::<Utc>::MIN_UTC, "test"))
    }

    #[test]
    fn a_part_takes_the_jobs_queued_until_it_holds_part_events() {
        const HALF: usize = PART_EVENTS / 2;
        const STOP: usize = 0;
        // The jobs queued, by their number of commands (STOP for a `Stop`) → the parts the
        // decider takes, by their jobs' numbers of commands, and whether it then stops.
        let cases: [(Vec<usize>, Vec<Vec<usize>>, bool); 6] = [
            (vec![1, 1, 1], vec![vec![1, 1, 1]], false),
            (
                vec![HALF, HALF, HALF],
                vec![vec![HALF, HALF], vec![HALF]],
                false,
            ),
            // A batch larger than a part is a part of its own, whole.
            (
                vec![1, 10 * PART_EVENTS, 1],
                vec![vec![1, 10 * PART_EVENTS], vec![1]],
                false,
            ),
            (
                vec![10 * PART_EVENTS, 1],
                vec![vec![10 * PART_EVENTS], vec![1]],
                false,
            ),
            // What was taken before a `Stop` is still decided; what comes after it is not.
            (vec![1, STOP, 1], vec![vec![1]], true),
            (vec![STOP], vec![vec![]], true),
        ];
        for (queued, expected, stops) in cases {
            let (send, mut jobs) = mpsc::channel(queued.len());
            for &commands in &queued {
                let job = match commands {
                    STOP => Job::Stop,
                    n => Job::Append {
                        commands: vec![command(); n],
                        writer: Writer {
                            actor: "test".into(),
                            scope: crate::app::Scope::All,
                        },
                        reply: oneshot::channel().0,
                    },
                };
                assert!(send.try_send(job).is_ok(), "the channel holds every job");
            }
            let mut parts = Vec::new();
            let mut stopped = false;
            while let Ok(first) = jobs.try_recv() {
                let (part, stop) = next_part(first, &mut jobs);
                parts.push(part.iter().map(|(c, _, _)| c.len()).collect::<Vec<_>>());
                if stop {
                    stopped = true;
                    break;
                }
            }
            assert_eq!(parts, expected, "queued {queued:?}");
            assert_eq!(stopped, stops, "queued {queued:?}");
        }
    }

    fn part_of(events: usize) -> Part {
        Part {
            events: vec![event(1); events],
            ..Part::default()
        }
    }

    /// Runs `step` on a thread of its own; its result arrives on the receiver once it returns.
    fn on_a_thread<T: Send + 'static>(
        step: impl FnOnce() -> T + Send + 'static,
    ) -> (std::sync::mpsc::Receiver<T>, JoinHandle<()>) {
        let (done, result) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let _ = done.send(step());
        });
        (result, thread)
    }

    /// Far longer than any wake-up takes, even on a loaded machine: a side still asleep after
    /// it was never woken.
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

    /// Waits until `side` of the hand-off has gone to sleep.
    fn asleep(handoff: &Handoff, side: impl Fn(&Waiting) -> bool) {
        let start = std::time::Instant::now();
        while !side(&handoff.lock()) {
            assert!(start.elapsed() < PATIENCE, "the thread never went to sleep");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn the_hand_off_wakes_each_side_exactly_when_the_other_has_made_it_able_to_go_on() {
        // A committer asleep for want of parts wakes when one is put.
        let handoff = Arc::new(Handoff::default());
        let (taken, committer) = on_a_thread({
            let handoff = handoff.clone();
            move || handoff.take().map(|parts| parts.len())
        });
        asleep(&handoff, |w| w.committer_asleep);
        handoff.put(part_of(3));
        assert_eq!(taken.recv_timeout(PATIENCE), Ok(Some(1)));
        committer.join().expect("the committer thread");

        // A decider asleep for room wakes when the committer takes the full group, and its
        // part is the next group.
        handoff.put(part_of(MAX_GROUP_EVENTS));
        let (put, decider) = on_a_thread({
            let handoff = handoff.clone();
            move || handoff.put(part_of(2))
        });
        asleep(&handoff, |w| w.decider_asleep);
        let full = handoff.take().expect("the full group");
        assert_eq!(
            full.iter().map(|p| p.events.len()).sum::<usize>(),
            MAX_GROUP_EVENTS
        );
        assert_eq!(put.recv_timeout(PATIENCE), Ok(()));
        decider.join().expect("the decider thread");
        let next = handoff.take().expect("the decider's part");
        assert_eq!(next.iter().map(|p| p.events.len()).collect::<Vec<_>>(), [2]);

        // A committer asleep when the decider stops wakes to stop too.
        let (taken, committer) = on_a_thread({
            let handoff = handoff.clone();
            move || handoff.take().map(|parts| parts.len())
        });
        asleep(&handoff, |w| w.committer_asleep);
        handoff.close();
        assert_eq!(taken.recv_timeout(PATIENCE), Ok(None));
        committer.join().expect("the committer thread");
    }

    /// In flight: two groups, seqs 11–12 and 13–15, over a roll at 10.
    fn in_flight() -> Pending {
        Pending {
            epoch: 0,
            base: 10,
            events: (11..=15).map(event).collect(),
            groups: VecDeque::from([(12, Changes::default()), (15, Changes::default())]),
        }
    }

    fn seqs(pending: &Pending) -> Vec<u64> {
        pending.events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn catching_up_forgets_exactly_what_the_roll_applied() {
        // (roll head, epoch) → (base, events left, groups left)
        let cases: [(u64, u64, u64, Vec<u64>, usize); 5] = [
            (10, 0, 10, vec![11, 12, 13, 14, 15], 2),
            (12, 0, 12, vec![13, 14, 15], 1),
            // The roll stops inside a group only if it failed; the group stays in flight.
            (14, 0, 14, vec![15], 1),
            (15, 0, 15, vec![], 0),
            // A commit failed: nothing in flight will be applied, whatever the roll says.
            (12, 1, 12, vec![], 0),
        ];
        for (applied, epoch, base, events, groups) in cases {
            let mut pending = in_flight();
            pending.catch_up(applied, epoch);
            assert_eq!(pending.base, base, "roll at {applied}, epoch {epoch}");
            assert_eq!(seqs(&pending), events, "roll at {applied}, epoch {epoch}");
            assert_eq!(
                pending.groups.len(),
                groups,
                "roll at {applied}, epoch {epoch}"
            );
            assert_eq!(pending.epoch, epoch);
        }
    }

    /// Appends `commands` as a client would: again while the answer is "retry".
    async fn append_retrying(
        register: &Register,
        commands: Vec<Command>,
    ) -> Result<Vec<Receipt>, Error> {
        for _ in 0..100 {
            match register.append(commands.clone()).await {
                Err(Error::Unavailable(_)) => continue,
                answer => return answer,
            }
        }
        panic!("still refused as unavailable after 100 tries");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_failed_commit_the_decider_starts_again_from_a_roll_holding_every_group_before_it(
    ) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let register = Register::open(dir.path(), Config::default()).expect("the store opens");
        let faults = &register.shared.faults;
        let mut demo = crate::demo::baota::generate(1).commands.into_iter();

        // Given a group of identifications too large for the committer to fold itself, held
        // by the folder before it applies it (answered, so durable, only once folded),
        let held: Vec<Command> = demo.by_ref().take(FOLD_HERE_EVENTS + 1).collect();
        assert!(
            matches!(held[0].change, Change::Identify(_)),
            "the demo starts with identifications"
        );
        let household = held[0].household_id.clone();
        let identified_on = held[0].effective_date;
        faults.folder.set(Hold::Next);
        let first = tokio::spawn({
            let register = register.clone();
            async move { register.append(held).await }
        });
        until("the folder holding the first group", || {
            faults.folder.is(Hold::Holding)
        })
        .await;

        // when the next group's commit fails while the first is still being folded,
        faults.fail_appends.store(true, Ordering::SeqCst);
        let failed = tokio::spawn({
            let register = register.clone();
            let command = demo.next().expect("the demo has more");
            async move { register.append(vec![command]).await }
        });
        until("the second commit failing", || {
            faults.appends_failed.load(Ordering::SeqCst) > 0
        })
        .await;
        faults.fail_appends.store(false, Ordering::SeqCst);

        // and a command about a household of the first group comes before the folder moves on,
        let adjust = Command {
            household_id: household.clone(),
            effective_date: identified_on,
            document_ref: "a test".into(),
            expected_version: None,
            request_id: None,
            change: Change::Adjust(Adjustment {
                income_per_capita: Some(4_321),
                ..Adjustment::default()
            }),
        };
        let decided = faults.parts_decided.load(Ordering::SeqCst);
        let after = tokio::spawn({
            let register = register.clone();
            async move { append_retrying(&register, vec![adjust]).await }
        });
        // Decided while the folder is held: without the barrier, the decider would then start
        // again from a roll lacking the first group. (Waiting only until it had received the
        // command caught a missing barrier once in six runs: the folder, set free, often
        // applied the first group before the decider read the roll.)
        until("the decider deciding the adjustment", || {
            faults.parts_decided.load(Ordering::SeqCst) > decided
        })
        .await;
        faults.folder.set(Hold::Free);

        // then the first group lands, the failed one is refused with its cause, and the
        // command is decided over the first group: the decider did not start again from a
        // roll that lacked it, which would have refused it as an unknown household.
        let first = first
            .await
            .expect("the task ends")
            .expect("the first group lands");
        assert_eq!(first.len(), FOLD_HERE_EVENTS + 1);
        let failed = failed.await.expect("the task ends");
        assert!(matches!(failed, Err(Error::Io(_))), "{failed:?}");
        let after = after.await.expect("the task ends");
        let receipts = after.unwrap_or_else(|e| panic!("the adjustment was refused: {e}"));
        assert_eq!(receipts[0].seq, FOLD_HERE_EVENTS as u64 + 2);
        assert_eq!(register.head().seq, FOLD_HERE_EVENTS as u64 + 2);
        let now = register
            .household(&household, crate::app::At::NOW)
            .expect("the household is on the roll");
        assert_eq!((now.version, now.state.income_per_capita), (2, 4_321));
    }
}
