//! Compiles the bench's own proto (an upstream that does no work) with protox, importing
//! `google/api` from the contract crate's copy. Only the descriptor set is needed: the
//! upstream answers with raw bytes.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", root.join("proto").display());
    let mut compiler = protox::Compiler::new([root.join("proto"), root.join("../proto")])?;
    compiler.include_imports(true);
    compiler.open_files(["paymesh/bench/v1/echo.proto"])?;
    std::fs::write(out.join("echo_descriptor.bin"), compiler.encode_file_descriptor_set())?;
    Ok(())
}
