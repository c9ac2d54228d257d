//! Bad input never panics and is never an internal error: property-based equivalents, on
//! stable Rust, of the cargo-fuzz targets in fuzz/.
//!
//! - stored bodies: arbitrary bytes, and valid bodies with bytes flipped, decode to an event or
//!   to `Corrupt`, never a panic;
//! - requests: arbitrary protobuf bytes, and valid commands with bytes flipped, parse to a
//!   domain command or to `InvalidInput`; parsed commands are decided to an event or to a rule,
//!   never a panic.

mod common;

use common::*;
use proptest::prelude::*;
use prost::Message;
use rollstore::api::convert;

/// Valid encodings to mutate: a few commands of every kind.
fn seeds() -> Vec<Vec<u8>> {
    let commands = [
        identify("H1", "2016-03-01", &[1, 2, 3]),
        lift_out("H1", "2017-11-20", 4000),
        relapse("H1", "2018-05-01"),
        exit("H1", "2018-06-01", rollstore::domain::ExitReason::Removed),
    ];
    commands
        .iter()
        .map(|c| convert::command_message(c).encode_to_vec())
        .collect()
}

fn body_seeds() -> Vec<Vec<u8>> {
    let event = identify("H1", "2016-03-01", &[1, 2]).recorded(1, 1, chrono::Utc::now(), "a");
    vec![serde_json::to_vec(&event).unwrap()]
}

fn request(bytes: &[u8]) {
    if let Err(bug) = rollstore::fuzzing::request(bytes) {
        panic!("{bug}");
    }
}

fn body(bytes: &[u8]) {
    if let Err(bug) = rollstore::fuzzing::body(bytes) {
        panic!("{bug}");
    }
}

fn mutate(seed: &[u8], flips: &[(usize, u8)], cut: usize) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for (at, value) in flips {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = *value;
        }
    }
    bytes.truncate(bytes.len().saturating_sub(cut % 4));
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_request_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        request(&bytes);
    }

    #[test]
    fn mutated_requests(seed in 0usize..4, flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        request(&mutate(&seeds()[seed], &flips, cut));
    }

    #[test]
    fn arbitrary_bodies(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        body(&bytes);
    }

    #[test]
    fn mutated_bodies(flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        body(&mutate(&body_seeds()[0], &flips, cut));
    }
}
