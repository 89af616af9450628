//! Integration tests: real payments instances (in-process, on 127.0.0.1:0) over two real
//! PostgreSQL shards (one throwaway server per test binary, a fresh database per shard per
//! test), called through real gRPC clients.

mod harness;

mod binary;
mod concurrency;
mod faults;
mod group_commit;
mod idempotency;
mod mtls;
mod outbox;
mod plumbing;
mod reload;
mod rules;
mod secrets;
mod sharding;
mod validation;
