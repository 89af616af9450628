//! Circuit breakers through the real edge: every transition as configured.

use std::time::{Duration, Instant};

use serde_json::json;
use tonic::Code;

use crate::flaky::{FlakyStack, Mode, QUICK_BREAKER};
use crate::harness::DEADLINE;

const SHARD0: [&str; 2] = ["f0a", "f0b"];

/// Polls until breaker `shard` reports `state`.
async fn wait_state(stack: &FlakyStack, shard: u32, state: &str) {
    let start = Instant::now();
    loop {
        let b = stack.breaker(shard).await;
        if b["state"] == state {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "breaker of shard {shard} never became {state}: {b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends writes (never retried without a key) until one is admitted past the open breaker.
async fn write_until_admitted(stack: &FlakyStack, account: &str) -> crate::http_client::Reply {
    let start = Instant::now();
    loop {
        let r = stack.write(account, None).await;
        if !r.json()["message"].as_str().is_some_and(|m| m.contains("circuit breaker")) {
            return r;
        }
        assert!(start.elapsed() < DEADLINE, "the open breaker never let a trial call through");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_on_the_failure_rate_only_after_the_minimum_calls_and_then_refuses_at_once() {
    let stack = FlakyStack::start(QUICK_BREAKER, "", "").await;
    let (a0, a1) = (stack.account_on(0, 0), stack.account_on(1, 0));
    stack.set(&SHARD0, Mode::Fail(Code::Unavailable));
    for i in 0..4 {
        let r = stack.write(&a0, None).await;
        assert_eq!((r.status, r.json()["code"].clone()), (503, json!(14)), "call {i} reaches the failing upstream");
    }
    let b = stack.breaker(0).await;
    assert_eq!(
        (b["state"].clone(), b["buffered_calls"].clone(), b["failure_rate"].clone()),
        (json!("closed"), json!(4), json!(-1.0)),
        "not before 5 calls: {b}"
    );
    stack.write(&a0, None).await;
    let b = stack.breaker(0).await;
    assert_eq!(b["state"], "open", "{b}");
    assert_eq!(b["failure_rate"], 100.0);

    let before = stack.calls(&SHARD0);
    let r = stack.write(&a0, None).await;
    assert_eq!((r.status, r.json()["code"].clone()), (503, json!(14)));
    let msg = r.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(msg.contains("circuit breaker 'flaky.v1.Flaky@shard-0' is open; it lets a trial call through in"), "{msg}");
    assert_eq!(stack.calls(&SHARD0), before, "an open breaker answers without calling upstream");
    assert_eq!(stack.breaker(0).await["not_permitted_calls"], 1);

    // The other shard's breaker and traffic are untouched.
    for _ in 0..10 {
        assert_eq!(stack.write(&a1, None).await.status, 200);
    }
    assert_eq!(stack.breaker(1).await["state"], "closed");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_errors_do_not_count_as_failures() {
    let stack = FlakyStack::start(QUICK_BREAKER, "", "").await;
    let a0 = stack.account_on(0, 0);
    stack.set(&SHARD0, Mode::Fail(Code::InvalidArgument));
    for _ in 0..10 {
        assert_eq!(stack.write(&a0, None).await.status, 400);
    }
    let b = stack.breaker(0).await;
    assert_eq!((b["state"].clone(), b["failure_rate"].clone()), (json!("closed"), json!(0.0)), "{b}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_on_the_slow_call_rate() {
    let stack = FlakyStack::start(QUICK_BREAKER, "", "").await;
    let a0 = stack.account_on(0, 0);
    // Successful but slower than the 200 ms slow-call duration.
    stack.set(&SHARD0, Mode::Slow(Duration::from_millis(300)));
    for _ in 0..5 {
        assert_eq!(stack.write(&a0, None).await.status, 200);
    }
    let b = stack.breaker(0).await;
    assert_eq!((b["state"].clone(), b["slow_call_rate"].clone()), (json!("open"), json!(100.0)), "{b}");
    stack.stop().await;
}

/// Opens shard 0's breaker with five failing writes.
async fn open_shard0(stack: &FlakyStack, a0: &str) {
    stack.set(&SHARD0, Mode::Fail(Code::Unavailable));
    for _ in 0..5 {
        stack.write(a0, None).await;
    }
    assert_eq!(stack.breaker(0).await["state"], "open");
}

async fn wait_held(stack: &FlakyStack, n: usize) {
    let start = Instant::now();
    while SHARD0.iter().map(|i| stack.instance(i).control.held()).sum::<usize>() != n {
        assert!(start.elapsed() < DEADLINE, "never {n} calls held upstream");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_admits_exactly_the_trial_calls_then_closes_on_success() {
    let stack = std::sync::Arc::new(FlakyStack::start(QUICK_BREAKER, "", "").await);
    let a0 = stack.account_on(0, 0);
    open_shard0(&stack, &a0).await;

    // The upstream recovers but holds calls, so trials stay in flight.
    stack.set(&SHARD0, Mode::Hold);
    let calls_before = stack.calls(&SHARD0);
    let first = tokio::spawn({
        let (stack, a0) = (stack.clone(), a0.clone());
        async move { write_until_admitted(&stack, &a0).await }
    });
    wait_held(&stack, 1).await;
    assert_eq!(stack.breaker(0).await["state"], "half_open");

    // Four more callers: exactly two join the trial, two are refused at once.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut more = Vec::new();
    for _ in 0..4 {
        let (stack, a0, tx) = (stack.clone(), a0.clone(), tx.clone());
        more.push(tokio::spawn(async move {
            let r = stack.write(&a0, None).await;
            let _ = tx.send(r);
        }));
    }
    let mut refused = Vec::new();
    while refused.len() < 2 {
        refused.push(tokio::time::timeout(DEADLINE, rx.recv()).await.expect("two refusals").expect("reply"));
    }
    for r in &refused {
        assert_eq!(r.status, 503);
        assert!(r.json()["message"].as_str().is_some_and(|m| m.contains("is half_open; its trial calls are in flight")), "{}", r.json());
    }
    wait_held(&stack, 3).await;
    assert_eq!(stack.calls(&SHARD0) - calls_before, 3, "exactly the three trial calls reached the upstream");

    // The trials succeed: the breaker closes and everyone gets through.
    stack.set(&SHARD0, Mode::Normal);
    assert_eq!(first.await.expect("join").status, 200);
    for h in more {
        h.await.expect("join");
    }
    while let Ok(r) = rx.try_recv() {
        assert_eq!(r.status, 200, "a trial call");
    }
    wait_state(&stack, 0, "closed").await;
    assert_eq!(stack.write(&a0, None).await.status, 200);
    match std::sync::Arc::try_unwrap(stack) {
        Ok(s) => s.stop().await,
        Err(_) => panic!("stack still shared"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_reopens_when_the_trials_fail() {
    let stack = FlakyStack::start(QUICK_BREAKER, "", "").await;
    let a0 = stack.account_on(0, 0);
    open_shard0(&stack, &a0).await;
    // Still failing: the first trial fails, then two more trials, then it opens again.
    let r = write_until_admitted(&stack, &a0).await;
    assert!(r.json()["message"].as_str().is_some_and(|m| m.ends_with("fails on purpose")), "the trial reached the upstream: {}", r.json());
    assert_eq!(stack.breaker(0).await["state"], "half_open");
    stack.write(&a0, None).await;
    stack.write(&a0, None).await;
    assert_eq!(stack.breaker(0).await["state"], "open");
    let r = stack.write(&a0, None).await;
    assert!(r.json()["message"].as_str().is_some_and(|m| m.contains("is open")), "{}", r.json());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_based_window_opens_too() {
    let cfg = QUICK_BREAKER.replace("window = \"count\"\nwindow_size = 10", "window = \"time\"\nwindow_size = 60");
    assert!(cfg.contains("\"time\""));
    let stack = FlakyStack::start(&cfg, "", "").await;
    let a0 = stack.account_on(0, 0);
    stack.set(&SHARD0, Mode::Fail(Code::DeadlineExceeded));
    for _ in 0..5 {
        stack.write(&a0, None).await;
    }
    let b = stack.breaker(0).await;
    assert_eq!((b["state"].clone(), b["buffered_calls"].clone()), (json!("open"), json!(5)), "{b}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_share_the_breaker_and_get_unavailable_when_open() {
    let stack = FlakyStack::start(QUICK_BREAKER, "", "").await;
    let a0 = stack.account_on(0, 0);
    open_shard0(&stack, &a0).await;
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", stack.edge)).expect("uri").connect().await.expect("connect");
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.expect("ready");
    // WriteRequest { account = a0 }
    let mut body = vec![0x0a, a0.len() as u8];
    body.extend_from_slice(a0.as_bytes());
    let path = http::uri::PathAndQuery::from_static("/flaky.v1.Flaky/Write");
    let err = grpc.unary(tonic::Request::new(bytes::Bytes::from(body)), path, paymesh_proto::codec::BytesCodec).await.expect_err("open");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("circuit breaker 'flaky.v1.Flaky@shard-0' is open"), "{}", err.message());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_force_breakers_and_see_them_in_metrics() {
    let stack = FlakyStack::start(QUICK_BREAKER, "", "").await;
    let a1 = stack.account_on(1, 0);
    let r = stack.admin_post("/breakers/flaky.v1.Flaky@shard-1?state=open").await;
    assert_eq!((r.status, r.json()["state"].clone()), (200, json!("forced_open")));
    let refused = stack.read(&a1).await;
    assert_eq!(refused.status, 503);
    assert!(refused.json()["message"].as_str().is_some_and(|m| m.contains("forced_open by an operator")));
    let metrics = String::from_utf8_lossy(&stack.admin_get("/metrics").await.body).into_owned();
    assert!(metrics.contains("paymesh_edge_breaker_state{breaker=\"flaky.v1.Flaky@shard-1\",state=\"forced_open\"} 1"), "{metrics}");
    assert!(metrics.contains("paymesh_edge_breaker_not_permitted_calls_total{breaker=\"flaky.v1.Flaky@shard-1\"} 1"), "{metrics}");

    assert_eq!(stack.admin_post("/breakers/flaky.v1.Flaky@shard-1?state=closed").await.json()["state"], "forced_closed");
    assert_eq!(stack.read(&a1).await.status, 200);
    assert_eq!(stack.admin_post("/breakers/flaky.v1.Flaky@shard-1?state=normal").await.json()["state"], "closed");
    assert_eq!(stack.admin_post("/breakers/flaky.v1.Flaky@shard-1?state=sideways").await.status, 400);
    let unknown = stack.admin_post("/breakers/nope?state=open").await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.json()["message"].as_str().is_some_and(|m| m.contains("flaky.v1.Flaky@shard-0")), "lists the breakers");
    stack.stop().await;
}
