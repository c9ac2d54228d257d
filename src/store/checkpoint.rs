//! Checkpoint files: a snapshot of derived data, tied to the log position it was taken at.
//!
//! ```text
//!   roll.checkpoint  =  "RSCKPT18" ‖ seq (u64 BE) ‖ hash(seq) (32) ‖ len (u64 BE)
//!                       ‖ SHA-256(table) (32) ‖ payload (len bytes)
//!   payload          =  section₁ ‖ … ‖ sectionₙ ‖ table
//!   table            =  (len (u64 BE) ‖ SHA-256(section)) for each section ‖ n (u32 BE)
//! ```
//!
//! The payload is in sections so that a reader can check and decode them side by side, each
//! from its own place in the file: the table at the end says where each starts, and each has
//! its own digest. The header's digest covers the table, so every byte of the payload is covered
//! by one (the header's seq and hash are checked against the log instead).
//!
//! A delta (`roll.delta`) is the same, with the whole checkpoint it builds on after the
//! header's fixed fields: `"RSDELT18" ‖ seq ‖ hash(seq) ‖ len ‖ SHA-256(table) ‖ base seq ‖
//! hash(base seq) ‖ payload`. It is used only on top of the whole checkpoint at its base.
//!
//! A checkpoint is written to a temporary file, fsynced, renamed over the old one and the
//! directory fsynced, so that a crash leaves either the old checkpoint or the new one (and
//! perhaps the temporary file, which the next server to open the store removes, as a server
//! removes the one of a checkpoint that failed). It is
//! only ever a shortcut: the log is the truth, and a checkpoint that is missing, damaged, or
//! tied to a position whose hash the log does not have is ignored (the caller replays the log).
//! This module knows bytes and sections, not what they mean.

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
/// each index shard as one string of fixed-width entries; `13`: the payload in sections; `14`:
/// the households in several sections; `15`: region codes as numbers, not text; `16`: the
/// households before the indexes; `17`: request digests of 10 bytes; `18`: a delta leaves the
/// person index and the region trees empty, for the reader to derive): a
/// reader would only fail to decode an older payload and replay the log, but the header says
/// so before anything is read.
const MAGIC: &[u8; 8] = b"RSCKPT18";
/// A delta's version is the whole checkpoint's (a delta's payload is a roll's, with some of
/// its structures' entries left out): the two move together, or this does not compile.
const DELTA_MAGIC: &[u8; 8] = b"RSDELT18";
const _: () = assert!(MAGIC[6] == DELTA_MAGIC[6] && MAGIC[7] == DELTA_MAGIC[7]);
const HEADER: usize = 8 + 8 + 32 + 8 + 32;
/// A section's line in the table: its length and its digest.
const LINE: usize = 8 + 32;

/// Which of the two checkpoint files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Whole,
    Delta,
}

impl Form {
    fn path(self, dir: &Path) -> PathBuf {
        dir.join(match self {
            Form::Whole => "roll.checkpoint",
            Form::Delta => "roll.delta",
        })
    }

    /// Where it is written before it is synced and renamed into place.
    fn temporary(self, dir: &Path) -> PathBuf {
        let mut temporary = self.path(dir).into_os_string();
        temporary.push(".tmp");
        PathBuf::from(temporary)
    }

    fn magic(self) -> &'static [u8; 8] {
        match self {
            Form::Whole => MAGIC,
            Form::Delta => DELTA_MAGIC,
        }
    }

    /// A delta's header ends with its base.
    fn header(self) -> usize {
        match self {
            Form::Whole => HEADER,
            Form::Delta => HEADER + 8 + 32,
        }
    }
}

fn path(dir: &Path) -> PathBuf {
    Form::Whole.path(dir)
}

/// Writes `sections` as the checkpoint at `head`, atomically and durably: [`Draft::create`],
/// [`Draft::encode`] and [`Draft::end_section`] for each, [`Draft::commit`], in one go.
pub fn write(dir: &Path, head: Head, sections: &[&[u8]]) -> Result<(), Error> {
    let mut draft = Draft::create(dir, head)?;
    for section in sections {
        draft.encode(|out| out.write_all(section).map_err(|e| io("write", e)))?;
        draft.end_section()?;
    }
    draft.commit()
}

fn io(what: &str, e: std::io::Error) -> Error {
    Error::Io(format!("checkpoint: {what}: {e}"))
}

/// A checkpoint being written, in steps so that a caller can release what it encodes (the
/// roll's lock) between pieces and before the slow part: the payload streams to the file as it
/// is produced (hashed and counted on the way, section by section), and [`Draft::commit`] then
/// writes the table and fills in the header's length and digest, syncs, and renames. The
/// payload never exists twice in memory.
pub struct Draft {
    form: Form,
    dir: PathBuf,
    temporary: PathBuf,
    /// Buffered before the digest, so that the hash and the file see megabytes at a time
    /// instead of each of the encoder's many small writes.
    out: BufWriter<Digesting<File>>,
    /// The sections ended so far, as the table lists them.
    table: Vec<u8>,
}

impl Draft {
    /// Begins the whole checkpoint at `head`.
    pub fn create(dir: &Path, head: Head) -> Result<Self, Error> {
        Self::create_as(Form::Whole, dir, head, None)
    }

    /// Begins the delta at `head` on the whole checkpoint at `base`.
    pub fn create_delta(dir: &Path, head: Head, base: Head) -> Result<Self, Error> {
        Self::create_as(Form::Delta, dir, head, Some(base))
    }

    fn create_as(form: Form, dir: &Path, head: Head, base: Option<Head>) -> Result<Self, Error> {
        let temporary = form.temporary(dir);
        let mut file = File::create(&temporary).map_err(|e| io("create", e))?;
        let mut header = Vec::with_capacity(form.header());
        header.extend_from_slice(form.magic());
        header.extend_from_slice(&head.seq.to_be_bytes());
        header.extend_from_slice(&head.hash);
        // Length and digest are not known yet: zeros until `commit` (the file is a .tmp that
        // no reader opens until then).
        header.resize(HEADER, 0);
        if let Some(base) = base {
            header.extend_from_slice(&base.seq.to_be_bytes());
            header.extend_from_slice(&base.hash);
        }
        file.write_all(&header).map_err(|e| io("write", e))?;
        Ok(Self {
            form,
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
            table: Vec::new(),
        })
    }

    /// Streams the current section, or its next piece, into the file (into the page cache;
    /// nothing is synced yet).
    pub fn encode<T>(
        &mut self,
        encode: impl FnOnce(&mut dyn Write) -> Result<T, Error>,
    ) -> Result<T, Error> {
        encode(&mut self.out)
    }

    /// Ends the current section: what is encoded next starts another.
    pub fn end_section(&mut self) -> Result<(), Error> {
        self.out.flush().map_err(|e| io("write", e))?;
        let written = self.out.get_mut();
        let digest = std::mem::replace(&mut written.digest, Sha256::new()).finalize();
        self.table
            .extend_from_slice(&std::mem::take(&mut written.len).to_be_bytes());
        self.table.extend_from_slice(&digest);
        Ok(())
    }

    /// Writes the table after the sections ended (what was encoded since the last
    /// [`Draft::end_section`] is a section too, if there is any), completes the header, syncs
    /// the file, and moves it over the old checkpoint.
    pub fn commit(mut self) -> Result<(), Error> {
        if self.out.get_ref().len > 0 || !self.out.buffer().is_empty() {
            self.end_section()?;
        }
        let sections = u32::try_from(self.table.len() / LINE)
            .map_err(|_| Error::Io("checkpoint: more than 2³² sections".into()))?;
        let mut table = std::mem::take(&mut self.table);
        table.extend_from_slice(&sections.to_be_bytes());
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| io("write", e.into_error()))?
            .inner;
        file.write_all(&table).map_err(|e| io("write", e))?;
        let len = file.stream_position().map_err(|e| io("seek", e))? - self.form.header() as u64;
        let digest: Hash = Sha256::digest(&table).into();
        file.seek(SeekFrom::Start(48)).map_err(|e| io("seek", e))?;
        file.write_all(&len.to_be_bytes())
            .and_then(|()| file.write_all(&digest))
            .map_err(|e| io("write", e))?;
        file.sync_all().map_err(|e| io("fsync", e))?;
        drop(file);
        fs::rename(&self.temporary, self.form.path(&self.dir)).map_err(|e| io("rename", e))?;
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

fn cannot(e: std::io::Error) -> Unusable {
    Unusable::Damaged(format!("cannot read it: {e}"))
}

/// One section of a checkpoint, not yet read: where it is, and its digest. It has its own
/// handle on the file, so that sections can be read on threads of their own.
pub struct Section {
    file: File,
    start: u64,
    len: u64,
    digest: Hash,
}

impl Section {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks the section against its digest, in a pass that holds one buffer, so that a
    /// decoder only sees bytes this code wrote (a checkpoint's counts size its allocations);
    /// then gives its bytes to be read as they are decoded, never held whole (a section is
    /// up to hundreds of megabytes for a national roll, and a restart also builds the roll
    /// from it).
    pub fn open(mut self) -> Result<Payload, Unusable> {
        self.file
            .seek(SeekFrom::Start(self.start))
            .map_err(cannot)?;
        let mut digest = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut left = self.len;
        while left > 0 {
            let want = buffer
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = self.file.read(&mut buffer[..want]).map_err(cannot)?;
            if n == 0 {
                return Err(Unusable::Damaged("a section ends early".into()));
            }
            digest.update(&buffer[..n]);
            left -= n as u64;
        }
        if digest.finalize()[..] != self.digest {
            return Err(Unusable::Damaged(
                "a section does not match its digest".into(),
            ));
        }
        self.file
            .seek(SeekFrom::Start(self.start))
            .map_err(cannot)?;
        Ok(Payload(BufReader::with_capacity(
            1 << 20,
            self.file.take(self.len),
        )))
    }
}

/// A checked section's bytes: read it once, from the start.
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

/// A delta's households section runs to its end: its reader looks ahead for it.
impl std::io::BufRead for Payload {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.0.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.0.consume(amount)
    }
}

/// Reads the checkpoint's header and its table of sections, checked against the header's
/// digest; each section is checked against its own digest when it is opened.
pub fn read(dir: &Path) -> Result<(Head, Vec<Section>), Unusable> {
    read_as(Form::Whole, dir).map(|(head, _, sections)| (head, sections))
}

/// Reads the delta's header and its table of sections, as [`read`] does the checkpoint's: its
/// seq and hash, and then its base's.
pub fn read_delta(dir: &Path) -> Result<(Head, Head, Vec<Section>), Unusable> {
    let (head, base, sections) = read_as(Form::Delta, dir)?;
    Ok((
        head,
        base.expect("a delta's header holds its base"),
        sections,
    ))
}

fn read_as(form: Form, dir: &Path) -> Result<(Head, Option<Head>, Vec<Section>), Unusable> {
    let path = form.path(dir);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Unusable::Missing),
        Err(e) => return Err(cannot(e)),
    };
    let damaged = |why: &str| Unusable::Damaged(why.to_owned());
    let magic = form.magic();
    let header_len = form.header();
    let mut header = vec![0u8; header_len];
    if file.read_exact(&mut header).is_err() || header[..6] != magic[..6] {
        return Err(damaged("it does not start with a checkpoint header"));
    }
    if &header[..8] != magic {
        return Err(Unusable::Damaged(format!(
            "it was written by another version of rollstore ({}; this one reads {})",
            String::from_utf8_lossy(&header[..8]),
            String::from_utf8_lossy(magic)
        )));
    }
    let u64_at = |bytes: &[u8], at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let head_at = |at: usize| {
        let mut hash = GENESIS;
        hash.copy_from_slice(&header[at + 8..at + 40]);
        Head {
            seq: u64_at(&header, at),
            hash,
        }
    };
    let head = head_at(8);
    let base = (form == Form::Delta).then(|| head_at(HEADER));
    let len = u64_at(&header, 48);
    let size = file.metadata().map_err(cannot)?.len();
    if size.checked_sub(header_len as u64) != Some(len) || len < 4 {
        return Err(damaged("its length is not the one its header gives"));
    }
    let mut count = [0u8; 4];
    file.seek(SeekFrom::End(-4))
        .and_then(|_| file.read_exact(&mut count))
        .map_err(cannot)?;
    let sections = u64::from(u32::from_be_bytes(count));
    let table_len = sections * LINE as u64 + 4;
    if table_len > len {
        return Err(damaged("its table of sections is longer than it"));
    }
    let mut table = vec![0u8; table_len as usize];
    file.seek(SeekFrom::Start(header_len as u64 + len - table_len))
        .and_then(|_| file.read_exact(&mut table))
        .map_err(cannot)?;
    if Sha256::digest(&table)[..] != header[56..88] {
        return Err(damaged("its table of sections does not match its digest"));
    }
    let mut start = header_len as u64;
    let mut read = Vec::new();
    for line in table[..table.len() - 4].chunks_exact(LINE) {
        let len = u64_at(line, 0);
        let mut digest = GENESIS;
        digest.copy_from_slice(&line[8..]);
        read.push(Section {
            file: File::open(&path).map_err(cannot)?,
            start,
            len,
            digest,
        });
        start = start.saturating_add(len);
    }
    if start != header_len as u64 + len - table_len {
        return Err(damaged("its sections do not add up to its length"));
    }
    Ok((head, base, read))
}

/// Removes the checkpoint and the delta on it, if there are any.
pub fn remove(dir: &Path) -> Result<(), Error> {
    remove_delta(dir)?;
    remove_file(&path(dir))
}

/// Removes the delta, if there is one: once a whole checkpoint is newer, it builds on nothing.
pub fn remove_delta(dir: &Path) -> Result<(), Error> {
    remove_file(&Form::Delta.path(dir))
}

/// Removes what a crash or a failed write left half-written: the temporary file of a
/// checkpoint or delta that was being written. Nothing reads one, and the next checkpoint
/// would replace it, but until then it holds disk (a whole roll's worth, 245 MB at 1M
/// households), on a full disk the very space that ran out. Only for the store's one writer
/// (it holds sled's lock), and only while it writes no checkpoint.
pub fn remove_unfinished(dir: &Path) -> Result<(), Error> {
    // Both are tried: one that cannot be removed does not keep the other.
    let whole = remove_file(&Form::Whole.temporary(dir));
    let delta = remove_file(&Form::Delta.temporary(dir));
    whole.and(delta)
}

fn remove_file(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io(format!("cannot remove {}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sections_read(dir: &Path) -> Result<(Head, Vec<Vec<u8>>), Unusable> {
        let (head, sections) = read(dir)?;
        let bytes = sections
            .into_iter()
            .map(|section| {
                let mut bytes = Vec::new();
                section.open()?.read_to_end(&mut bytes).map_err(cannot)?;
                Ok(bytes)
            })
            .collect::<Result<_, Unusable>>()?;
        Ok((head, bytes))
    }

    fn damaged(read: Result<(Head, Vec<Vec<u8>>), Unusable>) -> String {
        match read {
            Err(Unusable::Damaged(why)) => why,
            other => panic!("read as {other:?}"),
        }
    }

    /// Given a committed checkpoint, and a whole checkpoint and a delta that a crash left
    /// half-written, when the store's writer removes what is unfinished, then only the two
    /// drafts go, and the committed checkpoint reads as before.
    #[test]
    fn what_a_crash_left_half_written_is_removed_and_nothing_else() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let committed = Head {
            seq: 42,
            hash: [7; 32],
        };
        write(dir.path(), committed, &[b"payload"]).expect("the checkpoint is written");
        let later = Head {
            seq: 50,
            hash: [8; 32],
        };
        for mut draft in [
            Draft::create(dir.path(), later).expect("a draft"),
            Draft::create_delta(dir.path(), later, committed).expect("a draft"),
        ] {
            draft
                .encode(|out| out.write_all(b"half").map_err(|e| io("write", e)))
                .expect("a piece is written");
            // Dropped uncommitted: what a crash leaves.
        }
        let drafts = || [Form::Whole, Form::Delta].map(|form| form.temporary(dir.path()).exists());
        assert_eq!(drafts(), [true, true]);
        remove_unfinished(dir.path()).expect("the drafts are removed");
        assert_eq!(drafts(), [false, false]);
        let (head, sections) = sections_read(dir.path()).expect("the checkpoint still reads");
        assert_eq!((head, sections), (committed, vec![b"payload".to_vec()]));
        // Nothing left to remove is no error.
        remove_unfinished(dir.path()).expect("nothing to remove");
    }

    #[test]
    fn sections_round_trip_and_any_damage_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read(dir.path()), Err(Unusable::Missing)));
        let head = Head {
            seq: 42,
            hash: [7; 32],
        };
        // No sections, one, several with an empty one among them.
        let cases: [&[&[u8]]; 3] = [&[], &[b"payload"], &[b"pay", b"", b"load", &[0; 5000]]];
        for sections in cases {
            write(dir.path(), head, sections).unwrap();
            let (read_head, read) = sections_read(dir.path()).unwrap();
            assert_eq!(read_head, head);
            assert_eq!(read, sections);
        }
        // Pieces encoded one after the other make one section; what follows the last
        // `end_section` is a section too.
        let mut draft = Draft::create(dir.path(), head).unwrap();
        for piece in [&b"pay"[..], b"load", b"|", b"next"] {
            draft
                .encode(|out| out.write_all(piece).map_err(|e| io("write", e)))
                .unwrap();
            if piece == b"|" {
                draft.end_section().unwrap();
            }
        }
        draft.commit().unwrap();
        assert_eq!(
            sections_read(dir.path()).unwrap().1,
            [&b"payload|"[..], b"next"]
        );

        // Every byte of the file is covered: flip any one and the checkpoint is refused,
        // when read or when its section is opened.
        let file = path(dir.path());
        let good = fs::read(&file).unwrap();
        for at in 0..good.len() {
            let mut bytes = good.clone();
            bytes[at] ^= 1;
            fs::write(&file, &bytes).unwrap();
            let read = sections_read(dir.path());
            // The seq and hash are not checked here, but against the log.
            if (8..48).contains(&at) {
                assert_ne!(read.unwrap().0, head);
            } else {
                damaged(read);
            }
        }
        // Cut short anywhere.
        for len in [0, 20, HEADER, good.len() - 1] {
            fs::write(&file, &good[..len]).unwrap();
            damaged(sections_read(dir.path()));
        }
        // An older version's checkpoint is unusable, and says why.
        let mut older = good.clone();
        older[..8].copy_from_slice(b"RSCKPT01");
        fs::write(&file, &older).unwrap();
        let why = damaged(sections_read(dir.path()));
        assert!(
            why.contains("another version of rollstore (RSCKPT01"),
            "{why}"
        );
        remove(dir.path()).unwrap();
        assert!(matches!(read(dir.path()), Err(Unusable::Missing)));
    }

    /// A delta is a file of its own, read with its base; its payload is covered as a whole
    /// checkpoint's is, and its base, like its seq and hash, is checked against the whole
    /// checkpoint's header, not here. Removing the checkpoint removes the delta too.
    #[test]
    fn a_delta_reads_back_with_its_base_beside_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (base, head) = (
            Head {
                seq: 40,
                hash: [4; 32],
            },
            Head {
                seq: 45,
                hash: [5; 32],
            },
        );
        assert!(matches!(read_delta(dir.path()), Err(Unusable::Missing)));
        write(dir.path(), base, &[b"whole"]).unwrap();
        let mut draft = Draft::create_delta(dir.path(), head, base).unwrap();
        draft
            .encode(|out| out.write_all(b"changes").map_err(|e| io("write", e)))
            .unwrap();
        draft.commit().unwrap();
        let (read_head, read_base, sections) = read_delta(dir.path()).unwrap();
        assert_eq!((read_head, read_base, sections.len()), (head, base, 1));
        let mut bytes = Vec::new();
        sections
            .into_iter()
            .next()
            .unwrap()
            .open()
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(bytes, b"changes");
        assert_eq!(
            sections_read(dir.path()).unwrap(),
            (base, vec![b"whole".to_vec()])
        );

        let file = Form::Delta.path(dir.path());
        let good = fs::read(&file).unwrap();
        for at in 0..good.len() {
            let mut bytes = good.clone();
            bytes[at] ^= 1;
            fs::write(&file, &bytes).unwrap();
            match read_delta(dir.path()) {
                // The seq and hash, and the base's: read as others, for the caller to refuse.
                Ok((h, b, _)) if (8..48).contains(&at) || (HEADER..HEADER + 40).contains(&at) => {
                    assert_ne!((h, b), (head, base), "byte {at}")
                }
                Ok((_, _, sections)) => {
                    let opened: Result<Vec<_>, _> =
                        sections.into_iter().map(Section::open).collect();
                    assert!(opened.is_err(), "byte {at} went unnoticed");
                }
                Err(Unusable::Damaged(_)) => {}
                Err(Unusable::Missing) => panic!("byte {at}: the delta went missing"),
            }
        }
        // A whole checkpoint's file is not a delta, nor the other way round.
        fs::copy(path(dir.path()), &file).unwrap();
        assert!(matches!(read_delta(dir.path()), Err(Unusable::Damaged(_))));
        remove(dir.path()).unwrap();
        assert!(matches!(read_delta(dir.path()), Err(Unusable::Missing)));
        assert!(matches!(read(dir.path()), Err(Unusable::Missing)));
    }
}
