//! The one writer: takes every job waiting, decides them, commits them with one flush + fsync,
//! moves the roll, and answers.
//!
//! ```text
//!   wait for a job ─▶ take all that are queued (up to MAX_GROUP_EVENTS commands)
//!        ▲                │
//!        │                ▼  decide each job against Roll + group layer (staging)
//!        │           Log::append(bodies)            one durable commit for the whole group
//!        │                │
//!        │                ▼  Roll::apply(events)   under the write lock, after the fsync
//!        └──────── answer every job
//! ```
//!
//! A job whose commands break a rule is answered with that error and leaves nothing behind;
//! the rest of the group still commits. If the commit itself fails, every job of the group is
//! answered with the failure and neither the log head nor the roll moves.

use std::sync::Arc;
use std::thread::JoinHandle;

use chrono::{DateTime, SubsecRound, Utc};
use tokio::sync::{mpsc, oneshot};

use super::staging::{Staged, View};
use super::{LogHistory, Receipt, Recorded, Shared, Writer};
use crate::domain::{decide, decide_correction, Change, Command, Context, Event};
use crate::error::Error;
use crate::projection::History;
use crate::store::Head;

/// Stop adding jobs to a group once it holds this many commands: a bound on the memory and
/// latency of one commit, far above what group commit needs to amortize the fsync.
const MAX_GROUP_EVENTS: usize = 20_000;

pub(super) enum Job {
    Append {
        commands: Vec<Command>,
        writer: Writer,
        reply: oneshot::Sender<Result<Vec<Receipt>, Error>>,
    },
    /// Finish what is queued before this, then stop.
    Stop,
}

pub(super) fn spawn(
    shared: Arc<Shared>,
    mut jobs: mpsc::Receiver<Job>,
) -> Result<JoinHandle<()>, Error> {
    std::thread::Builder::new()
        .name("rollstore-writer".into())
        .spawn(move || {
            // recorded_at never goes backwards, even if the clock does, so that "known at a
            // time" always names a prefix of the log.
            let mut clock = DateTime::<Utc>::MIN_UTC;
            while let Some(first) = jobs.blocking_recv() {
                let mut group = Vec::new();
                let mut stop = false;
                let mut size = 0;
                let mut next = Some(first);
                while let Some(job) = next.take() {
                    match job {
                        Job::Stop => {
                            stop = true;
                            break;
                        }
                        Job::Append {
                            commands,
                            writer,
                            reply,
                        } => {
                            size += commands.len();
                            group.push((commands, writer, reply));
                        }
                    }
                    if size < MAX_GROUP_EVENTS {
                        next = jobs.try_recv().ok();
                    }
                }
                clock = clock.max(shared.config.clock.now().trunc_subsecs(6));
                commit(&shared, group, clock);
                if stop {
                    break;
                }
            }
            // Jobs still queued are dropped here; their callers are told the server is stopping.
        })
        .map_err(|e| Error::Io(format!("cannot start the writer thread: {e}")))
}

/// What one command came to.
enum Outcome {
    /// Appended as the event at this index of the group's events.
    Appended(usize),
    /// Its request_id had already produced the event at this seq, with the same content.
    Replay(u64),
}

type Reply = oneshot::Sender<Result<Vec<Receipt>, Error>>;

fn commit(shared: &Arc<Shared>, group: Vec<(Vec<Command>, Writer, Reply)>, now: DateTime<Utc>) {
    let today = now.with_timezone(&shared.config.utc_offset).date_naive();
    let ctx = Context {
        today,
        policy: &shared.config.policy,
    };
    let head = shared.log.head();
    let mut events: Vec<Event> = Vec::new();
    let mut answers: Vec<(Reply, Result<Vec<Outcome>, Error>)> = Vec::new();
    {
        let roll = shared
            .roll
            .read()
            .expect("the roll lock is never held across a panic");
        let mut staged_group = Staged::over(&*roll);
        for (commands, writer, reply) in group {
            let mut job = Staged::over(&staged_group);
            let first_event = events.len();
            let batch = commands.len() > 1;
            let mut outcomes = Vec::with_capacity(commands.len());
            let mut failure = None;
            for (i, command) in commands.iter().enumerate() {
                let staged = Staging {
                    shared,
                    head,
                    now,
                    ctx,
                    events: &events,
                    writer: &writer,
                };
                match staged.stage(&mut job, command) {
                    Ok(Decision::Append(event)) => {
                        outcomes.push(Outcome::Appended(events.len()));
                        events.push(*event);
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
                    staged_group.absorb(changes);
                    answers.push((reply, Ok(outcomes)));
                }
                Some(error) => {
                    events.truncate(first_event);
                    answers.push((reply, Err(error)));
                }
            }
        }
    }

    let committed = if events.is_empty() {
        Ok(Vec::new())
    } else {
        append(shared, &events)
    };
    let positions = match committed {
        Ok(positions) => positions,
        Err(error) => {
            tracing::error!(%error, events = events.len(), "commit failed; nothing was appended");
            for (reply, _) in answers {
                let _ = reply.send(Err(error.clone()));
            }
            return;
        }
    };
    {
        let mut roll = shared
            .roll
            .write()
            .expect("the roll lock is never held across a panic");
        let history = LogHistory(&shared.log);
        for event in &events {
            if let Err(error) = roll.apply(event, &history) {
                // The events are durable and every job is still answered truthfully, but the
                // roll no longer matches the log: stop taking writes until a rebuild.
                tracing::error!(%error, seq = event.seq, "the roll could not follow the log");
                *shared
                    .failed
                    .lock()
                    .expect("the failure lock is never held across a panic") = Some(format!(
                    "the roll could not apply event {}: {error}",
                    event.seq
                ));
                break;
            }
        }
        shared.committed.send_replace(roll.head());
    }
    shared.maybe_checkpoint();
    for (reply, outcome) in answers {
        let receipts = outcome.and_then(|outcomes| {
            outcomes
                .into_iter()
                .map(|outcome| receipt(shared, head, &events, &positions, outcome))
                .collect()
        });
        let _ = reply.send(receipts);
    }
}

/// Encodes the events and appends them durably.
fn append(shared: &Shared, events: &[Event]) -> Result<Vec<Head>, Error> {
    let bodies = events
        .iter()
        .map(|event| {
            serde_json::to_vec(event)
                .map_err(|e| Error::Io(format!("cannot encode event {}: {e}", event.seq)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let positions = shared.log.append(&bodies)?;
    for (event, position) in events.iter().zip(&positions) {
        assert_eq!(
            event.seq, position.seq,
            "the writer is the log's only appender, so their seqs agree"
        );
    }
    Ok(positions)
}

fn receipt(
    shared: &Shared,
    head: Head,
    events: &[Event],
    positions: &[Head],
    outcome: Outcome,
) -> Result<Receipt, Error> {
    let (event, hash, replayed) = match outcome {
        Outcome::Appended(index) => (&events[index], positions[index].hash, false),
        Outcome::Replay(seq) if seq > head.seq => {
            let index = (seq - head.seq - 1) as usize;
            (&events[index], positions[index].hash, true)
        }
        Outcome::Replay(seq) => {
            let original = original_event(shared, seq)?;
            return Ok(Receipt {
                seq,
                version: original.event.version,
                hash: original.hash,
                recorded_at: original.event.recorded_at,
                replayed: true,
            });
        }
    };
    Ok(Receipt {
        seq: event.seq,
        version: event.version,
        hash,
        recorded_at: event.recorded_at,
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
    Append(Box<Event>),
    Replay(u64),
}

/// Everything one command is staged against.
struct Staging<'a> {
    shared: &'a Shared,
    head: Head,
    now: DateTime<Utc>,
    ctx: Context<'a>,
    /// The group's events staged before this command.
    events: &'a [Event],
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

    /// The event at `seq`, committed or staged in this group.
    fn event(&self, seq: u64) -> Result<Option<Event>, Error> {
        if seq > self.head.seq {
            let index = (seq - self.head.seq - 1) as usize;
            return Ok(self.events.get(index).cloned());
        }
        if seq == 0 {
            return Ok(None);
        }
        Ok(Some(original_event(self.shared, seq)?.event))
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
                .cloned(),
        );
        Ok(stream)
    }

    fn stage(&self, view: &mut Staged<'_>, command: &Command) -> Result<Decision, Error> {
        if let Some(request_id) = &command.request_id {
            if let Some(seq) = view.request(request_id) {
                let recorded_by = if seq > self.head.seq {
                    let index = (seq - self.head.seq - 1) as usize;
                    command.is_recorded_by(&self.events[index])
                } else {
                    command.is_recorded_by(&original_event(self.shared, seq)?.event)
                };
                return if recorded_by {
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
        let current = view.household(id);
        let before = current.as_ref().map(|(state, _)| state);
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
                decide_correction(self.ctx, &stream, command, &*view)?
            }
            _ => decide(self.ctx, before, command, &*view)?,
        };
        let seq = self.head.seq + self.events.len() as u64 + 1;
        let event = command.recorded(seq, version + 1, self.now, &self.writer.actor);
        self.check_scope(id, next.region_code)?;
        view.record(
            id,
            before,
            next,
            event.version,
            command.request_id.as_deref().map(|r| (r, seq)),
        );
        Ok(Decision::Append(Box::new(event)))
    }
}
