//! The log as auditors use it: chain verification, live subscriptions, checkpoints of the roll,
//! and the offline tools (verify, export, import, rebuild) that work on a stopped store.
//!
//! ```text
//!   subscribe(from)   read the log from `from` up to the committed head ──▶ bounded channel
//!        ▲                      │ caught up
//!        └── head moves ◀───────┘ wait for the writer's next durable commit (a watch)
//! ```
//!
//! A subscriber always reads from the log, never from what the writer is about to commit, so it
//! sees only durable events, in seq order, with no gap and no duplicate, and a slow one costs
//! the writers nothing: it simply falls behind and catches up from the log.
//!
//! ```text
//!   checkpoint = postcard(Roll) in sections, tied to (seq, hash(seq))
//!   delta      = the same of what changed since the checkpoint, tied to it and to its own
//!   open       = checkpoint (if the log has that hash at that seq), the delta laid over it
//!                (if it builds on it), + replay of the tail (read and decoded on a second
//!                thread while this one applies it)
//! ```
//!
//! A whole checkpoint every `checkpoint_every` events and a delta every `delta_every` in
//! between (both further apart on a roll of more households: `Spacing` in `app`) bound a
//! start-up's replay to the latter: a delta holds only the households and request entries
//! that changed since its base, so it is cheap enough to write often.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::{LogHistory, Recorded};
use crate::domain::{Event, RegionPrefix};
use crate::error::Error;
use crate::projection::{checkpoint_failed, Extent, Roll};
use crate::store::{chain, checkpoint, unpanicked, Head, Log, GENESIS};

/// Events a subscriber reads from the log per step.
const CHUNK: usize = 512;
/// Events buffered per subscriber before it must read more slowly.
pub const SUBSCRIBER_BUFFER: usize = 256;

/// Which events a subscription wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Events of households in this region (before or after the event). `None`: all.
    pub region: Option<RegionPrefix>,
    /// Events of these kinds (`identify`, `adjust`, …). Empty: all.
    pub kinds: BTreeSet<&'static str>,
}

impl Filter {
    fn matches(&self, roll: &Roll, recorded: &Recorded) -> bool {
        let event = &recorded.event;
        if !self.kinds.is_empty() && !self.kinds.contains(event.change.kind()) {
            return false;
        }
        let Some(prefix) = self.region else {
            return true;
        };
        match roll.event_regions(&event.household_id, event.seq) {
            Some((before, after)) => {
                prefix.contains(after) || before.is_some_and(|b| prefix.contains(b))
            }
            None => false,
        }
    }
}

/// The outcome of a chain verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Events checked.
    pub checked: u64,
    /// The last position verified (the hash the chain reaches there).
    pub verified: Head,
    /// The first seq that does not verify, and why.
    pub broken: Option<(u64, String)>,
}

/// Recomputes the chain over `[from, to]` (to the head if `to` is 0 or beyond it), starting
/// from the stored hash before `from`. `progress` is told the seq reached, now and then.
pub fn verify_chain(
    log: &Log,
    from: u64,
    to: u64,
    progress: &dyn Fn(u64),
) -> Result<ChainReport, Error> {
    let head = log.head().seq;
    let from = from.max(1);
    let to = if to == 0 || to > head { head } else { to };
    let mut previous = if from == 1 {
        GENESIS
    } else {
        log.get(from - 1)?.map(|e| e.hash).ok_or_else(|| {
            Error::invalid("from_seq", format!("{from} is beyond the head {head}"))
        })?
    };
    let mut report = ChainReport {
        checked: 0,
        verified: Head {
            seq: from - 1,
            hash: previous,
        },
        broken: None,
    };
    for entry in log.scan(from) {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                report.broken = Some((report.verified.seq + 1, error.to_string()));
                break;
            }
        };
        if entry.seq > to {
            break;
        }
        let seq = entry.seq;
        let computed = chain(&previous, &entry.body);
        if computed != entry.hash {
            report.broken = Some((
                seq,
                "the stored hash does not match SHA-256(previous hash ‖ body): the body or the hash was altered, or an event before it was dropped or moved".into(),
            ));
            break;
        }
        if let Err(error) = Recorded::decode(entry.clone()) {
            report.broken = Some((seq, error.to_string()));
            break;
        }
        previous = entry.hash;
        report.checked += 1;
        report.verified = Head {
            seq,
            hash: entry.hash,
        };
        if seq % 10_000 == 0 {
            progress(seq);
        }
    }
    progress(report.verified.seq);
    Ok(report)
}

/// Follows the log from `from`: the catch-up, then every durable commit, until the receiver is
/// dropped or `stop` turns true (then it sends one `Unavailable` that says where to resume).
pub(super) fn subscribe(
    shared: std::sync::Arc<super::Shared>,
    from: u64,
    filter: Filter,
    mut committed: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) -> mpsc::Receiver<Result<Recorded, Error>> {
    let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
    tokio::spawn(async move {
        let mut next = from.max(1);
        loop {
            let head = *committed.borrow_and_update();
            while next <= head {
                let shared = shared.clone();
                let filter = filter.clone();
                let start = next;
                // Reading and decoding is blocking work: off the async threads.
                let chunk = tokio::task::spawn_blocking(move || -> Result<Vec<Recorded>, Error> {
                    let mut out = Vec::new();
                    let entries: Vec<Recorded> = shared
                        .log
                        .scan(start)
                        .take(CHUNK.min((head - start + 1) as usize))
                        .map(|entry| entry.and_then(Recorded::decode))
                        .collect::<Result<_, _>>()?;
                    let roll = shared
                        .roll
                        .read()
                        .expect("the roll lock is never held across a panic");
                    for recorded in entries {
                        if filter.matches(&roll, &recorded) {
                            out.push(recorded);
                        }
                    }
                    Ok(out)
                })
                .await;
                let chunk = match chunk {
                    Ok(Ok(chunk)) => chunk,
                    Ok(Err(error)) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                    Err(join) => {
                        let _ = sender
                            .send(Err(Error::Io(format!(
                                "the subscription's reader failed: {join}"
                            ))))
                            .await;
                        return;
                    }
                };
                next = (next + CHUNK as u64).min(head + 1);
                for recorded in chunk {
                    if *stop.borrow() {
                        break;
                    }
                    if sender.send(Ok(recorded)).await.is_err() {
                        return;
                    }
                }
                if *stop.borrow() {
                    break;
                }
            }
            if *stop.borrow() {
                let _ = sender
                    .send(Err(Error::Unavailable(
                        "the server is shutting down; resubscribe from the seq after the last one you received".into(),
                    )))
                    .await;
                return;
            }
            tokio::select! {
                changed = committed.changed() => if changed.is_err() { return },
                _ = stop.changed() => {}
                () = sender.closed() => return,
            }
        }
    });
    receiver
}

/// The largest single text or packed state a checkpoint can hold and still be read: the
/// decoder reads each into one reused buffer (nothing in a roll borrows from its input). A
/// household whose state outgrew it (hundreds of thousands of measures) would make the
/// checkpoint unreadable, and the start-up replay the log instead.
const CHECKPOINT_ITEM_LIMIT: usize = 16 << 20;

/// Decodes a roll from a checkpoint's sections, side by side: each section is checked against
/// its digest and decoded on whichever thread is free, the largest first, and the roll is put
/// together from them. With a delta, only the sections of the whole checkpoint that the delta
/// does not hold whole are decoded, and the delta's are laid over them.
///
/// One thread decoding the whole payload left the other core nearly idle during a clean
/// restart (sled's open takes ~0.1–0.5 s then), and took 3.4–4.8 s at the scale run with
/// request_ids (10M events) even once its index shards were read by slicing.
fn decode_roll(
    whole: Vec<checkpoint::Section>,
    delta: Option<(u64, Vec<checkpoint::Section>)>,
) -> Result<Roll, String> {
    for sections in std::iter::once(&whole).chain(delta.as_ref().map(|(_, d)| d)) {
        if sections.len() != Roll::CHECKPOINT_SECTIONS {
            return Err(format!(
                "it has {} sections where a roll has {}",
                sections.len(),
                Roll::CHECKPOINT_SECTIONS
            ));
        }
    }
    let under_delta = delta.is_some();
    // (the section's place among those decoded, its extent, its number in its file, it)
    let mut queue: Vec<(usize, Extent, usize, checkpoint::Section)> = whole
        .into_iter()
        .enumerate()
        .filter(|(n, _)| !under_delta || Roll::is_under_delta(*n))
        .map(|(n, section)| (Extent::Whole, n, section))
        .chain(delta.into_iter().flat_map(|(base, sections)| {
            sections
                .into_iter()
                .enumerate()
                .map(move |(n, section)| (Extent::After(base), n, section))
        }))
        .enumerate()
        .map(|(place, (extent, n, section))| (place, extent, n, section))
        .collect();
    // Popped from the end: the largest first, so that no thread is left with a large one
    // when the others are done.
    queue.sort_by_key(|(.., section)| section.len());
    let queue = std::sync::Mutex::new(queue);
    let decode = || {
        // Zeroed on allocation, so its pages cost memory only as far as items reach.
        let mut scratch = vec![0u8; CHECKPOINT_ITEM_LIMIT];
        let mut decoded = Vec::new();
        loop {
            let next = queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop();
            let Some((place, extent, n, section)) = next else {
                return decoded;
            };
            let section = match section.open() {
                Ok(bytes) => Roll::decode_section(n, extent, bytes, &mut scratch)
                    .map_err(|e| format!("it does not decode ({e})")),
                Err(checkpoint::Unusable::Damaged(why)) => Err(why),
                Err(checkpoint::Unusable::Missing) => Err("it is gone".into()),
            };
            decoded.push((place, section));
        }
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(Roll::CHECKPOINT_SECTIONS);
    let mut decoded = std::thread::scope(|scope| {
        // A thread that cannot be had leaves its share to the others.
        let helpers: Vec<_> = (1..threads)
            .filter_map(|i| {
                std::thread::Builder::new()
                    .name(format!("checkpoint-read-{i}"))
                    .spawn_scoped(scope, decode)
                    .ok()
            })
            .collect();
        let mut decoded = decode();
        for helper in helpers {
            decoded.extend(
                helper
                    .join()
                    .map_err(|_| "decoding a section panicked".to_string())?,
            );
        }
        Ok::<_, String>(decoded)
    })?;
    decoded.sort_by_key(|(place, _)| *place);
    let sections = decoded
        .into_iter()
        .map(|(_, section)| section)
        .collect::<Result<_, _>>()?;
    Roll::from_sections(sections)
}

/// The checkpoints as read from their files, before they are checked against the log.
enum Checkpoint {
    Missing,
    /// Its file is damaged (the reason): the log is replayed from its start.
    Damaged(String),
    /// The whole checkpoint's header, the header of the delta laid over it if one was, and
    /// their roll or why it did not decode (boxed: a roll is large, and this travels between
    /// threads by value).
    Read {
        whole: Head,
        delta: Option<Head>,
        roll: Result<Box<Roll>, String>,
    },
}

/// Reads and decodes the checkpoint in `dir`, and the delta on it if there is one that builds
/// on it and decodes (else the checkpoint alone, and the reason is logged). Needs no log, so a
/// start-up can do it while the log opens.
fn read_checkpoint(dir: &Path) -> Checkpoint {
    let read_whole = || match checkpoint::read(dir) {
        Ok(read) => Ok(read),
        Err(checkpoint::Unusable::Missing) => Err(Checkpoint::Missing),
        Err(checkpoint::Unusable::Damaged(why)) => Err(Checkpoint::Damaged(why)),
    };
    let at_own_seq = |roll: Roll, seq: u64| {
        if roll.head() == seq {
            Ok(Box::new(roll))
        } else {
            Err("its roll is not at its own seq".to_string())
        }
    };
    let whole = match read_whole() {
        Ok(whole) => whole,
        Err(unusable) => return unusable,
    };
    let unusable =
        |why: &str| tracing::warn!(%why, "the delta cannot be used; the checkpoint alone is");
    let (at, sections) = match checkpoint::read_delta(dir) {
        Ok((delta, base, delta_sections)) if base == whole.0 => {
            match decode_roll(whole.1, Some((base.seq, delta_sections))) {
                Ok(roll) => {
                    return Checkpoint::Read {
                        whole: base,
                        delta: Some(delta),
                        roll: at_own_seq(roll, delta.seq),
                    }
                }
                Err(why) => {
                    unusable(&why);
                    // Read again: a section is read once, and the try used some.
                    match read_whole() {
                        Ok(whole) => whole,
                        Err(unusable) => return unusable,
                    }
                }
            }
        }
        Ok(_) | Err(checkpoint::Unusable::Missing) => whole,
        Err(checkpoint::Unusable::Damaged(why)) => {
            unusable(&why);
            whole
        }
    };
    Checkpoint::Read {
        whole: at,
        delta: None,
        roll: decode_roll(sections, None).and_then(|roll| at_own_seq(roll, at.seq)),
    }
}

/// Opens the log and loads the roll, decoding the checkpoint on other threads while sled
/// opens: sled 0.34.7 writes its snapshot only when it opens, so an open re-reads everything
/// written since the last (1.5–3.8 s after writing 10M events from an empty store, once ~7 s;
/// a server reopens sled after a checkpoint every few million events to bound it, see
/// `Shared::reopen_log_if_due`), and the checkpoint takes ~1–3 s to decode at that size
/// (`log_opened_ms` and `checkpoint_read_ms` in the start-up's log line); side by side, a
/// start-up waits for the longer of the two. (Decoding on one thread while sled opened, and
/// on this one too once it was open, so that the two did not share the two cores three ways,
/// was no faster: served in 4.6–5.2 s against 4.1–5.9 s, `ROUNDS=4 benches/start-up.sh` on a
/// store crashed at 10M events.) The checkpoint is still checked against the log before
/// anything is served.
pub fn open_with_roll(dir: &Path) -> Result<(Log, Roll, LoadedFrom), Error> {
    let timed = |read: &dyn Fn() -> Checkpoint| {
        let began = Instant::now();
        (read(), began.elapsed())
    };
    let ((log, log_opened_in), (checkpoint, checkpoint_read_in)) = std::thread::scope(|scope| {
        let reading = std::thread::Builder::new()
            .name("checkpoint-reader".into())
            .spawn_scoped(scope, || timed(&|| read_checkpoint(dir)));
        let began = Instant::now();
        let log = Log::open(dir);
        let log_opened_in = began.elapsed();
        let checkpoint = match reading {
            Ok(reading) => reading.join().unwrap_or_else(|_| {
                (
                    Checkpoint::Damaged("reading it panicked".into()),
                    Duration::ZERO,
                )
            }),
            // No second thread to be had: read it on this one.
            Err(_) => timed(&|| read_checkpoint(dir)),
        };
        ((log, log_opened_in), checkpoint)
    });
    let log = log?;
    let (roll, mut from) = unpanicked("the log", || load_roll_from(&log, checkpoint))?;
    from.log_opened_in = log_opened_in;
    from.checkpoint_read_in = checkpoint_read_in;
    Ok((log, roll, from))
}

/// Where a loaded roll started: a checkpoint, or the log's beginning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedFrom {
    /// The seq of the checkpoint it was read from; 0 when the whole log was replayed.
    pub checkpoint_seq: u64,
    /// The seq of the delta laid over that checkpoint; the checkpoint's when there was none.
    pub delta_seq: u64,
    /// The same in words, with the events replayed after it.
    pub how: String,
    /// How long each step of a start-up took, for its log line: sled's open and the
    /// checkpoint's decoding (side by side, so a start-up waits for the longer), then the
    /// replay of the tail. Zero where a step did not run.
    pub log_opened_in: Duration,
    pub checkpoint_read_in: Duration,
    pub replayed_in: Duration,
}

/// Loads the roll: the checkpoint if it matches the log, then the tail. Says which it did.
pub fn load_roll(log: &Log) -> Result<(Roll, LoadedFrom), Error> {
    load_roll_from(log, read_checkpoint(log.dir()))
}

fn load_roll_from(log: &Log, checkpoint: Checkpoint) -> Result<(Roll, LoadedFrom), Error> {
    let began = Instant::now();
    let head = log.head();
    let (mut roll, whole, delta) = match checkpoint {
        Checkpoint::Read { whole, delta, roll } => {
            // A checkpoint remembers how far the log reached: a log that now ends before
            // that, or holds another event there, lost or changed acknowledged events.
            for at in std::iter::once(whole).chain(delta) {
                if at.seq > head.seq {
                    return Err(Error::Corrupt(format!(
                        "the log ends at seq {}, but it reached seq {} when the checkpoint was taken: acknowledged events are missing; restore from an export",
                        head.seq, at.seq
                    )));
                }
                if at.seq > 0 && log.get(at.seq)?.is_none_or(|e| e.hash != at.hash) {
                    return Err(Error::Corrupt(format!(
                        "event {} is not the one the checkpoint was taken at: the log was altered or replaced; run `rollstore verify`, and `rollstore rebuild` if the log is right",
                        at.seq
                    )));
                }
            }
            match roll {
                Ok(roll) => (*roll, whole.seq, delta.map(|d| d.seq)),
                Err(why) => {
                    tracing::warn!(%why, "the checkpoint cannot be used; replaying the whole log");
                    (Roll::default(), 0, None)
                }
            }
        }
        Checkpoint::Missing => (Roll::default(), 0, None),
        Checkpoint::Damaged(why) => {
            tracing::warn!(%why, "the checkpoint cannot be used; replaying the whole log");
            (Roll::default(), 0, None)
        }
    };
    // The roll's head: the delta's, or the checkpoint's, or 0.
    let from = delta.unwrap_or(whole);
    let history = LogHistory(log);
    // The events read anyway are checked against the chain as they are read: a start-up that
    // replays reports a broken chain instead of serving it. (Before the checkpoint, the
    // checkpoint's own hash anchors the log; `rollstore verify` re-hashes all of it.)
    let previous = if from == 0 {
        GENESIS
    } else {
        log.get(from)?.map_or(GENESIS, |e| e.hash)
    };
    let mut replay = roll.replay();
    // What the replay adds to the roll goes to the long-lived heap (see `crate::heap`): this
    // thread applies; the reading thread's allocations (the decoded events) stay in its own.
    let disagreed = crate::heap::long_lived(|| {
        read_ahead(log, from + 1, Some(previous), |event| {
            match replay.apply(event, &history) {
                Ok(()) => ControlFlow::Continue(()),
                Err(error) => ControlFlow::Break(error),
            }
        })
    })?;
    drop(replay);
    if let Some(error) = disagreed {
        if from == 0 {
            return Err(error);
        }
        // The chain held, so the checkpoint is what disagrees: it is only a shortcut.
        tracing::warn!(%error, "the checkpoint does not match the log's tail; replaying the whole log");
        return load_roll_from(log, Checkpoint::Missing);
    }
    let how = match (from, delta) {
        (0, _) => format!("replayed {} events", head.seq),
        (_, None) => format!(
            "checkpoint at seq {from}, replayed {} events after it",
            head.seq - from
        ),
        (_, Some(_)) => format!(
            "checkpoint at seq {whole} and delta at seq {from}, replayed {} events after it",
            head.seq - from
        ),
    };
    Ok((
        roll,
        LoadedFrom {
            checkpoint_seq: whole,
            delta_seq: delta.unwrap_or(whole),
            how,
            log_opened_in: Duration::ZERO,
            checkpoint_read_in: Duration::ZERO,
            replayed_in: began.elapsed(),
        },
    ))
}

/// Replays the whole log into a fresh roll.
pub fn replay(log: &Log, progress: &dyn Fn(u64)) -> Result<Roll, Error> {
    let history = LogHistory(log);
    let mut roll = Roll::default();
    let mut replay = roll.replay();
    let failed = read_ahead(log, 1, None, |event| match replay.apply(event, &history) {
        Ok(()) => {
            if event.seq % 10_000 == 0 {
                progress(event.seq);
            }
            ControlFlow::Continue(())
        }
        Err(error) => ControlFlow::Break(error),
    })?;
    drop(replay);
    if let Some(error) = failed {
        return Err(error);
    }
    progress(roll.head());
    Ok(roll)
}

/// Events the log reader decodes per hand-off, and hand-offs it may be ahead by: enough that
/// neither side waits on the other for long, few enough that what waits is a few MiB.
const READ_AHEAD_CHUNK: usize = 1024;
const READ_AHEAD_CHUNKS: usize = 4;

/// Gives `each` the log from `from` on, decoded, in order: read, checked against the chain
/// (from the hash `previous` of the event before `from`, when given) and decoded on a second
/// thread, while `each` applies what was decoded on this one.
///
/// ```text
///   log-reader thread                                     this thread
///   scan ─▶ chain check ─▶ JSON decode ─▶ [chunks] ─────▶ each(&event), in seq order
///                       drops the events ◀── [spent] ◀──┘
/// ```
///
/// A replay's two halves cost about the same (reading, hashing and decoding against the
/// roll's indexes and packed states), so on two cores a start-up after a crash, a rebuild or
/// a verify takes little more than the longer half. At a large roll that was the applying half
/// (~60% of a start-up's samples against ~34%, before a replay gathered its request entries;
/// the two are about even since), so the events it is done with go back to the reader, which
/// allocated them, to be dropped there: freeing another thread's memory costs mimalloc more,
/// and a replay frees every event.
///
/// Ends with `Ok(Some(b))` when `each` breaks with `b`, `Ok(None)` at the log's end, or the
/// reader's first error, which comes after every event before it has been given to `each`; a
/// panic in the reader is an error too, never a log that seems to end early. When `each`
/// breaks, the reader stops at its next hand-off. Without a second thread to be had, it all
/// runs here.
fn read_ahead<B>(
    log: &Log,
    from: u64,
    previous: Option<[u8; 32]>,
    mut each: impl FnMut(&Event) -> ControlFlow<B>,
) -> Result<Option<B>, Error> {
    std::thread::scope(|scope| {
        let (chunks, handed) =
            std::sync::mpsc::sync_channel::<Result<Vec<Event>, Error>>(READ_AHEAD_CHUNKS);
        let (give_back, spent) = std::sync::mpsc::channel::<Vec<Event>>();
        let reader = std::thread::Builder::new()
            .name("log-reader".into())
            .spawn_scoped(scope, move || {
                // A chunk given back is emptied here, dropping its events, and filled again.
                let next_chunk = || match spent.try_recv() {
                    Ok(mut chunk) => {
                        chunk.clear();
                        chunk
                    }
                    Err(_) => Vec::with_capacity(READ_AHEAD_CHUNK),
                };
                let mut chunk = next_chunk();
                let read = unpanicked("the log", || {
                    for recorded in decoded(log, from, previous) {
                        chunk.push(recorded?.event);
                        if chunk.len() == READ_AHEAD_CHUNK {
                            let full = std::mem::replace(&mut chunk, next_chunk());
                            if chunks.send(Ok(full)).is_err() {
                                // `each` broke off.
                                return Ok(());
                            }
                        }
                    }
                    Ok(())
                });
                // Everything decoded before an error comes first: `each` applies it, as it
                // would have reading in place, before the error ends the reading.
                let _ = chunks.send(Ok(chunk));
                if let Err(error) = read {
                    let _ = chunks.send(Err(error));
                }
            });
        if reader.is_err() {
            for recorded in decoded(log, from, previous) {
                if let ControlFlow::Break(b) = each(&recorded?.event) {
                    return Ok(Some(b));
                }
            }
            return Ok(None);
        }
        for chunk in handed {
            let events = chunk?;
            for event in &events {
                if let ControlFlow::Break(b) = each(event) {
                    return Ok(Some(b));
                }
            }
            // The reader may have finished; then the events are dropped here.
            let _ = give_back.send(events);
        }
        Ok(None)
    })
}

/// The log from `from` on, each event checked against the chain (when `previous` is given)
/// and decoded: the reading half of [`read_ahead`].
fn decoded(
    log: &Log,
    from: u64,
    previous: Option<[u8; 32]>,
) -> impl Iterator<Item = Result<Recorded, Error>> + '_ {
    let mut previous = previous;
    log.scan(from).map(move |entry| {
        let entry = entry?;
        if let Some(previous) = &mut previous {
            if chain(previous, &entry.body) != entry.hash {
                return Err(Error::Corrupt(format!(
                    "the hash chain breaks at event {}: its body or hash was altered, or an event before it was dropped or moved; run `rollstore verify` and restore from an export",
                    entry.seq
                )));
            }
            *previous = entry.hash;
        }
        Recorded::decode(entry)
    })
}

/// The log position a checkpoint of `roll` is tied to: its head and that event's hash.
fn checkpoint_head(log: &Log, roll: &Roll) -> Result<Head, Error> {
    let seq = roll.head();
    let hash = if seq == 0 {
        GENESIS
    } else {
        log.get(seq)?
            .map(|e| e.hash)
            .ok_or_else(|| Error::Corrupt(format!("the roll is at seq {seq}, beyond the log")))?
    };
    Ok(Head { seq, hash })
}

/// Writes the roll as the checkpoint at its head, encoding it straight to the file.
pub fn write_checkpoint(log: &Log, roll: &Roll) -> Result<Head, Error> {
    let drafted = draft_checkpoint(log, None, || roll)?;
    drafted.draft.commit()?;
    Ok(drafted.head)
}

/// A checkpoint encoded to its file, not yet synced or in place.
pub struct Drafted {
    pub head: Head,
    pub draft: checkpoint::Draft,
    /// The longest the roll was held for one piece: the longest a write waited for it.
    pub longest_hold: std::time::Duration,
}

/// Encodes the roll into a checkpoint file that is not yet synced or in place, taking the
/// roll with `read` for each piece and releasing it in between (see
/// [`Roll::begin_checkpoint`]), so that writes wait for a piece, not the whole roll: the first
/// fields are streamed to the file under the lock, then each piece of people, region entries
/// and households is encoded into memory under it and written out after it.
/// [`checkpoint::Draft::commit`], which syncs the file, needs no roll at all.
///
/// With a `base` (the whole checkpoint on disk), it is a delta on that checkpoint instead
/// ([`Extent::After`]).
pub fn draft_checkpoint<R: std::ops::Deref<Target = Roll>>(
    log: &Log,
    base: Option<Head>,
    read: impl Fn() -> R,
) -> Result<Drafted, Error> {
    let (head, mut draft, mut longest_hold) = {
        let roll = read();
        let held = std::time::Instant::now();
        let head = checkpoint_head(log, &roll)?;
        let (mut draft, extent) = match base {
            None => (checkpoint::Draft::create(log.dir(), head)?, Extent::Whole),
            Some(base) => (
                checkpoint::Draft::create_delta(log.dir(), head, base)?,
                Extent::After(base.seq),
            ),
        };
        draft.encode(|out| roll.begin_checkpoint(extent, out))?;
        (head, draft, held.elapsed())
    };
    let mut piece = Vec::new();
    // The first fields are a section, and so is each part, ended here whatever it holds: the
    // checkpoint has a roll's number of sections.
    let first = draft.end_section();
    let mut write_part = |part: usize| -> Result<(), Error> {
        loop {
            piece.clear();
            let done = {
                let roll = read();
                let held = std::time::Instant::now();
                let done = roll.continue_checkpoint(part, Roll::CHECKPOINT_STEP, &mut piece);
                longest_hold = longest_hold.max(held.elapsed());
                done?
            };
            draft.encode(|out| out.write_all(&piece).map_err(checkpoint_failed))?;
            if done {
                return draft.end_section();
            }
        }
    };
    let written = first.and_then(|()| (0..Roll::CHECKPOINT_PARTS).try_for_each(&mut write_part));
    if written.is_err() {
        // Otherwise every later write would keep saving households and region entries for a
        // checkpoint that will never read them.
        read().end_checkpoint();
    }
    written.map(|()| Drafted {
        head,
        draft,
        longest_hold,
    })
}

/// What `rollstore verify` found.
#[derive(Debug, Clone)]
pub struct StoreReport {
    pub chain: ChainReport,
    /// How the roll the server would use was loaded (checkpoint and tail, or a replay).
    pub loaded: String,
    /// Where the loaded roll differs from a replay of the whole log, if it does.
    pub projection_mismatch: Option<String>,
}

impl StoreReport {
    pub fn ok(&self) -> bool {
        self.chain.broken.is_none() && self.projection_mismatch.is_none()
    }
}

/// Checks a stopped store: the chain, and the roll (checkpoint + tail: the stream index and
/// every projection) against a replay of the whole log.
pub fn verify_store(dir: &Path, progress: &dyn Fn(&str, u64, u64)) -> Result<StoreReport, Error> {
    let log = Log::open(dir)?;
    let head = log.head().seq;
    let chain = verify_chain(&log, 1, 0, &|seq| progress("chain", seq, head))?;
    if chain.broken.is_some() {
        return Ok(StoreReport {
            chain,
            loaded: "not loaded: the chain is broken".into(),
            projection_mismatch: None,
        });
    }
    let (loaded, LoadedFrom { how, .. }) = load_roll(&log)?;
    let replayed = replay(&log, &|seq| progress("replay", seq, head))?;
    let projection_mismatch = (loaded != replayed).then(|| {
        format!(
            "the loaded roll ({how}) differs from a replay: {} vs {} households, head {} vs {}",
            loaded.households(),
            replayed.households(),
            loaded.head(),
            replayed.head()
        )
    });
    Ok(StoreReport {
        chain,
        loaded: how,
        projection_mismatch,
    })
}

/// Drops the checkpoint, replays the whole log, and writes a new checkpoint.
pub fn rebuild_store(dir: &Path, progress: &dyn Fn(u64, u64)) -> Result<Head, Error> {
    let log = Log::open(dir)?;
    let head = log.head().seq;
    checkpoint::remove(dir)?;
    let roll = replay(&log, &|seq| progress(seq, head))?;
    write_checkpoint(&log, &roll)
}

/// One line of an export: an event's position, its hash, and its exact body.
#[derive(Debug, Serialize, Deserialize)]
struct ExportLine {
    seq: u64,
    hash: String,
    /// The body, as the UTF-8 text it is (serde_json's encoding of the event).
    body: String,
}

/// Writes every event, one JSON line each, with its body and hash. Returns the head.
pub fn export(dir: &Path, out: &mut dyn Write, progress: &dyn Fn(u64, u64)) -> Result<Head, Error> {
    let log = Log::open(dir)?;
    let head = log.head();
    for entry in log.scan(1) {
        let entry = entry?;
        let body = String::from_utf8(entry.body)
            .map_err(|_| Error::Corrupt(format!("event {} is not UTF-8 text", entry.seq)))?;
        let line = ExportLine {
            seq: entry.seq,
            hash: hex::encode(entry.hash),
            body,
        };
        serde_json::to_writer(&mut *out, &line)
            .map_err(|e| Error::Io(format!("cannot write the export: {e}")))?;
        out.write_all(b"\n")?;
        if entry.seq % 10_000 == 0 {
            progress(entry.seq, head.seq);
        }
    }
    out.flush()?;
    progress(head.seq, head.seq);
    Ok(head)
}

/// Imports an export into an empty store, re-verifying the chain line by line; a broken file is
/// refused with its line number and nothing is kept. Returns the head.
pub fn import(dir: &Path, input: &mut dyn BufRead, progress: &dyn Fn(u64)) -> Result<Head, Error> {
    const BATCH: usize = 10_000;
    // Only into a new directory: a refused import then removes all it made.
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(Error::invalid(
            "data",
            format!(
                "{} is not empty; import only into a new or empty directory",
                dir.display()
            ),
        ));
    }
    let log = Log::open(dir)?;
    let mut previous = GENESIS;
    let mut pending: Vec<(Vec<u8>, [u8; 32])> = Vec::new();
    let flush = |pending: &mut Vec<(Vec<u8>, [u8; 32])>| -> Result<(), Error> {
        let bodies: Vec<Vec<u8>> = pending.iter().map(|(b, _)| b.clone()).collect();
        let positions = log.append(&bodies)?;
        for (position, (_, hash)) in positions.iter().zip(pending.iter()) {
            if &position.hash != hash {
                return Err(Error::Corrupt(format!(
                    "event {} re-hashed differently",
                    position.seq
                )));
            }
        }
        pending.clear();
        Ok(())
    };
    let mut line_number = 0u64;
    let mut text = String::new();
    let broken = |line: u64, why: String| Error::invalid(format!("line {line}"), why);
    let result = (|| -> Result<Head, Error> {
        loop {
            text.clear();
            if input.read_line(&mut text)? == 0 {
                break;
            }
            line_number += 1;
            if text.trim().is_empty() {
                continue;
            }
            let line: ExportLine = serde_json::from_str(&text)
                .map_err(|e| broken(line_number, format!("not an export line: {e}")))?;
            let expected_seq = line_number;
            if line.seq != expected_seq {
                return Err(broken(
                    line_number,
                    format!("seq {} where {expected_seq} was expected", line.seq),
                ));
            }
            let mut hash = GENESIS;
            hex::decode_to_slice(&line.hash, &mut hash)
                .map_err(|_| broken(line_number, "the hash is not 64 hex digits".into()))?;
            let body = line.body.into_bytes();
            if chain(&previous, &body) != hash {
                return Err(broken(
                    line_number,
                    format!(
                        "event {} does not verify: its hash is not SHA-256(previous hash ‖ body)",
                        line.seq
                    ),
                ));
            }
            Recorded::decode(crate::store::Entry {
                seq: line.seq,
                hash,
                body: body.clone(),
            })
            .map_err(|e| broken(line_number, e.to_string()))?;
            previous = hash;
            pending.push((body, hash));
            if pending.len() == BATCH {
                flush(&mut pending)?;
                progress(line_number);
            }
        }
        flush(&mut pending)?;
        progress(line_number);
        Ok(log.head())
    })();
    match result {
        Ok(head) => {
            let roll = replay(&log, &|_| {})?;
            write_checkpoint(&log, &roll)?;
            Ok(head)
        }
        Err(error) => {
            drop(log);
            // Nothing of a refused file is kept: the store was empty, so empty it again.
            let _ = std::fs::remove_dir_all(dir);
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        parse_date, Adjustment, Change, Command, Event, HouseholdId, MemberAdded,
        MemberAddedReason, MemberRemoved, MemberRemovedReason, RegionCode,
    };
    use crate::projection::check_payload;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// The demo data set's commands, folded into a roll one by one as the writer would (each
    /// becomes the next event), with the log they make kept in memory for corrections.
    struct Replay {
        commands: std::vec::IntoIter<Command>,
        log: Events,
        versions: HashMap<HouseholdId, u64>,
        roll: Roll,
    }

    /// The log so far, in memory.
    #[derive(Default)]
    struct Events(RefCell<Vec<Event>>);

    impl crate::projection::History for Events {
        fn events(&self, seqs: &[u64]) -> Result<Vec<Event>, Error> {
            let events = self.0.borrow();
            Ok(seqs
                .iter()
                .map(|s| events[*s as usize - 1].clone())
                .collect())
        }
    }

    impl Replay {
        fn of_demo() -> Self {
            Self {
                commands: crate::demo::baota::generate(3).commands.into_iter(),
                log: Events::default(),
                versions: HashMap::new(),
                roll: Roll::default(),
            }
        }

        /// Applies the next `n` commands (fewer if the data set runs out).
        fn apply(&mut self, n: usize) {
            for command in self.commands.by_ref().take(n) {
                let version = self
                    .versions
                    .entry(command.household_id.clone())
                    .or_insert(0);
                *version += 1;
                let seq = self.roll.head() + 1;
                let event = command.recorded(seq, *version, chrono::Utc::now(), "test");
                self.log.0.borrow_mut().push(event.clone());
                self.roll.apply(&event, &self.log).unwrap();
            }
        }

        /// The bodies of the events applied so far, as the log stores them.
        fn bodies(&self) -> Vec<Vec<u8>> {
            let events = self.log.0.borrow();
            events
                .iter()
                .map(|event| serde_json::to_vec(event).unwrap())
                .collect()
        }
    }

    /// A checkpoint of `extent` of the replay's roll as `draft_checkpoint` writes one, section
    /// by section, `step` entries a piece, with `between` more commands applied after each
    /// piece.
    fn checkpoint_sections(
        replay: &mut Replay,
        extent: Extent,
        step: usize,
        between: usize,
    ) -> Vec<Vec<u8>> {
        let mut first = Vec::new();
        replay.roll.begin_checkpoint(extent, &mut first).unwrap();
        let mut sections = vec![first];
        for part in 0..Roll::CHECKPOINT_PARTS {
            let mut section = Vec::new();
            while !replay
                .roll
                .continue_checkpoint(part, step, &mut section)
                .unwrap()
            {
                replay.apply(between);
            }
            sections.push(section);
        }
        sections
    }

    /// The roll a start-up decodes from these sections of a whole checkpoint, each read from a
    /// stream through a scratch buffer of `scratch` bytes.
    fn decoded(sections: &[Vec<u8>], scratch: usize) -> Result<Roll, String> {
        decoded_with(sections, None, scratch)
    }

    /// The same, with the sections of a delta on the checkpoint at `base` laid over it (and
    /// of the checkpoint, only those a delta does not replace).
    fn decoded_with(
        whole: &[Vec<u8>],
        delta: Option<(u64, &[Vec<u8>])>,
        scratch: usize,
    ) -> Result<Roll, String> {
        let mut scratch = vec![0u8; scratch];
        let whole = whole
            .iter()
            .enumerate()
            .filter(|(n, _)| delta.is_none() || Roll::is_under_delta(*n))
            .map(|(n, bytes)| (n, Extent::Whole, bytes));
        let delta = delta.into_iter().flat_map(|(base, sections)| {
            let extent = Extent::After(base);
            sections
                .iter()
                .enumerate()
                .map(move |(n, b)| (n, extent, b))
        });
        let sections = whole
            .chain(delta)
            .map(|(n, extent, bytes)| Roll::decode_section(n, extent, &bytes[..], &mut scratch))
            .collect::<Result<_, _>>()?;
        Roll::from_sections(sections)
    }

    /// Every type a roll holds must survive the checkpoint's encoding, which does not describe
    /// itself: a field that serde skips when empty would not decode.
    #[test]
    fn a_full_roll_survives_the_checkpoint_encoding() {
        let mut replay = Replay::of_demo();
        replay.apply(3_000);
        let roll = replay.roll.clone();
        let bytes = postcard::to_stdvec(&roll).unwrap();
        let decoded_whole: Roll = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(decoded_whole, roll);
        // Read as a start-up reads it, section by section from a stream through one small
        // buffer: this fails if anything in a roll borrows from its input (each borrow would
        // keep its bytes).
        let sections = checkpoint_sections(&mut replay, Extent::Whole, Roll::CHECKPOINT_STEP, 0);
        assert_eq!(
            sections.concat(),
            bytes,
            "the sections are the roll's encoding"
        );
        assert_eq!(decoded(&sections, 4096).unwrap(), roll);
        assert!(bytes.len() > 100 * 4096, "the roll outgrows the buffer");
        // A section of another kind than the one expected there, or cut short, or running on,
        // is refused, never read as something else. (Two region trees swapped would read: the
        // table's digest keeps sections in their order, and this is about decoding.)
        let mut swapped = sections.clone();
        // A households section and the person index's (the third section from the end).
        swapped.swap(2, Roll::CHECKPOINT_SECTIONS - 3);
        let mut short = sections.clone();
        short[5].pop();
        let mut long = sections.clone();
        long[1].push(0);
        for (case, sections) in [
            ("swapped", swapped),
            ("short", short),
            ("long", long),
            ("missing", sections[..5].to_vec()),
        ] {
            assert!(decoded(&sections, 4096).is_err(), "{case}");
        }
    }

    /// A checkpoint written a piece at a time, with writes in between that change households
    /// it has written, households it has not reached yet, and add new ones, shows the roll as
    /// it was when it began; the roll cloned then is the oracle. Without writes, its bytes are
    /// the whole roll's encoding.
    #[test]
    fn a_checkpoint_taken_while_writes_go_on_shows_the_roll_as_it_began() {
        // (households a piece, commands applied between pieces)
        let cases = [
            (1, 0),
            (1, 1),
            (97, 13),
            (500, 400),
            (3_000, 2_500),
            (100_000, 0),
        ];
        for (step, between) in cases {
            let mut replay = Replay::of_demo();
            replay.apply(12_000);
            let began = replay.roll.clone();
            let sections = checkpoint_sections(&mut replay, Extent::Whole, step, between);
            let case = format!("{step} a piece, {between} commands between");
            check_payload(&case, &sections.concat(), &began, &replay.roll, between > 0);
            assert!(decoded(&sections, 1 << 20).expect(&case) == began, "{case}");
            // The checkpoint ended with its last piece: another may begin.
            replay
                .roll
                .begin_checkpoint(Extent::Whole, &mut Vec::new())
                .expect(&case);
        }
    }

    /// A delta written a piece at a time while writes go on, laid over the whole checkpoint it
    /// builds on (itself written while writes went on), shows the roll as it was when the
    /// delta began; the roll cloned then is the oracle. It holds only the households that
    /// changed: fewer bytes of households than a whole checkpoint of that roll.
    #[test]
    fn a_delta_laid_over_its_checkpoint_shows_the_roll_as_the_delta_began() {
        // (commands before the checkpoint, then before the delta, entries a piece, commands
        // applied between pieces)
        let cases = [
            // Nothing changed since the checkpoint: the delta's roll is the checkpoint's.
            (6_000, 0, Roll::CHECKPOINT_STEP, 0),
            (6_000, 1, Roll::CHECKPOINT_STEP, 0),
            (6_000, 2_000, 1, 1),
            (6_000, 2_000, 97, 13),
            // More joined since the checkpoint than before it.
            (2_000, 6_000, 500, 400),
            (6_000, 2_000, 100_000, 0),
        ];
        let households = |sections: &[Vec<u8>]| -> usize {
            sections[1..=Roll::HOUSEHOLD_SECTIONS]
                .iter()
                .map(Vec::len)
                .sum()
        };
        for (before, since, step, between) in cases {
            let case = format!(
                "{before} then {since} commands, {step} a piece, {between} commands between"
            );
            let mut replay = Replay::of_demo();
            replay.apply(before);
            let base = replay.roll.head();
            let whole = checkpoint_sections(&mut replay, Extent::Whole, step, between);
            replay.apply(since);
            let began = replay.roll.clone();
            let delta = checkpoint_sections(&mut replay, Extent::After(base), step, between);
            let laid = decoded_with(&whole, Some((base, &delta)), 1 << 20).expect(&case);
            assert!(laid == began, "{case}: not the roll as the delta began");
            let whole_now = checkpoint_sections(
                &mut Replay {
                    commands: Vec::new().into_iter(),
                    log: Events::default(),
                    versions: HashMap::new(),
                    roll: began.clone(),
                },
                Extent::Whole,
                Roll::CHECKPOINT_STEP,
                0,
            );
            assert!(
                households(&delta) < households(&whole_now),
                "{case}: the delta holds {} bytes of households, a whole checkpoint {}",
                households(&delta),
                households(&whole_now)
            );
        }
    }

    /// The person index and the region trees a start-up derives for the households a delta
    /// changed are the ones the fold kept, in what the demo's data set may not reach after a
    /// checkpoint: a household moving back to a region it left before it, or on and back, and
    /// a person leaving one household for another. The roll cloned as the delta began is the
    /// oracle, as above.
    #[test]
    fn a_delta_derives_the_indexes_of_households_and_people_that_moved() {
        let mut demo = Replay::of_demo();
        demo.apply(400);
        // A household of two or more people, and another: the first in id order, so that
        // every run tries the same ones.
        let (first, second) = {
            let mut ids: Vec<&HouseholdId> = demo.versions.keys().collect();
            ids.sort();
            let mut households = ids.into_iter().filter_map(|id| {
                let state = demo.roll.household(id)?.state.unpack().ok()?;
                Some((id.clone(), state))
            });
            let first = households
                .by_ref()
                .find(|(_, state)| state.members.len() > 1)
                .expect("the demo has households of several people");
            let second = households.next().expect("the demo has more households");
            (first, second)
        };
        let ((one, state), (other, _)) = (first, second);
        let home = state.region_code;
        let away = if home == RegionCode::parse("610603100001").unwrap() {
            RegionCode::parse("610603100002").unwrap()
        } else {
            RegionCode::parse("610603100001").unwrap()
        };
        let mover = state.members[1].clone();
        let adjust = |id: &HouseholdId, adjustment: Adjustment| Command {
            household_id: id.clone(),
            effective_date: parse_date("2020-06-30").unwrap(),
            document_ref: "测试".into(),
            expected_version: None,
            request_id: None,
            change: Change::Adjust(adjustment),
        };
        let relocate = |to| {
            adjust(
                &one,
                Adjustment {
                    relocate_to: Some(to),
                    ..Adjustment::default()
                },
            )
        };
        let leaves = adjust(
            &one,
            Adjustment {
                members_removed: vec![MemberRemoved {
                    id_number: mover.id_number,
                    reason: MemberRemovedReason::TransferOut,
                }],
                ..Adjustment::default()
            },
        );
        let joins = adjust(
            &other,
            Adjustment {
                members_added: vec![MemberAdded {
                    member: mover,
                    reason: MemberAddedReason::TransferIn,
                }],
                ..Adjustment::default()
            },
        );
        // (commands before the checkpoint, commands after it, before the delta)
        let cases = [
            (vec![relocate(away)], vec![relocate(home)]),
            (vec![relocate(away)], vec![relocate(home), relocate(away)]),
            (vec![], vec![relocate(away), relocate(home)]),
            (vec![], vec![leaves.clone(), joins.clone()]),
            (vec![leaves], vec![joins]),
        ];
        for (n, (before, after)) in cases.into_iter().enumerate() {
            let mut replay = Replay::of_demo();
            replay.apply(400);
            replay.commands = before.into_iter();
            replay.apply(usize::MAX);
            let base = replay.roll.head();
            let whole = checkpoint_sections(&mut replay, Extent::Whole, Roll::CHECKPOINT_STEP, 0);
            replay.commands = after.into_iter();
            replay.apply(usize::MAX);
            let began = replay.roll.clone();
            let delta = checkpoint_sections(&mut replay, Extent::After(base), 7, 0);
            let laid = decoded_with(&whole, Some((base, &delta)), 1 << 20).expect("it decodes");
            assert!(laid == began, "case {n}: not the roll as the delta began");
        }
    }

    /// A delta laid over a checkpoint it does not build on (an older one, which lacks
    /// households the delta did not change) is refused, not laid over it anyway.
    #[test]
    fn a_delta_on_another_checkpoint_does_not_fit() {
        let mut replay = Replay::of_demo();
        replay.apply(2_000);
        let older = checkpoint_sections(&mut replay, Extent::Whole, Roll::CHECKPOINT_STEP, 0);
        replay.apply(4_000);
        let base = replay.roll.head();
        replay.apply(500);
        let delta = checkpoint_sections(&mut replay, Extent::After(base), Roll::CHECKPOINT_STEP, 0);
        let why = decoded_with(&older, Some((base, &delta)), 1 << 20)
            .map(|roll| roll.head())
            .expect_err("a misfit is refused");
        assert!(why.contains("the delta does not fit its base"), "{why}");
    }

    /// A checkpoint whose digest holds but whose households are ahead of its seq (what a
    /// checkpoint that failed to keep households as they were would look like) is not folded
    /// into: the start-up notices a household that already holds a tail event, and replays the
    /// whole log instead.
    #[test]
    fn a_checkpoint_that_does_not_match_its_seq_gives_way_to_a_replay() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        let mut replay = Replay::of_demo();
        replay.apply(2_000);
        let at = replay.roll.clone();
        replay.apply(1_000);
        let bodies = replay.bodies();
        log.append(&bodies).unwrap();
        // The indexes at seq 2,000, the rest as of 3,000.
        let mut first = Vec::new();
        at.begin_checkpoint(Extent::Whole, &mut first).unwrap();
        at.end_checkpoint();
        let mut sections = checkpoint_sections(&mut replay, Extent::Whole, usize::MAX, 0);
        sections[0] = first;
        let head = checkpoint_head(&log, &at).unwrap();
        let sections: Vec<&[u8]> = sections.iter().map(Vec::as_slice).collect();
        checkpoint::write(dir.path(), head, &sections).unwrap();

        let (loaded, from) = load_roll(&log).unwrap();
        assert_eq!(from.how, "replayed 3000 events");
        assert_eq!(from.checkpoint_seq, 0);
        assert!(loaded == replay.roll, "the replayed roll is not the log's");
    }

    /// A start-up uses a whole checkpoint, and replays the log instead of one with any byte
    /// of a section or of its table damaged: it never builds a roll from damaged bytes.
    #[test]
    fn a_checkpoint_with_a_damaged_section_gives_way_to_a_replay() {
        let dir = tempfile::tempdir().unwrap();
        let mut replay = Replay::of_demo();
        replay.apply(3_000);
        let bodies = replay.bodies();
        {
            let log = Log::open(dir.path()).unwrap();
            log.append(&bodies).unwrap();
            write_checkpoint(&log, &replay.roll).unwrap();
            let (loaded, from) = load_roll(&log).unwrap();
            assert_eq!(from.checkpoint_seq, 3_000);
            assert!(loaded == replay.roll);
        }
        let file = dir.path().join("roll.checkpoint");
        let good = std::fs::read(&file).unwrap();
        let len = good.len();
        // Across the sections (the households last and largest), and in the table at the end.
        for at in [
            100,
            len / 5,
            len / 3,
            len / 2,
            3 * len / 4,
            len - 300,
            len - 50,
            len - 1,
        ] {
            let mut bytes = good.clone();
            bytes[at] ^= 0x20;
            std::fs::write(&file, &bytes).unwrap();
            let (_log, loaded, from) = open_with_roll(dir.path()).unwrap();
            assert_eq!(from.checkpoint_seq, 0, "byte {at} of {len}");
            assert!(loaded == replay.roll, "byte {at} of {len}");
        }
        std::fs::write(&file, &good).unwrap();
        let (_log, loaded, from) = open_with_roll(dir.path()).unwrap();
        assert_eq!(from.checkpoint_seq, 3_000);
        assert!(loaded == replay.roll);
    }

    /// The read-ahead hands over the log as a scan in place reads it, across its hand-offs:
    /// from anywhere, stopped anywhere by its reader, and with an error only after every event
    /// before it.
    #[test]
    fn reading_ahead_gives_the_log_in_order_and_its_first_error_last() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        let mut replay = Replay::of_demo();
        replay.apply(2 * READ_AHEAD_CHUNK + 5);
        let mut bodies = replay.bodies();
        let good = bodies.len() as u64;
        // The last event does not decode.
        bodies.push(b"{}".to_vec());
        log.append(&bodies).unwrap();
        let chunk = READ_AHEAD_CHUNK as u64;
        // Errors as their text: `Error` has no equality.
        let read = |from: u64, previous: [u8; 32], stop: usize| -> Vec<Result<u64, String>> {
            let mut seqs = Vec::new();
            let ended = read_ahead(&log, from, Some(previous), |event| {
                if stop > 0 {
                    seqs.push(Ok(event.seq));
                }
                match seqs.len() == stop {
                    true => ControlFlow::Break(()),
                    false => ControlFlow::Continue(()),
                }
            });
            if let Err(error) = ended {
                seqs.push(Err(error.to_string()));
            }
            seqs
        };
        let hash_before = |seq: u64| match seq {
            1 => GENESIS,
            _ => log.get(seq - 1).unwrap().unwrap().hash,
        };
        // (from, events read before the reader stops)
        let cases = [
            (1, 0),
            (1, 1),
            (1, READ_AHEAD_CHUNK),
            (1, READ_AHEAD_CHUNK + 1),
            (2, 2 * READ_AHEAD_CHUNK),
            (chunk, 3),
            (chunk + 1, 1_000),
            (good - 1, 2),
        ];
        for (from, stop) in cases {
            let expected: Vec<Result<u64, String>> = (from..).take(stop).map(Ok).collect();
            assert_eq!(
                read(from, hash_before(from), stop),
                expected,
                "from {from}, {stop} read"
            );
        }
        // Read to the end: every good event, then the one that does not decode.
        for from in [1, chunk + 7, good, good + 1] {
            let mut all = read(from, hash_before(from), usize::MAX);
            let last = all.pop();
            assert_eq!(
                all,
                (from..=good).map(Ok).collect::<Vec<_>>(),
                "from {from}"
            );
            assert!(
                matches!(&last, Some(Err(why)) if why.contains(&format!("event {} does not decode", good + 1))),
                "from {from}: {last:?}"
            );
        }
        // A hash before `from` that is not the log's: the first event read does not verify.
        assert!(matches!(
            read(500, GENESIS, usize::MAX).as_slice(),
            [Err(why)] if why.contains("the hash chain breaks at event 500")
        ));
        // Past the head there is nothing to read.
        assert_eq!(read(good + 2, GENESIS, usize::MAX), Vec::new());
    }

    /// One checkpoint at a time; an abandoned one ends, and writes stop keeping households
    /// for it.
    #[test]
    fn a_second_checkpoint_waits_for_the_first_to_end() {
        let mut replay = Replay::of_demo();
        replay.apply(2_000);
        replay
            .roll
            .begin_checkpoint(Extent::Whole, &mut Vec::new())
            .unwrap();
        let refused = replay.roll.begin_checkpoint(Extent::Whole, &mut Vec::new());
        assert!(matches!(refused, Err(Error::Unavailable(_))), "{refused:?}");
        replay.roll.end_checkpoint();
        assert!(matches!(
            replay.roll.continue_checkpoint(0, 10, &mut Vec::new()),
            Err(Error::Unavailable(_))
        ));
        replay
            .roll
            .begin_checkpoint(Extent::Whole, &mut Vec::new())
            .unwrap();
    }
}
