//! The Paymesh edge, on pingora: one listener for REST (HTTP/1.1 and h2c) and gRPC (h2c),
//! and an admin listener.
//!
//! Every call, REST or gRPC, runs through one path, [`proxy::EdgeProxy`]: [`grpc`] finds the
//! route, the request message and its shard ([`shardkey`]); the route's guards
//! ([`resilience`]: rate limits, breaker, concurrency slots) admit it; the balancer picks a
//! healthy instance of the shard ([`cluster`], [`balance`]: P2C over peak-EWMA); pingora
//! proxies the call, trailers and streams intact, retrying what is safe.
//! - REST is a transformation around that path: [`rest`] matches a `google.api.http`
//!   binding from the [`catalog`], builds the request message ([`transcode`]), runs it as a
//!   gRPC subrequest, and renders the answer as JSON; errors follow [`status`].
//!
//! [`health`] checks every instance over grpc.health.v1; [`admin`] serves `/clusters`,
//! `/routes` and `/ready`. [`live`] holds the running [`state`] and swaps in a new one on a
//! reload (SIGHUP or `POST /config/reload`). [`server`] assembles it all.

pub mod admin;
pub mod auth;
pub mod balance;
pub mod catalog;
pub mod check;
pub mod client_io;
pub mod cluster;
pub mod dashboard;
pub mod failures;
pub mod grpc;
pub mod health;
pub mod io;
pub mod lanes;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod proxy;
pub mod public_tls;
pub mod resilience;
pub mod rest;
pub mod server;
pub mod shardkey;
pub mod state;
pub mod status;
pub mod transcode;
pub mod upgrade;
pub mod upstream_tls;

pub use server::{EdgeError, ShutdownOnSignal, UnixSignals, prepare, run, run_with};
