//! Arbitrary stored bytes as an event body: decoded or reported corrupt, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Err(bug) = rollstore::fuzzing::body(bytes) {
        panic!("{bug}");
    }
});
