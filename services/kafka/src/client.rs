//! rdkafka client settings.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;

/// An idempotent producer that waits for every in-sync replica (acks=all): a message is
/// acknowledged only once it cannot be lost, and retries never duplicate or reorder it.
pub fn producer(bootstrap: &str, message_timeout: Duration) -> Result<FutureProducer, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", message_timeout.as_millis().max(1).to_string())
        .set("linger.ms", "2")
        .set("compression.type", "none")
        // A topic error (authorization, a deleted topic) is cached with the metadata; see its
        // repair within seconds rather than librdkafka's default 5 minutes.
        .set("topic.metadata.refresh.interval.ms", "5000")
        .create()
}

/// A consumer in `group` that commits offsets only when told to (after the worker's own
/// transaction commits), starting from the earliest offset when the group is new.
pub fn consumer(bootstrap: &str, group: &str, client_id: &str) -> Result<StreamConsumer, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
}
