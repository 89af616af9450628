//! Edge integration tests: the real edge (pingora, in-process on free ports) in front of real
//! payments instances (two per shard) over real PostgreSQL shards, plus a second, unrelated
//! gRPC service routed by configuration alone.

mod bookstore;
mod flaky;
mod harness;
mod http_client;
mod inventory;

mod admin;
mod auth;
mod binary;
mod bookstore_rest;
mod drain;
mod grpc;
mod misuse;
mod mtls;
mod public_tls;
mod rejections;
mod reload;
mod resilience;
mod rest;
mod scoping;
mod second_service;
mod sharding;
mod transcoding;
