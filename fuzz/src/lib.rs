//! Fuzzing the edge's parsers of untrusted input on stable Rust: a seeded mutation engine
//! ([`engine`]) and the targets with their properties ([`targets`]). `cargo xtask fuzz` runs
//! the long campaign (docs/FUZZING.md); `cargo test -p paymesh-fuzz` a short pass over the
//! committed corpus (`fuzz/corpus/<target>/`).

pub mod engine;
pub mod targets;

/// Where the committed corpus lives.
pub fn corpus_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}
