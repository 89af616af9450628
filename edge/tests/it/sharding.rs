//! Shard-aware balancing: payments land in their shard's database; a shard survives losing
//! one instance; a shard with none answers 503/UNAVAILABLE naming itself while the other
//! shard serves on.

use paymesh_core::shard::shard_for_merchant;
use paymesh_proto::payments::v1 as pb;
use paymesh_proto::payments::v1::payments_client::PaymentsClient;
use serde_json::json;
use tonic::Code;

use crate::harness::*;
use crate::http_client::post_json;

async fn authorize_rest(stack: &Stack, m: &str, key: &str) -> crate::http_client::Reply {
    post_json(
        stack.edge,
        "/api/payments/authorize",
        &format!(r#"{{"merchantId":"{m}","amount":100,"currency":"USD","idempotencyKey":"{key}"}}"#),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_merchants_land_in_their_shards() {
    let stack = Stack::start().await;
    let mut expected = [0i64; 2];
    for i in 0..50 {
        let m = format!("shop-{i}");
        let r = authorize_rest(&stack, &m, "k").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let shard = shard_for_merchant(&m, 2).0 as usize;
        expected[shard] += 1;
        assert!(r.json()["paymentId"].as_str().is_some_and(|id| id.starts_with(&format!("pay_{shard}_"))));
    }
    for (s, want) in expected.iter().enumerate() {
        let db = stack.db(s).await;
        let rows = db.query("SELECT merchant_id FROM payments", &[]).await.expect("select");
        assert_eq!(rows.len() as i64, *want, "shard {s}");
        for r in rows {
            let m: String = r.get(0);
            assert_eq!(shard_for_merchant(&m, 2).0 as usize, s, "{m} is in shard {s}'s database");
        }
    }
    assert!(expected[0] > 0 && expected[1] > 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_survives_one_instance_and_fails_alone_without_both() {
    let mut stack = Stack::start().await;
    stack.wait_all_healthy().await;
    let (m0, m1) = (stack.merchant_on(0, 0), stack.merchant_on(1, 0));

    // One instance of shard 1 goes away: every request still succeeds (connection failures
    // are retried on the other instance, then health checks take it out).
    stack.kill("payments-1a").await;
    for i in 0..20 {
        let r = authorize_rest(&stack, &m1, &format!("one-down-{i}")).await;
        assert_eq!(r.status, 200, "request {i} with one instance down: {}", String::from_utf8_lossy(&r.body));
    }
    let mut grpc = PaymentsClient::new(edge_channel(&stack).await);
    for i in 0..20 {
        let req = pb::AuthorizeRequest {
            merchant_id: m1.clone(),
            amount: 1,
            currency: "USD".into(),
            idempotency_key: format!("one-down-grpc-{i}"),
        };
        grpc.authorize(req).await.unwrap_or_else(|e| panic!("gRPC request {i} with one instance down: {e:?}"));
    }
    stack.wait_endpoint("payments-1a", false).await;

    // Both gone: shard 1 answers 503 naming itself, over REST and gRPC; shard 0 is untouched.
    stack.kill("payments-1b").await;
    stack.wait_endpoint("payments-1b", false).await;
    let r = authorize_rest(&stack, &m1, "both-down").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["code"], json!(14));
    assert!(
        r.json()["message"].as_str().is_some_and(|m| m.contains("shard 1 of cluster 'payments' has no healthy instance")),
        "{}",
        r.json()
    );
    let mut c = PaymentsClient::new(edge_channel(&stack).await);
    let err = c
        .authorize(pb::AuthorizeRequest { merchant_id: m1.clone(), amount: 1, currency: "USD".into(), idempotency_key: "g".into() })
        .await
        .expect_err("shard 1 is down");
    assert_eq!(err.code(), Code::Unavailable, "a trailers-only UNAVAILABLE, not a bare 502: {err:?}");
    assert!(err.message().contains("shard 1"), "{}", err.message());
    for i in 0..10 {
        let r = authorize_rest(&stack, &m0, &format!("shard0-{i}")).await;
        assert_eq!(r.status, 200, "shard 0 keeps serving");
    }
    let ready = crate::http_client::get(stack.admin, "/ready").await;
    assert_eq!(ready.status, 503);
    assert!(ready.json()["problems"].to_string().contains("shard 1"));
    stack.stop().await;
}
