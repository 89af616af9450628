//! Retries only when safe, only to another instance of the same shard, within the budget.

use futures_util::future::join_all;
use tonic::Code;

use crate::flaky::{FlakyStack, Mode};

/// No breaker in the way, and no per-second allowance, so the budget alone decides.
const BUDGET_ONLY: &str = r#"
[edge.routes.breaker]
enabled = false

[edge.routes.retry]
budget_ratio = 0.2
min_retries_per_second = 0
idempotency_key_field = "idempotency_key"
"#;

const WITH_KEY_FIELD: &str = "[edge.routes.retry]\nidempotency_key_field = \"idempotency_key\"\n[edge.routes.breaker]\nenabled = false\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_mid_load_fails_no_idempotent_request() {
    let mut stack = FlakyStack::start(WITH_KEY_FIELD, "", "").await;
    let accounts: Vec<String> = (0..8).map(|i| stack.account_on(1, i)).collect();
    let edge = stack.edge;
    let load = |round: usize| {
        let accounts = accounts.clone();
        async move {
            let calls = accounts.iter().enumerate().map(|(i, a)| {
                let a = a.clone();
                async move {
                    let read = crate::http_client::get(edge, &format!("/v1/flaky/{a}")).await;
                    let write =
                        crate::http_client::post_json(edge, &format!("/v1/flaky/{a}"), &format!(r#"{{"idempotencyKey":"k-{round}-{i}"}}"#))
                            .await;
                    (read.status, write.status)
                }
            });
            join_all(calls).await
        }
    };
    for round in 0..5 {
        assert!(load(round).await.iter().all(|s| *s == (200, 200)));
    }
    stack.kill("f1a").await;
    for round in 5..25 {
        let results = load(round).await;
        assert!(results.iter().all(|s| *s == (200, 200)), "round {round} after the kill: {results:?}");
    }
    assert!(stack.calls(&["f1b"]) > 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_without_an_idempotency_key_is_never_sent_twice() {
    let stack = FlakyStack::start(WITH_KEY_FIELD, "", "").await;
    let a = stack.account_on(0, 0);
    stack.set(&["f0a"], Mode::Fail(Code::Unavailable));
    let mut failed = 0;
    for _ in 0..40 {
        let r = stack.write(&a, None).await;
        if r.status != 200 {
            assert_eq!(r.status, 503);
            failed += 1;
        }
    }
    assert_eq!(stack.calls(&["f0a", "f0b"]), 40, "each write reached exactly one instance once");
    assert_eq!(stack.calls(&["f0a"]), failed, "every UNAVAILABLE went back to the caller, not to f0b");
    assert!(failed > 0, "P2C sent some writes to the failing instance");

    // With a key the same failure is retried on the other instance of the shard.
    let before = stack.calls(&["f0a", "f0b"]);
    for i in 0..40 {
        let r = stack.write(&a, Some(&format!("key-{i}"))).await;
        assert_eq!(r.status, 200, "write {i} with a key: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["servedBy"], "f0b");
    }
    assert!(stack.calls(&["f0a", "f0b"]) - before >= 40);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_caps_retries_during_a_full_outage() {
    let stack = FlakyStack::start(BUDGET_ONLY, "", "").await;
    let a = stack.account_on(1, 0);
    stack.set(&["f1a", "f1b"], Mode::Fail(Code::Unavailable));
    for _ in 0..100 {
        assert_eq!(stack.read(&a).await.status, 503);
    }
    let calls = stack.calls(&["f1a", "f1b"]);
    assert!(calls >= 100, "every request was tried once: {calls}");
    assert!(calls <= 100 + 20, "at most 20 % more for retries: {calls}");
    let metrics = String::from_utf8_lossy(&stack.admin_get("/metrics").await.body).into_owned();
    assert!(metrics.contains("paymesh_edge_retries_refused_total{route=\"flaky.v1.Flaky\"}"), "{metrics}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_in_the_shard_and_grpc_reads_are_retried_too() {
    let stack = FlakyStack::start(WITH_KEY_FIELD, "", "").await;
    let a = stack.account_on(0, 3);
    stack.set(&["f0a"], Mode::Fail(Code::Unavailable));
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", stack.edge)).expect("uri").connect().await.expect("connect");
    let mut grpc = tonic::client::Grpc::new(ch);
    for _ in 0..30 {
        grpc.ready().await.expect("ready");
        let mut body = vec![0x0a, a.len() as u8];
        body.extend_from_slice(a.as_bytes());
        let path = http::uri::PathAndQuery::from_static("/flaky.v1.Flaky/Read");
        grpc.unary(tonic::Request::new(bytes::Bytes::from(body)), path, paymesh_proto::codec::BytesCodec)
            .await
            .expect("a read is retried on f0b");
    }
    assert_eq!(stack.calls(&["f1a", "f1b"]), 0, "never another shard's instance");
    stack.stop().await;
}
