//! Boots a mesh of payments instances over fresh shard databases.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use paymesh_core::ShardId;
use paymesh_core::config::MeshConfig;
use paymesh_core::ids::PaymentId;
use paymesh_core::shard::shard_for_merchant;
use paymesh_proto::payments::v1 as pb;
use paymesh_proto::payments::v1::payments_client::PaymentsClient;
use paymesh_testkit::PgServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub type Client = PaymentsClient<Channel>;

pub const DEADLINE: Duration = Duration::from_secs(30);

/// A running mesh: one payments instance per shard.
pub struct TestMesh {
    pub config: MeshConfig,
    pub db_urls: Vec<String>,
    pub addrs: Vec<SocketAddr>,
    stops: Vec<Option<oneshot::Sender<()>>>,
    pub tasks: Vec<Option<JoinHandle<Result<(), paymesh_payments::ServeError>>>>,
}

pub fn pg() -> &'static PgServer {
    PgServer::shared().unwrap_or_else(|e| panic!("cannot start PostgreSQL for tests: {e}"))
}

/// Mesh config text for the given shard database URLs, one instance per shard on port 0.
pub fn config_text(db_urls: &[String]) -> String {
    config_text_with(db_urls, "pool_size = 8\n")
}

/// [`config_text`] with `shard_keys` in every `[[shards]]` table.
pub fn config_text_with(db_urls: &[String], shard_keys: &str) -> String {
    let mut text = String::new();
    for (i, url) in db_urls.iter().enumerate() {
        text += &format!("[[shards]]\nid = {i}\ndatabase_url = \"{url}\"\n{shard_keys}\n");
    }
    text += "[payments]\nhealth_check_interval = \"100ms\"\nshutdown_grace = \"10s\"\n\n";
    for i in 0..db_urls.len() {
        // Below the ephemeral range: a port the OS hands to another test's bind(0) or
        // outgoing connection meanwhile cannot be this one.
        let status = paymesh_testkit::port::free_port_below_ephemeral().expect("port");
        text += &format!(
            "[[payments.instances]]\nname = \"payments-{i}\"\nshard = {i}\nlisten = \"127.0.0.1:0\"\nstatus_listen = \"127.0.0.1:{status}\"\n\n"
        );
    }
    text
}

impl TestMesh {
    pub async fn start(shards: usize) -> Self {
        let pg = pg();
        let db_urls: Vec<String> = (0..shards).map(|i| pg.url(&pg.fresh_database(&format!("shard{i}")).expect("createdb"))).collect();
        Self::start_on(db_urls).await
    }

    /// Starts instances over existing databases.
    pub async fn start_on(db_urls: Vec<String>) -> Self {
        Self::start_with(db_urls, "pool_size = 8\n").await
    }

    /// Starts instances over existing databases with `shard_keys` in every `[[shards]]`
    /// table (pool size, timeouts).
    pub async fn start_with(db_urls: Vec<String>, shard_keys: &str) -> Self {
        let text = config_text_with(&db_urls, shard_keys);
        let config = MeshConfig::parse(Path::new("test.toml"), &text, &|_| None).expect("test config is valid");
        let mut mesh = Self { config, db_urls, addrs: Vec::new(), stops: Vec::new(), tasks: Vec::new() };
        for i in 0..mesh.db_urls.len() {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            mesh.addrs.push(listener.local_addr().expect("addr"));
            let (tx, rx) = oneshot::channel::<()>();
            let config = mesh.config.clone();
            let task = tokio::spawn(async move {
                paymesh_payments::serve(listener, &config, &format!("payments-{i}"), async move {
                    let _ = rx.await;
                })
                .await
            });
            mesh.stops.push(Some(tx));
            mesh.tasks.push(Some(task));
        }
        for i in 0..mesh.addrs.len() {
            mesh.wait_serving(i).await;
        }
        mesh
    }

    /// A page of the instance's status listener (`/metrics`, `/status`), head and body.
    pub async fn status_page(&self, shard: usize, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.config.payments.instances[shard].status_listen.expect("status listener");
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.expect("write");
        let mut body = String::new();
        s.read_to_string(&mut body).await.expect("read");
        body
    }

    pub fn shard_count(&self) -> u32 {
        self.addrs.len() as u32
    }

    pub async fn channel(&self, shard: usize) -> Channel {
        Channel::from_shared(format!("http://{}", self.addrs[shard])).expect("uri").connect().await.expect("connect")
    }

    pub async fn client(&self, shard: usize) -> Client {
        PaymentsClient::new(self.channel(shard).await)
    }

    pub async fn health(&self, shard: usize, service: &str) -> Result<ServingStatus, tonic::Status> {
        let mut h = HealthClient::new(self.channel(shard).await);
        let r = h.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await?;
        Ok(r.into_inner().status())
    }

    pub async fn wait_serving(&self, shard: usize) {
        let start = Instant::now();
        loop {
            if let Ok(ServingStatus::Serving) = self.health(shard, pb::SERVICE_NAME).await {
                return;
            }
            assert!(start.elapsed() < DEADLINE, "payments-{shard} never became SERVING");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `n`-th merchant id (in a fixed sequence) that the shard function puts on `shard`.
    pub fn merchant_on(&self, shard: u32, n: usize) -> String {
        merchants_on(shard, self.shard_count()).nth(n).expect("infinite")
    }

    pub async fn client_for_merchant(&self, merchant: &str) -> Client {
        self.client(shard_for_merchant(merchant, self.shard_count()).0 as usize).await
    }

    pub async fn client_for_payment(&self, payment_id: &str) -> Client {
        let id: PaymentId = payment_id.parse().expect("a valid payment id");
        self.client(id.shard().0 as usize).await
    }

    /// Connects straight to a shard's database.
    pub async fn db(&self, shard: usize) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.db_urls[shard], tokio_postgres::NoTls).await.expect("connect to shard db");
        tokio::spawn(conn);
        client
    }

    /// Row counts of every table the payments service writes, on one shard.
    pub async fn counts(&self, shard: usize) -> Counts {
        let db = self.db(shard).await;
        let n = |sql: &'static str| {
            let db = &db;
            async move { db.query_one(sql, &[]).await.expect("count").get::<_, i64>(0) }
        };
        Counts {
            payments: n("SELECT count(*) FROM payments").await,
            operations: n("SELECT count(*) FROM payment_operations").await,
            idempotency: n("SELECT count(*) FROM idempotency_keys").await,
            outbox: n("SELECT count(*) FROM outbox_event").await,
        }
    }

    /// Counts summed over every shard.
    pub async fn total_counts(&self) -> Counts {
        let mut total = Counts::default();
        for s in 0..self.addrs.len() {
            let c = self.counts(s).await;
            total.payments += c.payments;
            total.operations += c.operations;
            total.idempotency += c.idempotency;
            total.outbox += c.outbox;
        }
        total
    }

    /// Signals instance `shard` to stop and returns its task.
    pub fn stop_instance(&mut self, shard: usize) -> JoinHandle<Result<(), paymesh_payments::ServeError>> {
        if let Some(tx) = self.stops[shard].take() {
            let _ = tx.send(());
        }
        self.tasks[shard].take().expect("instance running")
    }

    pub async fn stop(mut self) {
        for i in 0..self.addrs.len() {
            if self.tasks[i].is_some() {
                self.stop_instance(i).await.expect("join").expect("clean stop");
            }
        }
    }
}

pub fn merchants_on(shard: u32, shard_count: u32) -> impl Iterator<Item = String> {
    (0..).map(|i| format!("merchant-{i}")).filter(move |m| shard_for_merchant(m, shard_count) == ShardId(shard))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub payments: i64,
    pub operations: i64,
    pub idempotency: i64,
    pub outbox: i64,
}

/// A unique idempotency key.
pub fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub fn authorize_req(merchant: &str, amount: i64, currency: &str) -> pb::AuthorizeRequest {
    pb::AuthorizeRequest { merchant_id: merchant.into(), amount, currency: currency.into(), idempotency_key: key() }
}

/// Authorizes a payment and returns it.
pub async fn authorized(mesh: &TestMesh, merchant: &str, amount: i64) -> pb::Payment {
    mesh.client_for_merchant(merchant).await.authorize(authorize_req(merchant, amount, "USD")).await.expect("authorize").into_inner()
}

/// Authorizes and captures `capture` of `amount`.
pub async fn captured(mesh: &TestMesh, merchant: &str, amount: i64, capture: i64) -> pb::Payment {
    let p = authorized(mesh, merchant, amount).await;
    mesh.client_for_payment(&p.payment_id)
        .await
        .capture(pb::CaptureRequest { payment_id: p.payment_id, amount: Some(capture), idempotency_key: key() })
        .await
        .expect("capture")
        .into_inner()
}

/// Asserts a call failed with `code` and a message containing every one of `needles`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: tonic::Code, needles: &[&str]) {
    let status = result.expect_err("the call should have failed");
    assert_eq!(status.code(), code, "message: {}", status.message());
    for n in needles {
        assert!(status.message().contains(n), "{:?} not in message {:?}", n, status.message());
    }
}

pub fn status_of(p: &pb::Payment) -> pb::PaymentStatus {
    pb::PaymentStatus::try_from(p.status).expect("known status")
}
