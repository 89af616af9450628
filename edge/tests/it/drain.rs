//! Drains: a payments instance stopped and started again under load fails no call. On
//! SIGTERM (here: its shutdown signal) it reports NOT_SERVING and keeps serving for its drain
//! delay; the edge's health watch takes it out at once, so no new call is sent to it, and the
//! calls it already has finish. Retries are switched off for the test: the drain alone must
//! keep every call whole.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use paymesh_proto::payments::v1 as pb;
use paymesh_proto::payments::v1::payments_client::PaymentsClient;

use crate::harness::*;
use crate::http_client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_instances_restarted_one_at_a_time_under_load_fail_no_call() {
    let mut stack = Stack::start().await;
    let path = stack.config_path();
    let text = std::fs::read_to_string(&path).expect("read");
    let no_retries = text.replace(
        "  { field = \"payment_id\", kind = \"sharded_id\" },\n]\n",
        "  { field = \"payment_id\", kind = \"sharded_id\" },\n]\nretry = { enabled = false }\n",
    );
    assert_ne!(no_retries, text);
    std::fs::write(&path, no_retries).expect("write");
    let r = http_client::send(stack.admin, http_client::Version::Http1, "POST", "/config/reload", &[], bytes::Bytes::new()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    stack.wait_all_healthy().await;

    // Authorize on shard 0 (payments-0a and -0b), four callers, until stopped.
    let (stop, ok) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let merchant = stack.merchant_on(0, 0);
    let channel = edge_channel(&stack).await;
    let callers: Vec<_> = (0..4)
        .map(|c| {
            let (stop, ok, failed, merchant) = (stop.clone(), ok.clone(), failed.clone(), merchant.clone());
            let mut client = PaymentsClient::new(channel.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let req = pb::AuthorizeRequest {
                        merchant_id: merchant.clone(),
                        amount: 100,
                        currency: "KRW".into(),
                        idempotency_key: format!("drain-{c}-{i}"),
                    };
                    match client.authorize(req).await {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failed.lock().expect("lock").push(format!("{:?}: {}", e.code(), e.message())),
                    }
                }
            })
        })
        .collect();
    let more = |n: usize| {
        let ok = ok.clone();
        async move {
            let target = ok.load(Ordering::Relaxed) + n;
            let start = Instant::now();
            while ok.load(Ordering::Relaxed) < target {
                assert!(start.elapsed() < DEADLINE, "the load stalled");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    more(100).await;

    for name in ["payments-0a", "payments-0b"] {
        // Stopped under load: it drains, then exits; the shard's other instance carries on.
        stack.kill(name).await;
        stack.wait_endpoint(name, false).await;
        more(100).await;
        // Started again: checked healthy, then back in rotation (the next round stops its
        // peer, so every call then goes to it).
        stack.restart(name).await;
        stack.wait_endpoint(name, true).await;
        more(100).await;
    }

    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await.expect("caller");
    }
    let failed = failed.lock().expect("lock").clone();
    let total = ok.load(Ordering::Relaxed) + failed.len();
    assert!(failed.is_empty(), "{} of {total} calls failed while instances restarted: {:?}", failed.len(), &failed[..failed.len().min(5)]);
    stack.stop().await;
}
