//! rollstore: an event store for the poverty-alleviation household register (建档立卡) and its
//! dynamic adjustment (动态调整).
//!
//! ```text
//!  api ──▶ app ──▶ { domain, projection, store }
//! ```
//! See README.md's Architecture section for the map of modules and their invariants.

pub mod api;
pub mod app;
pub mod demo;
pub mod domain;
pub mod error;
pub mod fuzzing;
pub mod heap;
pub mod loadgen;
pub mod projection;
pub mod store;

pub use error::{Error, Result};

/// The protobuf messages and gRPC stubs generated from `proto/rollstore/v1`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("rollstore.v1");

    /// The encoded file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("rollstore_descriptor");
}
