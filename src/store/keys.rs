//! Typed storage keys with one order-preserving encoding.
//!
//! Every key starts with a tag byte that names its kind, followed by its fields in big-endian
//! order, so that sled's byte order is the key's natural order and one kind's keys form one
//! contiguous range:
//!
//! ```text
//!   Key::Event(seq)   0x01 ‖ seq as u64 big-endian     the log, in seq order
//! ```
//!
//! Only `store` uses these; no other layer knows what a key looks like.

use crate::error::Error;

/// Something stored in the database, by what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// One event of the log.
    Event(u64),
}

const EVENT: u8 = 0x01;

impl Key {
    pub fn encode(self) -> [u8; 9] {
        match self {
            Key::Event(seq) => {
                let mut bytes = [0u8; 9];
                bytes[0] = EVENT;
                bytes[1..].copy_from_slice(&seq.to_be_bytes());
                bytes
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        match bytes {
            [EVENT, rest @ ..] if rest.len() == 8 => {
                let mut seq = [0u8; 8];
                seq.copy_from_slice(rest);
                Ok(Key::Event(u64::from_be_bytes(seq)))
            }
            _ => Err(Error::Corrupt(format!(
                "unknown storage key {}",
                hex::encode(bytes)
            ))),
        }
    }

    /// The range holding every key of the log.
    pub fn events() -> std::ops::RangeInclusive<[u8; 9]> {
        Key::Event(0).encode()..=Key::Event(u64::MAX).encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_order_as_their_seqs() {
        let seqs = [0u64, 1, 2, 255, 256, 65_535, 1 << 40, u64::MAX];
        for pair in seqs.windows(2) {
            assert!(Key::Event(pair[0]).encode() < Key::Event(pair[1]).encode());
        }
        for seq in seqs {
            assert_eq!(
                Key::decode(&Key::Event(seq).encode()).unwrap(),
                Key::Event(seq)
            );
        }
        assert!(Key::decode(&[0x02, 0, 0]).is_err());
        assert!(Key::decode(&[EVENT, 1, 2]).is_err());
    }
}
