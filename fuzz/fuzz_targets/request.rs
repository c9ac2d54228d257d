//! Arbitrary protobuf bytes as a batch command: parsed, validated and decided, never a panic
//! and never an internal error.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Err(bug) = rollstore::fuzzing::request(bytes) {
        panic!("{bug}");
    }
});
