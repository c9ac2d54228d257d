//! Typed storage keys with one order-preserving encoding.
//!
//! Every key starts with a tag byte that names its kind, followed by its fields in big-endian
//! order, so that sled's byte order is the key's natural order and one kind's keys form one
//! contiguous range:
//!
//! ```text
//!   Key::Event(seq)   0x01 ‖ seq as u64 big-endian     one event (stores written before blocks)
//!   Key::Block(first) 0x02 ‖ first as u64 big-endian   the events first, first + 1, … of a block
//! ```
//!
//! The log is written in blocks now; a store written one event to a key is still read as it
//! is. Its events all come before the first block, and the tag of an event sorts before the tag
//! of a block, so one range from `Key::Event(from)` to the last block reads the whole log in
//! seq order, whichever kinds it holds.
//!
//! Only `store` uses these; no other layer knows what a key looks like.

use crate::error::Error;

/// Something stored in the database, by what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// One event of the log, in a store written before blocks.
    Event(u64),
    /// A block of consecutive events of the log, by the seq of its first.
    Block(u64),
}

const EVENT: u8 = 0x01;
const BLOCK: u8 = 0x02;

impl Key {
    pub fn encode(self) -> [u8; 9] {
        let (tag, seq) = match self {
            Key::Event(seq) => (EVENT, seq),
            Key::Block(first) => (BLOCK, first),
        };
        let mut bytes = [0u8; 9];
        bytes[0] = tag;
        bytes[1..].copy_from_slice(&seq.to_be_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let seq = |rest: &[u8]| {
            let mut seq = [0u8; 8];
            seq.copy_from_slice(rest);
            u64::from_be_bytes(seq)
        };
        match bytes {
            [EVENT, rest @ ..] if rest.len() == 8 => Ok(Key::Event(seq(rest))),
            [BLOCK, rest @ ..] if rest.len() == 8 => Ok(Key::Block(seq(rest))),
            _ => Err(Error::Corrupt(format!(
                "unknown storage key {}",
                hex::encode(bytes)
            ))),
        }
    }

    /// The range holding every key of the log, of both kinds.
    pub fn log() -> std::ops::RangeInclusive<[u8; 9]> {
        Key::Event(0).encode()..=Key::Block(u64::MAX).encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_by_kind_then_seq_and_decode_to_themselves() {
        let seqs = [0u64, 1, 2, 255, 256, 65_535, 1 << 40, u64::MAX];
        let keys: Vec<Key> = seqs
            .iter()
            .map(|&s| Key::Event(s))
            .chain(seqs.iter().map(|&s| Key::Block(s)))
            .collect();
        for pair in keys.windows(2) {
            assert!(pair[0].encode() < pair[1].encode(), "{pair:?}");
        }
        for key in keys {
            assert_eq!(Key::decode(&key.encode()).unwrap(), key);
            assert!(Key::log().contains(&key.encode()));
        }
        assert!(Key::decode(&[0x03, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(Key::decode(&[EVENT, 1, 2]).is_err());
        assert!(Key::decode(&[BLOCK]).is_err());
    }
}
