//! Merchant scoping (issue 12), through the real edge to real payments instances on real
//! PostgreSQL shards: a credential for merchant A cannot authorize for, capture, refund,
//! void or read merchant B's payments, by REST or gRPC, on either shard; the refusal writes
//! nothing (no payment, operation, idempotency record or outbox event). Reading across
//! merchants needs the admin scope; writing across merchants is never allowed.

use paymesh_proto::payments::v1 as pb;
use paymesh_proto::payments::v1::payments_client::PaymentsClient;
use serde_json::json;
use tonic::Code;

use crate::auth::{AUDIENCE, ISSUER, Key, claims, write_jwks};
use crate::harness::*;
use crate::http_client::{self, Version};

const TABLES: [&str; 4] = ["payments", "payment_operations", "idempotency_keys", "outbox_event"];

async fn written(stack: &Stack) -> Vec<i64> {
    let mut counts = Vec::new();
    for t in TABLES {
        counts.push(stack.total(t).await);
    }
    counts
}

async fn rest(stack: &Stack, token: &str, method: &str, path: &str, body: &str) -> http_client::Reply {
    let auth = format!("Bearer {token}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    http_client::send(stack.edge, Version::Http1, method, path, &headers, bytes::Bytes::from(body.to_owned())).await
}

fn with_token<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchants_credential_cannot_touch_another_merchants_payments_and_the_refusal_writes_nothing() {
    let dir = std::env::temp_dir().join(format!("paymesh-scoping-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let key = Key::ed25519("ed-1");
    let jwks = dir.join("jwks.json");
    write_jwks(&jwks, &[&key]);
    let auth = format!(
        "[edge.auth]\n[[edge.auth.issuers]]\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\njwks_file = \"{}\"\n",
        jwks.display()
    );
    let stack = Stack::start_with(&auth).await;
    // A and B on different shards, so the refusals are checked on both.
    let (ma, mb) = (stack.merchant_on(0, 0), stack.merchant_on(1, 0));
    let token_a = key.sign(&claims("alice", &ma));
    let token_b = key.sign(&claims("bob", &mb));
    let admin_a = key.sign(&{
        let mut c = claims("ops", &ma);
        c["scope"] = json!("payments:admin");
        c
    });
    let no_merchant = key.sign(&{
        let mut c = claims("robot", &ma);
        c.as_object_mut().expect("object").remove("merchant_id");
        c
    });

    let authorize = |m: &str, k: &str| format!(r#"{{"merchantId":"{m}","amount":5000,"currency":"USD","idempotencyKey":"{k}"}}"#);
    let a = rest(&stack, &token_a, "POST", "/api/payments/authorize", &authorize(&ma, "a-1")).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let pa = a.json()["paymentId"].as_str().expect("id").to_owned();
    let mut grpc = PaymentsClient::new(edge_channel(&stack).await);
    let pb_req = pb::AuthorizeRequest { merchant_id: mb.clone(), amount: 5000, currency: "USD".into(), idempotency_key: "b-1".into() };
    let pb_id = grpc.authorize(with_token(&token_b, pb_req)).await.expect("B authorizes its own").into_inner().payment_id;
    let before = written(&stack).await;

    // Every attempt on the other merchant's payments, by REST: 403 and nothing written.
    let capture = r#"{"idempotencyKey":"x-1"}"#;
    let refund = r#"{"amount":100,"idempotencyKey":"x-2"}"#;
    let cases: Vec<(&str, &str, &str, String, String)> = vec![
        ("A authorizes for B", &token_a, "POST", "/api/payments/authorize".into(), authorize(&mb, "x-0")),
        ("A captures B's", &token_a, "POST", format!("/api/payments/{pb_id}/capture"), capture.into()),
        ("A refunds B's", &token_a, "POST", format!("/api/payments/{pb_id}/refund"), refund.into()),
        ("A voids B's", &token_a, "POST", format!("/api/payments/{pb_id}/void"), capture.into()),
        ("A reads B's", &token_a, "GET", format!("/api/payments/{pb_id}"), String::new()),
        ("B captures A's", &token_b, "POST", format!("/api/payments/{pa}/capture"), capture.into()),
        ("B voids A's", &token_b, "POST", format!("/api/payments/{pa}/void"), capture.into()),
        ("B reads A's", &token_b, "GET", format!("/api/payments/{pa}"), String::new()),
        ("an admin captures B's", &admin_a, "POST", format!("/api/payments/{pb_id}/capture"), capture.into()),
        ("an admin authorizes for B", &admin_a, "POST", "/api/payments/authorize".into(), authorize(&mb, "x-3")),
        ("no merchant authorizes for A", &no_merchant, "POST", "/api/payments/authorize".into(), authorize(&ma, "x-4")),
        ("no merchant reads A's", &no_merchant, "GET", format!("/api/payments/{pa}"), String::new()),
    ];
    for (name, token, method, path, body) in &cases {
        let r = rest(&stack, token, method, path, body).await;
        assert_eq!(r.status, 403, "{name}: {} {}", r.status, String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["code"], 7, "{name}");
    }
    // The same by gRPC.
    let denied = |name: &str, r: Result<tonic::Response<pb::Payment>, tonic::Status>| match r {
        Err(s) => assert_eq!(s.code(), Code::PermissionDenied, "{name}: {s:?}"),
        Ok(p) => panic!("{name}: accepted: {:?}", p.into_inner()),
    };
    let cap = |id: &str| pb::CaptureRequest { payment_id: id.into(), amount: None, idempotency_key: "g-1".into() };
    denied("gRPC: A captures B's", grpc.capture(with_token(&token_a, cap(&pb_id))).await);
    denied("gRPC: B captures A's", grpc.capture(with_token(&token_b, cap(&pa))).await);
    denied("gRPC: A reads B's", grpc.get_payment(with_token(&token_a, pb::GetPaymentRequest { payment_id: pb_id.clone() })).await);
    denied(
        "gRPC: A voids B's",
        grpc.void(with_token(&token_a, pb::VoidRequest { payment_id: pb_id.clone(), idempotency_key: "g-2".into() })).await,
    );
    let refund_b = pb::RefundRequest { payment_id: pb_id.clone(), amount: Some(100), idempotency_key: "g-3".into() };
    match grpc.refund(with_token(&token_a, refund_b)).await {
        Err(s) => assert_eq!(s.code(), Code::PermissionDenied, "gRPC: A refunds B's: {s:?}"),
        Ok(r) => panic!("gRPC: A refunds B's: accepted {:?}", r.into_inner()),
    }
    let for_b = pb::AuthorizeRequest { merchant_id: mb.clone(), amount: 1, currency: "USD".into(), idempotency_key: "g-4".into() };
    denied("gRPC: A authorizes for B", grpc.authorize(with_token(&token_a, for_b)).await);
    assert_eq!(written(&stack).await, before, "a refused call wrote something ({TABLES:?})");

    // What is allowed still works: the admin reads across merchants; each acts on its own.
    let read = rest(&stack, &admin_a, "GET", &format!("/api/payments/{pb_id}"), "").await;
    assert_eq!(read.status, 200, "{}", String::from_utf8_lossy(&read.body));
    let own = rest(&stack, &token_a, "POST", &format!("/api/payments/{pa}/capture"), r#"{"idempotencyKey":"a-2"}"#).await;
    assert_eq!(own.status, 200, "{}", String::from_utf8_lossy(&own.body));
    grpc.capture(with_token(&token_b, cap(&pb_id))).await.expect("B captures its own");

    // An instance refuses a call that did not come through the edge (no identity).
    let inst = &stack.instances[0];
    let mut direct = PaymentsClient::connect(format!("http://{}", inst.addr)).await.expect("connect");
    let r = direct.get_payment(pb::GetPaymentRequest { payment_id: pa.clone() }).await;
    assert_eq!(r.expect_err("no identity").code(), Code::Unauthenticated);
    stack.stop().await;
}
