//! Compiles the query API's protos (`proto/triage/v1/*.proto`) into Rust
//! with protox, a protobuf compiler written in Rust, so that building needs
//! no system `protoc`. Also writes the encoded descriptor set that the
//! server-reflection service hands to clients such as `grpcurl`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("proto");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root.join("triage/v1"))? {
        let path = entry?.path();
        if path
            .extension()
            .is_some_and(|extension| extension == "proto")
        {
            files.push(path);
        }
    }
    // Directory order is not stable; the generated code should be.
    files.sort();
    println!("cargo:rerun-if-changed=proto/triage/v1");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&files)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("triage_v1_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure().compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
