//! The local broker: librdkafka's mock cluster, owned by this process, with Paymesh's topics
//! created (event topics with `topic_partitions`, DLQs with `dlq_partitions`). Other
//! processes reach it over TCP at [`LocalBroker::bootstrap`]. It keeps nothing across a
//! restart. Production uses Apache Kafka (see `compose/`).

use rdkafka::error::KafkaResult;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::topics;

pub struct LocalBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
    brokers: i32,
}

impl std::fmt::Debug for LocalBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBroker").field("bootstrap", &self.bootstrap()).field("brokers", &self.brokers).finish()
    }
}

impl LocalBroker {
    /// Starts `brokers` mock brokers and creates every Paymesh topic.
    pub fn start(brokers: i32, partitions: i32, dlq_partitions: i32) -> KafkaResult<Self> {
        let cluster = MockCluster::new(brokers)?;
        for t in topics::EVENT_TOPICS {
            cluster.create_topic(t, partitions, 1)?;
        }
        for t in topics::dlq_topics() {
            cluster.create_topic(&t, dlq_partitions, 1)?;
        }
        Ok(Self { cluster, brokers })
    }

    pub fn bootstrap(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Takes every broker down (the seeds' "Kafka stopped").
    pub fn down(&self) -> KafkaResult<()> {
        (1..=self.brokers).try_for_each(|id| self.cluster.broker_down(id))
    }

    /// Makes every produce to `topic` fail with a non-retriable error (for tests of the
    /// relay's retries and DLQ).
    pub fn fail_topic(&self, topic: &str) -> KafkaResult<()> {
        self.cluster.topic_error(topic, rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED)
    }

    pub fn up(&self) -> KafkaResult<()> {
        (1..=self.brokers).try_for_each(|id| self.cluster.broker_up(id))
    }

    /// Takes one broker down (ids count from 1): the partitions it leads cannot be written,
    /// the others can (a partial outage).
    pub fn broker_down(&self, id: i32) -> KafkaResult<()> {
        self.cluster.broker_down(id)
    }

    pub fn broker_up(&self, id: i32) -> KafkaResult<()> {
        self.cluster.broker_up(id)
    }

    /// Makes every produce to `topic` fail with a retriable error (NOT_ENOUGH_REPLICAS), as a
    /// broker that lost its in-sync replicas would, until [`LocalBroker::heal_topic`].
    pub fn degrade_topic(&self, topic: &str) -> KafkaResult<()> {
        self.cluster.topic_error(topic, rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS)
    }

    /// Undoes [`LocalBroker::fail_topic`] and [`LocalBroker::degrade_topic`].
    pub fn heal_topic(&self, topic: &str) -> KafkaResult<()> {
        self.cluster.topic_error(topic, rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR)
    }
}
