//! Entry points for fuzzers: what happens to untrusted bytes, with every outcome a caller may
//! cause accepted and anything else (an internal error) reported. The cargo-fuzz targets in
//! `fuzz/` and the property tests in `tests/fuzz.rs` both drive these; a panic anywhere below
//! is a bug the fuzzer reports by itself.

use prost::Message;

use crate::api::convert;
use crate::app::Recorded;
use crate::domain::{decide, parse_date, Context, Policy};
use crate::error::Error;
use crate::pb;
use crate::projection::Roll;
use crate::store::Entry;

/// Request bytes → protobuf → domain command → decision. Refusals of the input are fine.
pub fn request(bytes: &[u8]) -> Result<(), String> {
    let Ok(message) = pb::Command::decode(bytes) else {
        return Ok(());
    };
    match convert::batch_command(&message) {
        Ok(command) => {
            let policy = Policy::default();
            let today = parse_date("2026-01-01").map_err(|e| e.to_string())?;
            let ctx = Context {
                today,
                policy: &policy,
            };
            match decide(ctx, None, &command, &Roll::default()) {
                Ok(_) | Err(Error::Rule { .. } | Error::InvalidInput(_) | Error::NotFound(_)) => {
                    Ok(())
                }
                Err(other) => Err(format!("{command:?} gave {other:?}")),
            }
        }
        Err(Error::InvalidInput(_)) => Ok(()),
        Err(other) => Err(format!("bad input gave {other:?}")),
    }
}

/// Stored bytes → event. Undecodable bytes must be `Corrupt`.
pub fn body(bytes: &[u8]) -> Result<(), String> {
    match Recorded::decode(Entry {
        seq: 1,
        hash: [0; 32],
        body: bytes.to_vec(),
    }) {
        Ok(_) | Err(Error::Corrupt(_)) => Ok(()),
        Err(other) => Err(format!("a body gave {other:?}")),
    }
}
