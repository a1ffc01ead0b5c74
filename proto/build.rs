//! Generates the CRI `runtime.v1` messages, clients and servers from
//! `proto/runtime/v1/api.proto` (Kubernetes v1.36, see README.md).
//!
//! The configuration is k8s-cri 0.11's (`serde::Serialize`/`Deserialize` on
//! every generated type), plus `#[serde(default)]` on messages (state saved
//! with older definitions lacks the newer fields) and one field attribute
//! that keeps `KeyValue.value`'s JSON a string now that the field is `bytes`
//! upstream.

use std::error::Error;
use std::path::PathBuf;

const PROTO: &str = "proto/runtime/v1/api.proto";

/// The only field option in the upstream file that Debian bookworm's protoc
/// (3.21) does not know; it changes nothing in the generated Rust.
const DEBUG_REDACT: &str = " [debug_redact = true]";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed=build.rs");

    // The checked-in file is verbatim upstream; protoc sees a copy without
    // `debug_redact` (protobuf >= 22 only; prost ignores it anyway).
    let text = std::fs::read_to_string(PROTO)?;
    let include = PathBuf::from(std::env::var("OUT_DIR")?).join("proto");
    let copy = include.join("runtime/v1/api.proto");
    std::fs::create_dir_all(copy.parent().ok_or("no parent")?)?;
    std::fs::write(&copy, text.replace(DEBUG_REDACT, ""))?;

    tonic_prost_build::configure()
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        // State written with older definitions lacks newer fields.
        .message_attribute(".", "#[serde(default)]")
        .field_attribute(
            ".runtime.v1.KeyValue.value",
            "#[serde(with = \"crate::serde_env_value\")]",
        )
        .compile_protos(&[copy], &[include])?;
    Ok(())
}
