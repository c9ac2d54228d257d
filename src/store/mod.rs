//! The log on disk: sled 0.34.7, the events of each commit packed into blocks, chained by
//! SHA-256, committed durably.
//!
//! ```text
//!   key  Key::Block(first)    value  record(first) ‖ record(first + 1) ‖ … (up to 6 KiB)
//!   record(seq)  =  hash(seq) ‖ len(seq) ‖ body(seq)
//!                   └ 32 bytes ┘└ u32 LE ┘└ the event's exact bytes ┘
//!   hash(0) = 32 zero bytes
//!   hash(n) = SHA-256(hash(n-1) ‖ body(n))
//! ```
//!
//! Why blocks: sled's cost is per item far more than per byte (it clones the leaf an insert
//! lands in), and one key per event made its inserts the largest part of a batch's commit.
//! A block holds the consecutive events of one commit, never of two, so a commit that failed
//! can be removed block by block. A block is at most [`BLOCK_BYTES`] of records (a record
//! larger than that gets a block of its own): sled splits a leaf past 17 items and writes any
//! item larger than a quarter of its segment to a blob file of its own, so with the 512 KiB
//! segments of stores made before `SEGMENT_BYTES` (still read and written), 17 blocks of
//! 6 KiB keep a leaf inline where 8 KiB ones would not. A store written one event to a key
//! (`Key::Event`, `hash ‖ body`) before blocks is read as it is; new commits go in blocks after
//! its events.
//!
//! [`Log::append`] is a group commit: it writes every body it is given at once (its blocks as
//! one sled batch, or one insert when they fit one block), then `flush()`es and `fsync`s the
//! database file, and only then moves the head. sled's flush ends in `sync_file_range`, which
//! survives a process crash but not a power cut; the `fsync` that follows covers both
//! (DESIGN.md §4). `seq`s are assigned here, from the head, so they are gapless by
//! construction.
//!
//! sled 0.34.7 writes its snapshot (where each of its pages is) only when it opens, and an
//! open re-reads everything written since the last snapshot: after a long run, most of a
//! start-up. [`Log::reopen`] closes and opens it again, so that the next open re-reads only
//! what came after; the app calls it after a checkpoint every few million events.
//!
//! This module knows bytes, keys and hashes, never what an event means: it does not decode
//! bodies and enforces no rule.

pub mod checkpoint;
mod keys;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use sha2::{Digest, Sha256};

pub use keys::Key;

use crate::error::Error;

/// A SHA-256 hash of the chain.
pub type Hash = [u8; 32];

/// The hash before the first event.
pub const GENESIS: Hash = [0u8; 32];

impl From<sled::Error> for Error {
    fn from(error: sled::Error) -> Self {
        match error {
            sled::Error::Corruption { .. } => Error::Corrupt(error.to_string()),
            sled::Error::Io(io) => io_error(io, "the store's file"),
            other => Error::Io(other.to_string()),
        }
    }
}

/// An I/O failure, by what the caller can do about it: a full disk is a condition to wait
/// out (`Unavailable`), anything else a fault.
fn io_error(error: std::io::Error, what: &str) -> Error {
    match error.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => Error::Unavailable(format!(
            "the disk holding {what} is full (no space left): nothing was written; free space and retry"
        )),
        _ => Error::Io(format!("{what}: {error}")),
    }
}

fn recovering() -> Error {
    Error::Unavailable(
        "the store was closed by a failed write (a full disk?) and reopens at the next request; retry shortly".into(),
    )
}

/// Extends the chain by one body.
pub fn chain(previous: &Hash, body: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(body);
    hasher.finalize().into()
}

/// The last committed position of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: Hash,
}

impl Head {
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: GENESIS,
    };
}

/// One stored entry: the body's bytes exactly as hashed, and the hash stored with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub hash: Hash,
    pub body: Vec<u8>,
}

/// The most bytes of records a block holds, unless one record alone is larger (see the module
/// documentation for why 6 KiB).
pub const BLOCK_BYTES: usize = 6 * 1024;

const HASH_LEN: usize = 32;
const LEN_LEN: usize = 4;

/// Appends one record (`hash ‖ len ‖ body`) to a block's bytes.
fn push_record(block: &mut Vec<u8>, hash: &Hash, body: &[u8]) {
    let len = u32::try_from(body.len()).expect("Log::append refuses bodies of 4 GiB or more");
    block.extend_from_slice(hash);
    block.extend_from_slice(&len.to_le_bytes());
    block.extend_from_slice(body);
}

/// The bytes of one block holding `entries`, which must be consecutive: the block's key is the
/// first one's seq, and the others' seqs follow from their places. For tools and tests that
/// write the raw log (the audit tests tamper with it this way); [`Log::append`] is the writer.
pub fn encode_block(entries: &[Entry]) -> Vec<u8> {
    let mut block = Vec::new();
    for entry in entries {
        push_record(&mut block, &entry.hash, &entry.body);
    }
    block
}

/// How sled is opened on the store in `dir`: by the log, and by tools and tests that must reach
/// sled itself (the audit tests tamper with the raw log). sled refuses to open a store with
/// another segment size than the one it was made with, so anything that opens it goes through
/// this.
pub fn sled_config(dir: &Path) -> sled::Config {
    sled::Config::new()
        .path(dir)
        .segment_size(segment_bytes(dir))
        // Every commit flushes; a background flusher would only race with it.
        .flush_every_ms(None)
        // Events are read back only for histories and corrections, scattered over the log: a
        // large page cache buys little and counts against the server's memory. Appends touch
        // only the tree's right edge. (sled holds well over its nominal capacity: at 100k
        // households and 1M events, 64 MiB of cache meant a peak RSS of 354 MiB, 16 MiB meant
        // 282 MiB, batch throughput the same within noise.)
        .cache_capacity(16 * 1024 * 1024)
}

/// The entries of one stored item, whichever kind its key names, in seq order.
pub fn decode_item(key: &[u8], value: &[u8]) -> Result<Vec<Entry>, Error> {
    Ok(records(key, value)?
        .into_iter()
        .map(|record| record.entry(value))
        .collect())
}

/// The stored item holding `seq`, if any: the last block that starts at or before it, or else
/// (a store written before blocks) its own key.
fn item_holding(db: &sled::Db, seq: u64) -> Result<Option<(sled::IVec, sled::IVec)>, Error> {
    let blocks = Key::Block(0).encode()..=Key::Block(seq).encode();
    if let Some(item) = db.range(blocks).next_back() {
        return Ok(Some(item?));
    }
    let key = Key::Event(seq).encode();
    Ok(db
        .get(key)?
        .map(|value| (sled::IVec::from(&key[..]), value)))
}

/// One record of a stored item, its body still in the item's bytes.
struct Record {
    seq: u64,
    hash: Hash,
    body: std::ops::Range<usize>,
}

impl Record {
    fn entry(&self, value: &[u8]) -> Entry {
        Entry {
            seq: self.seq,
            hash: self.hash,
            body: value[self.body.clone()].to_vec(),
        }
    }
}

/// Splits a stored item into its records, checking every length against the bytes there are.
fn records(key: &[u8], value: &[u8]) -> Result<Vec<Record>, Error> {
    let hash_at = |at: usize| {
        let mut hash = GENESIS;
        hash.copy_from_slice(&value[at..at + HASH_LEN]);
        hash
    };
    match Key::decode(key)? {
        Key::Event(seq) => {
            if value.len() < HASH_LEN {
                return Err(Error::Corrupt(format!(
                    "event {seq} is {} bytes long, shorter than its hash",
                    value.len()
                )));
            }
            Ok(vec![Record {
                seq,
                hash: hash_at(0),
                body: HASH_LEN..value.len(),
            }])
        }
        Key::Block(first) => {
            let mut records = Vec::new();
            let mut at = 0;
            while at < value.len() {
                let seq = first.checked_add(records.len() as u64).ok_or_else(|| {
                    Error::Corrupt(format!("the block at {first} runs past the last seq"))
                })?;
                let damaged = || {
                    Error::Corrupt(format!(
                        "event {seq} (in the block at {first}) is cut short: the block is damaged"
                    ))
                };
                let len_at = at + HASH_LEN;
                let body_at = len_at + LEN_LEN;
                if value.len() < body_at {
                    return Err(damaged());
                }
                let mut len = [0u8; LEN_LEN];
                len.copy_from_slice(&value[len_at..body_at]);
                let end = usize::try_from(u32::from_le_bytes(len))
                    .ok()
                    .and_then(|len| body_at.checked_add(len))
                    .filter(|&end| end <= value.len())
                    .ok_or_else(damaged)?;
                records.push(Record {
                    seq,
                    hash: hash_at(at),
                    body: body_at..end,
                });
                at = end;
            }
            if records.is_empty() {
                return Err(Error::Corrupt(format!("the block at {first} is empty")));
            }
            Ok(records)
        }
    }
}

/// The open database and its file.
struct Storage {
    db: sled::Db,
    /// The database file, kept open to `fsync` it after each flush.
    file: File,
    /// The newest of sled's blob files already synced (see [`Storage::sync_blobs`]).
    blobs_synced: Mutex<u64>,
}

/// sled's segment size for a new store: 8 MiB, where sled's default is 512 KiB.
///
/// After every open, sled 0.34.7 retires each segment it found in use by counting all of its
/// segments twice (`SegmentAccountant::deactivate_segment`), so the work grows with the square
/// of their number, and it holds the lock that a write needs to start a segment meanwhile. At
/// 3M households and 30M events (~34,000 segments of 512 KiB, 17 GB), that held writes for
/// ~2.4 s after each planned reopen; with 2 MiB or 8 MiB segments, the same load's slowest
/// batch was the reopen itself (`benches/JOURNAL.md`, 2026-11-30's eighth and ninth
/// sessions). A national log ten times that size would have ten times the segments: held for
/// minutes with 512 KiB, ~15 s with 2 MiB, ~1 s with 8 MiB. Larger segments cost disk (1.89–
/// 1.92× the bodies against 1.79–1.82×) and one segment-sized write buffer of memory. sled
/// refuses to open a store with another segment size than the one it was made with, so a
/// store keeps its own (see [`segment_bytes`]).
const SEGMENT_BYTES: usize = 8 << 20;

/// The segment size to open the store in `dir` with: the one recorded in sled's `conf` file if
/// there is one (a store made before [`SEGMENT_BYTES`] keeps 512 KiB), else [`SEGMENT_BYTES`].
/// The file is lines of text followed by a binary checksum, so it is read as bytes. A `conf`
/// that does not say is left to sled, which reports it.
fn segment_bytes(dir: &Path) -> usize {
    std::fs::read(dir.join("conf"))
        .ok()
        .and_then(|conf| {
            String::from_utf8_lossy(&conf)
                .lines()
                .find_map(|line| line.strip_prefix("segment_size: "))
                .and_then(|size| size.trim().parse().ok())
        })
        .unwrap_or(SEGMENT_BYTES)
}

/// Runs `read` on sled, turning a panic (sled panics on some damaged files instead of
/// returning an error) into `Corrupt`.
pub(crate) fn unpanicked<T>(
    what: &str,
    read: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(Error::Corrupt(format!(
            "sled could not read {what}: {message}"
        )))
    })
}

impl Storage {
    fn open(dir: &Path) -> Result<Self, Error> {
        unpanicked(&format!("the store in {}", dir.display()), || {
            Self::open_unguarded(dir)
        })
    }

    fn open_unguarded(dir: &Path) -> Result<Self, Error> {
        let config = sled_config(dir);
        // sled releases its file lock from a background thread after the last handle of a
        // closed database is dropped; an immediate reopen in the same process (a recovery, a
        // planned reopen, a restart in tests) can find it still held for a moment. Wait for
        // it, briefly: polled every 2 ms for up to 5 s, since a reopen holds up every write
        // while it waits and the lock is usually free within a few milliseconds.
        let mut attempts = 0;
        let opened = loop {
            match config.open() {
                // sled reports a held lock as an `Other` error whose text says so.
                Err(sled::Error::Io(io))
                    if io.to_string().contains("could not acquire lock") && attempts < 2_500 =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                other => break other,
            }
        };
        let db = opened.map_err(|e| match e {
            sled::Error::Io(io) if io.kind() != std::io::ErrorKind::StorageFull => {
                Error::Io(format!(
                    "cannot open the store in {}: {io} (is another rollstore using it?)",
                    dir.display()
                ))
            }
            other => Error::from(other),
        })?;
        let file = File::open(dir.join("db"))
            .map_err(|e| Error::Io(format!("cannot open {}/db to sync it: {e}", dir.display())))?;
        Ok(Self {
            db,
            file,
            blobs_synced: Mutex::new(0),
        })
    }

    /// The last entry stored, if any.
    fn last(&self) -> Result<Option<Entry>, Error> {
        match self.db.range(Key::log()).next_back() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item?;
                Ok(records(&key, &value)?.last().map(|r| r.entry(&value)))
            }
        }
    }

    /// Writes a commit's blocks, all or none: one block as one insert, several as one batch.
    ///
    /// Several blocks are never inserted one by one: after a crash sled could then hold some
    /// of a commit's blocks without the rest, half of a batch that is all or nothing. sled
    /// makes a single insert atomic by itself, and a batch with a manifest that it writes in a
    /// log buffer of its own (`pin_log` seals the buffer before and after reserving it), so a
    /// batch's flush writes two buffers where an insert's writes one, and each written buffer
    /// is a task for sled's I/O pool, which wakes all seven of its threads for it. The groups
    /// that single events make under load often fit in one block (a block holds ~8
    /// identifications, or more of the smaller events).
    fn write(&self, mut blocks: Vec<([u8; 9], Vec<u8>)>) -> Result<(), Error> {
        if blocks.len() == 1 {
            let (key, value) = blocks.pop().expect("there is one block");
            self.db.insert(key, value)?;
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (key, value) in blocks {
            batch.insert(&key, value);
        }
        Ok(self.db.apply_batch(batch)?)
    }

    /// Makes everything written so far durable: sled's flush, then an fsync of its file.
    fn sync(&self, dir: &Path) -> Result<(), Error> {
        self.db.flush()?;
        self.sync_blobs(dir)?;
        self.file
            .sync_all()
            .map_err(|e| io_error(e, &format!("{}/db (fsync)", dir.display())))
    }

    /// Syncs the blob files sled wrote since the last sync, and their directory.
    ///
    /// sled 0.34.7 writes any item larger than a quarter of a segment (2 MiB, or 128 KiB in a
    /// store made with 512 KiB segments: one large event body, or a leaf of large ones) to a
    /// file of its own under `blobs/`, named by its log sequence number, and never syncs it;
    /// the fsync of `db` does not cover it. Without this, a power cut could keep the pointer in
    /// `db` and lose what it points to.
    /// The directory is nearly always empty, so this costs one directory read per commit.
    fn sync_blobs(&self, dir: &Path) -> Result<(), Error> {
        let blobs = dir.join("blobs");
        let what = |e: std::io::Error| io_error(e, &format!("{} (fsync)", blobs.display()));
        let entries = match std::fs::read_dir(&blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(what(e)),
        };
        let mut synced = self
            .blobs_synced
            .lock()
            .expect("the blob lock is never held across a panic");
        let mut newest = *synced;
        for entry in entries {
            let path = entry.map_err(what)?.path();
            // Names that are not sequence numbers are not sled's blobs: leave them alone.
            let Some(lsn) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if lsn > *synced {
                File::open(&path).and_then(|f| f.sync_all()).map_err(what)?;
                newest = newest.max(lsn);
            }
        }
        if newest > *synced {
            File::open(&blobs)
                .and_then(|d| d.sync_all())
                .map_err(what)?;
            *synced = newest;
        }
        Ok(())
    }
}

/// The event log.
pub struct Log {
    /// `None` while a failed write is being recovered from (see [`Log::append`]).
    storage: RwLock<Option<Storage>>,
    dir: PathBuf,
    head: Mutex<Head>,
    /// The head when sled last opened: its next open re-reads everything written after it.
    opened_at: AtomicU64,
}

impl Log {
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Io(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let storage = Storage::open(dir)?;
        let last = unpanicked("the end of the log", || storage.last())?;
        let head = last.map_or(Head::EMPTY, |entry| Head {
            seq: entry.seq,
            hash: entry.hash,
        });
        Ok(Self {
            storage: RwLock::new(Some(storage)),
            dir: dir.to_owned(),
            head: Mutex::new(head),
            opened_at: AtomicU64::new(head.seq),
        })
    }

    /// The head when sled last opened (at the start, or reopened since): its next open, a
    /// start-up after a crash among them, re-reads everything written after that (see
    /// [`Log::reopen`]).
    pub fn opened_at(&self) -> u64 {
        self.opened_at.load(Ordering::SeqCst)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn head(&self) -> Head {
        *self
            .head
            .lock()
            .expect("the head lock is never held across a panic")
    }

    /// Runs `read` on the open database. A database left closed by a failed write is reopened
    /// first, here, so that reads do not wait for the next write to do it; if it still cannot
    /// be opened, that is the error.
    fn with_db<T>(&self, read: impl FnOnce(&sled::Db) -> Result<T, Error>) -> Result<T, Error> {
        {
            let storage = self
                .storage
                .read()
                .expect("the storage lock is never held across a panic");
            if let Some(storage) = storage.as_ref() {
                return read(&storage.db);
            }
        }
        {
            let head = self
                .head
                .lock()
                .expect("the head lock is never held across a panic");
            self.reopen_if_closed(*head)?;
        }
        let storage = self
            .storage
            .read()
            .expect("the storage lock is never held across a panic");
        match storage.as_ref() {
            Some(storage) => read(&storage.db),
            // Closed again in between, by another failed write: report it rather than loop.
            None => Err(recovering()),
        }
    }

    /// Reopens the database, trimmed to `head`, if a failed write left it closed. The caller
    /// holds the head's lock (always taken before the storage's), so that no commit runs
    /// meanwhile.
    fn reopen_if_closed(&self, head: Head) -> Result<(), Error> {
        let closed = self
            .storage
            .read()
            .expect("the storage lock is never held across a panic")
            .is_none();
        if closed {
            self.recover(head, "after a failed write")?;
        }
        Ok(())
    }

    /// Appends `bodies` as the next events, durably, in one commit, and returns their entries'
    /// positions and hashes. The head moves only after the fsync has returned.
    ///
    /// If the write or its sync fails (a full disk, say), sled cannot be trusted to go on: the
    /// database is closed and reopened from what is on disk, anything past the acknowledged
    /// head is removed (it was never acknowledged), and the error is returned. If that reopen
    /// fails too, the database stays closed until the next append or read reopens it. Once the
    /// cause is gone, the next append succeeds; no restart is needed.
    pub fn append(&self, bodies: &[Vec<u8>]) -> Result<Vec<Head>, Error> {
        let mut head = self
            .head
            .lock()
            .expect("the head lock is never held across a panic");
        self.reopen_if_closed(*head)?;
        // A record's length is a u32. No request comes near it (the API takes 64 MiB at most),
        // but an import reads whatever its file holds.
        if let Some(body) = bodies.iter().find(|b| u32::try_from(b.len()).is_err()) {
            return Err(Error::invalid(
                "body",
                format!(
                    "{} bytes is too large to store (the limit is 4 GiB)",
                    body.len()
                ),
            ));
        }
        let mut blocks = Vec::new();
        let mut positions = Vec::with_capacity(bodies.len());
        let mut last = *head;
        // A block's bytes, sized once: growing them by doubling copied each block ~3 times.
        let mut block = (last.seq + 1, Vec::with_capacity(BLOCK_BYTES));
        for body in bodies {
            let seq = last.seq + 1;
            let hash = chain(&last.hash, body);
            let record = HASH_LEN + LEN_LEN + body.len();
            if !block.1.is_empty() && block.1.len() + record > BLOCK_BYTES {
                let (first, bytes) =
                    std::mem::replace(&mut block, (seq, Vec::with_capacity(BLOCK_BYTES)));
                blocks.push((Key::Block(first).encode(), bytes));
            }
            push_record(&mut block.1, &hash, body);
            last = Head { seq, hash };
            positions.push(last);
        }
        if !block.1.is_empty() {
            blocks.push((Key::Block(block.0).encode(), block.1));
        }
        let written = {
            let storage = self
                .storage
                .read()
                .expect("the storage lock is never held across a panic");
            match storage.as_ref() {
                Some(storage) => storage.write(blocks).and_then(|()| storage.sync(&self.dir)),
                None => Err(recovering()),
            }
        };
        if let Err(error) = written {
            tracing::error!(%error, "a commit failed; reopening the store from disk");
            // Whatever happens here, the error stands: this batch was not acknowledged.
            if let Err(again) = self.recover(*head, "after a failed write") {
                tracing::error!(error = %again, "the store could not be reopened yet; the next write retries");
            }
            return Err(error);
        }
        *head = last;
        Ok(positions)
    }

    /// Closes sled and opens it again, so that it writes its snapshot (its page table as of
    /// now). sled 0.34.7 writes one only when it opens, and each open re-reads everything
    /// written since the last: 2.3–3.8 s after 10M events from an empty store, growing with
    /// the uptime, not with the tail a start-up replays. Appends and reads wait while it
    /// reopens, which is the same re-reading (0.7–0.9 s after ~4M events: `opened_ms` in its
    /// line in the server's log). If it fails, the store is left closed and the next append or
    /// read reopens it, as after a failed write.
    pub fn reopen(&self) -> Result<(), Error> {
        let head = self
            .head
            .lock()
            .expect("the head lock is never held across a panic");
        self.recover(*head, "to write sled's snapshot")
    }

    /// Closes the database and reopens it from disk, trimmed to `head`; `why` is for the log.
    fn recover(&self, head: Head, why: &str) -> Result<(), Error> {
        let began = std::time::Instant::now();
        let mut storage = self
            .storage
            .write()
            .expect("the storage lock is never held across a panic");
        // Dropping the old database releases its file lock before the new one takes it.
        *storage = None;
        let reopened = Storage::open(&self.dir)?;
        let last = reopened.last()?.map_or(0, |e| e.seq);
        if last > head.seq {
            // Everything past the head is whole items: a block never spans two commits. (One
            // that did would be left, and refused just below.)
            let mut trim = sled::Batch::default();
            let past = |key: fn(u64) -> Key| key(head.seq + 1).encode()..=key(u64::MAX).encode();
            for range in [past(Key::Event), past(Key::Block)] {
                for item in reopened.db.range(range) {
                    trim.remove(item?.0);
                }
            }
            reopened.db.apply_batch(trim)?;
            reopened.sync(&self.dir)?;
        }
        match reopened.last()? {
            Some(entry) if entry.seq == head.seq && entry.hash == head.hash => {}
            None if head.seq == 0 => {}
            other => {
                return Err(Error::Corrupt(format!(
                    "after reopening, the log ends at {:?}, not at the acknowledged head {}",
                    other.map(|e| e.seq),
                    head.seq
                )))
            }
        }
        *storage = Some(reopened);
        self.opened_at.store(head.seq, Ordering::SeqCst);
        tracing::info!(
            head = head.seq,
            opened_ms = began.elapsed().as_millis() as u64,
            "the store was reopened {why}"
        );
        Ok(())
    }

    /// The entry at `seq`, if it is committed.
    pub fn get(&self, seq: u64) -> Result<Option<Entry>, Error> {
        if seq == 0 || seq > self.head().seq {
            return Ok(None);
        }
        let item = self.with_db(|db| item_holding(db, seq))?;
        let found = match &item {
            Some((key, value)) => records(key, value)?
                .into_iter()
                .find(|r| r.seq == seq)
                .map(|r| r.entry(value)),
            None => None,
        };
        match found {
            Some(entry) => Ok(Some(entry)),
            None => Err(Error::Corrupt(format!(
                "event {seq} is missing below the head"
            ))),
        }
    }

    /// The committed entries from `from` on, in seq order. Entries appended while the scan
    /// runs are not included: the scan ends at the head it started with.
    ///
    /// Each item is read with a range of its own, not with one sled iterator over the whole
    /// scan. sled 0.34.7 counts a page it reads from disk against its cache only when that
    /// page's shard of the cache (one of 256) has seen 64 reads, and an iterator reads each
    /// leaf once: a long scan's leaves were never counted, so never evicted, and a scan of
    /// 900,000 events held 436 MiB whatever `cache_capacity` said. Read item by item, a leaf
    /// is read once per item it holds (up to 16), and the same scan peaks at ~100 MiB, no
    /// slower (the export on the last line of `benches/crash-restart.sh`). The storage lock
    /// is taken per item, so a scan running across a recovery goes on in the reopened
    /// database, which holds everything up to the head the scan started with.
    pub fn scan(&self, from: u64) -> impl Iterator<Item = Result<Entry, Error>> + '_ {
        let head = self.head().seq;
        let from = from.max(1);
        let mut expected = from;
        let end = Key::Block(head).encode().to_vec();
        // Where the next item is looked for: at or after this key.
        let (mut next, mut failed) = if from <= head {
            // Start at the block holding `from`, or at its own key in a store written before
            // blocks (whose events all come before the first block).
            let start = self.with_db(|db| {
                Ok(match item_holding(db, from)? {
                    Some((key, _)) => key.to_vec(),
                    None => Key::Event(from).encode().to_vec(),
                })
            });
            match start {
                Ok(start) => (Some(start), None),
                Err(error) => (None, Some(error)),
            }
        } else {
            (None, None)
        };
        let item_at =
            move |next: &mut Option<Vec<u8>>| -> Option<Result<(sled::IVec, sled::IVec), Error>> {
                let at = next.take()?;
                let item = self
                    .with_db(|db| {
                        db.range::<&[u8], _>(&at[..]..=&end[..])
                            .next()
                            .transpose()
                            .map_err(Error::from)
                    })
                    .transpose()?;
                if let Ok((key, _)) = &item {
                    // The smallest key after this one.
                    let mut after = key.to_vec();
                    after.push(0);
                    *next = Some(after);
                }
                Some(item)
            };
        let mut entries = std::collections::VecDeque::<Entry>::new();
        // The first item may start before `from`; any later one starts where the last ended.
        let mut first_item = true;
        std::iter::from_fn(move || loop {
            if let Some(error) = failed.take() {
                // One error ends the scan.
                next = None;
                entries.clear();
                return Some(Err(error));
            }
            if expected > head {
                // The range ends at the head's block: anything still in it overlaps what was read.
                let extra = item_at(&mut next)?;
                next = None;
                let at = match extra {
                    Ok((key, _)) => {
                        Key::decode(&key).map_or_else(|e| e.to_string(), |k| format!("{k:?}"))
                    }
                    Err(e) => e.to_string(),
                };
                failed = Some(Error::Corrupt(format!(
                    "events are stored twice: the item at {at} overlaps those up to {head}"
                )));
                continue;
            }
            if let Some(entry) = entries.pop_front() {
                if entry.seq != expected {
                    // An item that overlaps the one before would otherwise be skipped here
                    // while `get` reads it: the audit must see what every reader can.
                    failed = Some(Error::Corrupt(if entry.seq < expected {
                        format!("event {} is stored twice", entry.seq)
                    } else {
                        format!(
                            "event {expected} is missing: the log jumps to {}",
                            entry.seq
                        )
                    }));
                    continue;
                }
                expected += 1;
                return Some(Ok(entry));
            }
            // Nothing to look at (an earlier error ended the scan): the scan is over.
            next.as_ref()?;
            match item_at(&mut next) {
                None => {
                    failed = Some(Error::Corrupt(format!(
                        "event {expected} is missing below the head {head}"
                    )))
                }
                Some(Err(e)) => failed = Some(e),
                Some(Ok((key, value))) => match decode_item(&key, &value) {
                    Ok(decoded) if first_item => {
                        first_item = false;
                        entries.extend(decoded.into_iter().filter(|e| e.seq >= from));
                    }
                    Ok(decoded) => entries.extend(decoded),
                    Err(error) => failed = Some(error),
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body larger than sled's blob threshold goes to a blob file, which each commit syncs;
    /// it reads back whole after a reopen.
    #[test]
    fn a_body_sled_keeps_as_a_blob_is_synced_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        // Over a quarter of a segment, sled's threshold for a blob.
        let large = vec![b'x'; SEGMENT_BYTES / 4 + 100 * 1024];
        {
            let log = Log::open(dir.path()).unwrap();
            log.append(&[b"{}".to_vec(), large.clone()]).unwrap();
            let blobs = std::fs::read_dir(dir.path().join("blobs")).unwrap().count();
            assert!(
                blobs > 0,
                "sled kept the large body inline; the test needs a blob"
            );
            let storage = log.storage.read().unwrap();
            let synced = *storage.as_ref().unwrap().blobs_synced.lock().unwrap();
            assert!(synced > 0, "the commit synced no blob");
        }
        let log = Log::open(dir.path()).unwrap();
        assert_eq!(log.get(2).unwrap().unwrap().body, large);
    }

    /// Bodies of `len` bytes each (`len` ≥ 8), each naming its number.
    fn bodies(count: usize, len: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| format!("{i:0len$}").into_bytes())
            .collect()
    }

    /// Everything a reader can ask of `log`, checked against the bodies it should hold: the
    /// head, every entry's body and chained hash, `get` of each seq and just past the head,
    /// and a scan from every seq.
    fn check_reads(log: &Log, bodies: &[Vec<u8>]) {
        let head = bodies.len() as u64;
        assert_eq!(log.head().seq, head);
        let entries: Vec<Entry> = log.scan(1).collect::<Result<_, _>>().unwrap();
        assert_eq!(entries.len(), bodies.len());
        let mut previous = GENESIS;
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(entry.seq, i as u64 + 1);
            assert_eq!(entry.body, bodies[i]);
            assert_eq!(entry.hash, chain(&previous, &bodies[i]));
            previous = entry.hash;
            assert_eq!(log.get(entry.seq).unwrap().as_ref(), Some(entry));
        }
        assert_eq!(log.head().hash, previous);
        for from in 0..=head + 2 {
            let scanned: Vec<Entry> = log.scan(from).collect::<Result<_, _>>().unwrap();
            let skip = from.max(1) as usize - 1;
            assert_eq!(
                scanned,
                entries[skip.min(entries.len())..],
                "scan from {from}"
            );
        }
        assert_eq!(log.get(0).unwrap(), None);
        assert_eq!(log.get(head + 1).unwrap(), None);
    }

    #[test]
    fn appends_chain_and_survive_reopen() {
        // Commits of one event, of several in one block, and of several blocks (a block holds
        // ~6 KiB of records; these are 1 KiB and 20 KiB bodies).
        let dir = tempfile::tempdir().unwrap();
        let mut all = Vec::new();
        {
            let log = Log::open(dir.path()).unwrap();
            assert_eq!(log.head(), Head::EMPTY);
            check_reads(&log, &all);
            for commit in [
                bodies(1, 10),
                bodies(3, 100),
                bodies(40, 1000),
                bodies(3, 20_000),
            ] {
                let positions = log.append(&commit).unwrap();
                all.extend(commit);
                assert_eq!(positions.last(), Some(&log.head()));
                check_reads(&log, &all);
            }
        }
        let log = Log::open(dir.path()).unwrap();
        check_reads(&log, &all);
        let blocks = log.with_db(|db| Ok(db.range(Key::log()).count())).unwrap();
        assert!((10..20).contains(&blocks), "{blocks} blocks for 47 events");
    }

    #[test]
    fn a_store_keeps_the_segment_size_it_was_made_with() {
        // (the segment size sled made the store with, if one was; the size it must keep)
        let cases = [(Some(512 * 1024), 512 * 1024), (None, SEGMENT_BYTES)];
        for (made_with, kept) in cases {
            let dir = tempfile::tempdir().unwrap();
            if let Some(size) = made_with {
                // A store as the builds before SEGMENT_BYTES made it: sled's default size.
                let db = sled::Config::new()
                    .path(dir.path())
                    .segment_size(size)
                    .open()
                    .unwrap();
                db.flush().unwrap();
            }
            let all = bodies(30, 1000);
            {
                let log = Log::open(dir.path()).unwrap();
                log.append(&all).unwrap();
            }
            let log = Log::open(dir.path()).unwrap();
            check_reads(&log, &all);
            assert_eq!(segment_bytes(dir.path()), kept, "made with {made_with:?}");
        }
    }

    /// A scan reads item by item, each time from the database the storage holds then: one
    /// running while the store recovers (a failed commit reopens it) reads on in the reopened
    /// database and misses nothing, and so does one that meets the store still closed (it
    /// reopens it, rather than wait for the next write to).
    #[test]
    fn a_scan_goes_on_across_a_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        let all = bodies(60, 1000);
        for commit in all.chunks(7) {
            log.append(commit).unwrap();
        }
        let check = |read: &[Entry], from: u64| {
            let seqs: Vec<u64> = read.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, (from..=60).collect::<Vec<_>>());
            assert!(read.iter().all(|e| e.body == all[e.seq as usize - 1]));
        };
        let mut scan = log.scan(3);
        let mut read: Vec<Entry> = scan.by_ref().take(10).collect::<Result<_, _>>().unwrap();
        // A planned reopen (after a checkpoint) in the middle of a scan.
        log.reopen().unwrap();
        assert_eq!(log.opened_at(), 60);
        read.extend(scan.map(Result::unwrap));
        check(&read, 3);

        let mut scan = log.scan(1);
        let mut read: Vec<Entry> = scan.by_ref().take(10).collect::<Result<_, _>>().unwrap();
        // What a failed commit whose recovery failed too leaves behind.
        *log.storage.write().unwrap() = None;
        read.extend(scan.map(Result::unwrap));
        check(&read, 1);
        assert!(
            log.storage.read().unwrap().is_some(),
            "the scan left the store closed"
        );
        assert_eq!(log.get(60).unwrap().unwrap().body, all[59]);
        log.append(&bodies(1, 10)).unwrap();
        assert_eq!(log.head().seq, 61);
    }

    #[test]
    fn a_store_written_one_event_to_a_key_is_read_and_extended_in_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let old = bodies(5, 50);
        {
            // What a build before blocks wrote: `hash ‖ body` under `Key::Event(seq)`.
            let storage = Storage::open(dir.path()).unwrap();
            let mut hash = GENESIS;
            for (i, body) in old.iter().enumerate() {
                hash = chain(&hash, body);
                let value = [&hash[..], body].concat();
                storage
                    .db
                    .insert(Key::Event(i as u64 + 1).encode(), value)
                    .unwrap();
            }
            storage.sync(dir.path()).unwrap();
        }
        let log = Log::open(dir.path()).unwrap();
        check_reads(&log, &old);
        let new = bodies(30, 500);
        log.append(&new).unwrap();
        check_reads(&log, &[old, new].concat());
    }

    #[test]
    fn a_recovery_removes_every_block_past_the_acknowledged_head() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        let kept = bodies(20, 1000);
        log.append(&kept).unwrap();
        let head = log.head();
        // A commit that reached sled but was never acknowledged (its sync failed).
        log.with_db(|db| {
            let mut hash = head.hash;
            let entries: Vec<Entry> = bodies(9, 1000)
                .into_iter()
                .zip(head.seq + 1..)
                .map(|(body, seq)| {
                    hash = chain(&hash, &body);
                    Entry { seq, hash, body }
                })
                .collect();
            for part in entries.chunks(4) {
                db.insert(Key::Block(part[0].seq).encode(), encode_block(part))?;
            }
            Ok(())
        })
        .unwrap();
        log.recover(head, "in a test").unwrap();
        check_reads(&log, &kept);
        let log = {
            drop(log);
            Log::open(dir.path()).unwrap()
        };
        check_reads(&log, &kept);
    }

    #[test]
    fn an_item_that_overlaps_another_is_reported_by_a_scan() {
        // A block whose key was altered to start inside another block: `get` would read its
        // copy, so a scan (what the audit verifies) must not step over it, whether it comes
        // in the middle of the log or after the head's block.
        for seq in [2, 6] {
            let dir = tempfile::tempdir().unwrap();
            let log = Log::open(dir.path()).unwrap();
            log.append(&bodies(4, 10)).unwrap(); // one block: 1..=4
            log.append(&bodies(4, 10)).unwrap(); // one block: 5..=8
            let copy = log.get(seq).unwrap().unwrap();
            log.with_db(|db| Ok(db.insert(Key::Block(seq).encode(), encode_block(&[copy]))?))
                .unwrap();
            let scanned: Vec<Result<Entry, Error>> = log.scan(1).collect();
            match scanned.last() {
                Some(Err(Error::Corrupt(why))) => assert!(why.contains("stored twice"), "{why}"),
                other => panic!("Block({seq}): the scan ended with {other:?}"),
            }
        }
    }

    #[test]
    fn a_damaged_block_is_reported_not_read() {
        let key = Key::Block(7).encode();
        let good = encode_block(&[
            Entry {
                seq: 7,
                hash: [1; 32],
                body: b"seven".to_vec(),
            },
            Entry {
                seq: 8,
                hash: [2; 32],
                body: b"eight".to_vec(),
            },
        ]);
        let entries = decode_item(&key, &good).unwrap();
        assert_eq!(
            entries
                .iter()
                .map(|e| (e.seq, e.body.as_slice()))
                .collect::<Vec<_>>(),
            [(7, &b"seven"[..]), (8, &b"eight"[..])]
        );
        let mut long = good.clone();
        long[HASH_LEN] = 200; // the first body's length, past the end
        for (what, value) in [
            ("cut inside a hash", &good[..20]),
            ("cut inside a length", &good[..HASH_LEN + 2]),
            ("cut inside a body", &good[..good.len() - 1]),
            ("a length past the end", &long[..]),
            ("empty", &[][..]),
        ] {
            match decode_item(&key, value) {
                Err(Error::Corrupt(why)) => assert!(why.contains("block at 7"), "{what}: {why}"),
                other => panic!("{what}: {other:?}"),
            }
        }
        match decode_item(&Key::Event(3).encode(), &[0; 31]) {
            Err(Error::Corrupt(why)) => assert!(why.contains("event 3"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
