//! Generates the gRPC code and the reflection descriptor set from `proto/` with protox
//! (a pure-Rust protobuf compiler), so a machine with only the Rust toolchain builds the crate.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/callbot/v1/callbot.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("callbot_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    // Proto maps as `BTreeMap`: the validated session keeps contacts' variables sorted (error paths
    // and the upstream body come out in key order), so decoding straight into one saves hashing
    // every key with SipHash and converting the map afterwards (BENCHMARKS.md, "Profile").
    // The codec decodes from the message's contiguous bytes (src/codec.rs).
    tonic_prost_build::configure()
        .btree_map(".")
        .codec_path("crate::codec::SliceCodec")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
