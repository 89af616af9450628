//! The Paymesh edge, on pingora: one listener for REST (HTTP/1.1 and h2c) and gRPC (h2c),
//! and an admin listener.
//!
//! A request flows through [`proxy::EdgeProxy`]:
//! - REST: [`rest`] matches a `google.api.http` binding from the [`catalog`], builds the
//!   request message ([`transcode`]), finds the shard ([`shardkey`]), picks a healthy
//!   instance of that shard ([`cluster`], [`balance`]: P2C over peak-EWMA), calls it over
//!   gRPC ([`upstream`]) and renders the reply as JSON; errors follow [`status`].
//! - gRPC: [`grpc`] finds the route and shard (header or first message), then pingora
//!   proxies the call to the instance [`proxy`] picks, trailers and streams intact.
//!
//! [`health`] checks every instance over grpc.health.v1; [`admin`] serves `/clusters`,
//! `/routes` and `/ready`. [`server`] assembles it all.

pub mod admin;
pub mod balance;
pub mod catalog;
pub mod cluster;
pub mod grpc;
pub mod health;
pub mod io;
pub mod metrics;
pub mod proxy;
pub mod resilience;
pub mod rest;
pub mod server;
pub mod shardkey;
pub mod state;
pub mod status;
pub mod transcode;
pub mod upstream;

pub use server::{EdgeError, ShutdownOnSignal, UnixSignals, prepare, run};
