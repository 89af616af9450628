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
    /// Which brokers are up (index id - 1), as last set through this value.
    up: std::sync::Mutex<Vec<bool>>,
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
        for t in topics::EVENT_TOPICS.into_iter().chain(topics::REPAIR_TOPICS) {
            cluster.create_topic(t, partitions, 1)?;
        }
        for t in topics::dlq_topics() {
            cluster.create_topic(&t, dlq_partitions, 1)?;
        }
        Ok(Self { cluster, brokers, up: std::sync::Mutex::new(vec![true; brokers as usize]) })
    }

    pub fn bootstrap(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Takes every broker down (the seeds' "Kafka stopped").
    pub fn down(&self) -> KafkaResult<()> {
        (1..=self.brokers).try_for_each(|id| self.broker_down(id))
    }

    /// Makes every produce to `topic` fail with a non-retriable error (for tests of the
    /// relay's retries and DLQ).
    pub fn fail_topic(&self, topic: &str) -> KafkaResult<()> {
        self.cluster.topic_error(topic, rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED)
    }

    pub fn up(&self) -> KafkaResult<()> {
        (1..=self.brokers).try_for_each(|id| self.broker_up(id))
    }

    /// Takes one broker down (ids count from 1): the partitions it leads cannot be written,
    /// the others can (a partial outage).
    pub fn broker_down(&self, id: i32) -> KafkaResult<()> {
        self.cluster.broker_down(id)?;
        self.mark(id, false);
        Ok(())
    }

    pub fn broker_up(&self, id: i32) -> KafkaResult<()> {
        self.cluster.broker_up(id)?;
        self.mark(id, true);
        Ok(())
    }

    pub fn brokers(&self) -> i32 {
        self.brokers
    }

    /// Which brokers are up, by id.
    pub fn up_brokers(&self) -> Vec<i32> {
        let up = self.up.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (1..=self.brokers).filter(|id| up[(*id - 1) as usize]).collect()
    }

    fn mark(&self, id: i32, up: bool) {
        let mut state = self.up.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = state.get_mut((id - 1) as usize) {
            *s = up;
        }
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

/// A fault-injection command for the broker (`None`: every broker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    State,
    Down(Option<i32>),
    Up(Option<i32>),
}

/// A command and where to send the brokers that are up afterwards (or why it failed).
#[derive(Debug)]
pub struct ControlRequest {
    pub command: Control,
    pub reply: tokio::sync::oneshot::Sender<Result<Vec<i32>, String>>,
}

impl LocalBroker {
    /// Applies a fault-injection command; returns the brokers that are up.
    pub fn apply(&self, command: Control) -> Result<Vec<i32>, String> {
        let done = match command {
            Control::State => Ok(()),
            Control::Down(None) => self.down(),
            Control::Up(None) => self.up(),
            Control::Down(Some(id)) | Control::Up(Some(id)) if !(1..=self.brokers).contains(&id) => {
                return Err(format!("there is no broker {id}; brokers are 1..={}", self.brokers));
            }
            Control::Down(Some(id)) => self.broker_down(id),
            Control::Up(Some(id)) => self.broker_up(id),
        };
        done.map_err(|e| e.to_string())?;
        Ok(self.up_brokers())
    }
}

/// Serves the broker's fault-injection endpoints (see the `broker` binary) until `shutdown`,
/// handing each command to whoever owns the cluster (it is not `Send`) through `commands`.
pub async fn serve_control(
    listener: tokio::net::TcpListener,
    commands: tokio::sync::mpsc::Sender<ControlRequest>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use paymesh_core::status::{Reply, serve};
    serve(
        listener,
        move |path| {
            let commands = commands.clone();
            async move {
                let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
                let id = |s: &str| s.parse::<i32>().ok();
                let command = match parts.as_slice() {
                    ["brokers"] => Control::State,
                    ["brokers", "down"] => Control::Down(None),
                    ["brokers", "up"] => Control::Up(None),
                    ["brokers", n, "down"] if id(n).is_some() => Control::Down(id(n)),
                    ["brokers", n, "up"] if id(n).is_some() => Control::Up(id(n)),
                    _ => return Reply::not_found(&path, "/brokers, /brokers/down, /brokers/up, /brokers/N/down, /brokers/N/up"),
                };
                let (reply, answer) = tokio::sync::oneshot::channel();
                if commands.send(ControlRequest { command, reply }).await.is_err() {
                    return Reply {
                        status: 503,
                        content_type: "application/json",
                        body: "{\"message\":\"the broker is stopping\"}".into(),
                    };
                }
                match answer.await {
                    Ok(Ok(up)) => Reply::json(format!("{{\"up\":{up:?}}}")),
                    Ok(Err(e)) => Reply { status: 400, content_type: "application/json", body: format!("{{\"message\":{e:?}}}") },
                    Err(_) => {
                        Reply { status: 503, content_type: "application/json", body: "{\"message\":\"the broker is stopping\"}".into() }
                    }
                }
            }
        },
        shutdown,
    )
    .await;
}
