//! The admin API: clusters with health, EWMA and in-flight counts; routes; readiness.

use serde_json::json;

use crate::harness::*;
use crate::http_client::{self, post_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_routes_and_ready() {
    let stack = Stack::start().await;
    stack.wait_all_healthy().await;
    let m = stack.merchant_on(0, 0);
    let r = post_json(
        stack.edge,
        "/api/payments/authorize",
        &format!(r#"{{"merchantId":"{m}","amount":1,"currency":"USD","idempotencyKey":"a"}}"#),
    )
    .await;
    assert_eq!(r.status, 200);

    let c = http_client::get(stack.admin, "/clusters").await;
    assert_eq!(c.status, 200);
    let c = c.json();
    let payments = &c["clusters"][0];
    assert_eq!(payments["name"], json!("payments"));
    assert_eq!(payments["shards"], json!(2));
    let eps = payments["endpoints"].as_array().expect("endpoints");
    assert_eq!(eps.len(), 4);
    for (e, inst) in eps.iter().zip(&stack.instances) {
        assert_eq!(e["name"], json!(inst.name));
        assert_eq!(e["address"], json!(inst.addr.to_string()));
        assert_eq!(e["shard"], json!(inst.shard));
        assert_eq!(e["healthy"], json!(true));
        assert_eq!(e["in_flight"], json!(0));
        assert!(e["ewma_ms"].as_f64().is_some_and(|v| v >= 0.0));
    }
    assert_eq!(c["clusters"][1]["name"], json!("inventory"));
    assert_eq!(c["clusters"][1]["shards"], json!(null));

    let routes = http_client::get(stack.admin, "/routes").await.json();
    let rest = routes["rest"].as_array().expect("rest");
    assert!(
        rest.iter()
            .any(|r| r["method"] == "POST" && r["path"] == "/api/payments/authorize" && r["grpc"] == "/payments.v1.Payments/Authorize"),
        "{routes}"
    );
    assert!(rest.iter().any(|r| r["method"] == "GET" && r["path"] == "/v1/shelves/{shelf}/items/{item_id}"), "{routes}");
    let grpc = routes["grpc"].as_array().expect("grpc");
    assert!(
        grpc.iter().any(|g| g["service"] == "payments.v1.Payments" && g["shard_keys"] == json!(["merchant_id", "payment_id"])),
        "{routes}"
    );
    assert!(grpc.iter().any(|g| g["service"] == "inventory.v1.Inventory" && g["timeout_ms"] == json!(2000)), "{routes}");

    assert_eq!(http_client::get(stack.admin, "/ready").await.json(), json!({"ready": true}));
    assert_eq!(http_client::get(stack.admin, "/nope").await.status, 404);
    stack.stop().await;
}
