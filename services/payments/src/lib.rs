//! The payments service: authorize, capture, refund and void payments on one PostgreSQL
//! shard, with Stripe-style idempotency keys and a transactional outbox.
//!
//! A request flows `grpc` (decode, [`validate`], shard ownership) -> `store` (one
//! transaction: lock, idempotency claim, the pure rules of [`lifecycle`], writes, outbox) -> back as a
//! `tonic::Status` or the response. `server` wires the instance together; `main.rs` only
//! reads arguments.

pub mod error;
pub mod grpc;
pub mod health;
pub mod lifecycle;
pub mod metrics;
pub mod reload;
pub mod server;
pub mod store;
pub mod validate;

pub use error::PaymentError;
pub use server::{ServeError, run, serve};
