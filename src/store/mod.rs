//! The log on disk: sled 0.34.7, one entry per event, chained by SHA-256, committed durably.
//!
//! ```text
//!   key  Key::Event(seq)                     value  hash(seq) ‖ body(seq)
//!                                                   └ 32 bytes ┘└ the event's exact bytes ┘
//!   hash(0) = 32 zero bytes
//!   hash(n) = SHA-256(hash(n-1) ‖ body(n))
//! ```
//!
//! [`Log::append`] is a group commit: it writes every body it is given as one sled batch, then
//! `flush()`es and `fsync`s the database file, and only then moves the head. sled's flush ends in
//! `sync_file_range`, which survives a process crash but not a power cut; the `fsync` that
//! follows covers both (DESIGN.md §4). `seq`s are assigned here, from the head, so they are
//! gapless by construction.
//!
//! This module knows bytes, keys and hashes, never what an event means: it does not decode
//! bodies and enforces no rule.

pub mod checkpoint;
mod keys;

use std::fs::File;
use std::path::{Path, PathBuf};
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
        "the store is reopening after a failed write (a full disk?); retry shortly".into(),
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

impl Entry {
    fn decode(key: &[u8], value: &[u8]) -> Result<Self, Error> {
        let Key::Event(seq) = Key::decode(key)?;
        if value.len() < 32 {
            return Err(Error::Corrupt(format!(
                "event {seq} is {} bytes long, shorter than its hash",
                value.len()
            )));
        }
        let mut hash = GENESIS;
        hash.copy_from_slice(&value[..32]);
        Ok(Entry {
            seq,
            hash,
            body: value[32..].to_vec(),
        })
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
        let config = sled::Config::new()
            .path(dir)
            // Every commit flushes; a background flusher would only race with it.
            .flush_every_ms(None)
            // Events are read back only for histories and corrections, scattered over the
            // log: a large page cache buys little and counts against the server's memory.
            // Appends touch only the tree's right edge. (sled holds well over its nominal
            // capacity: at 100k households and 1M events, 64 MiB of cache meant a peak RSS of
            // 354 MiB, 16 MiB meant 282 MiB, batch throughput the same within noise.)
            .cache_capacity(16 * 1024 * 1024);
        // sled releases its file lock from a background thread after the last handle of a
        // closed database is dropped; an immediate reopen in the same process (a recovery, a
        // restart in tests) can find it still held for a moment. Wait for it, briefly.
        let mut attempts = 0;
        let opened = loop {
            match config.open() {
                // sled reports a held lock as an `Other` error whose text says so.
                Err(sled::Error::Io(io))
                    if io.to_string().contains("could not acquire lock") && attempts < 250 =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
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
        match self.db.range(Key::events()).next_back() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item?;
                Entry::decode(&key, &value).map(Some)
            }
        }
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
    /// sled 0.34.7 writes any item larger than a quarter of a segment (~128 KiB: one large
    /// event body, or a leaf of sixteen ~8 KiB ones) to a file of its own under `blobs/`,
    /// named by its log sequence number, and never syncs it; the fsync of `db` does not cover
    /// it. Without this, a power cut could keep the pointer in `db` and lose what it points to.
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
        })
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

    /// Runs `read` on the open database, or says the store is recovering.
    fn with_db<T>(&self, read: impl FnOnce(&sled::Db) -> Result<T, Error>) -> Result<T, Error> {
        let storage = self
            .storage
            .read()
            .expect("the storage lock is never held across a panic");
        match storage.as_ref() {
            Some(storage) => read(&storage.db),
            None => Err(recovering()),
        }
    }

    /// Appends `bodies` as the next events, durably, in one commit, and returns their entries'
    /// positions and hashes. The head moves only after the fsync has returned.
    ///
    /// If the write or its sync fails (a full disk, say), sled cannot be trusted to go on: the
    /// database is closed and reopened from what is on disk, anything past the acknowledged
    /// head is removed (it was never acknowledged), and the error is returned. Once the cause is
    /// gone, the next append succeeds; no restart is needed.
    pub fn append(&self, bodies: &[Vec<u8>]) -> Result<Vec<Head>, Error> {
        let mut head = self
            .head
            .lock()
            .expect("the head lock is never held across a panic");
        if self
            .storage
            .read()
            .expect("the storage lock is never held across a panic")
            .is_none()
        {
            self.recover(*head)?;
        }
        let mut batch = sled::Batch::default();
        let mut positions = Vec::with_capacity(bodies.len());
        let mut last = *head;
        for body in bodies {
            let seq = last.seq + 1;
            let hash = chain(&last.hash, body);
            let mut value = Vec::with_capacity(32 + body.len());
            value.extend_from_slice(&hash);
            value.extend_from_slice(body);
            batch.insert(&Key::Event(seq).encode(), value);
            last = Head { seq, hash };
            positions.push(last);
        }
        let written = {
            let storage = self
                .storage
                .read()
                .expect("the storage lock is never held across a panic");
            match storage.as_ref() {
                Some(storage) => storage
                    .db
                    .apply_batch(batch)
                    .map_err(Error::from)
                    .and_then(|()| storage.sync(&self.dir)),
                None => Err(recovering()),
            }
        };
        if let Err(error) = written {
            tracing::error!(%error, "a commit failed; reopening the store from disk");
            // Whatever happens here, the error stands: this batch was not acknowledged.
            if let Err(again) = self.recover(*head) {
                tracing::error!(error = %again, "the store could not be reopened yet; the next write retries");
            }
            return Err(error);
        }
        *head = last;
        Ok(positions)
    }

    /// Closes the database and reopens it from disk, trimmed to `head`.
    fn recover(&self, head: Head) -> Result<(), Error> {
        let mut storage = self
            .storage
            .write()
            .expect("the storage lock is never held across a panic");
        // Dropping the old database releases its file lock before the new one takes it.
        *storage = None;
        let reopened = Storage::open(&self.dir)?;
        let last = reopened.last()?.map_or(0, |e| e.seq);
        if last > head.seq {
            let mut trim = sled::Batch::default();
            for seq in head.seq + 1..=last {
                trim.remove(&Key::Event(seq).encode());
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
        tracing::info!(
            head = head.seq,
            "the store was reopened after a failed write"
        );
        Ok(())
    }

    /// The entry at `seq`, if it is committed.
    pub fn get(&self, seq: u64) -> Result<Option<Entry>, Error> {
        if seq == 0 || seq > self.head().seq {
            return Ok(None);
        }
        let key = Key::Event(seq).encode();
        match self.with_db(|db| Ok(db.get(key)?))? {
            Some(value) => Entry::decode(&key, &value).map(Some),
            None => Err(Error::Corrupt(format!(
                "event {seq} is missing below the head"
            ))),
        }
    }

    /// The committed entries from `from` on, in seq order. Entries appended while the scan
    /// runs are not included: the scan ends at the head it started with.
    pub fn scan(&self, from: u64) -> impl Iterator<Item = Result<Entry, Error>> + '_ {
        let head = self.head().seq;
        let from = from.max(1);
        let mut expected = from;
        let range = Key::Event(from).encode()..=Key::Event(head).encode();
        // sled's iterators own what they read, so the lock is not held while the scan runs.
        let (mut inner, mut failed) = if from <= head {
            match self.with_db(|db| Ok(db.range(range))) {
                Ok(iter) => (Some(iter), None),
                Err(error) => (None, Some(error)),
            }
        } else {
            (None, None)
        };
        std::iter::from_fn(move || {
            if let Some(error) = failed.take() {
                return Some(Err(error));
            }
            let item = inner.as_mut()?.next();
            let result = match item {
                None if expected <= head => Err(Error::Corrupt(format!(
                    "event {expected} is missing below the head {head}"
                ))),
                None => return None,
                Some(Err(e)) => Err(Error::from(e)),
                Some(Ok((key, value))) => Entry::decode(&key, &value).and_then(|entry| {
                    if entry.seq == expected {
                        Ok(entry)
                    } else {
                        Err(Error::Corrupt(format!(
                            "event {expected} is missing: the log jumps to {}",
                            entry.seq
                        )))
                    }
                }),
            };
            if result.is_err() {
                // One error ends the scan.
                inner = None;
            }
            expected += 1;
            Some(result)
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
        let large = vec![b'x'; 300 * 1024];
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

    #[test]
    fn appends_chain_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let bodies: Vec<Vec<u8>> = (0..5)
            .map(|i| format!("{{\"n\":{i}}}").into_bytes())
            .collect();
        let positions = {
            let log = Log::open(dir.path()).unwrap();
            assert_eq!(log.head(), Head::EMPTY);
            let mut positions = log.append(&bodies[..2]).unwrap();
            positions.extend(log.append(&bodies[2..]).unwrap());
            positions
        };
        let log = Log::open(dir.path()).unwrap();
        assert_eq!(log.head(), *positions.last().unwrap());
        let entries: Vec<Entry> = log.scan(1).collect::<Result<_, _>>().unwrap();
        let mut previous = GENESIS;
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(entry.seq, i as u64 + 1);
            assert_eq!(entry.body, bodies[i]);
            assert_eq!(entry.hash, chain(&previous, &bodies[i]));
            previous = entry.hash;
        }
        assert_eq!(log.get(3).unwrap().unwrap(), entries[2]);
        assert_eq!(log.get(6).unwrap(), None);
        assert_eq!(log.get(0).unwrap(), None);
        assert_eq!(log.scan(4).count(), 2);
        assert_eq!(log.scan(9).count(), 0);
    }
}
