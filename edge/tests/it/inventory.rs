//! A dynamic gRPC server for `inventory.v1.Inventory`, built from descriptors only (no
//! generated code), with a counter of the calls it received so tests can prove the edge
//! rejected a request without forwarding it.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use paymesh_proto::codec::BytesCodec;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, Value};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};

/// Compiles a proto from `tests/fixtures` into a FileDescriptorSet (without the google/api
/// imports, which the edge already has built in).
pub fn fixture_descriptor_set(file: &str) -> Vec<u8> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut compiler = protox::Compiler::new([root.join("tests/fixtures"), root.join("../proto")]).expect("includes");
    compiler.include_imports(false);
    compiler.open_file(file).unwrap_or_else(|e| panic!("{file} does not compile: {e}"));
    compiler.encode_file_descriptor_set()
}

pub fn descriptor_set() -> Vec<u8> {
    fixture_descriptor_set("inventory.proto")
}

#[derive(Clone)]
pub struct Inventory {
    pool: DescriptorPool,
    pub calls: Arc<AtomicUsize>,
}

impl Inventory {
    pub fn new() -> Self {
        let mut pool = DescriptorPool::new();
        pool.decode_file_descriptor_set(paymesh_proto::FILE_DESCRIPTOR_SET).expect("builtin");
        pool.decode_file_descriptor_set(descriptor_set().as_slice()).expect("inventory");
        Self { pool, calls: Arc::new(AtomicUsize::new(0)) }
    }
}

impl NamedService for Inventory {
    const NAME: &'static str = "inventory.v1.Inventory";
}

impl tower_service::Service<http::Request<tonic::body::Body>> for Inventory {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let name = req.uri().path().rsplit('/').next().unwrap_or_default().to_owned();
        let method = self.pool.get_service_by_name(Self::NAME).and_then(|s| s.methods().find(|m| m.name() == name));
        Box::pin(async move {
            let Some(method) = method else {
                return Ok(Status::unimplemented(format!("no method {name}")).into_http());
            };
            let mut grpc = tonic::server::Grpc::new(BytesCodec);
            Ok(grpc.unary(Handler(method), req).await)
        })
    }
}

struct Handler(MethodDescriptor);

impl UnaryService<Bytes> for Handler {
    type Response = Bytes;
    type Future = BoxFuture<'static, Result<Response<Bytes>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let method = self.0.clone();
        Box::pin(async move {
            let input =
                DynamicMessage::decode(method.input(), request.into_inner()).map_err(|e| Status::invalid_argument(e.to_string()))?;
            let output = answer(&method, &input).await?;
            Ok(Response::new(Bytes::from(output.encode_to_vec())))
        })
    }
}

fn text(m: &DynamicMessage, field: &str) -> String {
    m.get_field_by_name(field).and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn item(desc: &prost_reflect::MessageDescriptor, shelf: &str, id: &str, quantity: i64, color: i32, tags: Vec<String>) -> DynamicMessage {
    let mut m = DynamicMessage::new(desc.clone());
    m.set_field_by_name("shelf", Value::String(shelf.into()));
    m.set_field_by_name("item_id", Value::String(id.into()));
    m.set_field_by_name("display_name", Value::String(format!("item {id}")));
    m.set_field_by_name("quantity", Value::I64(quantity));
    m.set_field_by_name("color", Value::EnumNumber(color));
    m.set_field_by_name("tags", Value::List(tags.into_iter().map(Value::String).collect()));
    m
}

async fn answer(method: &MethodDescriptor, input: &DynamicMessage) -> Result<DynamicMessage, Status> {
    let item_desc = method.parent_pool().get_message_by_name("inventory.v1.Item").expect("Item");
    match method.name() {
        "GetItem" => {
            let id = text(input, "item_id");
            match id.as_str() {
                "missing" => Err(Status::not_found(format!("item {id} does not exist"))),
                // Stands in for a hung upstream, so deadlines can be tested.
                "slow" => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Err(Status::internal("too late"))
                }
                _ => Ok(item(&item_desc, &text(input, "shelf"), &id, 12_345_678_901_234, 2, vec![])),
            }
        }
        "CreateItem" => {
            let mut it = match input.get_field_by_name("item").as_deref() {
                Some(Value::Message(m)) => m.clone(),
                _ => DynamicMessage::new(item_desc),
            };
            it.set_field_by_name("shelf", Value::String(text(input, "shelf")));
            Ok(it)
        }
        "SearchItems" => {
            let tags: Vec<String> = match input.get_field_by_name("tags").as_deref() {
                Some(Value::List(l)) => l.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
                _ => vec![],
            };
            let color = input.get_field_by_name("color").and_then(|v| v.as_enum_number()).unwrap_or(0);
            let page = input.get_field_by_name("page_size").and_then(|v| v.as_i32()).unwrap_or(0);
            let in_stock = input.get_field_by_name("in_stock").and_then(|v| v.as_bool()).unwrap_or(false);
            let query = text(input, "query");
            let out_desc = method.output();
            let mut out = DynamicMessage::new(out_desc);
            let items =
                tags.iter().map(|t| Value::Message(item(&item_desc, &query, t, i64::from(in_stock), color, vec![t.clone()]))).collect();
            out.set_field_by_name("items", Value::List(items));
            out.set_field_by_name("total", Value::I64(i64::from(page) * 1_000_000_000_000));
            Ok(out)
        }
        other => Err(Status::unimplemented(other.to_owned())),
    }
}
