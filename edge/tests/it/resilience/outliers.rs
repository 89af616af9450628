//! Outlier ejection through the real edge: consecutive failures eject an instance for a
//! while, it comes back, and a shard never loses more than its allowed share.

use tonic::Code;

use crate::flaky::{FlakyStack, Mode};

const OUTLIER: &str =
    "[edge.outlier]\nconsecutive_failures = 3\nbase_ejection_time = \"300ms\"\nmax_ejection_time = \"1s\"\nmax_ejection_percent = 50\n";
const NO_BREAKER: &str = "[edge.routes.breaker]\nenabled = false\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_failures_eject_and_the_instance_returns() {
    let stack = FlakyStack::start(NO_BREAKER, "", OUTLIER).await;
    let a = stack.account_on(0, 0);
    // Both instances of the shard fail, so every write counts against one of them whichever
    // the balancer prefers (with one failing instance, peak-EWMA may keep choosing the healthy
    // one for many seconds after a slow first answer, and the failing one would see no calls).
    stack.set(&["f0a", "f0b"], Mode::Fail(Code::Internal));
    // Writes without keys are not retried, so failures reach the caller and count. The
    // ejection counter is monotonic (the ejection itself lasts only 300 ms).
    let mut sent = 0;
    let ejected = loop {
        let c = stack.admin_get("/clusters").await.json();
        let first = c["clusters"][0]["endpoints"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["shard"] == 0 && e["ejections"].as_u64().unwrap_or(0) > 0).cloned());
        if let Some(e) = first {
            break e["name"].as_str().unwrap_or_default().to_owned();
        }
        stack.write(&a, None).await;
        sent += 1;
        assert!(sent < 500, "no instance of shard 0 was ejected: {c}");
    };
    assert!(sent >= 3, "{ejected} was ejected before 3 consecutive failures reached it");
    stack.set(&["f0a", "f0b"], Mode::Normal);
    stack.wait_endpoint(&ejected, "back", |e| e["ejected"] == false).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_never_loses_more_than_its_share() {
    let stack = FlakyStack::start(NO_BREAKER, "", OUTLIER).await;
    let a = stack.account_on(0, 0);
    stack.set(&["f0a", "f0b"], Mode::Fail(Code::Internal));
    for _ in 0..60 {
        stack.write(&a, None).await;
        let c = stack.admin_get("/clusters").await.json();
        let ejected = c["clusters"][0]["endpoints"]
            .as_array()
            .map(|e| e.iter().filter(|e| e["shard"] == 0 && e["ejected"] == true).count())
            .unwrap_or(0);
        assert!(ejected <= 1, "50 % of a two-instance shard is one instance: {c}");
    }
    let metrics = String::from_utf8_lossy(&stack.admin_get("/metrics").await.body).into_owned();
    assert!(metrics.contains("paymesh_edge_upstream_ejections_total{cluster=\"flaky\",endpoint=\"f0"), "{metrics}");
    stack.stop().await;
}
