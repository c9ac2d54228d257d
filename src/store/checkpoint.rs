//! Checkpoint files: a snapshot of derived data, tied to the log position it was taken at.
//!
//! ```text
//!   roll.checkpoint  =  "RSCKPT12" ‖ seq (u64 BE) ‖ hash(seq) (32) ‖ len (u64 BE)
//!                       ‖ SHA-256(payload) (32) ‖ payload (len bytes)
//! ```
//!
//! A checkpoint is written to a temporary file, fsynced, renamed over the old one and the
//! directory fsynced, so that a crash leaves either the old checkpoint or the new one. It is
//! only ever a shortcut: the log is the truth, and a checkpoint that is missing, damaged, or
//! tied to a position whose hash the log does not have is ignored (the caller replays the log).
//! This module knows bytes, not what the payload means.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Hash, Head, GENESIS};
use crate::error::Error;

/// The version moves whenever the payload's shape does (`02`: households' states packed; `03`:
/// compact person index, region changes only; `04`: households side by side, each with its
/// timeline; `05`: numbers, dates and times compact, nothing borrowed from the input; `06`:
/// seqs delta-encoded; `07`: the households after the indexes, so that a checkpoint can write
/// them a piece at a time; `08`: the region trees too; `09`: the person index too, in
/// shards; `10`: the request index too, as digests; `11`: request digests of 12 bytes; `12`:
/// each index shard as one string of fixed-width entries): a reader would only fail to decode
/// an older payload and replay the log, but the header says so before anything is read.
const MAGIC: &[u8; 8] = b"RSCKPT12";
const FILE: &str = "roll.checkpoint";
const HEADER: usize = 8 + 8 + 32 + 8 + 32;

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Writes the payload that `encode` streams as the checkpoint at `head`, atomically and
/// durably: [`Draft::create`], [`Draft::encode`], [`Draft::commit`] in one go.
pub fn write(
    dir: &Path,
    head: Head,
    encode: impl FnOnce(&mut dyn Write) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut draft = Draft::create(dir, head)?;
    draft.encode(encode)?;
    draft.commit()
}

fn io(what: &str, e: std::io::Error) -> Error {
    Error::Io(format!("checkpoint: {what}: {e}"))
}

/// A checkpoint being written, in steps so that a caller can release what it encodes (the
/// roll's lock) between pieces and before the slow part: the payload streams to the file as it
/// is produced (hashed and counted on the way), and [`Draft::commit`] then fills in the
/// header's length and digest, syncs, and renames. The payload never exists twice in memory.
pub struct Draft {
    dir: PathBuf,
    temporary: PathBuf,
    /// Buffered before the digest, so that the hash and the file see megabytes at a time
    /// instead of each of the encoder's many small writes.
    out: BufWriter<Digesting<File>>,
}

impl Draft {
    pub fn create(dir: &Path, head: Head) -> Result<Self, Error> {
        let temporary = dir.join(format!("{FILE}.tmp"));
        let mut file = File::create(&temporary).map_err(|e| io("create", e))?;
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&head.seq.to_be_bytes());
        header.extend_from_slice(&head.hash);
        // Length and digest are not known yet: zeros until `commit` (the file is a .tmp that
        // no reader opens until then).
        header.resize(HEADER, 0);
        file.write_all(&header).map_err(|e| io("write", e))?;
        Ok(Self {
            dir: dir.to_owned(),
            temporary,
            out: BufWriter::with_capacity(
                1 << 20,
                Digesting {
                    inner: file,
                    digest: Sha256::new(),
                    len: 0,
                },
            ),
        })
    }

    /// Streams the payload, or its next piece, into the file (into the page cache; nothing is
    /// synced yet).
    pub fn encode<T>(
        &mut self,
        encode: impl FnOnce(&mut dyn Write) -> Result<T, Error>,
    ) -> Result<T, Error> {
        encode(&mut self.out)
    }

    /// Completes the header, syncs the file, and moves it over the old checkpoint.
    pub fn commit(self) -> Result<(), Error> {
        let Digesting {
            inner: mut file,
            digest,
            len,
        } = self
            .out
            .into_inner()
            .map_err(|e| io("write", e.into_error()))?;
        let digest: Hash = digest.finalize().into();
        file.seek(SeekFrom::Start(48)).map_err(|e| io("seek", e))?;
        file.write_all(&len.to_be_bytes())
            .and_then(|()| file.write_all(&digest))
            .map_err(|e| io("write", e))?;
        file.sync_all().map_err(|e| io("fsync", e))?;
        drop(file);
        fs::rename(&self.temporary, path(&self.dir)).map_err(|e| io("rename", e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("fsync the directory", e))
    }
}

/// A writer that hashes and counts what passes through it.
struct Digesting<W> {
    inner: W,
    digest: Sha256,
    len: u64,
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.digest.update(&buf[..written]);
        self.len += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Why a checkpoint file was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    Missing,
    Damaged(String),
}

/// A checkpoint's payload, checked against its digest: read it once, from the start.
///
/// The buffer is the outer layer, and `read_exact` goes straight to it: the decoder reads a
/// few bytes at a time (a varint, a 16-byte key), and through `Take` first, or through the
/// default `read_exact`, each of those reads was a chain of calls (a fifth of a restart's
/// decoding in a profile).
pub struct Payload(BufReader<std::io::Take<File>>);

impl Read for Payload {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.0.read_exact(buf)
    }
}

/// Reads the checkpoint's header and checks its payload against its digest; the payload is
/// then read from the file as it is decoded, never held whole (it is hundreds of megabytes for
/// a national roll, and a restart also builds the roll from it).
///
/// The digest is checked first, in a pass that holds one buffer, so that a decoder only sees
/// bytes this code wrote: a checkpoint's counts size its allocations.
pub fn read(dir: &Path) -> Result<(Head, Payload), Unusable> {
    let cannot = |e: std::io::Error| Unusable::Damaged(format!("cannot read it: {e}"));
    let mut file = match File::open(path(dir)) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Unusable::Missing),
        Err(e) => return Err(cannot(e)),
    };
    let damaged = |why: &str| Unusable::Damaged(why.to_owned());
    let mut header = [0u8; HEADER];
    if file.read_exact(&mut header).is_err() || header[..6] != MAGIC[..6] {
        return Err(damaged("it does not start with a checkpoint header"));
    }
    if &header[..8] != MAGIC {
        return Err(Unusable::Damaged(format!(
            "it was written by another version of rollstore ({}; this one reads {})",
            String::from_utf8_lossy(&header[..8]),
            String::from_utf8_lossy(MAGIC)
        )));
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let seq = u64_at(8);
    let mut hash = GENESIS;
    hash.copy_from_slice(&header[16..48]);
    let len = u64_at(48);
    let mut digest = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut seen = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(cannot)?;
        if n == 0 {
            break;
        }
        digest.update(&buffer[..n]);
        seen += n as u64;
    }
    if seen != len {
        return Err(damaged("its length is not the one its header gives"));
    }
    let digest: Hash = digest.finalize().into();
    if digest[..] != header[56..88] {
        return Err(damaged("its payload does not match its digest"));
    }
    file.seek(SeekFrom::Start(HEADER as u64)).map_err(cannot)?;
    let payload = BufReader::with_capacity(1 << 20, file.take(len));
    Ok((Head { seq, hash }, Payload(payload)))
}

/// Removes the checkpoint, if there is one.
pub fn remove(dir: &Path) -> Result<(), Error> {
    match fs::remove_file(path(dir)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io(format!("cannot remove the checkpoint: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read(dir.path()), Err(Unusable::Missing)));
        let head = Head {
            seq: 42,
            hash: [7; 32],
        };
        write(dir.path(), head, |out| {
            out.write_all(b"pay").unwrap();
            out.write_all(b"load").unwrap();
            Ok(())
        })
        .unwrap();
        let (read_head, mut payload) = read(dir.path()).unwrap();
        let mut bytes = Vec::new();
        payload.read_to_end(&mut bytes).unwrap();
        assert_eq!((read_head, bytes), (head, b"payload".to_vec()));
        let file = path(dir.path());
        let mut bytes = fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&file, &bytes).unwrap();
        assert!(matches!(read(dir.path()), Err(Unusable::Damaged(_))));
        fs::write(&file, &bytes[..20]).unwrap();
        assert!(matches!(read(dir.path()), Err(Unusable::Damaged(_))));
        // An older version's checkpoint is unusable, and says why.
        bytes[..8].copy_from_slice(b"RSCKPT01");
        fs::write(&file, &bytes).unwrap();
        let older = read(dir.path()).err();
        assert!(
            matches!(&older, Some(Unusable::Damaged(why)) if why.contains("another version of rollstore (RSCKPT01")),
            "{older:?}"
        );
        remove(dir.path()).unwrap();
        assert!(matches!(read(dir.path()), Err(Unusable::Missing)));
    }
}
