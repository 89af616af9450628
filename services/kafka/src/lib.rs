//! Kafka for Paymesh. Only the relay, the workers and the local broker link this crate (and
//! so rdkafka); everything speaks to the broker through rdkafka exactly as it would to
//! Apache Kafka.
//!
//! - [`topics`]: topic names: one per event kind, DLQs.
//! - [`client`]: producer and consumer settings (idempotent producer, acks=all; manual
//!   offset commits).
//! - [`event`]: decoding a published payment event.
//! - [`local`]: the local broker, librdkafka's mock cluster, with Paymesh's topics.

pub mod client;
pub mod event;
pub mod local;
pub mod topics;
