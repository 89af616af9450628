//! REST through the edge: the payment flow, the proto3 JSON mapping both ways, upstream
//! errors mapped to HTTP like grpc-gateway, and HTTP/2.

use serde_json::{Value, json};

use crate::harness::*;
use crate::http_client::{self, Version, post_json};

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_capture_refund_get_over_rest() {
    let stack = Stack::start().await;
    let m = stack.merchant_on(1, 0);
    let body = format!(r#"{{"merchantId":"{m}","amount":50000,"currency":"KRW","idempotencyKey":"rest-1"}}"#);
    let r = post_json(stack.edge, "/api/payments/authorize", &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.headers["content-type"], "application/json");
    let p = r.json();
    // proto3 JSON: lowerCamelCase, int64 as strings, enums by name, zero values omitted.
    assert_eq!(keys(&p), ["amount", "createdAt", "currency", "merchantId", "paymentId", "status", "updatedAt", "version"]);
    assert_eq!(p["amount"], json!("50000"));
    assert_eq!(p["version"], json!("1"));
    assert_eq!(p["status"], json!("PAYMENT_STATUS_AUTHORIZED"));
    assert_eq!(p["merchantId"], json!(m));
    let id = p["paymentId"].as_str().expect("id").to_owned();
    assert!(id.starts_with("pay_1_"), "{id}");
    assert!(p["createdAt"].as_str().is_some_and(|t| t.ends_with('Z') && t.contains('T')), "{p}");

    // Original field names and int64 as a string are accepted too.
    let cap = post_json(stack.edge, &format!("/api/payments/{id}/capture"), r#"{"amount":"40000","idempotency_key":"rest-2"}"#).await;
    assert_eq!(cap.status, 200, "{}", String::from_utf8_lossy(&cap.body));
    assert_eq!(cap.json()["capturedAmount"], json!("40000"));
    assert_eq!(cap.json()["status"], json!("PAYMENT_STATUS_CAPTURED"));

    let refund = post_json(stack.edge, &format!("/api/payments/{id}/refund"), r#"{"amount":15000,"idempotencyKey":"rest-3"}"#).await;
    assert_eq!(refund.status, 200);
    let rj = refund.json();
    assert_eq!(keys(&rj), ["payment", "refund"]);
    assert_eq!(rj["refund"]["amount"], json!("15000"));
    assert_eq!(rj["payment"]["status"], json!("PAYMENT_STATUS_PARTIALLY_REFUNDED"));
    assert_eq!(rj["payment"]["refundedAmount"], json!("15000"));

    let got = http_client::get(stack.edge, &format!("/api/payments/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), rj["payment"], "GET returns the payment as the last write left it");

    // The same read over HTTP/2 (prior knowledge) on the same port.
    let h2 = http_client::send(stack.edge, Version::Http2, "GET", &format!("/api/payments/{id}"), &[], bytes::Bytes::new()).await;
    assert_eq!((h2.status, h2.json()), (200, rj["payment"].clone()));

    // Replaying the authorize through the edge returns the identical answer.
    let again = post_json(stack.edge, "/api/payments/authorize", &body).await;
    assert_eq!(again.json(), p);
    assert_eq!(stack.count(1, "payments").await, 1);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_map_to_http_as_grpc_gateway_does() {
    let stack = Stack::start().await;
    let m = stack.merchant_on(0, 0);
    let ok = post_json(
        stack.edge,
        "/api/payments/authorize",
        &format!(r#"{{"merchantId":"{m}","amount":100,"currency":"USD","idempotencyKey":"e1"}}"#),
    )
    .await;
    let id = ok.json()["paymentId"].as_str().expect("id").to_owned();

    let cases = [
        // INVALID_ARGUMENT from the service
        (
            format!(r#"{{"merchantId":"{m}","amount":0,"currency":"USD","idempotencyKey":"e2"}}"#),
            "/api/payments/authorize".to_owned(),
            400,
            3,
            "amount: must be greater than 0",
        ),
        (
            format!(r#"{{"merchantId":"{m}","amount":5,"currency":"XYZ","idempotencyKey":"e3"}}"#),
            "/api/payments/authorize".to_owned(),
            400,
            3,
            "'XYZ' is not an ISO 4217",
        ),
        // FAILED_PRECONDITION
        (
            r#"{"amount":101,"idempotencyKey":"e4"}"#.to_owned(),
            format!("/api/payments/{id}/capture"),
            400,
            9,
            "exceeds the authorized amount",
        ),
        (r#"{"idempotencyKey":"e5"}"#.to_owned(), format!("/api/payments/{id}/refund"), 400, 9, "is AUTHORIZED"),
        // ALREADY_EXISTS: idempotency key reused for another request
        (
            format!(r#"{{"merchantId":"{m}","amount":999,"currency":"USD","idempotencyKey":"e1"}}"#),
            "/api/payments/authorize".to_owned(),
            409,
            6,
            "different request",
        ),
    ];
    for (body, path, http, code, needle) in cases {
        let r = post_json(stack.edge, &path, &body).await;
        let j = r.json();
        assert_eq!((r.status, j["code"].as_i64()), (http, Some(code)), "{path} {body}: {j}");
        assert!(j["message"].as_str().is_some_and(|msg| msg.contains(needle)), "{j}");
        assert_eq!(j["details"], json!([]));
    }
    // NOT_FOUND: a well-formed id that does not exist.
    let ghost = paymesh_core::ids::PaymentId::new(paymesh_core::ShardId(1)).to_string();
    let r = http_client::get(stack.edge, &format!("/api/payments/{ghost}")).await;
    assert_eq!((r.status, r.json()["code"].as_i64()), (404, Some(5)));
    stack.stop().await;
}
