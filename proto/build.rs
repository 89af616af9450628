//! Compiles `proto/` with protox (pure Rust, no `protoc`) into Rust types, tonic stubs and
//! one encoded FileDescriptorSet that keeps every option, `google.api.http` included.

use std::path::PathBuf;

/// Paymesh's own protos, and the google ones the edge needs in its built-in descriptors
/// even when no service imports them: HttpBody, google.rpc.Status and its standard details,
/// and the well-known types a user's descriptor set may leave out (protox has them built in).
const PROTOS: &[&str] = &[
    "payments/v1/payments.proto",
    "payments/v1/events.proto",
    "query/v1/query.proto",
    "google/api/httpbody.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
    "google/protobuf/any.proto",
    "google/protobuf/duration.proto",
    "google/protobuf/empty.proto",
    "google/protobuf/field_mask.proto",
    "google/protobuf/struct.proto",
    "google/protobuf/timestamp.proto",
    "google/protobuf/wrappers.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    for dir in ["payments", "query", "google"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;

    // The encoded set keeps extension options (google.api.http) that prost-types would drop.
    std::fs::write(out.join("paymesh_descriptor.bin"), compiler.encode_file_descriptor_set())?;

    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
