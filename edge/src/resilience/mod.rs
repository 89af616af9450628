//! Edge resilience: per-route (and per-shard) circuit breakers, rate limits, per-cluster
//! concurrency limits, and the retry policy and budget.
//!
//! - [`window`], [`breaker`]: Resilience4j-style breakers;
//! - [`ratelimit`]: token buckets per route and per client key;
//! - [`concurrency`]: Envoy-style max requests / max pending;
//! - [`retry`]: what may be retried, backoff, budget;
//! - [`guards`]: the set of them that applies to one route.

pub mod breaker;
pub mod concurrency;
pub mod guards;
pub mod ratelimit;
pub mod retry;
pub mod window;
