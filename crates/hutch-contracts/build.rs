//! Generates the envd protocol's Rust types from `proto/*.proto`: prost for the binary format,
//! pbjson for proto3's JSON mapping. protox compiles the files, so no `protoc` is needed.

use std::path::PathBuf;

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/process.proto", "proto/filesystem.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    prost_build::Config::new()
        // Maps in key order, so JSON output is the same on every run.
        .btree_map(["."])
        .bytes(["."])
        // Timestamp is generated here too (rather than taken from prost-types) so that its JSON
        // form, in `envd::timestamp`, can live on the same type.
        .compile_well_known_types()
        .out_dir(&out_dir)
        .compile_fds(descriptors.clone())?;

    let encoded = descriptors.encode_to_vec();
    // The process service's answers carry every field, defaults included (the agent has always
    // sent `"exitCode": 0`, and clients read it); the filesystem's omit defaults like envd's.
    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .out_dir(&out_dir)
        .btree_map(["."])
        .ignore_unknown_fields()
        .emit_fields()
        .build(&[".process"])?;
    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .out_dir(&out_dir)
        .btree_map(["."])
        .ignore_unknown_fields()
        .build(&[".filesystem"])?;
    Ok(())
}
