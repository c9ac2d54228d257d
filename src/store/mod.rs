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
use std::sync::Mutex;

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
            other => Error::Io(other.to_string()),
        }
    }
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

/// The event log.
pub struct Log {
    db: sled::Db,
    /// The database file, kept open to `fsync` it after each flush.
    file: File,
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
        let db = sled::Config::new()
            .path(dir)
            // Every commit flushes; a background flusher would only race with it.
            .flush_every_ms(None)
            .cache_capacity(256 * 1024 * 1024)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) => Error::Io(format!(
                    "cannot open the store in {}: {io} (is another rollstore using it?)",
                    dir.display()
                )),
                other => Error::from(other),
            })?;
        let file = File::open(dir.join("db"))
            .map_err(|e| Error::Io(format!("cannot open {}/db to sync it: {e}", dir.display())))?;
        let head = match db.range(Key::events()).next_back() {
            None => Head::EMPTY,
            Some(item) => {
                let (key, value) = item?;
                let entry = Entry::decode(&key, &value)?;
                Head {
                    seq: entry.seq,
                    hash: entry.hash,
                }
            }
        };
        Ok(Self {
            db,
            file,
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

    /// Appends `bodies` as the next events, durably, in one commit, and returns their entries'
    /// positions and hashes. Nothing is visible as committed until the fsync has returned; on
    /// an error the head does not move and the batch is taken back out of sled.
    pub fn append(&self, bodies: &[Vec<u8>]) -> Result<Vec<Head>, Error> {
        let mut head = self
            .head
            .lock()
            .expect("the head lock is never held across a panic");
        let mut batch = sled::Batch::default();
        let mut undo = sled::Batch::default();
        let mut positions = Vec::with_capacity(bodies.len());
        let mut last = *head;
        for body in bodies {
            let seq = last.seq + 1;
            let hash = chain(&last.hash, body);
            let mut value = Vec::with_capacity(32 + body.len());
            value.extend_from_slice(&hash);
            value.extend_from_slice(body);
            let key = Key::Event(seq).encode();
            batch.insert(&key, value);
            undo.remove(&key);
            last = Head { seq, hash };
            positions.push(last);
        }
        let written = self
            .db
            .apply_batch(batch)
            .map_err(Error::from)
            .and_then(|()| self.sync());
        if let Err(error) = written {
            // The batch may sit in sled's memory without being durable; take it back out so
            // that nothing unacknowledged can be read or later flushed behind our back.
            let _ = self.db.apply_batch(undo);
            return Err(error);
        }
        *head = last;
        Ok(positions)
    }

    /// Makes everything written so far durable: sled's flush, then an fsync of its file.
    fn sync(&self) -> Result<(), Error> {
        self.db.flush()?;
        self.file
            .sync_all()
            .map_err(|e| Error::Io(format!("fsync of {}/db failed: {e}", self.dir.display())))
    }

    /// The entry at `seq`, if it is committed.
    pub fn get(&self, seq: u64) -> Result<Option<Entry>, Error> {
        if seq == 0 || seq > self.head().seq {
            return Ok(None);
        }
        let key = Key::Event(seq).encode();
        match self.db.get(key)? {
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
        let mut inner = (from <= head).then(|| self.db.range(range));
        std::iter::from_fn(move || {
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
