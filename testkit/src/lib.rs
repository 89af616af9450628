//! Real infrastructure for tests and `cargo xtask up`, started on `127.0.0.1` with free ports.
//!
//! - [`postgres`]: throwaway PostgreSQL servers (Debian's binaries), one data directory each.
//! - [`port`]: free-port discovery.

pub mod certs;
pub mod port;
pub mod postgres;
pub mod process;

pub use postgres::{PgError, PgOptions, PgServer};
