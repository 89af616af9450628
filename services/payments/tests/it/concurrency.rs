//! Concurrent operations on one payment are serialised: no over-capture, no over-refund.

use paymesh_proto::payments::v1 as pb;
use tonic::Code;

use crate::harness::*;

#[tokio::test]
async fn concurrent_captures_succeed_exactly_once() {
    let mesh = TestMesh::start(2).await;
    let m = mesh.merchant_on(0, 0);
    let p = authorized(&mesh, &m, 1_000).await;
    let channel = mesh.channel(0).await;
    let calls = (0..30).map(|i| {
        let mut c = Client::new(channel.clone());
        let req = pb::CaptureRequest { payment_id: p.payment_id.clone(), amount: Some(500 + i), idempotency_key: key() };
        tokio::spawn(async move { c.capture(req).await })
    });
    let results: Vec<_> = futures_util::future::join_all(calls).await.into_iter().map(|r| r.expect("join")).collect();
    let wins: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(wins.len(), 1, "exactly one capture wins");
    for r in &results {
        if let Err(s) = r {
            assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
        }
    }
    let c = mesh.counts(0).await;
    assert_eq!((c.operations, c.outbox), (2, 2));
    mesh.stop().await;
}

#[tokio::test]
async fn concurrent_refunds_never_exceed_the_captured_amount() {
    let mesh = TestMesh::start(2).await;
    let m = mesh.merchant_on(1, 0);
    let p = captured(&mesh, &m, 1_000, 1_000).await;
    let channel = mesh.channel(1).await;
    // 40 refunds of 30 compete for 1000: exactly 33 fit.
    let calls = (0..40).map(|_| {
        let mut c = Client::new(channel.clone());
        let req = pb::RefundRequest { payment_id: p.payment_id.clone(), amount: Some(30), idempotency_key: key() };
        tokio::spawn(async move { c.refund(req).await })
    });
    let results: Vec<_> = futures_util::future::join_all(calls).await.into_iter().map(|r| r.expect("join")).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 33);
    assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|s| s.code() == Code::FailedPrecondition));
    let got = mesh.client(1).await.get_payment(pb::GetPaymentRequest { payment_id: p.payment_id.clone() }).await.expect("get").into_inner();
    assert_eq!(got.refunded_amount, 990);
    let db = mesh.db(1).await;
    let sum: i64 = db.query_one("SELECT sum(amount)::bigint FROM payment_operations WHERE kind = 'REFUND'", &[]).await.expect("sum").get(0);
    assert_eq!(sum, 990, "operation records agree with the payment");
    mesh.stop().await;
}

#[tokio::test]
async fn capture_and_void_race_has_one_winner() {
    let mesh = TestMesh::start(2).await;
    let m = mesh.merchant_on(0, 5);
    for _ in 0..10 {
        let p = authorized(&mesh, &m, 100).await;
        let (mut a, mut b) = (mesh.client(0).await, mesh.client(0).await);
        let (id1, id2) = (p.payment_id.clone(), p.payment_id.clone());
        let cap =
            tokio::spawn(async move { a.capture(pb::CaptureRequest { payment_id: id1, amount: None, idempotency_key: key() }).await });
        let void = tokio::spawn(async move { b.void(pb::VoidRequest { payment_id: id2, idempotency_key: key() }).await });
        let (cap, void) = (cap.await.expect("join"), void.await.expect("join"));
        assert!(cap.is_ok() != void.is_ok(), "exactly one of capture and void wins: {cap:?} {void:?}");
    }
    mesh.stop().await;
}
