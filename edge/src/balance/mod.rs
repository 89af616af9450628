//! Load balancing: power of two choices over peak-EWMA cost (as linkerd2-proxy and
//! Finagle do). pingora's balancer offers round robin, random and hashing only.
//!
//! - [`ewma`]: each endpoint's cost: a latency estimate that jumps up to every slower
//!   observation and decays back, multiplied by the requests it has in flight.
//! - [`p2c`]: pick two distinct candidates at random, send to the cheaper one.

pub mod ewma;
pub mod p2c;

pub use ewma::{InFlight, PeakEwma};
pub use p2c::{P2c, Rng};
