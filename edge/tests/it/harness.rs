//! Boots the whole path: PostgreSQL shards, payments instances (two per shard), the
//! inventory service, and the edge in front of them.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use paymesh_core::ShardId;
use paymesh_core::config::MeshConfig;
use paymesh_core::shard::shard_for_merchant;
use paymesh_testkit::PgServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::http_client;
use crate::inventory::{Inventory, descriptor_set};

pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct Instance {
    pub name: String,
    pub shard: u32,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), paymesh_payments::ServeError>>>,
}

pub struct Stack {
    pub db_urls: Vec<String>,
    pub instances: Vec<Instance>,
    pub inventory: Inventory,
    pub inventory_addr: SocketAddr,
    pub edge: SocketAddr,
    pub admin: SocketAddr,
    pub config: MeshConfig,
    edge_stop: Option<oneshot::Sender<()>>,
    edge_thread: Option<std::thread::JoinHandle<()>>,
    inventory_stop: Option<oneshot::Sender<()>>,
    dir: PathBuf,
}

fn pg() -> &'static PgServer {
    PgServer::shared().unwrap_or_else(|e| panic!("cannot start PostgreSQL for tests: {e}"))
}

impl Stack {
    /// Two shards, two payments instances per shard, the inventory service, the edge.
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// As [`Self::start`], with `edge_extra` (e.g. an `[edge.auth]` section) added to the
    /// config after the routes.
    pub async fn start_with(edge_extra: &str) -> Self {
        let pg = pg();
        let db_urls: Vec<String> = (0..2).map(|i| pg.url(&pg.fresh_database(&format!("edge{i}")).expect("createdb"))).collect();
        let dir = std::env::temp_dir().join(format!("paymesh-edge-test-{}-{}", std::process::id(), uuid_like()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let fds = dir.join("inventory.binpb");
        std::fs::write(&fds, descriptor_set()).expect("write descriptors");

        let mut listeners = Vec::new();
        for _ in 0..4 {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind"));
        }
        let inv_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let inventory_addr = inv_listener.local_addr().expect("addr");
        let (edge, admin) = (free_addr(), free_addr());

        let mut text = String::new();
        for (i, url) in db_urls.iter().enumerate() {
            text += &format!("[[shards]]\nid = {i}\ndatabase_url = \"{url}\"\npool_size = 8\n\n");
        }
        text += "[payments]\nhealth_check_interval = \"100ms\"\nshutdown_grace = \"5s\"\n\n";
        let names = ["payments-0a", "payments-0b", "payments-1a", "payments-1b"];
        for (i, l) in listeners.iter().enumerate() {
            let addr = l.local_addr().expect("addr");
            text += &format!("[[payments.instances]]\nname = \"{}\"\nshard = {}\nlisten = \"{addr}\"\n\n", names[i], i / 2);
        }
        text += &format!(
            r#"[edge]
listen = "{edge}"
admin_listen = "{admin}"
max_body_bytes = 4096
connect_timeout = "1s"
request_timeout = "5s"
threads = 2
descriptor_sets = ["{fds}"]

[edge.health]
interval = "100ms"
timeout = "2s"
healthy_threshold = 1
unhealthy_threshold = 2

[edge.outlier]
consecutive_failures = 2
base_ejection_time = "30s"

[[edge.clusters]]
name = "payments"
payments_instances = true

[[edge.clusters]]
name = "inventory"
endpoints = [{{ name = "inventory-1", address = "{inventory_addr}" }}]

[[edge.routes]]
service = "payments.v1.Payments"
cluster = "payments"
shard_keys = [
  {{ field = "merchant_id", kind = "merchant", header = "x-merchant-id" }},
  {{ field = "payment_id", kind = "sharded_id" }},
]

[[edge.routes]]
service = "grpc.reflection.v1alpha.ServerReflection"
cluster = "payments"
auth = "public"

[[edge.routes]]
service = "grpc.reflection.v1.ServerReflection"
cluster = "payments"
auth = "public"

[[edge.routes]]
service = "inventory.v1.Inventory"
cluster = "inventory"
timeout = "2s"
{edge_extra}
"#,
            fds = fds.display()
        );
        let path = dir.join("mesh.toml");
        std::fs::write(&path, &text).expect("write config");
        let config = MeshConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));

        let mut instances = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let addr = listener.local_addr().expect("addr");
            let (tx, rx) = oneshot::channel::<()>();
            let cfg = config.clone();
            let name = names[i].to_owned();
            let task_name = name.clone();
            let task = tokio::spawn(async move {
                paymesh_payments::serve(listener, &cfg, &task_name, async move {
                    let _ = rx.await;
                })
                .await
            });
            instances.push(Instance { name, shard: (i / 2) as u32, addr, stop: Some(tx), task: Some(task) });
        }

        let inventory = Inventory::new();
        let (inv_tx, inv_rx) = oneshot::channel::<()>();
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
        let inv = inventory.clone();
        // With mTLS in the mesh the second service serves it too, as `inventory-1`.
        let inv_tls =
            config.mesh_tls.as_ref().map(|t| paymesh_core::tls::MeshTls::load(t.files_for("inventory-1")).expect("inventory tls"));
        tokio::spawn(async move {
            let router = tonic::transport::Server::builder().add_service(health).add_service(inv);
            let stop = async move {
                let _ = inv_rx.await;
            };
            match inv_tls {
                Some(tls) => {
                    router.serve_with_incoming_shutdown(paymesh_core::tls::incoming(inv_listener, std::sync::Arc::new(tls)), stop).await
                }
                None => router.serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(inv_listener), stop).await,
            }
        });

        let state = paymesh_edge::prepare(&config).unwrap_or_else(|e| panic!("{e}"));
        let (edge_tx, shutdown) = paymesh_edge::ShutdownOnSignal::new();
        let edge_thread = std::thread::spawn(move || {
            paymesh_edge::run(state, Box::new(shutdown)).expect("edge runs");
        });

        let stack = Self {
            db_urls,
            instances,
            inventory,
            inventory_addr,
            edge,
            admin,
            config,
            edge_stop: Some(edge_tx),
            edge_thread: Some(edge_thread),
            inventory_stop: Some(inv_tx),
            dir,
        };
        stack.wait_ready().await;
        stack
    }

    /// The mesh config file the edge was started from (and reloads).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("mesh.toml")
    }

    /// Polls the admin API until every shard and cluster has a healthy instance.
    pub async fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            let attempt = http_client::try_send(self.admin, http_client::Version::Http1, "GET", "/ready", &[], bytes::Bytes::new());
            if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(2), attempt).await
                && r.status == 200
            {
                return;
            }
            assert!(start.elapsed() < DEADLINE, "the edge never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every payments instance is healthy at the edge.
    pub async fn wait_all_healthy(&self) {
        for inst in &self.instances {
            self.wait_endpoint(&inst.name, true).await;
        }
    }

    /// Polls `/clusters` until the payments endpoint called `name` has the given health.
    pub async fn wait_endpoint(&self, name: &str, healthy: bool) {
        let start = Instant::now();
        loop {
            let clusters = http_client::get(self.admin, "/clusters").await.json();
            let state = clusters["clusters"][0]["endpoints"]
                .as_array()
                .and_then(|eps| eps.iter().find(|e| e["name"] == name).map(|e| e["healthy"].as_bool()));
            if state == Some(Some(healthy)) {
                return;
            }
            assert!(start.elapsed() < DEADLINE, "{name} never became healthy={healthy}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops one payments instance and waits until it is gone.
    pub async fn kill(&mut self, name: &str) {
        let inst = self.instances.iter_mut().find(|i| i.name == name).expect("instance");
        if let Some(tx) = inst.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = inst.task.take() {
            task.await.expect("join").expect("clean stop");
        }
    }

    /// Starts a stopped payments instance again on its address.
    pub async fn restart(&mut self, name: &str) {
        let config = self.config.clone();
        let inst = self.instances.iter_mut().find(|i| i.name == name).expect("instance");
        assert!(inst.task.is_none(), "{name} is still running");
        let listener = tokio::net::TcpListener::bind(inst.addr).await.expect("bind the instance's address again");
        let (tx, rx) = oneshot::channel::<()>();
        let task_name = name.to_owned();
        inst.task = Some(tokio::spawn(async move {
            paymesh_payments::serve(listener, &config, &task_name, async move {
                let _ = rx.await;
            })
            .await
        }));
        inst.stop = Some(tx);
    }

    pub fn merchant_on(&self, shard: u32, n: usize) -> String {
        (0..).map(|i| format!("merchant-{i}")).filter(|m| shard_for_merchant(m, 2) == ShardId(shard)).nth(n).expect("infinite")
    }

    pub async fn db(&self, shard: usize) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.db_urls[shard], tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(conn);
        client
    }

    pub async fn count(&self, shard: usize, table: &str) -> i64 {
        self.db(shard).await.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.expect("count").get(0)
    }

    pub async fn total(&self, table: &str) -> i64 {
        self.count(0, table).await + self.count(1, table).await
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.edge_stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.edge_thread.take() {
            tokio::task::spawn_blocking(move || t.join()).await.expect("join").expect("edge thread");
        }
        for inst in &mut self.instances {
            if let Some(tx) = inst.stop.take() {
                let _ = tx.send(());
            }
            if let Some(task) = inst.task.take() {
                let _ = task.await;
            }
        }
        if let Some(tx) = self.inventory_stop.take() {
            let _ = tx.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn free_addr() -> SocketAddr {
    // Below the ephemeral range, so no other test's bind(0) or outgoing connection can take
    // it between now and the edge binding it.
    SocketAddr::from(([127, 0, 0, 1], paymesh_testkit::port::free_port_below_ephemeral().expect("free port")))
}

fn uuid_like() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A gRPC channel to the edge.
pub async fn edge_channel(stack: &Stack) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://{}", stack.edge)).expect("uri").connect().await.expect("connect to the edge")
}

/// An edge running in this test process, on a thread of its own, from a config file.
pub struct InProcessEdge {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcessEdge {
    /// Loads `config` (panicking with the problem and the text), prepares and runs the edge.
    pub fn start(config: &std::path::Path) -> Self {
        let loaded = MeshConfig::load(config).unwrap_or_else(|e| panic!("{e}\n{}", std::fs::read_to_string(config).unwrap_or_default()));
        let state = paymesh_edge::prepare(&loaded).unwrap_or_else(|e| panic!("{e}"));
        let (stop, shutdown) = paymesh_edge::ShutdownOnSignal::new();
        let thread = std::thread::spawn(move || paymesh_edge::run(state, Box::new(shutdown)).expect("edge runs"));
        Self { stop: Some(stop), thread: Some(thread) }
    }

    /// Asks it to stop and waits until it has.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            tokio::task::spawn_blocking(move || t.join()).await.expect("join").expect("edge thread");
        }
    }
}

/// Polls the admin API until every endpoint of the first cluster is healthy.
pub async fn wait_first_cluster_healthy(admin: SocketAddr, what: &str) {
    let start = Instant::now();
    loop {
        let c = http_client::try_send(admin, http_client::Version::Http1, "GET", "/clusters", &[], bytes::Bytes::new()).await;
        if let Ok(r) = c
            && r.status == 200
            && r.json()["clusters"][0]["endpoints"].as_array().is_some_and(|e| e.iter().all(|e| e["healthy"] == true))
        {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "{what} never became healthy at the edge");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
