//! The desk's database: its list of requests (built only from the intake's events), the
//! dedupe record of applied events, and its outbox.

use std::time::SystemTime;

use paymesh_repair_proto::repair::v1 as pb;

/// The desk's migrations.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE desk_item (
            seq         bigserial   UNIQUE,
            request_id  text        PRIMARY KEY,
            customer_id text        NOT NULL DEFAULT '',
            product     text        NOT NULL DEFAULT '',
            status      text        NOT NULL CHECK (status IN ('listed', 'accepted', 'repaired', 'paid', 'cancelled')),
            engineer_id text        NOT NULL DEFAULT '',
            part_sku    text        NOT NULL DEFAULT '',
            payment_id  text        NOT NULL DEFAULT '',
            listed_at   timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now()
        );",
    ),
    (2, paymesh_repair_kit::consume::DDL),
    (3, paymesh_repair_kit::outbox::DDL),
    // A request cancelled after its accept gives its part back (the desk's releaser).
    (4, "ALTER TABLE desk_item ADD COLUMN release_pending boolean NOT NULL DEFAULT false;"),
];

/// The columns [`item`] reads.
pub const COLUMNS: &str = "seq, request_id, customer_id, product, status, engineer_id, part_sku, payment_id, listed_at, updated_at";

/// A row of `desk_item` as the API answers it (with its `seq` for paging).
pub fn item(r: &tokio_postgres::Row) -> (i64, pb::DeskItem) {
    let status = match r.get::<_, &str>(4) {
        "listed" => pb::DeskStatus::Listed,
        "accepted" => pb::DeskStatus::Accepted,
        "repaired" => pb::DeskStatus::Repaired,
        "paid" => pb::DeskStatus::Paid,
        "cancelled" => pb::DeskStatus::Cancelled,
        _ => pb::DeskStatus::Unspecified,
    };
    let ts = |i: usize| Some(prost_types::Timestamp::from(r.get::<_, SystemTime>(i)));
    (
        r.get(0),
        pb::DeskItem {
            request_id: r.get(1),
            customer_id: r.get(2),
            product: r.get(3),
            status: status as i32,
            engineer_id: r.get(5),
            part_sku: r.get(6),
            payment_id: r.get(7),
            listed_at: ts(8),
            updated_at: ts(9),
        },
    )
}

/// The stored name of a status.
pub fn status_name(s: pb::DeskStatus) -> Option<&'static str> {
    match s {
        pb::DeskStatus::Listed => Some("listed"),
        pb::DeskStatus::Accepted => Some("accepted"),
        pb::DeskStatus::Repaired => Some("repaired"),
        pb::DeskStatus::Paid => Some("paid"),
        pb::DeskStatus::Cancelled => Some("cancelled"),
        pb::DeskStatus::Unspecified => None,
    }
}
