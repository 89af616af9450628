//! The workers: consumers of the payment events, each in its own consumer group, each
//! applying every event exactly once to the workers' database.
//!
//! [`consume`] is the loop they share: decode, apply inside one database transaction that
//! also records the event id in `processed_events` (so a redelivered event is skipped), commit,
//! and only then commit the Kafka offset. A message that keeps failing goes to the worker's
//! DLQ after `max_attempts` and the partition moves on.
//!
//! The appliers: [`ledger`] (double-entry journal), [`settlement`] (per-merchant, per-day
//! batches), [`view`] (the read model of every payment across shards).

pub mod consume;
pub mod db;
pub mod ledger;
pub mod settlement;
pub mod view;

pub use consume::{Worker, WorkerError, run};
