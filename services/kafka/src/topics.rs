//! Topic names. Each event kind has its own topic (the outbox's `event_type`), keyed by
//! payment id so one payment's events share a partition and stay in order.

/// Every event topic, in the order a payment can reach them.
pub const EVENT_TOPICS: [&str; 4] = ["payment.authorized", "payment.captured", "payment.refunded", "payment.voided"];

/// The repair centre's event topics (seed 002), keyed by the request id: the contract's
/// names (`paymesh_repair_proto::topics`).
pub const REPAIR_TOPICS: [&str; 6] = paymesh_repair_proto::topics::ALL;

/// Where the relay sends events it could not publish after its maximum retries.
pub const RELAY_DLQ: &str = "payment.dlq";

/// Where a worker sends a message it could not apply after its maximum attempts.
pub fn worker_dlq(kind: &str) -> String {
    format!("{kind}.dlq")
}

/// Every DLQ topic the local broker creates.
pub fn dlq_topics() -> Vec<String> {
    let mut v = vec![RELAY_DLQ.to_owned()];
    v.extend(["ledger", "settlement", "view", "desk", "progress"].iter().map(|k| worker_dlq(k)));
    v
}

/// Headers the relay puts on every message.
pub mod headers {
    pub const EVENT_ID: &str = "event-id";
    pub const EVENT_TYPE: &str = "event-type";
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
    /// On DLQ messages: why and where from.
    pub const ERROR: &str = "dlq-error";
    pub const ORIGIN: &str = "dlq-origin";
}
