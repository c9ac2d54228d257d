//! What the roll's piecewise checkpoints share (see `Roll::begin_checkpoint`): each structure
//! a checkpoint reads a piece at a time is [`Piecewise`], holds its capture in a [`Slot`], one
//! at a time, and writes its entries behind their count (each section's, for one written in
//! several sections), kept in [`Progress`]; one oracle test, `check_read_in_pieces`, checks
//! them all.
//!
//! A slot is a mutex because the checkpoint moves its capture on while it only reads the roll
//! (writes are kept out by the roll's lock, not by this one); writes, which hold the roll
//! exclusively, reach it without locking ([`Slot::get_mut`]). Pure data: no I/O.

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::Error;

/// A structure of the roll that a checkpoint reads a piece at a time while writes change it:
/// a write to what the checkpoint has not read yet first keeps it as it was.
pub(crate) trait Piecewise {
    /// The sections of a checkpoint it fills, one after the other: one, unless it is large
    /// enough that a start-up should decode it on several threads.
    fn sections(&self) -> usize {
        1
    }

    /// Starts a checkpoint of it as it is now, of `extent`: a structure whose entries do not
    /// know the event that last changed them writes every entry either way. Refused while
    /// another is under way.
    fn begin_capture(&self, extent: Extent) -> Result<(), Error>;

    /// Encodes about `step` more entries of section `section` of the checkpoint under way
    /// onto `out` (its serialized form, piece after piece), each as it was when the checkpoint
    /// began; true once the section is written. Sections are written in order, each to its end.
    fn write_captured(&self, section: usize, step: usize, out: &mut Vec<u8>)
        -> Result<bool, Error>;

    /// Ends the checkpoint under way, if any (written, or abandoned after an error).
    fn end_capture(&self);
}

/// How much of the roll a checkpoint writes.
///
/// ```text
///   log     1 ……………………… base ……………………… delta ……………………… head
///           └ whole checkpoint ┘              tail: replayed at a start-up
///                               └ delta: what changed ┘
/// ```
///
/// A delta is the cheap one to write often: of the households and the request index, which
/// know the seq of the event that last changed each entry, it holds only the entries that
/// changed after the whole checkpoint it builds on, which a start-up decodes too and lays
/// over it. The person index and the region trees do not know when an entry changed, but
/// follow from the households: a delta leaves them out, and a start-up brings the whole
/// checkpoint's up to the delta's households (`Roll::from_sections`). The first fields (the
/// tallies, the recorded times) are small and written whole in either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    /// Every entry: a checkpoint of the whole roll.
    Whole,
    /// A delta on the whole checkpoint at this seq.
    After(u64),
}

impl Extent {
    /// Whether an entry last changed by the event at `seq` is written.
    pub fn holds(self, seq: u64) -> bool {
        match self {
            Extent::Whole => true,
            Extent::After(base) => seq > base,
        }
    }
}

/// Where a structure keeps the checkpoint reading it, if one is.
pub(crate) struct Slot<C>(Mutex<Option<C>>);

impl<C> Default for Slot<C> {
    fn default() -> Self {
        Self(Mutex::new(None))
    }
}

impl<C> Clone for Slot<C> {
    /// Empty: a checkpoint under way is the original's, not a copy's.
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// Slots are all alike: a checkpoint under way is not part of what a structure holds.
impl<C> PartialEq for Slot<C> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<C> Eq for Slot<C> {}

impl<C> std::fmt::Debug for Slot<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

impl<C> Slot<C> {
    /// The capture, for the checkpoint (which holds the roll only to read it).
    pub fn lock(&self) -> MutexGuard<'_, Option<C>> {
        // Nothing under this lock can leave a capture half-changed; a panic elsewhere that
        // poisoned it does not make its contents wrong.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The capture, for a write (which holds the roll exclusively).
    pub fn get_mut(&mut self) -> Option<&mut C> {
        self.0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
    }

    /// Starts `capture`; refused while another is under way.
    pub fn begin(&self, capture: C) -> Result<(), Error> {
        let mut slot = self.lock();
        if slot.is_some() {
            return Err(Error::Unavailable(
                "another checkpoint of the roll is being written".into(),
            ));
        }
        *slot = Some(capture);
        Ok(())
    }

    pub fn end(&self) {
        *self.lock() = None;
    }
}

/// Refuses a section other than the first of a structure written as one section.
pub(crate) fn only_section(section: usize) -> Result<(), Error> {
    if section == 0 {
        Ok(())
    } else {
        Err(Error::Io(format!(
            "checkpoint: asked for section {section} of a structure written as one"
        )))
    }
}

/// The capture in a locked slot, or the error that there is none.
pub(crate) fn under_way<C>(slot: &mut Option<C>) -> Result<&mut C, Error> {
    slot.as_mut()
        .ok_or_else(|| Error::Unavailable("no checkpoint of the roll is under way".into()))
}

/// How far a checkpoint has written a sequence (or map) of entries.
#[derive(Debug)]
pub(crate) struct Progress {
    /// Entries when the checkpoint began: the count it writes.
    pub len: usize,
    /// Entries written so far.
    pub written: usize,
    /// Whether the count is written.
    started: bool,
}

impl Progress {
    pub fn of(len: usize) -> Self {
        Self {
            len,
            written: 0,
            started: false,
        }
    }

    /// Writes the count that leads the entries (as postcard writes a sequence's or a map's
    /// length), the first time only.
    pub fn lead(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        if !self.started {
            postcard::to_io(&self.len, out).map_err(super::checkpoint_failed)?;
            self.started = true;
        }
        Ok(())
    }
}

/// The oracle of every [`Piecewise`] structure: read in pieces of `step` with `changes`
/// random changes after each piece, it decodes as the structure cloned when the checkpoint
/// began, and, with no changes, is byte for byte the whole structure's serialized form.
#[cfg(test)]
pub(crate) fn check_read_in_pieces<T, R>(
    cases: &[(usize, usize)],
    filled: impl Fn(&mut R) -> T,
    change: impl Fn(&mut T, &mut R),
) where
    T: Piecewise + Clone + PartialEq + serde::Serialize + serde::de::DeserializeOwned,
    R: rand::SeedableRng,
{
    for (seed, &(step, changes)) in cases.iter().enumerate() {
        let mut rng = R::seed_from_u64(seed as u64);
        let mut structure = filled(&mut rng);
        let began = structure.clone();
        structure
            .begin_capture(Extent::Whole)
            .expect("no other checkpoint is under way");
        let mut payload = Vec::new();
        let mut pieces = 0;
        for section in 0..structure.sections() {
            while !structure
                .write_captured(section, step, &mut payload)
                .expect("a piece encodes")
            {
                pieces += 1;
                for _ in 0..changes {
                    change(&mut structure, &mut rng);
                }
            }
        }
        structure.end_capture();
        let case = format!("step {step}, {changes} changes a piece, {pieces} pieces");
        check_payload(&case, &payload, &began, &structure, changes > 0);
    }
}

/// The verdict on a checkpoint read in pieces: if anything `changed` in between, `now` moved
/// on from `began`; the payload decodes as `began`; with nothing changed, it is byte for byte
/// `began`'s whole encoding.
#[cfg(test)]
pub(crate) fn check_payload<T>(case: &str, payload: &[u8], began: &T, now: &T, changed: bool)
where
    T: PartialEq + serde::Serialize + serde::de::DeserializeOwned,
{
    assert!(
        !changed || now != began,
        "{case}: nothing changed in between"
    );
    let read: T = postcard::from_bytes(payload).expect(case);
    assert!(
        read == *began,
        "{case}: not what it was when the checkpoint began"
    );
    if !changed {
        let whole = postcard::to_stdvec(began).expect("the structure encodes");
        assert_eq!(payload, whole, "{case}");
    }
}
