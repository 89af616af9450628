//! The shared core of Paymesh. Every process (edge, services, workers, xtask) depends on
//! this crate and nothing here depends on them.
//!
//! - [`config`]: the declarative mesh config (`mesh-config/*.toml`), parsed once and validated.
//! - [`shard`]: the one function from merchant id to shard, used by the edge and the services.
//! - [`ids`]: payment and refund ids, which carry the shard that holds them.
//! - [`money`]: ISO 4217 currencies.
//! - [`breaker`]: Resilience4j-style circuit breakers (the edge's routes, the relay's publisher).
//! - [`shutdown`] and [`telemetry`]: process plumbing.

pub mod backoff;
pub mod breaker;
pub mod cli;
pub mod clock;
pub mod config;
pub mod duration;
pub mod grpc_code;
pub mod identity;
pub mod ids;
pub mod money;
pub mod reload;
pub mod shard;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod tls;

pub use shard::ShardId;
