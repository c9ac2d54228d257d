//! Compiles `proto/rollstore/v1/*.proto` into Rust with tonic-prost-build.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so a fresh machine needs nothing but the
//! Rust toolchain. The file descriptor set is written beside the generated code so that the
//! server can offer gRPC reflection.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of intent: build scripts are single-threaded, so setting the variable cannot race.
    unsafe { env::set_var("PROTOC", protoc) };
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protos = ["proto/rollstore/v1/rollstore.proto"];
    tonic_prost_build::configure()
        // A batch's commands decode into a Vec that grows by doubling as they arrive; boxed,
        // each element is a pointer instead of the largest request (hundreds of bytes), so the
        // growth moves little (it was ~1% of a batch's samples).
        .boxed(".rollstore.v1.Command.command")
        // Messages decode from one slice instead of through tonic's `DecodeBuf`: see the
        // codec's module doc.
        .codec_path("crate::api::codec::SliceCodec")
        .file_descriptor_set_path(out_dir.join("rollstore_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
