//! Rate limits (429 with Retry-After and RateLimit-* headers, per route and per key, bounded
//! memory) and per-cluster concurrency limits (overflow refused at once, counted).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::flaky::{FlakyStack, Mode};
use crate::harness::DEADLINE;

/// Slow refill so a test never sees a token come back while it runs.
const PER_KEY: &str = r#"
[edge.routes.rate_limit]
per_key = { rate = 0.01, burst = 3, header = "x-api-key", by_merchant = true, max_keys = 50 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_limits_answer_429_with_headers_and_keys_are_independent() {
    let stack = FlakyStack::start(PER_KEY, "", "").await;
    let a = stack.account_on(0, 0);
    let path = format!("/v1/flaky/{a}");
    for left in ["2", "1", "0"] {
        let r = stack.send("GET", &path, &[("x-api-key", "alice")]).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let _ = left;
    }
    let before = stack.calls(&["f0a", "f0b"]);
    let r = stack.send("GET", &path, &[("x-api-key", "alice")]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["code"], json!(8), "RESOURCE_EXHAUSTED");
    assert!(r.json()["message"].as_str().is_some_and(|m| m.contains("rate limit of flaky.v1.Flaky exceeded")));
    assert_eq!(r.headers["ratelimit-limit"], "3");
    assert_eq!(r.headers["ratelimit-remaining"], "0");
    let retry_after: u64 = r.headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=100).contains(&retry_after), "one token comes back in 100 s at 0.01/s: {retry_after}");
    assert!(r.headers.contains_key("ratelimit-reset"));
    assert_eq!(stack.calls(&["f0a", "f0b"]), before, "a limited request never reaches the upstream");

    // Another key, and a request keyed by its merchant (no API key), have their own buckets.
    assert_eq!(stack.send("GET", &path, &[("x-api-key", "bob")]).await.status, 200);
    for _ in 0..3 {
        assert_eq!(stack.read(&a).await.status, 200, "keyed by the account (merchant) id");
    }
    assert_eq!(stack.read(&a).await.status, 429);
    assert_eq!(stack.read(&stack.account_on(0, 1)).await.status, 200, "another merchant");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_distinct_keys_stay_within_the_memory_bound() {
    let stack = FlakyStack::start(PER_KEY, "", "").await;
    let a = stack.account_on(1, 0);
    for i in 0..300 {
        let key = format!("key-{i}");
        assert_eq!(
            stack.send("GET", &format!("/v1/flaky/{a}"), &[("x-api-key", &key)]).await.status,
            200,
            "each new key has a full bucket"
        );
    }
    let metrics = String::from_utf8_lossy(&stack.admin_get("/metrics").await.body).into_owned();
    let keys: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("paymesh_edge_rate_limit_keys{route=\"flaky.v1.Flaky\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no key gauge in {metrics}"));
    assert!((1..=50).contains(&keys), "{keys} keys held, the bound is 50");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_wide_limit_applies_to_everyone_over_grpc_too() {
    let stack = FlakyStack::start("[edge.routes.rate_limit]\nroute = { rate = 0.01, burst = 2 }\n", "", "").await;
    let a = stack.account_on(0, 0);
    assert_eq!(stack.read(&a).await.status, 200);
    assert_eq!(stack.read(&stack.account_on(1, 0)).await.status, 200);
    assert_eq!(stack.read(&a).await.status, 429);
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", stack.edge)).expect("uri").connect().await.expect("connect");
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.expect("ready");
    let mut body = vec![0x0a, a.len() as u8];
    body.extend_from_slice(a.as_bytes());
    let path = http::uri::PathAndQuery::from_static("/flaky.v1.Flaky/Read");
    let err = grpc.unary(tonic::Request::new(bytes::Bytes::from(body)), path, paymesh_proto::codec::BytesCodec).await.expect_err("limited");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.metadata().get("retry-after").is_some(), "{:?}", err.metadata());
    assert_eq!(err.metadata().get("ratelimit-limit").and_then(|v| v.to_str().ok()), Some("2"));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_overflow_is_refused_at_once_and_counted() {
    let stack = std::sync::Arc::new(FlakyStack::start("", "max_requests = 2\nmax_pending = 0\n", "").await);
    stack.set(&["f0a", "f0b", "f1a", "f1b"], Mode::Hold);
    let mut held = Vec::new();
    for i in 0..2 {
        let (s, a) = (stack.clone(), stack.account_on(0, i));
        held.push(tokio::spawn(async move { s.read(&a).await }));
    }
    let start = Instant::now();
    while stack.instances.iter().map(|i| i.control.held()).sum::<usize>() < 2 {
        assert!(start.elapsed() < DEADLINE, "the first two calls never reached the upstream");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = stack.read(&stack.account_on(1, 0)).await;
    assert_eq!(r.status, 503);
    assert!(
        r.json()["message"].as_str().is_some_and(|m| m.contains("cluster 'flaky' is at its limit of 2 requests in flight and 0 waiting")),
        "{}",
        r.json()
    );
    let metrics = String::from_utf8_lossy(&stack.admin_get("/metrics").await.body).into_owned();
    assert!(metrics.contains("paymesh_edge_cluster_overflow_total{cluster=\"flaky\"} 1"), "{metrics}");
    stack.set(&["f0a", "f0b", "f1a", "f1b"], Mode::Normal);
    for h in held {
        assert_eq!(h.await.expect("join").status, 200);
    }
    match std::sync::Arc::try_unwrap(stack) {
        Ok(s) => s.stop().await,
        Err(_) => panic!("stack still shared"),
    }
}
