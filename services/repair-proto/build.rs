//! Compiles `repair/v1/*.proto` with protox into Rust types, tonic stubs and one encoded
//! FileDescriptorSet (options kept) for reflection and for the edge, which reads it from a
//! file named in the mesh config: the edge has no code for these services.

use std::path::PathBuf;

const PROTOS: &[&str] =
    &["repair/v1/requests.proto", "repair/v1/desk.proto", "repair/v1/stock.proto", "repair/v1/progress.proto", "repair/v1/events.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", root.join("repair").display());
    // google/api/annotations.proto and http.proto are the payments contract's copies.
    let google = root.join("../../proto");
    let mut compiler = protox::Compiler::new([&root, &google])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;
    std::fs::write(out.join("repair_descriptor.bin"), compiler.encode_file_descriptor_set())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
