//! The releaser: a request cancelled after its accept has a part reserved in stock; the
//! desk marks it `release_pending` (in the transaction that cancels it) and this loop gives
//! the part back through the edge, as often as it takes (stock may be down): the release is
//! idempotent by request id, so a part is given back once.

use std::time::Duration;

use tonic::Code;

use crate::upstream::Edge;

/// How often pending releases are tried.
const EVERY: Duration = Duration::from_millis(500);

/// Releases pending parts until `stop` fires.
pub async fn run(pool: deadpool_postgres::Pool, edge: Edge, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if let Err(e) = once(&pool, &edge).await {
            tracing::warn!(error = %e, "giving back the parts of cancelled requests failed; trying again");
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn once(pool: &deadpool_postgres::Pool, edge: &Edge) -> Result<(), String> {
    let c = pool.get().await.map_err(|e| e.to_string())?;
    let pending = c
        .query("SELECT request_id FROM desk_item WHERE release_pending ORDER BY seq LIMIT 100", &[])
        .await
        .map_err(|e| paymesh_repair_kit::db::describe(&e))?;
    for row in pending {
        let id: String = row.get(0);
        match edge.release(&id).await {
            // Given back now or before, or nothing was reserved (the accept never got one).
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) if s.code() == Code::FailedPrecondition => {
                tracing::warn!(request_id = %id, reason = s.message(), "the part of a cancelled request cannot be given back");
            }
            Err(s) => return Err(format!("giving back the part of {id}: {}", s.message())),
        }
        c.execute("UPDATE desk_item SET release_pending = false WHERE request_id = $1", &[&id])
            .await
            .map_err(|e| paymesh_repair_kit::db::describe(&e))?;
        tracing::info!(request_id = %id, "the part of a cancelled request is back in stock");
    }
    Ok(())
}
