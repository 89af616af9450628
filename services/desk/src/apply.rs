//! The intake's events into the desk's list. `repair.requested` and `repair.cancelled` are
//! separate topics, so a cancellation can arrive before its filing: it leaves a cancelled row
//! that the filing then only completes (customer and product), never re-lists.

use std::future::Future;
use std::pin::Pin;

use paymesh_repair_kit::consume::{Apply, Failure};
use paymesh_repair_proto::repair::v1 as pb;
use paymesh_repair_proto::topics;
use prost::Message;

/// Applies the intake's events.
#[derive(Debug, Clone, Copy)]
pub struct IntakeEvents;

impl Apply for IntakeEvents {
    fn apply<'a>(
        &'a self,
        tx: &'a tokio_postgres::Transaction<'a>,
        topic: &'a str,
        payload: &'a [u8],
    ) -> Pin<Box<dyn Future<Output = Result<(), Failure>> + Send + 'a>> {
        Box::pin(async move {
            let bad = |e: prost::DecodeError| Failure::Poison(format!("{topic}: {e}"));
            match topic {
                topics::REQUESTED => {
                    let e = pb::RepairRequested::decode(payload).map_err(bad)?;
                    tx.execute(
                        "INSERT INTO desk_item (request_id, customer_id, product, status) VALUES ($1, $2, $3, 'listed')
                         ON CONFLICT (request_id) DO UPDATE SET customer_id = EXCLUDED.customer_id, product = EXCLUDED.product
                         WHERE desk_item.customer_id = ''",
                        &[&e.request_id, &e.customer_id, &e.product],
                    )
                    .await?;
                }
                topics::CANCELLED => {
                    let e = pb::RepairCancelled::decode(payload).map_err(bad)?;
                    let listed = tx
                        .execute(
                            "UPDATE desk_item SET status = 'cancelled', updated_at = now() WHERE request_id = $1 AND status = 'listed'",
                            &[&e.request_id],
                        )
                        .await?;
                    // Accepted but not yet repaired: cancelled, and its part is given back (by
                    // the releaser, which may have to wait for stock).
                    let accepted = if listed == 0 {
                        tx.execute(
                            "UPDATE desk_item SET status = 'cancelled', release_pending = true, updated_at = now() WHERE request_id = $1 AND status = 'accepted'",
                            &[&e.request_id],
                        )
                        .await?
                    } else {
                        0
                    };
                    if listed == 0 && accepted == 0 {
                        let inserted = tx
                            .execute(
                                "INSERT INTO desk_item (request_id, status) VALUES ($1, 'cancelled') ON CONFLICT DO NOTHING",
                                &[&e.request_id],
                            )
                            .await?;
                        if inserted == 0 {
                            tracing::warn!(request_id = %e.request_id, "a cancellation came after the repair was done; too late, the request stays as it is");
                        }
                    }
                }
                other => return Err(Failure::Poison(format!("the desk does not read topic {other}"))),
            }
            Ok(())
        })
    }
}
