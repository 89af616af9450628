//! The transactional outbox: one event per accepted mutation, none otherwise.

use paymesh_proto::payments::v1 as pb;
use prost::Message;
use tonic::Code;

use crate::harness::*;

#[tokio::test]
async fn one_event_per_successful_mutation_with_the_payment_state() {
    let mesh = TestMesh::start(2).await;
    let m = mesh.merchant_on(0, 0);
    let mut c = mesh.client(0).await;
    let mut req = tonic::Request::new(authorize_req(&m, 5_000, "KRW"));
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    req.metadata_mut().insert("traceparent", traceparent.parse().expect("ascii"));
    let p = c.authorize(req).await.expect("authorize").into_inner();
    let cap = c
        .capture(pb::CaptureRequest { payment_id: p.payment_id.clone(), amount: Some(4_000), idempotency_key: key() })
        .await
        .expect("capture")
        .into_inner();
    let refund_req = pb::RefundRequest { payment_id: p.payment_id.clone(), amount: Some(1_000), idempotency_key: key() };
    let r = c.refund(refund_req.clone()).await.expect("refund").into_inner();
    // Rejected and replayed calls add nothing.
    let _ = c.refund(refund_req).await.expect("replay");
    assert_status(
        c.void(pb::VoidRequest { payment_id: p.payment_id.clone(), idempotency_key: key() }).await,
        Code::FailedPrecondition,
        &[],
    );
    let v = authorized(&mesh, &m, 10).await;
    c.void(pb::VoidRequest { payment_id: v.payment_id.clone(), idempotency_key: key() }).await.expect("void");

    let db = mesh.db(0).await;
    let rows = db
        .query(
            "SELECT event_id::text, aggregate_type, aggregate_id, event_type, payload, headers::text, published, published_at IS NULL, retry_count, last_retry_at IS NULL
             FROM outbox_event ORDER BY id",
            &[],
        )
        .await
        .expect("outbox");
    let kinds: Vec<(String, String)> = rows.iter().map(|r| (r.get::<_, String>(3), r.get::<_, String>(2))).collect();
    assert_eq!(
        kinds,
        vec![
            ("payment.authorized".to_owned(), p.payment_id.clone()),
            ("payment.captured".to_owned(), p.payment_id.clone()),
            ("payment.refunded".to_owned(), p.payment_id.clone()),
            ("payment.authorized".to_owned(), v.payment_id.clone()),
            ("payment.voided".to_owned(), v.payment_id.clone()),
        ]
    );
    for r in &rows {
        assert_eq!(r.get::<_, String>(1), "payment");
        assert!(!r.get::<_, bool>(6), "new events are unpublished");
        assert!(r.get::<_, bool>(7) && r.get::<_, bool>(9));
        assert_eq!(r.get::<_, i32>(8), 0);
    }

    let authorized_ev = pb::PaymentAuthorized::decode(rows[0].get::<_, &[u8]>(4)).expect("decode");
    assert_eq!(authorized_ev.event_id, rows[0].get::<_, String>(0));
    assert_eq!(authorized_ev.payment.as_ref(), Some(&p));
    assert_eq!(authorized_ev.occurred_at, p.created_at);
    let headers = rows[0].get::<_, String>(5);
    assert!(headers.contains(traceparent), "trace context kept in headers: {headers}");
    assert!(headers.contains("payments.v1.PaymentAuthorized"), "{headers}");

    let captured_ev = pb::PaymentCaptured::decode(rows[1].get::<_, &[u8]>(4)).expect("decode");
    assert_eq!((captured_ev.captured_amount, captured_ev.payment.as_ref()), (4_000, Some(&cap)));
    let refunded_ev = pb::PaymentRefunded::decode(rows[2].get::<_, &[u8]>(4)).expect("decode");
    assert_eq!(refunded_ev.refund, r.refund);
    assert_eq!(refunded_ev.payment, r.payment);
    let voided_ev = pb::PaymentVoided::decode(rows[4].get::<_, &[u8]>(4)).expect("decode");
    assert_eq!(voided_ev.payment.map(|p| p.status), Some(pb::PaymentStatus::Voided as i32));

    let ids: std::collections::HashSet<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    assert_eq!(ids.len(), rows.len(), "event ids are unique");
    mesh.stop().await;
}
