//! A bookstore gRPC server built from `tests/fixtures/bookstore.proto` alone (no generated
//! code), behind a real edge with nothing else: every `google.api.http` shape of issue 13
//! through the edge's REST front. Each answer carries what the server received (`received`,
//! the request as proto3 JSON), so the tests see exactly what the edge transcoded.
//!
//! Responses are written frame by frame (an HTTP/2 body of data frames, then trailers), so
//! the server can send response metadata, trailers, google.rpc error details, and hold a
//! stream after its first message until the test lets it go on.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Value};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::harness::{InProcessEdge, free_addr, wait_first_cluster_healthy};
use crate::http_client::{self, Version};

pub fn descriptor_set() -> Vec<u8> {
    crate::inventory::fixture_descriptor_set("bookstore.proto")
}

#[derive(Clone)]
struct Bookstore {
    pool: DescriptorPool,
    calls: Arc<AtomicUsize>,
    release: Arc<Notify>,
}

impl tonic::server::NamedService for Bookstore {
    const NAME: &'static str = "bookstore.v1.Bookstore";
}

type Frames = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for Bookstore {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let name = parts.uri.path().rsplit('/').next().unwrap_or_default().to_owned();
            let method = this
                .pool
                .get_service_by_name(<Self as tonic::server::NamedService>::NAME)
                .and_then(|s| s.methods().find(|m| m.name() == name));
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let (tx, rx) = mpsc::channel(4);
            let mut response = http::Response::builder().header("content-type", "application/grpc");
            match (method, bytes.get(5..)) {
                (Some(method), Some(payload)) => match DynamicMessage::decode(method.input(), payload) {
                    Ok(input) => {
                        response = response.header("x-book-etag", "\"v1\"");
                        tokio::spawn(answer(this, method.name().to_owned(), input, parts.headers, tx));
                    }
                    Err(e) => {
                        tokio::spawn(end(tx, 3, format!("undecodable request: {e}"), None, &[]));
                    }
                },
                _ => {
                    tokio::spawn(end(tx, 12, format!("no method {name}"), None, &[]));
                }
            }
            let body = tonic::body::Body::new(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)));
            Ok(response.body(body).expect("response"))
        })
    }
}

fn frame(msg: &DynamicMessage) -> Result<Frame<Bytes>, Infallible> {
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    msg.encode_raw(&mut buf);
    Ok(Frame::data(buf.freeze()))
}

/// The trailers that end a response: `grpc-status` and what goes with it.
async fn end(tx: Frames, code: i32, message: String, details: Option<Vec<u8>>, extra: &[(&'static str, &'static str)]) {
    let mut t = http::HeaderMap::new();
    t.insert("grpc-status", code.to_string().parse().expect("status"));
    if !message.is_empty() {
        t.insert("grpc-message", message.replace('%', "%25").parse().expect("message"));
    }
    if let Some(d) = details {
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(d);
        t.insert("grpc-status-details-bin", b64.parse().expect("details"));
    }
    for (k, v) in extra {
        t.insert(*k, v.parse().expect("trailer"));
    }
    let _ = tx.send(Ok(Frame::trailers(t))).await;
}

fn s(m: &DynamicMessage, field: &str) -> String {
    m.get_field_by_name(field).and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn i(m: &DynamicMessage, field: &str) -> i32 {
    m.get_field_by_name(field).and_then(|v| v.as_i32()).unwrap_or_default()
}

fn received(input: &DynamicMessage) -> Value {
    let json = input.serialize_with_options(serde_json::value::Serializer, &prost_reflect::SerializeOptions::new()).expect("json");
    Value::String(json.to_string())
}

fn message(pool: &DescriptorPool, name: &str) -> DynamicMessage {
    DynamicMessage::new(pool.get_message_by_name(name).unwrap_or_else(|| panic!("no {name}")))
}

/// A book named `name`, with an author, that says what the server received.
fn book(pool: &DescriptorPool, name: &str, input: &DynamicMessage) -> DynamicMessage {
    let mut b = message(pool, "bookstore.v1.Book");
    b.set_field_by_name("name", Value::String(name.to_owned()));
    b.set_field_by_name("title", Value::String(format!("The book {name}")));
    let mut author = message(pool, "bookstore.v1.Author");
    author.set_field_by_name("name", Value::String("Ann Author".into()));
    author.set_field_by_name("born", Value::I32(1900));
    b.set_field_by_name("author", Value::Message(author));
    b.set_field_by_name("received", received(input));
    b
}

fn http_body(pool: &DescriptorPool, content_type: &str, data: &[u8]) -> DynamicMessage {
    let mut b = message(pool, "google.api.HttpBody");
    b.set_field_by_name("content_type", Value::String(content_type.to_owned()));
    b.set_field_by_name("data", Value::Bytes(Bytes::copy_from_slice(data)));
    b
}

async fn answer(store: Bookstore, method: String, input: DynamicMessage, headers: http::HeaderMap, tx: Frames) {
    let pool = &store.pool;
    let one = |m: DynamicMessage| vec![m];
    let messages = match method.as_str() {
        "UpdateBook" => {
            let mut b = match input.get_field_by_name("book").as_deref() {
                Some(Value::Message(m)) => m.clone(),
                _ => message(pool, "bookstore.v1.Book"),
            };
            b.set_field_by_name("received", received(&input));
            one(b)
        }
        "SetNote" => {
            let mut b = book(pool, &s(&input, "name"), &input);
            if let Some(note) = input.get_field_by_name("note") {
                b.set_field_by_name("note", note.into_owned());
            }
            one(b)
        }
        "TagBook" | "LabelBook" => {
            let mut b = book(pool, &s(&input, "name"), &input);
            for f in ["tags", "labels"] {
                if let Some(v) = input.get_field_by_name(f) {
                    b.set_field_by_name(f, v.into_owned());
                }
            }
            one(b)
        }
        "GetBook" | "GetAuthorName" | "ArchiveBook" | "GetVersion" | "Broken" | "UploadCover" => {
            one(book(pool, &s(&input, "name"), &input))
        }
        "FindBooks" | "ListShelfBooks" => {
            let mut r = message(pool, "bookstore.v1.FindBooksResponse");
            r.set_field_by_name("received", received(&input));
            one(r)
        }
        "Download" => one(http_body(pool, "text/plain; charset=utf-8", format!("the text of {}", s(&input, "name")).as_bytes())),
        "DownloadChunks" => {
            (0..i(&input, "chunks")).map(|n| http_body(pool, "application/x-chunks", format!("chunk-{n};").as_bytes())).collect()
        }
        "StreamBooks" => {
            let shelf = s(&input, "shelf");
            let (fail_after, fail_code) = (i(&input, "fail_after"), i(&input, "fail_code"));
            let hold = input.get_field_by_name("hold_after_first").and_then(|v| v.as_bool()).unwrap_or(false);
            let oversized = input.get_field_by_name("oversized").and_then(|v| v.as_bool()).unwrap_or(false);
            for n in 0..i(&input, "count") {
                if fail_code != 0 && n == fail_after {
                    break;
                }
                if tx.send(frame(&book(pool, &format!("{shelf}/b{n}"), &input))).await.is_err() {
                    return;
                }
                if hold && n == 0 {
                    store.release.notified().await;
                }
                if oversized && n == 0 {
                    let mut head = vec![0u8];
                    head.extend_from_slice(&(5u32 * 1024 * 1024).to_be_bytes());
                    head.extend_from_slice(b"a few bytes of it");
                    if tx.send(Ok(Frame::data(Bytes::from(head)))).await.is_err() {
                        return;
                    }
                    break;
                }
            }
            if fail_code != 0 {
                end(tx, fail_code, format!("shelf {shelf} broke after {fail_after} books"), None, &[]).await;
            } else {
                end(tx, 0, String::new(), None, &[]).await;
            }
            return;
        }
        "Echo" => {
            let code = i(&input, "code");
            if code != 0 {
                use paymesh_proto::google::rpc;
                let info = rpc::ErrorInfo { reason: "SHELF_FULL".into(), domain: "bookstore.example".into(), ..Default::default() };
                let bad = rpc::BadRequest {
                    field_violations: vec![rpc::bad_request::FieldViolation { field: "code".into(), description: "asked to fail".into() }],
                };
                let any = |url: &str, v: Vec<u8>| prost_types::Any { type_url: format!("type.googleapis.com/{url}"), value: v };
                let status = rpc::Status {
                    code,
                    message: s(&input, "message"),
                    details: vec![any("google.rpc.ErrorInfo", info.encode_to_vec()), any("google.rpc.BadRequest", bad.encode_to_vec())],
                };
                end(tx, code, s(&input, "message"), Some(status.encode_to_vec()), &[]).await;
                return;
            }
            let mut r = message(pool, "bookstore.v1.EchoResponse");
            let mut map = std::collections::HashMap::new();
            for (k, v) in &headers {
                if let Ok(v) = v.to_str() {
                    map.insert(prost_reflect::MapKey::String(k.as_str().to_owned()), Value::String(v.to_owned()));
                }
            }
            r.set_field_by_name("metadata", Value::Map(map));
            if tx.send(frame(&r)).await.is_ok() {
                end(tx, 0, String::new(), None, &[("x-cost", "7")]).await;
            }
            return;
        }
        other => {
            end(tx, 12, format!("no method {other}"), None, &[]).await;
            return;
        }
    };
    for m in &messages {
        if tx.send(frame(m)).await.is_err() {
            return;
        }
    }
    end(tx, 0, String::new(), None, &[]).await;
}

/// One bookstore server and an edge routing to it; no database.
pub struct BookStack {
    pub edge: SocketAddr,
    pub admin: SocketAddr,
    calls: Arc<AtomicUsize>,
    release: Arc<Notify>,
    server_stop: Option<oneshot::Sender<()>>,
    edge_process: InProcessEdge,
    dir: std::path::PathBuf,
}

impl BookStack {
    pub async fn start(transcoding: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!("paymesh-books-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst)));
        std::fs::create_dir_all(&dir).expect("dir");
        let fds = dir.join("bookstore.binpb");
        std::fs::write(&fds, descriptor_set()).expect("write");
        let mut pool = DescriptorPool::new();
        pool.decode_file_descriptor_set(paymesh_proto::FILE_DESCRIPTOR_SET).expect("builtin");
        pool.decode_file_descriptor_set(descriptor_set().as_slice()).expect("bookstore");
        let store = Bookstore { pool, calls: Arc::new(AtomicUsize::new(0)), release: Arc::new(Notify::new()) };
        let (calls, release) = (store.calls.clone(), store.release.clone());

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
        let (server_stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(health)
                .add_service(store)
                .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async move {
                    let _ = stopped.await;
                })
                .await
        });

        let (edge, admin) = (free_addr(), free_addr());
        let text = format!(
            r#"[[shards]]
id = 0
database_url = "postgres://unused@127.0.0.1:1/none"
[[payments.instances]]
name = "unused"
shard = 0
listen = "127.0.0.1:0"

[edge]
listen = "{edge}"
admin_listen = "{admin}"
request_timeout = "10s"
threads = 2
descriptor_sets = ["{fds}"]

[edge.transcoding]
{transcoding}

[edge.health]
interval = "50ms"
timeout = "2s"
healthy_threshold = 1
unhealthy_threshold = 3

[[edge.clusters]]
name = "books"
endpoints = [{{ name = "books-1", address = "{addr}" }}]

[[edge.routes]]
service = "bookstore.v1.Bookstore"
cluster = "books"
"#,
            fds = fds.display(),
        );
        let path = dir.join("mesh.toml");
        std::fs::write(&path, &text).expect("write config");
        let edge_process = InProcessEdge::start(&path);
        wait_first_cluster_healthy(admin, "the bookstore").await;
        Self { edge, admin, calls, release, server_stop: Some(server_stop), edge_process, dir }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Lets held streams go on.
    pub fn release(&self) {
        self.release.notify_waiters();
    }

    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &'static str) -> http_client::Reply {
        http_client::send(self.edge, Version::Http1, method, path, headers, Bytes::from_static(body.as_bytes())).await
    }

    pub async fn stop(mut self) {
        self.release();
        self.edge_process.stop().await;
        if let Some(tx) = self.server_stop.take() {
            let _ = tx.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The request the server received, from an answer's `received` field.
pub fn received_of(reply: &http_client::Reply) -> serde_json::Value {
    let j = reply.json();
    let text = j["received"].as_str().unwrap_or_else(|| panic!("no 'received' in {j}"));
    serde_json::from_str(text).expect("received is JSON")
}
