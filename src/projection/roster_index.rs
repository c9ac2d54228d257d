//! A region tree of the roll (roster key → household number) that a checkpoint can read a
//! piece at a time while writes change it.
//!
//! ```text
//!   keys in order   ……… last written ┊ still to write ………………………………………………
//!                                    ┊ a write here first notes the key's value at the
//!                                    ┊ checkpoint's start in `before` (None: it had none)
//!   a piece:  the live keys after `last` merged with `before`'s, each as it was at the start
//! ```
//!
//! Reads go straight to the tree (`Deref`); every change goes through [`RosterIndex::insert`],
//! [`RosterIndex::insert_if_absent`] or [`RosterIndex::remove`], which keep the checkpoint's
//! view. Pure data: no I/O (pieces are encoded into the caller's buffer).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::capture::{only_section, under_way, Extent, Piecewise, Progress, Slot};
use super::{bulk_built, checkpoint_failed, RosterKey};
use crate::error::Error;

/// Serialized as its tree alone (a checkpoint under way is not part of the index).
#[derive(Clone, Default, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct RosterIndex {
    #[serde(deserialize_with = "bulk_built")]
    tree: BTreeMap<RosterKey, u32>,
    /// The checkpoint reading this tree, if one is.
    #[serde(skip)]
    capture: Slot<Capture>,
}

#[derive(Debug)]
struct Capture {
    /// Entries when the checkpoint began, and how many are written.
    progress: Progress,
    /// The last key written or passed over; `None` before the first.
    last: Option<RosterKey>,
    /// Every key not yet written that a write changed since the start, with its value then.
    before: BTreeMap<RosterKey, Option<u32>>,
    /// Every entry is written: writes need note nothing more.
    done: bool,
}

impl Capture {
    /// Keeps `then`, `key`'s value when the checkpoint began, if the checkpoint has not written
    /// the key yet and nothing was kept for it before.
    fn note(&mut self, key: &RosterKey, then: Option<u32>) {
        let unwritten = !self.done && self.last.as_ref().is_none_or(|last| key > last);
        if unwritten && !self.before.contains_key(key) {
            self.before.insert(key.clone(), then);
        }
    }
}

impl std::ops::Deref for RosterIndex {
    type Target = BTreeMap<RosterKey, u32>;

    fn deref(&self) -> &Self::Target {
        &self.tree
    }
}

impl RosterIndex {
    /// Notes `key`'s value for a checkpoint under way that has not written it yet.
    fn note(&mut self, key: &RosterKey) {
        if let Some(capture) = self.capture.get_mut() {
            capture.note(key, self.tree.get(key).copied());
        }
    }

    pub fn insert(&mut self, key: RosterKey, number: u32) {
        self.note(&key);
        self.tree.insert(key, number);
    }

    /// Inserts `key` unless it is there already. One search of the tree, not two: every
    /// event applied asks this of its household's region key.
    pub fn insert_if_absent(&mut self, key: RosterKey, number: u32) {
        if let Entry::Vacant(slot) = self.tree.entry(key) {
            if let Some(capture) = self.capture.get_mut() {
                // Absent now, so absent when the checkpoint began unless a note says otherwise.
                capture.note(slot.key(), None);
            }
            slot.insert(number);
        }
    }

    pub fn remove(&mut self, key: &RosterKey) {
        if self.tree.contains_key(key) {
            self.note(key);
            self.tree.remove(key);
        }
    }
}

impl Piecewise for RosterIndex {
    /// Starts a checkpoint of the tree as it is now, whole whatever the extent: an entry does
    /// not know the event that put it there. Refused while another is under way.
    fn begin_capture(&self, _: Extent) -> Result<(), Error> {
        self.capture.begin(Capture {
            progress: Progress::of(self.tree.len()),
            last: None,
            before: BTreeMap::new(),
            done: false,
        })
    }

    /// Encodes up to `step` more entries of the checkpoint under way onto `out` (the count
    /// first), each as it was when the checkpoint began; true once all are (and then on).
    fn write_captured(
        &self,
        section: usize,
        step: usize,
        out: &mut Vec<u8>,
    ) -> Result<bool, Error> {
        only_section(section)?;
        let mut guard = self.capture.lock();
        let capture = under_way(&mut guard)?;
        if capture.done {
            return Ok(true);
        }
        capture.progress.lead(out)?;
        let after = match &capture.last {
            Some(last) => Bound::Excluded(last),
            None => Bound::Unbounded,
        };
        let mut live = self.tree.range((after, Bound::Unbounded)).peekable();
        let mut saved = capture.before.range((after, Bound::Unbounded)).peekable();
        let (mut written, mut last) = (0, None);
        while written < step.max(1) {
            // The next key of either, each once; a noted value overrides the live one.
            let (key, value) = match (live.peek(), saved.peek()) {
                (None, None) => break,
                (Some((live_key, _)), Some((saved_key, _))) if saved_key <= live_key => {
                    if saved_key == live_key {
                        live.next();
                    }
                    let (key, then) = saved.next().expect("peeked");
                    (key, *then)
                }
                (Some(_), _) => {
                    let (key, now) = live.next().expect("peeked");
                    (key, Some(*now))
                }
                (None, Some(_)) => {
                    let (key, then) = saved.next().expect("peeked");
                    (key, *then)
                }
            };
            // `None`: the key came after the checkpoint began; it is not in it.
            if let Some(number) = value {
                postcard::to_io(&(key, number), &mut *out).map_err(checkpoint_failed)?;
                written += 1;
            }
            last = Some(key);
        }
        let exhausted = live.peek().is_none() && saved.peek().is_none();
        let last = last.cloned();
        capture.progress.written += written;
        if let Some(last) = last {
            // What is noted up to `last` is written or passed over: keep only what is ahead.
            let mut ahead = capture.before.split_off(&last);
            ahead.remove(&last);
            capture.before = ahead;
            capture.last = Some(last);
        }
        if exhausted {
            let Progress { written, len, .. } = capture.progress;
            if written != len {
                return Err(Error::Io(format!(
                    "checkpoint: a region index gave {written} entries where it held {len} at the start"
                )));
            }
            capture.done = true;
            capture.before.clear();
        }
        Ok(capture.done)
    }

    /// Ends the checkpoint under way, if any.
    fn end_capture(&self) {
        self.capture.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{HouseholdId, RegionCode};
    use crate::projection::capture::check_read_in_pieces;
    use rand::RngExt;
    use rand_chacha::ChaCha8Rng;

    fn key(region: u64, id: u64) -> RosterKey {
        (
            RegionCode::parse(&format!("{:012}", 610_602_000_000 + region)).unwrap(),
            HouseholdId::parse(&format!("H{id}")).unwrap(),
        )
    }

    /// Pieces of every size, with inserts, re-inserts and removals of keys before, at and
    /// after the piece boundary in between, read back as the tree was when the checkpoint
    /// began; the tree cloned then is the oracle.
    #[test]
    fn a_tree_read_in_pieces_between_changes_is_the_tree_it_was() {
        let cases = [
            (1, 0),
            (1, 3),
            (2, 1),
            (7, 5),
            (50, 40),
            (1_000, 200),
            (10_000, 0),
        ];
        check_read_in_pieces(
            &cases,
            |rng: &mut ChaCha8Rng| {
                let mut index = RosterIndex::default();
                for n in 0..2_000 {
                    index.insert(key(rng.random_range(0..20), n), n as u32);
                }
                index
            },
            |index, rng| {
                let k = key(rng.random_range(0..20), rng.random_range(0..2_500));
                match rng.random_range(0..3) {
                    0 => index.insert(k, rng.random_range(0..5_000)),
                    1 => index.insert_if_absent(k, rng.random_range(0..5_000)),
                    _ => index.remove(&k),
                }
            },
        );
    }
}
