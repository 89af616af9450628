//! The Paymesh load generator: closed-loop workers that issue Authorize calls as fast as
//! they are answered, each with a unique idempotency key, against a payments instance
//! (gRPC, routed client-side by shard), or the edge (gRPC or REST).
//!
//! - [`stats`]: latencies into count, rate and percentiles;
//! - [`load`]: the worker loop with warm-up and duration;
//! - [`target`]: how one Authorize is sent to each kind of target (the side-by-side runs);
//! - [`call`], [`template`], [`report`]: ghz's interface for any method: dynamic messages
//!   from descriptors, per-request templating, ghz's JSON report; [`ghz_config`] reads
//!   ghz's `--config` files;
//! - [`echo`]: an upstream that does no work (`echo-upstream`), for what a proxy costs.

pub mod call;
pub mod echo;
pub mod ghz_config;
pub mod load;
pub mod report;
pub mod stats;
pub mod target;
pub mod template;
