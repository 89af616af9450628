//! Bad input: INVALID_ARGUMENT / NOT_FOUND naming the field or the id, and no row written.

use paymesh_core::ShardId;
use paymesh_core::ids::PaymentId;
use paymesh_proto::payments::v1 as pb;
use tonic::Code;

use crate::harness::*;

#[tokio::test]
async fn bad_authorize_requests_name_the_field_and_store_nothing() {
    let mesh = TestMesh::start(2).await;
    let m = mesh.merchant_on(0, 0);
    let mut c = mesh.client(0).await;
    let good = || authorize_req(&m, 1_000, "KRW");
    let cases: Vec<(pb::AuthorizeRequest, &[&str])> = vec![
        (pb::AuthorizeRequest::default(), &["merchant_id: is required"]),
        (pb::AuthorizeRequest { merchant_id: String::new(), ..good() }, &["merchant_id: is required"]),
        (pb::AuthorizeRequest { amount: 0, ..good() }, &["amount: must be greater than 0", "got 0"]),
        (pb::AuthorizeRequest { amount: -500, ..good() }, &["amount: must be greater than 0", "got -500"]),
        (pb::AuthorizeRequest { amount: i64::MIN, ..good() }, &["amount: must be greater than 0"]),
        (pb::AuthorizeRequest { currency: String::new(), ..good() }, &["currency: is required"]),
        (pb::AuthorizeRequest { currency: "XYZ".into(), ..good() }, &["currency: 'XYZ' is not an ISO 4217"]),
        (pb::AuthorizeRequest { currency: "krw".into(), ..good() }, &["upper case: KRW"]),
        (pb::AuthorizeRequest { currency: "XAU".into(), ..good() }, &["'XAU' is not"]),
        (pb::AuthorizeRequest { idempotency_key: String::new(), ..good() }, &["idempotency_key: is required"]),
        (
            pb::AuthorizeRequest { idempotency_key: "k".repeat(256), ..good() },
            &["idempotency_key: is 256 characters long; the limit is 255"],
        ),
        (pb::AuthorizeRequest { merchant_id: "bad merchant!".into(), ..good() }, &["merchant_id: 'bad merchant!'"]),
    ];
    for (req, needles) in cases {
        assert_status(c.authorize(req).await, Code::InvalidArgument, needles);
    }
    assert_eq!(mesh.total_counts().await, Counts::default(), "a rejected request wrote rows");

    // The limit itself is accepted.
    let ok = c.authorize(pb::AuthorizeRequest { idempotency_key: "k".repeat(255), ..good() }).await.expect("255-char key");
    assert_eq!(ok.into_inner().currency, "KRW");
    mesh.stop().await;
}

#[tokio::test]
async fn bad_payment_ids_and_amounts_on_later_calls() {
    let mesh = TestMesh::start(2).await;
    let m = mesh.merchant_on(0, 0);
    let p = authorized(&mesh, &m, 1_000).await;
    let mut c = mesh.client(0).await;
    let before = mesh.total_counts().await;

    // Malformed ids: INVALID_ARGUMENT with the expected shape.
    for bad in ["", "123", "pay_0_xyz", "PAY_0_0193a0c2f4d87e4b9a1c6f0e2d3b4a59", "pay_0_0193a0c2f4d87e4b9a1c6f0e2d3b4a5"] {
        let want: &[&str] =
            if bad.is_empty() { &["payment_id: is required"] } else { &["payment_id:", "expected pay_<shard>_<32 hex digits>"] };
        assert_status(
            c.capture(pb::CaptureRequest { payment_id: bad.into(), amount: None, idempotency_key: key() }).await,
            Code::InvalidArgument,
            want,
        );
        assert_status(c.get_payment(pb::GetPaymentRequest { payment_id: bad.into() }).await, Code::InvalidArgument, want);
    }
    // Well-formed but unknown: NOT_FOUND naming the id.
    let ghost = PaymentId::new(ShardId(0)).to_string();
    assert_status(c.get_payment(pb::GetPaymentRequest { payment_id: ghost.clone() }).await, Code::NotFound, &[&ghost, "does not exist"]);
    assert_status(
        c.capture(pb::CaptureRequest { payment_id: ghost.clone(), amount: None, idempotency_key: key() }).await,
        Code::NotFound,
        &[&ghost],
    );
    assert_status(
        c.refund(pb::RefundRequest { payment_id: ghost.clone(), amount: None, idempotency_key: key() }).await,
        Code::NotFound,
        &[&ghost],
    );
    assert_status(c.void(pb::VoidRequest { payment_id: ghost.clone(), idempotency_key: key() }).await, Code::NotFound, &[&ghost]);

    // Bad amounts and keys on capture, refund and void.
    let id = p.payment_id.clone();
    assert_status(
        c.capture(pb::CaptureRequest { payment_id: id.clone(), amount: Some(0), idempotency_key: key() }).await,
        Code::InvalidArgument,
        &["amount: must be greater than 0"],
    );
    assert_status(
        c.capture(pb::CaptureRequest { payment_id: id.clone(), amount: Some(-1), idempotency_key: key() }).await,
        Code::InvalidArgument,
        &["amount:"],
    );
    assert_status(
        c.refund(pb::RefundRequest { payment_id: id.clone(), amount: Some(0), idempotency_key: key() }).await,
        Code::InvalidArgument,
        &["amount:"],
    );
    assert_status(
        c.capture(pb::CaptureRequest { payment_id: id.clone(), amount: None, idempotency_key: String::new() }).await,
        Code::InvalidArgument,
        &["idempotency_key: is required"],
    );
    assert_status(
        c.void(pb::VoidRequest { payment_id: id.clone(), idempotency_key: "x".repeat(300) }).await,
        Code::InvalidArgument,
        &["the limit is 255"],
    );

    assert_eq!(mesh.total_counts().await, before, "a rejected request wrote rows");
    mesh.stop().await;
}
