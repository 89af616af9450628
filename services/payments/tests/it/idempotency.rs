//! Idempotency keys: replay, conflict, scope, concurrency, expiry.

use paymesh_proto::payments::v1 as pb;
use tonic::Code;

use crate::harness::*;

#[tokio::test]
async fn replay_returns_the_identical_answer_and_writes_nothing() {
    let mesh = TestMesh::start(2).await;
    let m = mesh.merchant_on(0, 0);
    let mut c = mesh.client(0).await;
    let req = authorize_req(&m, 2_500, "EUR");
    let first = c.authorize(req.clone()).await.expect("first").into_inner();
    let after_first = mesh.counts(0).await;
    let second = c.authorize(req.clone()).await.expect("replay").into_inner();
    assert_eq!(first, second, "replay must be byte-for-byte the first answer");
    assert_eq!(mesh.counts(0).await, after_first, "replay wrote something");

    // Replay of capture and refund, even after the state moved on.
    let cap_req = pb::CaptureRequest { payment_id: first.payment_id.clone(), amount: Some(2_000), idempotency_key: key() };
    let cap1 = c.capture(cap_req.clone()).await.expect("capture").into_inner();
    let ref_req = pb::RefundRequest { payment_id: first.payment_id.clone(), amount: Some(100), idempotency_key: key() };
    let ref1 = c.refund(ref_req.clone()).await.expect("refund").into_inner();
    let settled = mesh.counts(0).await;
    let cap2 = c.capture(cap_req).await.expect("capture replay").into_inner();
    let ref2 = c.refund(ref_req).await.expect("refund replay").into_inner();
    assert_eq!(cap1, cap2);
    assert_eq!(ref1, ref2, "the refund replay returns the same refund id, not a second refund");
    assert_eq!(mesh.counts(0).await, settled);
    let got = c.get_payment(pb::GetPaymentRequest { payment_id: first.payment_id }).await.expect("get").into_inner();
    assert_eq!(got.refunded_amount, 100, "only one refund happened");
    mesh.stop().await;
}

#[tokio::test]
async fn same_key_different_request_is_a_conflict() {
    let mesh = TestMesh::start(2).await;
    let m = mesh.merchant_on(1, 0);
    let mut c = mesh.client(1).await;
    let req = authorize_req(&m, 2_500, "EUR");
    let p = c.authorize(req.clone()).await.expect("first").into_inner();
    let before = mesh.counts(1).await;
    assert_status(
        c.authorize(pb::AuthorizeRequest { amount: 2_501, ..req.clone() }).await,
        Code::AlreadyExists,
        &[&format!("idempotency_key '{}'", req.idempotency_key), "Authorize with different parameters", "send a new key"],
    );
    // Same key on another method of the same merchant.
    assert_status(
        c.void(pb::VoidRequest { payment_id: p.payment_id.clone(), idempotency_key: req.idempotency_key.clone() }).await,
        Code::AlreadyExists,
        &["a Authorize call"],
    );
    assert_eq!(mesh.counts(1).await, before);
    mesh.stop().await;
}

#[tokio::test]
async fn keys_are_scoped_per_merchant() {
    let mesh = TestMesh::start(2).await;
    let (a, b) = (mesh.merchant_on(0, 0), mesh.merchant_on(0, 1));
    let mut c = mesh.client(0).await;
    let shared = key();
    let pa = c
        .authorize(pb::AuthorizeRequest { idempotency_key: shared.clone(), ..authorize_req(&a, 100, "USD") })
        .await
        .expect("a")
        .into_inner();
    let pb_ = c
        .authorize(pb::AuthorizeRequest { idempotency_key: shared.clone(), ..authorize_req(&b, 100, "USD") })
        .await
        .expect("b")
        .into_inner();
    assert_ne!(pa.payment_id, pb_.payment_id);
    assert_eq!(mesh.counts(0).await.payments, 2);
    mesh.stop().await;
}

#[tokio::test]
async fn a_rejected_request_does_not_burn_its_key() {
    let mesh = TestMesh::start(2).await;
    let m = mesh.merchant_on(0, 0);
    let p = authorized(&mesh, &m, 1_000).await;
    let mut c = mesh.client(0).await;
    let k = key();
    assert_status(
        c.capture(pb::CaptureRequest { payment_id: p.payment_id.clone(), amount: Some(5_000), idempotency_key: k.clone() }).await,
        Code::FailedPrecondition,
        &["exceeds"],
    );
    // The key is free: a corrected request with it goes through.
    let ok = c
        .capture(pb::CaptureRequest { payment_id: p.payment_id.clone(), amount: Some(1_000), idempotency_key: k })
        .await
        .expect("corrected");
    assert_eq!(ok.into_inner().captured_amount, 1_000);
    mesh.stop().await;
}

#[tokio::test]
async fn hundred_concurrent_identical_requests_make_one_payment() {
    let mesh = TestMesh::start(2).await;
    let m = mesh.merchant_on(1, 3);
    let req = authorize_req(&m, 9_999, "KRW");
    let channel = mesh.channel(1).await;
    let calls = (0..100).map(|_| {
        let mut c = Client::new(channel.clone());
        let req = req.clone();
        // A call that finds the key in flight is told so (ABORTED) and retries, as a client would.
        tokio::spawn(async move {
            let start = std::time::Instant::now();
            loop {
                match c.authorize(req.clone()).await {
                    Err(s) if s.code() == tonic::Code::Aborted && start.elapsed() < DEADLINE => {
                        assert!(s.message().contains("in progress"), "{s:?}");
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    r => return r.map(|r| r.into_inner()),
                }
            }
        })
    });
    let answers: Vec<pb::Payment> =
        futures_util::future::join_all(calls).await.into_iter().map(|r| r.expect("join").expect("authorize")).collect();
    assert_eq!(answers.len(), 100);
    assert!(answers.iter().all(|a| *a == answers[0]), "answers differ");
    assert_eq!(mesh.counts(1).await, Counts { payments: 1, operations: 1, idempotency: 1, outbox: 1 });
    mesh.stop().await;
}

#[tokio::test]
async fn an_expired_key_can_be_used_again() {
    let mesh = TestMesh::start(2).await;
    let m = mesh.merchant_on(0, 0);
    let mut c = mesh.client(0).await;
    let req = authorize_req(&m, 100, "USD");
    let first = c.authorize(req.clone()).await.expect("first").into_inner();
    let db = mesh.db(0).await;
    let kept: bool = db
        .query_one(
            "SELECT expires_at >= created_at + interval '24 hours' FROM idempotency_keys WHERE idempotency_key = $1",
            &[&req.idempotency_key],
        )
        .await
        .expect("select")
        .get(0);
    assert!(kept, "keys must be kept at least 24 hours");
    // Age the record past its retention, as if a day had passed.
    db.execute(
        "UPDATE idempotency_keys SET created_at = created_at - interval '25 hours', expires_at = expires_at - interval '25 hours'",
        &[],
    )
    .await
    .expect("age");
    let again = c.authorize(pb::AuthorizeRequest { amount: 200, ..req }).await.expect("expired key reused").into_inner();
    assert_ne!(again.payment_id, first.payment_id);
    assert_eq!(mesh.counts(0).await.payments, 2);
    mesh.stop().await;
}
