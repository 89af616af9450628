//! Edge-side rejections: each gets its HTTP status and a google.rpc.Status-shaped JSON body
//! naming the problem, and no upstream sees the request.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use serde_json::json;

use crate::harness::*;
use crate::http_client::{Version, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_never_reach_an_upstream() {
    let stack = Stack::start().await;
    let m = stack.merchant_on(0, 0);
    let json_ct = [("content-type", "application/json")];
    let big = format!(r#"{{"merchantId":"{m}","amount":1,"currency":"USD","idempotencyKey":"{}"}}"#, "k".repeat(5_000));
    // (method, path, headers, body, HTTP status, gRPC code, message fragment)
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, String, u16, i64, &'a str);
    let cases: Vec<Case> = vec![
        ("POST", "/api/payments/authorize".into(), json_ct.to_vec(), r#"{"merchantId": "#.into(), 400, 3, "malformed JSON body"),
        ("POST", "/api/payments/authorize".into(), json_ct.to_vec(), r#"[1,2]"#.into(), 400, 3, "invalid JSON body"),
        (
            "POST",
            "/api/payments/authorize".into(),
            json_ct.to_vec(),
            format!(r#"{{"merchantId":"{m}","amount":1,"currency":"USD","idempotencyKey":"k","tip":5}}"#),
            400,
            3,
            "tip",
        ),
        (
            "POST",
            "/api/payments/authorize".into(),
            json_ct.to_vec(),
            format!(r#"{{"merchantId":"{m}","amount":"lots","currency":"USD","idempotencyKey":"k"}}"#),
            400,
            3,
            "'amount'",
        ),
        (
            "POST",
            "/api/payments/authorize".into(),
            json_ct.to_vec(),
            format!(r#"{{"merchantId":"{m}","amount":1,"currency":7,"idempotencyKey":"k"}}"#),
            400,
            3,
            "'currency'",
        ),
        (
            "POST",
            "/api/payments/authorize".into(),
            json_ct.to_vec(),
            format!(r#"{{"merchantId":"{m}","amount":99999999999999999999,"currency":"USD","idempotencyKey":"k"}}"#),
            400,
            3,
            "'amount'",
        ),
        (
            "POST",
            "/api/payments/authorize".into(),
            json_ct.to_vec(),
            r#"{"amount":1,"currency":"USD","idempotencyKey":"k"}"#.into(),
            400,
            3,
            "merchant_id is required: the edge routes",
        ),
        (
            "POST",
            "/api/payments/pay_9_0193a0c2f4d87e4b9a1c6f0e2d3b4a59/capture".into(),
            json_ct.to_vec(),
            r#"{"idempotencyKey":"k"}"#.into(),
            400,
            3,
            "names shard 9",
        ),
        (
            "POST",
            "/api/payments/not-an-id/capture".into(),
            json_ct.to_vec(),
            r#"{"idempotencyKey":"k"}"#.into(),
            400,
            3,
            "payment_id: 'not-an-id' is not a valid pay id",
        ),
        (
            "POST",
            "/api/payments/authorize".into(),
            vec![("content-type", "text/plain")],
            format!(r#"{{"merchantId":"{m}"}}"#),
            415,
            3,
            "Content-Type: application/json",
        ),
        (
            "POST",
            "/api/payments/authorize".into(),
            vec![("content-type", "application/x-www-form-urlencoded")],
            "a=b".into(),
            415,
            3,
            "application/json",
        ),
        ("POST", "/api/payments/authorize".into(), json_ct.to_vec(), big, 413, 3, "larger than the limit of 4096 bytes"),
        ("GET", "/api/payments/authorize/extra".into(), vec![], String::new(), 404, 5, "no route for GET /api/payments/authorize/extra"),
        ("GET", "/nowhere".into(), vec![], String::new(), 404, 5, "no route"),
        ("DELETE", "/api/payments/authorize".into(), vec![], String::new(), 405, 12, "allowed: "),
        (
            "GET",
            "/api/payments/pay_0_0193a0c2f4d87e4b9a1c6f0e2d3b4a59?bogus=1".into(),
            vec![],
            String::new(),
            400,
            3,
            "unknown query parameter 'bogus'",
        ),
        // The second service: unknown field inside the single-field body, wrong enum name in the query.
        ("POST", "/v1/shelves/s1/items".into(), json_ct.to_vec(), r#"{"displayName":"x","weight":3}"#.into(), 400, 3, "weight"),
        ("GET", "/v1/items:search?color=GREEN".into(), vec![], String::new(), 400, 3, "'GREEN' is not one of"),
        ("GET", "/v1/items:search?pageSize=many".into(), vec![], String::new(), 400, 3, "query parameter 'pageSize'"),
    ];
    for version in [Version::Http1, Version::Http2] {
        for (method, path, headers, body, http, code, needle) in &cases {
            let r = send(stack.edge, version, method, path, headers, Bytes::from(body.clone())).await;
            let j = r.json();
            assert_eq!(r.status, *http, "{version:?} {method} {path}: {j}");
            assert_eq!(j["code"], json!(code), "{method} {path}: {j}");
            assert_eq!(j["details"], json!([]));
            assert!(j["message"].as_str().is_some_and(|msg| msg.contains(needle)), "{method} {path}: expected {needle:?} in {j}");
            if *http == 405 {
                let allow = r.headers["allow"].to_str().expect("ascii");
                assert!(allow.split(", ").any(|m| m == "POST"), "405 says what is allowed: {allow}");
            }
        }
    }
    // Nothing reached an upstream: no payment rows anywhere, no inventory calls.
    assert_eq!(stack.total("payments").await, 0);
    assert_eq!(stack.total("idempotency_keys").await, 0);
    assert_eq!(stack.inventory.calls.load(Ordering::SeqCst), 0, "the inventory service saw a rejected request");
    stack.stop().await;
}
