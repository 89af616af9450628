//! Merchants land on their own shard; instances refuse other shards' work.

use paymesh_core::shard::shard_for_merchant;
use paymesh_proto::payments::v1 as pb;
use tonic::Code;

use crate::harness::*;

#[tokio::test]
async fn merchants_land_only_in_their_shards_database() {
    let mesh = TestMesh::start(2).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let m = format!("shop-{i}");
        let p = authorized(&mesh, &m, 100 + i).await;
        let shard = shard_for_merchant(&m, 2).0;
        assert!(p.payment_id.starts_with(&format!("pay_{shard}_")), "{} for {m}", p.payment_id);
        ids.push((m, shard, p.payment_id));
    }
    for s in 0..2usize {
        let db = mesh.db(s).await;
        let rows = db.query("SELECT merchant_id, payment_id FROM payments", &[]).await.expect("select");
        let expected: Vec<_> = ids.iter().filter(|(_, shard, _)| *shard as usize == s).collect();
        assert_eq!(rows.len(), expected.len(), "shard {s}");
        for r in rows {
            let (m, id): (String, String) = (r.get(0), r.get(1));
            assert_eq!(shard_for_merchant(&m, 2).0 as usize, s, "{m} stored on shard {s}");
            assert!(id.starts_with(&format!("pay_{s}_")));
        }
    }
    assert!(ids.iter().any(|(_, s, _)| *s == 0) && ids.iter().any(|(_, s, _)| *s == 1), "both shards used");
    mesh.stop().await;
}

#[tokio::test]
async fn an_instance_refuses_another_shards_requests() {
    let mesh = TestMesh::start(2).await;
    let m1 = mesh.merchant_on(1, 0);
    let p1 = authorized(&mesh, &m1, 1_000).await;
    let mut wrong = mesh.client(0).await;
    let before = mesh.total_counts().await;
    assert_status(
        wrong.authorize(authorize_req(&m1, 1_000, "USD")).await,
        Code::FailedPrecondition,
        &[&format!("merchant {m1} belongs to shard 1"), "this instance serves shard 0"],
    );
    let id = p1.payment_id.clone();
    assert_status(
        wrong.get_payment(pb::GetPaymentRequest { payment_id: id.clone() }).await,
        Code::FailedPrecondition,
        &["is stored on shard 1", "serves shard 0"],
    );
    assert_status(
        wrong.capture(pb::CaptureRequest { payment_id: id.clone(), amount: None, idempotency_key: key() }).await,
        Code::FailedPrecondition,
        &["shard 1"],
    );
    assert_status(
        wrong.refund(pb::RefundRequest { payment_id: id.clone(), amount: None, idempotency_key: key() }).await,
        Code::FailedPrecondition,
        &["shard 1"],
    );
    assert_status(
        wrong.void(pb::VoidRequest { payment_id: id.clone(), idempotency_key: key() }).await,
        Code::FailedPrecondition,
        &["shard 1"],
    );
    assert_eq!(mesh.total_counts().await, before);
    mesh.stop().await;
}
