//! A second, unrelated gRPC service (inventory.v1) routed purely by configuration: path
//! variables, a single-field body, query parameters, enums, int64 and repeated fields, plus
//! gRPC passthrough to it.

use prost::Message;
use prost_reflect::{DynamicMessage, Value};
use serde_json::json;

use crate::harness::*;
use crate::http_client::{self, post_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_over_rest_from_descriptors_alone() {
    let stack = Stack::start().await;
    let got = http_client::get(stack.edge, "/v1/shelves/s%201/items/i-9").await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(
        got.json(),
        json!({"shelf": "s 1", "itemId": "i-9", "displayName": "item i-9", "quantity": "12345678901234", "color": "COLOR_BLUE"})
    );

    // body: "item" — the JSON body is the item; the shelf comes from the path.
    let created = post_json(
        stack.edge,
        "/v1/shelves/top/items",
        r#"{"itemId":"n1","display_name":"New","quantity":3,"color":"COLOR_RED","tags":["a","b"]}"#,
    )
    .await;
    assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    assert_eq!(
        created.json(),
        json!({"shelf": "top", "itemId": "n1", "displayName": "New", "quantity": "3", "color": "COLOR_RED", "tags": ["a", "b"]})
    );

    // Query parameters: strings, int32, enum by name, repeated, bool.
    let found =
        http_client::get(stack.edge, "/v1/items:search?query=blue+things&pageSize=2&color=COLOR_BLUE&tags=x&tags=y&in_stock=true").await;
    assert_eq!(found.status, 200, "{}", String::from_utf8_lossy(&found.body));
    let j = found.json();
    assert_eq!(j["total"], json!("2000000000000"));
    assert_eq!(j["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        j["items"][1],
        json!({"shelf": "blue things", "itemId": "y", "displayName": "item y", "quantity": "1", "color": "COLOR_BLUE", "tags": ["y"]})
    );

    // The additional binding: the same method by POST with the whole body.
    let posted = post_json(stack.edge, "/v1/items:search", r#"{"query":"q","tags":["t"],"pageSize":1}"#).await;
    assert_eq!(posted.json()["total"], json!("1000000000000"));

    // An upstream error from this service maps like any other.
    let missing = http_client::get(stack.edge, "/v1/shelves/s/items/missing").await;
    assert_eq!((missing.status, missing.json()["code"].clone()), (404, json!(5)));
    assert_eq!(missing.json()["message"], json!("item missing does not exist"));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_over_grpc_passthrough() {
    let stack = Stack::start().await;
    let mut pool = prost_reflect::DescriptorPool::new();
    pool.decode_file_descriptor_set(paymesh_proto::FILE_DESCRIPTOR_SET).expect("builtin");
    pool.decode_file_descriptor_set(crate::inventory::descriptor_set().as_slice()).expect("inventory");
    let req_desc = pool.get_message_by_name("inventory.v1.GetItemRequest").expect("desc");
    let mut req = DynamicMessage::new(req_desc);
    req.set_field_by_name("shelf", Value::String("s".into()));
    req.set_field_by_name("item_id", Value::String("g1".into()));

    let mut grpc = tonic::client::Grpc::new(edge_channel(&stack).await);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static("/inventory.v1.Inventory/GetItem");
    let reply = grpc
        .unary(tonic::Request::new(bytes::Bytes::from(req.encode_to_vec())), path, paymesh_proto::codec::BytesCodec)
        .await
        .expect("call");
    let item = DynamicMessage::decode(pool.get_message_by_name("inventory.v1.Item").expect("desc"), reply.into_inner()).expect("decode");
    assert_eq!(item.get_field_by_name("display_name").and_then(|v| v.as_str().map(str::to_owned)), Some("item g1".to_owned()));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_timeout_bounds_a_hung_upstream() {
    let stack = Stack::start().await;
    // The inventory route's timeout is 2 s; this item never answers.
    let r = http_client::get(stack.edge, "/v1/shelves/s/items/slow").await;
    assert_eq!(r.status, 504, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["code"], json!(4));
    stack.stop().await;
}
