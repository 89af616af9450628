//! The money rules and the state machine, end to end.

use paymesh_proto::payments::v1 as pb;
use tonic::Code;

use crate::harness::*;

#[tokio::test]
async fn authorize_capture_refund_get() {
    let mesh = TestMesh::start(2).await;
    let m = mesh.merchant_on(1, 0);
    let p = authorized(&mesh, &m, 50_000).await;
    assert_eq!((p.merchant_id.as_str(), p.amount, p.currency.as_str()), (m.as_str(), 50_000, "USD"));
    assert_eq!(status_of(&p), pb::PaymentStatus::Authorized);
    assert!(p.payment_id.starts_with("pay_1_"), "{}", p.payment_id);
    assert_eq!(p.created_at, p.updated_at);

    let mut c = mesh.client_for_payment(&p.payment_id).await;
    let cap = c
        .capture(pb::CaptureRequest { payment_id: p.payment_id.clone(), amount: Some(40_000), idempotency_key: key() })
        .await
        .expect("capture")
        .into_inner();
    assert_eq!((status_of(&cap), cap.captured_amount, cap.refunded_amount), (pb::PaymentStatus::Captured, 40_000, 0));

    let r1 = c
        .refund(pb::RefundRequest { payment_id: p.payment_id.clone(), amount: Some(15_000), idempotency_key: key() })
        .await
        .expect("refund")
        .into_inner();
    let refund = r1.refund.expect("refund");
    assert_eq!((refund.amount, refund.payment_id.as_str()), (15_000, p.payment_id.as_str()));
    assert!(refund.refund_id.starts_with("ref_1_"));
    let after1 = r1.payment.expect("payment");
    assert_eq!((status_of(&after1), after1.refunded_amount), (pb::PaymentStatus::PartiallyRefunded, 15_000));

    // No amount: refund whatever is left.
    let r2 = c
        .refund(pb::RefundRequest { payment_id: p.payment_id.clone(), amount: None, idempotency_key: key() })
        .await
        .expect("refund rest")
        .into_inner();
    assert_eq!(r2.refund.expect("refund").amount, 25_000);
    let after2 = r2.payment.expect("payment");
    assert_eq!((status_of(&after2), after2.refunded_amount), (pb::PaymentStatus::Refunded, 40_000));

    let got = c.get_payment(pb::GetPaymentRequest { payment_id: p.payment_id.clone() }).await.expect("get").into_inner();
    assert_eq!(got, after2, "a read returns exactly what the last write answered");
    assert_eq!(got.created_at, p.created_at);

    let counts = mesh.counts(1).await;
    assert_eq!(counts, Counts { payments: 1, operations: 4, idempotency: 4, outbox: 4 });
    mesh.stop().await;
}

#[tokio::test]
async fn capture_without_amount_takes_everything_and_void_cancels() {
    let mesh = TestMesh::start(2).await;
    let m = mesh.merchant_on(0, 0);
    let p = authorized(&mesh, &m, 700).await;
    let mut c = mesh.client_for_payment(&p.payment_id).await;
    let cap = c
        .capture(pb::CaptureRequest { payment_id: p.payment_id.clone(), amount: None, idempotency_key: key() })
        .await
        .expect("capture")
        .into_inner();
    assert_eq!(cap.captured_amount, 700);

    let q = authorized(&mesh, &m, 900).await;
    let v = c.void(pb::VoidRequest { payment_id: q.payment_id.clone(), idempotency_key: key() }).await.expect("void").into_inner();
    assert_eq!((status_of(&v), v.captured_amount), (pb::PaymentStatus::Voided, 0));
    mesh.stop().await;
}

/// Every illegal transition: rejected with FAILED_PRECONDITION naming the state and the rule,
/// and nothing written.
#[tokio::test]
async fn illegal_transitions_are_rejected_and_write_nothing() {
    let mesh = TestMesh::start(2).await;
    let m = mesh.merchant_on(0, 1);
    let authorized_p = authorized(&mesh, &m, 1_000).await;
    let captured_p = captured(&mesh, &m, 1_000, 1_000).await;
    let voided_p = authorized(&mesh, &m, 1_000).await;
    let mut c = mesh.client(0).await;
    c.void(pb::VoidRequest { payment_id: voided_p.payment_id.clone(), idempotency_key: key() }).await.expect("void");
    let refunded_p = captured(&mesh, &m, 1_000, 1_000).await;
    c.refund(pb::RefundRequest { payment_id: refunded_p.payment_id.clone(), amount: None, idempotency_key: key() }).await.expect("refund");

    let before = mesh.counts(0).await;
    let capture = |id: &str| pb::CaptureRequest { payment_id: id.into(), amount: None, idempotency_key: key() };
    let refund = |id: &str| pb::RefundRequest { payment_id: id.into(), amount: Some(1), idempotency_key: key() };
    let void = |id: &str| pb::VoidRequest { payment_id: id.into(), idempotency_key: key() };

    assert_status(
        c.refund(refund(&authorized_p.payment_id)).await,
        Code::FailedPrecondition,
        &["is AUTHORIZED", "needs CAPTURED or PARTIALLY_REFUNDED", "only captured money"],
    );
    assert_status(c.capture(capture(&captured_p.payment_id)).await, Code::FailedPrecondition, &["is CAPTURED", "captured once"]);
    assert_status(
        c.void(void(&captured_p.payment_id)).await,
        Code::FailedPrecondition,
        &["cannot void", "is CAPTURED", "refund a captured payment instead"],
    );
    assert_status(c.capture(capture(&voided_p.payment_id)).await, Code::FailedPrecondition, &["is VOIDED", "needs AUTHORIZED"]);
    assert_status(c.void(void(&voided_p.payment_id)).await, Code::FailedPrecondition, &["is VOIDED"]);
    assert_status(c.refund(refund(&voided_p.payment_id)).await, Code::FailedPrecondition, &["is VOIDED"]);
    assert_status(c.refund(refund(&refunded_p.payment_id)).await, Code::FailedPrecondition, &["is REFUNDED"]);
    assert_status(c.capture(capture(&refunded_p.payment_id)).await, Code::FailedPrecondition, &["is REFUNDED"]);
    assert_status(c.void(void(&refunded_p.payment_id)).await, Code::FailedPrecondition, &["is REFUNDED"]);

    assert_eq!(mesh.counts(0).await, before, "a rejected transition wrote something");
    mesh.stop().await;
}

#[tokio::test]
async fn over_capture_and_over_refund_are_rejected() {
    let mesh = TestMesh::start(2).await;
    let m = mesh.merchant_on(1, 2);
    let p = authorized(&mesh, &m, 1_000).await;
    let mut c = mesh.client(1).await;
    let before = mesh.counts(1).await;
    assert_status(
        c.capture(pb::CaptureRequest { payment_id: p.payment_id.clone(), amount: Some(1_001), idempotency_key: key() }).await,
        Code::FailedPrecondition,
        &["capture amount 1001 exceeds the authorized amount 1000"],
    );
    assert_eq!(mesh.counts(1).await, before);

    c.capture(pb::CaptureRequest { payment_id: p.payment_id.clone(), amount: Some(600), idempotency_key: key() })
        .await
        .expect("partial capture");
    c.refund(pb::RefundRequest { payment_id: p.payment_id.clone(), amount: Some(500), idempotency_key: key() }).await.expect("refund 500");
    let before = mesh.counts(1).await;
    assert_status(
        c.refund(pb::RefundRequest { payment_id: p.payment_id.clone(), amount: Some(101), idempotency_key: key() }).await,
        Code::FailedPrecondition,
        &["refund amount 101 exceeds", "left to refund: 100", "captured 600, already refunded 500"],
    );
    // Amounts near i64::MAX must not overflow into acceptance.
    assert_status(
        c.refund(pb::RefundRequest { payment_id: p.payment_id.clone(), amount: Some(i64::MAX), idempotency_key: key() }).await,
        Code::FailedPrecondition,
        &["exceeds"],
    );
    assert_eq!(mesh.counts(1).await, before);
    let got = c.get_payment(pb::GetPaymentRequest { payment_id: p.payment_id.clone() }).await.expect("get").into_inner();
    assert_eq!((got.captured_amount, got.refunded_amount), (600, 500));
    mesh.stop().await;
}

#[tokio::test]
async fn largest_amounts_are_exact() {
    let mesh = TestMesh::start(2).await;
    let m = mesh.merchant_on(0, 3);
    // The largest payment USD allows (harness payments are in USD).
    const MAX: i64 = 10_000_000_000_000;
    assert_status(
        mesh.client_for_merchant(&m).await.authorize(authorize_req(&m, MAX + 1, "USD")).await,
        Code::InvalidArgument,
        &["at most 10000000000000 minor units"],
    );
    let p = captured(&mesh, &m, MAX, MAX).await;
    let mut c = mesh.client(0).await;
    c.refund(pb::RefundRequest { payment_id: p.payment_id.clone(), amount: Some(MAX - 1), idempotency_key: key() }).await.expect("refund");
    assert_status(
        c.refund(pb::RefundRequest { payment_id: p.payment_id.clone(), amount: Some(MAX), idempotency_key: key() }).await,
        Code::FailedPrecondition,
        &["left to refund: 1"],
    );
    let last = c
        .refund(pb::RefundRequest { payment_id: p.payment_id.clone(), amount: Some(1), idempotency_key: key() })
        .await
        .expect("last unit")
        .into_inner();
    let paid = last.payment.expect("payment");
    assert_eq!((paid.refunded_amount, status_of(&paid)), (MAX, pb::PaymentStatus::Refunded));
    mesh.stop().await;
}
