//! Edge resilience: per-route (and per-shard) circuit breakers, rate limits, per-cluster
//! concurrency limits, and the retry policy and budget.
//!
//! - `breaker`: Resilience4j-style breakers, shared from `paymesh_core::breaker`;
//! - [`ratelimit`]: token buckets per route and per client key;
//! - [`concurrency`]: Envoy-style max requests / max pending;
//! - [`retry`]: what may be retried, backoff, budget;
//! - [`guards`]: the set of them that applies to one route.

pub mod concurrency;
pub mod guards;
pub mod ratelimit;
pub mod retry;

pub use paymesh_core::breaker;
