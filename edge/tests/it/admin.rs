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

    // Prometheus text: every sample line is `name{labels} value`, and the request we made is
    // counted under its route, shard and code.
    let metrics = String::from_utf8_lossy(&http_client::get(stack.admin, "/metrics").await.body).into_owned();
    for line in metrics.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        assert!(value.parse::<f64>().is_ok() || value == "+Inf", "bad value in {line:?}");
        let name = series.split('{').next().unwrap_or("");
        assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad name in {line:?}");
        assert!(!series.contains('{') || series.ends_with('}'), "bad labels in {line:?}");
    }
    let shard = paymesh_core::shard::shard_for_merchant(&m, 2).0;
    let want = format!(
        "paymesh_edge_requests_total{{protocol=\"rest\",route=\"/payments.v1.Payments/Authorize\",shard=\"{shard}\",code=\"OK\"}} 1"
    );
    assert!(metrics.contains(&want), "{want} missing from\n{metrics}");
    assert!(
        metrics.contains("paymesh_edge_request_duration_seconds_count{protocol=\"rest\",route=\"/payments.v1.Payments/Authorize\""),
        "{metrics}"
    );
    assert_eq!(http_client::get(stack.admin, "/nope").await.status, 404);
    stack.stop().await;
}
