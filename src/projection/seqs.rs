//! A household's seqs (its stream index), kept compactly: the roll holds one list per household
//! and a national log has ~10 events per household, ~300 million seqs in all.
//!
//! ```text
//!   seqs     12 ─────── 1,004,233 ──── 1,871,590          ascending, gapped
//!   deltas   12         1,004,221      867,357            each from the one before
//!   bytes    [0c] [cd a5 3d] [9d f8 34]                   LEB128: 7 bits a byte
//! ```
//!
//! As a `Vec<u64>` a seq is 8 bytes; as a delta it is 1–4 bytes for any log below a few hundred
//! million events. The count and the last seq are kept beside the bytes, so that a push, the
//! household's version and its newest seq cost nothing to find. Pure data: no I/O.

use serde::{Deserialize, Serialize};

#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seqs {
    len: u32,
    last: u64,
    #[serde(with = "serde_bytes")]
    deltas: Box<[u8]>,
}

impl Seqs {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn last(&self) -> Option<u64> {
        (self.len > 0).then_some(self.last)
    }

    /// Appends `seq`, which must be above every seq already held (the log's order).
    pub fn push(&mut self, seq: u64) {
        debug_assert!(
            self.is_empty() || seq > self.last,
            "seqs are pushed in order"
        );
        let mut delta = seq.saturating_sub(self.last);
        let mut bytes = std::mem::take(&mut self.deltas).into_vec();
        // Grows by exactly what the delta takes, as the roll's other per-household vectors do
        // (`push_tight`): most households hold a handful of events. Reserved before the push,
        // as one `realloc` to the exact size: a push on a full vector doubles it, and the
        // boxed slice then shrank it again, two reallocations for every event.
        bytes.reserve_exact(varint_len(delta));
        loop {
            let low = (delta & 0x7f) as u8;
            delta >>= 7;
            if delta == 0 {
                bytes.push(low);
                break;
            }
            bytes.push(low | 0x80);
        }
        self.deltas = bytes.into_boxed_slice();
        self.len += 1;
        self.last = seq;
    }

    /// The seqs, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let mut bytes = self.deltas.iter();
        let mut seq = 0u64;
        std::iter::from_fn(move || {
            let mut delta = 0u64;
            let mut shift = 0;
            loop {
                // A varint cut short (bytes this code did not write) ends the list instead of
                // panicking; `shift` is capped for the same reason.
                let byte = *bytes.next()?;
                delta |= u64::from(byte & 0x7f) << shift.min(63);
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            seq = seq.wrapping_add(delta);
            Some(seq)
        })
    }

    /// Where `seq` is in the list, if it is there.
    pub fn position(&self, seq: u64) -> Option<usize> {
        self.iter().take_while(|s| *s <= seq).position(|s| s == seq)
    }

    pub fn to_vec(&self) -> Vec<u64> {
        self.iter().collect()
    }
}

/// How many bytes `value` takes as a varint (seven bits to a byte, at least one).
fn varint_len(value: u64) -> usize {
    (u64::BITS - value.leading_zeros()).max(1).div_ceil(7) as usize
}

impl std::fmt::Debug for Seqs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A plain vector is the oracle: whatever ascending seqs go in come back out, by
        /// position too, and through a checkpoint's encoding.
        #[test]
        fn seqs_read_back_as_a_vector_would(
            gaps in proptest::collection::vec(
                prop_oneof![1u64..4, 100u64..70_000, 1u64 << 40..1u64 << 41],
                0..40,
            )
        ) {
            let mut vector = Vec::new();
            let mut seqs = Seqs::default();
            let mut seq = 0u64;
            for gap in gaps {
                seq += gap;
                vector.push(seq);
                seqs.push(seq);
            }
            prop_assert_eq!(seqs.to_vec(), vector.clone());
            prop_assert_eq!(seqs.len(), vector.len());
            prop_assert_eq!(seqs.last(), vector.last().copied());
            for (i, s) in vector.iter().enumerate() {
                prop_assert_eq!(seqs.position(*s), Some(i));
                prop_assert_eq!(seqs.position(s + 1), vector.binary_search(&(s + 1)).ok());
            }
            prop_assert_eq!(seqs.position(0), None);
            let bytes = postcard::to_stdvec(&seqs).expect("seqs encode");
            let read: Seqs = postcard::from_bytes(&bytes).expect("seqs decode");
            prop_assert_eq!(read, seqs);
        }
    }

    /// A varint's length is what postcard, which writes the same varints, makes of it.
    #[test]
    fn a_varint_takes_what_postcard_writes() {
        for shift in 0..64 {
            for value in [1u64 << shift, (1u64 << shift) - 1, (1u64 << shift) + 1] {
                let written = postcard::to_stdvec(&value).expect("a u64 encodes").len();
                assert_eq!(varint_len(value), written, "{value}");
            }
        }
        assert_eq!(varint_len(u64::MAX), 10);
    }

    /// Bytes that end inside a varint read as the seqs before it, without a panic.
    #[test]
    fn a_truncated_list_reads_up_to_the_cut() {
        let cut = Seqs {
            len: 2,
            last: 300,
            deltas: Box::new([5, 0xff, 0xff]),
        };
        assert_eq!(cut.to_vec(), vec![5]);
    }
}
