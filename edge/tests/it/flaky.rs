//! `flaky.v1.Flaky` served from its descriptors by instances the tests can make fail, slow
//! down or hang on demand, each counting the calls that reached it. Behind the real edge as a
//! 2-shard x 2-instance cluster, with the route settings each test chooses. No database.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use paymesh_core::ShardId;
use paymesh_core::shard::shard_for_merchant;
use paymesh_proto::codec::BytesCodec;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, Value};
use tokio::sync::{Notify, oneshot};
use tonic::server::{NamedService, UnaryService};
use tonic::{Code, Request, Response, Status};

use crate::harness::{DEADLINE, free_addr};
use crate::http_client::{self, Reply, Version};

/// What an instance does with the next calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Fail(Code),
    Slow(Duration),
    /// Wait until the mode changes.
    Hold,
}

#[derive(Debug)]
pub struct Control {
    mode: Mutex<Mode>,
    changed: Notify,
    calls: AtomicUsize,
    held: AtomicUsize,
    /// Connections a raw instance dropped mid-call (see [`Raw::DieOnSecondCall`]).
    crashes: AtomicUsize,
    /// The `grpc-timeout` of the last call that reached this instance.
    last_timeout: Mutex<Option<String>>,
    /// The identity and credential headers of the last call that reached this instance.
    last_identity: Mutex<Vec<(String, String)>>,
}

impl Control {
    pub fn set(&self, mode: Mode) {
        *self.mode.lock().expect("lock") = mode;
        self.changed.notify_waiters();
    }
    fn mode(&self) -> Mode {
        *self.mode.lock().expect("lock")
    }
    /// Calls that reached this instance.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    /// Calls waiting in `Hold`.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
    /// Connections dropped mid-call by a raw instance.
    pub fn crashes(&self) -> usize {
        self.crashes.load(Ordering::SeqCst)
    }
    /// The `grpc-timeout` the last call arrived with (and forget it).
    pub fn take_last_identity(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.last_identity.lock().expect("lock"))
    }

    pub fn take_last_timeout(&self) -> Option<String> {
        self.last_timeout.lock().expect("lock").take()
    }
}

pub fn descriptor_set() -> Vec<u8> {
    crate::inventory::fixture_descriptor_set("flaky.proto")
}

#[derive(Clone)]
struct Flaky {
    pool: DescriptorPool,
    name: String,
    control: Arc<Control>,
}

impl NamedService for Flaky {
    const NAME: &'static str = "flaky.v1.Flaky";
}

impl tower_service::Service<http::Request<tonic::body::Body>> for Flaky {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let name = req.uri().path().rsplit('/').next().unwrap_or_default().to_owned();
        let method = self.pool.get_service_by_name(Self::NAME).and_then(|s| s.methods().find(|m| m.name() == name));
        let handler = Handler { method, served_by: self.name.clone(), control: self.control.clone() };
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(BytesCodec);
            Ok(grpc.unary(handler, req).await)
        })
    }
}

struct Handler {
    method: Option<MethodDescriptor>,
    served_by: String,
    control: Arc<Control>,
}

impl UnaryService<Bytes> for Handler {
    type Response = Bytes;
    type Future = BoxFuture<'static, Result<Response<Bytes>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let (method, served_by, control) = (self.method.clone(), self.served_by.clone(), self.control.clone());
        let timeout = request.metadata().get("grpc-timeout").and_then(|v| v.to_str().ok()).map(str::to_owned);
        *control.last_timeout.lock().expect("lock") = timeout;
        let mut identity: Vec<(String, String)> = request
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((k.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned())),
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .filter(|(k, _)| k.starts_with("x-paymesh-") || k == "authorization" || k == "x-api-key")
            .collect();
        identity.sort();
        *control.last_identity.lock().expect("lock") = identity;
        Box::pin(async move {
            let method = method.ok_or_else(|| Status::unimplemented("no such method"))?;
            let input =
                DynamicMessage::decode(method.input(), request.into_inner()).map_err(|e| Status::invalid_argument(e.to_string()))?;
            control.calls.fetch_add(1, Ordering::SeqCst);
            loop {
                let changed = control.changed.notified();
                match control.mode() {
                    Mode::Normal => break,
                    Mode::Fail(code) => return Err(Status::new(code, format!("{served_by} fails on purpose"))),
                    Mode::Slow(d) => {
                        tokio::time::sleep(d).await;
                        break;
                    }
                    Mode::Hold => {
                        // Counted while held, also when the call is dropped mid-wait (its
                        // stream reset by the edge).
                        struct Held<'a>(&'a AtomicUsize);
                        impl Drop for Held<'_> {
                            fn drop(&mut self) {
                                self.0.fetch_sub(1, Ordering::SeqCst);
                            }
                        }
                        control.held.fetch_add(1, Ordering::SeqCst);
                        let _held = Held(&control.held);
                        changed.await;
                    }
                }
            }
            let mut out = DynamicMessage::new(method.output());
            let account = input.get_field_by_name("account").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            out.set_field_by_name("account", Value::String(account));
            out.set_field_by_name("served_by", Value::String(served_by));
            Ok(Response::new(Bytes::from(out.encode_to_vec())))
        })
    }
}

/// What a raw HTTP/2 instance does with calls other than health checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Raw {
    /// Refuses every stream before any processing (RST_STREAM with REFUSED_STREAM), as an
    /// overloaded or draining server does. Counted in `calls`.
    Refuse,
    /// Answers the first call on a connection; on the second it counts the call as
    /// processed (as a committed write) and drops the connection without answering, as an
    /// instance killed mid-call does.
    DieOnSecondCall,
}

/// A raw HTTP/2 server (no tonic): health checks pass, other calls as `mode` says.
async fn serve_raw(
    listener: tokio::net::TcpListener,
    mode: Raw,
    name: &'static str,
    control: Arc<Control>,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), tonic::transport::Error> {
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => continue,
            },
            _ = &mut stop => return Ok(()),
        };
        let control = control.clone();
        tokio::spawn(async move {
            let Ok(mut conn) = h2::server::handshake(socket).await else { return };
            let mut data_calls = 0;
            // Health watches stay open (SERVING, then silence), as a real server's do.
            let mut watches = Vec::new();
            while let Some(Ok((request, mut respond))) = conn.accept().await {
                if request.uri().path() == "/grpc.health.v1.Health/Watch" {
                    let head = http::Response::builder().status(200).header("content-type", "application/grpc").body(()).expect("head");
                    if let Ok(mut send) = respond.send_response(head, false) {
                        let _ = send.send_data(Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 0x01]), false);
                        watches.push(send);
                    }
                    continue;
                }
                let reply = if request.uri().path() == "/grpc.health.v1.Health/Check" {
                    // HealthCheckResponse { status: SERVING }
                    Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 0x01])
                } else {
                    data_calls += 1;
                    control.calls.fetch_add(1, Ordering::SeqCst);
                    match mode {
                        Raw::Refuse => {
                            respond.send_reset(h2::Reason::REFUSED_STREAM);
                            continue;
                        }
                        Raw::DieOnSecondCall if data_calls >= 2 => {
                            control.crashes.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        // Reply { served_by = name }
                        Raw::DieOnSecondCall => {
                            let mut frame = vec![0, 0, 0, 0, (name.len() + 2) as u8, 0x12, name.len() as u8];
                            frame.extend_from_slice(name.as_bytes());
                            Bytes::from(frame)
                        }
                    }
                };
                let head = http::Response::builder().status(200).header("content-type", "application/grpc").body(()).expect("head");
                let Ok(mut send) = respond.send_response(head, false) else { continue };
                let _ = send.send_data(reply, false);
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                let _ = send.send_trailers(trailers);
            }
        });
    }
}

pub struct Instance {
    pub name: String,
    pub shard: u32,
    pub addr: SocketAddr,
    pub control: Arc<Control>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
}

pub struct FlakyStack {
    pub edge: SocketAddr,
    pub admin: SocketAddr,
    pub instances: Vec<Instance>,
    edge_process: crate::harness::InProcessEdge,
    dir: std::path::PathBuf,
}

/// Route settings most tests share: a small, quick breaker; the test may replace any table.
pub const QUICK_BREAKER: &str = r#"
[edge.routes.breaker]
window = "count"
window_size = 10
minimum_calls = 5
failure_rate_threshold = 50
slow_call_rate_threshold = 50
slow_call_duration = "200ms"
wait_in_open = "400ms"
half_open_calls = 3
"#;

impl FlakyStack {
    /// Starts four instances (f0a, f0b on shard 0; f1a, f1b on shard 1) and the edge with
    /// `route_extra` appended to the flaky route and `cluster_extra` to its cluster.
    pub async fn start(route_extra: &str, cluster_extra: &str, edge_extra: &str) -> Self {
        Self::start_with_raw(route_extra, cluster_extra, edge_extra, &[]).await
    }

    /// As [`Self::start`], with the named instances replaced by a raw HTTP/2 server that
    /// answers health checks and treats every other call as its [`Raw`] mode says.
    pub async fn start_with_raw(route_extra: &str, cluster_extra: &str, edge_extra: &str, raw: &[(&str, Raw)]) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!("paymesh-flaky-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst)));
        std::fs::create_dir_all(&dir).expect("dir");
        let fds = dir.join("flaky.binpb");
        std::fs::write(&fds, descriptor_set()).expect("write");
        let mut pool = DescriptorPool::new();
        pool.decode_file_descriptor_set(paymesh_proto::FILE_DESCRIPTOR_SET).expect("builtin");
        pool.decode_file_descriptor_set(descriptor_set().as_slice()).expect("flaky");

        let mut instances = Vec::new();
        for (name, shard) in [("f0a", 0), ("f0b", 0), ("f1a", 1), ("f1b", 1)] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let control = Arc::new(Control {
                mode: Mutex::new(Mode::Normal),
                changed: Notify::new(),
                calls: AtomicUsize::new(0),
                held: AtomicUsize::new(0),
                crashes: AtomicUsize::new(0),
                last_timeout: Mutex::new(None),
                last_identity: Mutex::new(Vec::new()),
            });
            let svc = Flaky { pool: pool.clone(), name: name.into(), control: control.clone() };
            let (reporter, health) = tonic_health::server::health_reporter();
            reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
            let (tx, rx) = oneshot::channel::<()>();
            if let Some((_, mode)) = raw.iter().find(|(n, _)| *n == name) {
                let task = tokio::spawn(serve_raw(listener, *mode, name, control.clone(), rx));
                instances.push(Instance { name: name.into(), shard, addr, control, stop: Some(tx), task: Some(task) });
                continue;
            }
            let task = tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(health)
                    .add_service(svc)
                    .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async move {
                        let _ = rx.await;
                    })
                    .await
            });
            instances.push(Instance { name: name.into(), shard, addr, control, stop: Some(tx), task: Some(task) });
        }

        let (edge, admin) = (free_addr(), free_addr());
        let endpoints: Vec<String> =
            instances.iter().map(|i| format!("{{ name = \"{}\", address = \"{}\", shard = {} }}", i.name, i.addr, i.shard)).collect();
        let text = format!(
            r#"[[shards]]
id = 0
database_url = "postgres://unused@127.0.0.1:1/none"
[[shards]]
id = 1
database_url = "postgres://unused@127.0.0.1:1/none"
[[payments.instances]]
name = "unused-0"
shard = 0
listen = "127.0.0.1:0"
[[payments.instances]]
name = "unused-1"
shard = 1
listen = "127.0.0.1:0"

[edge]
listen = "{edge}"
admin_listen = "{admin}"
request_timeout = "5s"
threads = 2
descriptor_sets = ["{fds}"]
{edge_extra}

[edge.health]
interval = "50ms"
timeout = "2s"
healthy_threshold = 1
unhealthy_threshold = 3

[[edge.clusters]]
name = "flaky"
endpoints = [{endpoints}]
{cluster_extra}

[[edge.routes]]
service = "flaky.v1.Flaky"
cluster = "flaky"
shard_keys = [{{ field = "account", kind = "merchant", header = "x-account" }}]
{route_extra}
"#,
            fds = fds.display(),
            endpoints = endpoints.join(", "),
        );
        let path = dir.join("mesh.toml");
        std::fs::write(&path, &text).expect("write config");
        let edge_process = crate::harness::InProcessEdge::start(&path);
        let stack = Self { edge, admin, instances, edge_process, dir };
        stack.wait_all_healthy().await;
        stack
    }

    pub fn instance(&self, name: &str) -> &Instance {
        self.instances.iter().find(|i| i.name == name).expect("instance")
    }

    pub fn set(&self, names: &[&str], mode: Mode) {
        for n in names {
            self.instance(n).control.set(mode);
        }
    }

    /// Calls that reached the given instances.
    pub fn calls(&self, names: &[&str]) -> usize {
        names.iter().map(|n| self.instance(n).control.calls()).sum()
    }

    pub fn account_on(&self, shard: u32, n: usize) -> String {
        (0..).map(|i| format!("acct-{i}")).filter(|a| shard_for_merchant(a, 2) == ShardId(shard)).nth(n).expect("infinite")
    }

    pub async fn read(&self, account: &str) -> Reply {
        http_client::get(self.edge, &format!("/v1/flaky/{account}")).await
    }

    pub async fn write(&self, account: &str, key: Option<&str>) -> Reply {
        let body = match key {
            Some(k) => format!(r#"{{"idempotencyKey":"{k}"}}"#),
            None => "{}".to_owned(),
        };
        http_client::post_json(self.edge, &format!("/v1/flaky/{account}"), &body).await
    }

    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        http_client::send(self.edge, Version::Http1, method, path, headers, Bytes::new()).await
    }

    pub async fn admin_get(&self, path: &str) -> Reply {
        http_client::get(self.admin, path).await
    }

    pub async fn admin_post(&self, path: &str) -> Reply {
        http_client::send(self.admin, Version::Http1, "POST", path, &[], Bytes::new()).await
    }

    /// The breaker's entry in `/breakers`.
    pub async fn breaker(&self, shard: u32) -> serde_json::Value {
        let all = self.admin_get("/breakers").await.json();
        let name = format!("flaky.v1.Flaky@shard-{shard}");
        all["breakers"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["name"] == name.as_str()).cloned())
            .unwrap_or_else(|| panic!("no breaker {name} in {all}"))
    }

    pub async fn wait_all_healthy(&self) {
        crate::harness::wait_first_cluster_healthy(self.admin, "the flaky instances").await;
    }

    /// Polls until `cond` holds for the endpoint's entry in `/clusters`.
    pub async fn wait_endpoint(&self, name: &str, what: &str, cond: impl Fn(&serde_json::Value) -> bool) {
        let start = Instant::now();
        loop {
            let c = self.admin_get("/clusters").await.json();
            let e = c["clusters"][0]["endpoints"].as_array().and_then(|e| e.iter().find(|e| e["name"] == name).cloned()).expect("endpoint");
            if cond(&e) {
                return;
            }
            assert!(start.elapsed() < DEADLINE, "{name} never became {what}: {e}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn kill(&mut self, name: &str) {
        let inst = self.instances.iter_mut().find(|i| i.name == name).expect("instance");
        inst.control.set(Mode::Normal);
        if let Some(tx) = inst.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = inst.task.take() {
            let _ = task.await;
        }
    }

    pub async fn stop(mut self) {
        for i in &self.instances {
            i.control.set(Mode::Normal);
        }
        self.edge_process.stop().await;
        for i in &mut self.instances {
            if let Some(tx) = i.stop.take() {
                let _ = tx.send(());
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
