//! `repair.v1.ServiceDesk`: the list, accept and complete.

use paymesh_repair_kit::check;
use paymesh_repair_proto::repair::v1 as pb;
use paymesh_repair_proto::topics;
use prost::Message;
use tonic::{Code, Request, Response, Status};

use crate::store::{COLUMNS, item, status_name};
use crate::upstream::Edge;

const DEFAULT_PAGE: i32 = 100;
const MAX_PAGE: i32 = 500;

/// The service desk.
#[derive(Debug, Clone)]
pub struct Desk {
    pub pool: deadpool_postgres::Pool,
    pub edge: Edge,
    pub policy: paymesh_core::identity::Policy,
}

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("the desk's database is unavailable ({e}); retry"))
}

fn db(e: tokio_postgres::Error) -> Status {
    unavailable(paymesh_repair_kit::db::describe(&e))
}

/// A status the stock or Paymesh answered, told as the desk's.
fn upstream(what: &str, s: Status) -> Status {
    match s.code() {
        Code::FailedPrecondition | Code::NotFound | Code::InvalidArgument | Code::AlreadyExists | Code::OutOfRange => {
            Status::failed_precondition(format!("{what}: {}", s.message()))
        }
        Code::PermissionDenied | Code::Unauthenticated => {
            Status::internal(format!("{what}: the desk's credential was refused ({}); check [repair] credential_env", s.message()))
        }
        _ => Status::unavailable(format!("{what} cannot be done now ({}); nothing was changed here, try again", s.message())),
    }
}

impl Desk {
    async fn load(&self, request_id: &str) -> Result<pb::DeskItem, Status> {
        let c = self.pool.get().await.map_err(unavailable)?;
        let row = c.query_opt(&format!("SELECT {COLUMNS} FROM desk_item WHERE request_id = $1"), &[&request_id]).await.map_err(db)?;
        row.map(|r| item(&r).1).ok_or_else(|| {
            Status::not_found(format!(
                "request '{request_id}' is not on the desk; a filed request is listed a moment after filing, a cancelled one stays listed as cancelled"
            ))
        })
    }

    /// Moves the item from `from` to `to` (recording `payment_id` if given) and appends
    /// `event`, in one transaction; `false` if it was no longer in `from`.
    async fn step(
        &self,
        request_id: &str,
        from: &str,
        to: &str,
        payment_id: Option<&str>,
        event: (&str, &str, Vec<u8>),
    ) -> Result<bool, Status> {
        let mut c = self.pool.get().await.map_err(unavailable)?;
        let tx = c.transaction().await.map_err(db)?;
        let moved = tx
            .execute(
                "UPDATE desk_item SET status = $2, updated_at = now(), payment_id = COALESCE($3, payment_id) WHERE request_id = $1 AND status = $4",
                &[&request_id, &to, &payment_id, &from],
            )
            .await
            .map_err(db)?;
        if moved == 0 {
            return Ok(false);
        }
        let (topic, message, payload) = event;
        paymesh_repair_kit::outbox::append(&tx, topic, message, request_id, &payload).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn out_of_stock(&self, request_id: &str, sku: &str) -> Result<(), Status> {
        let mut c = self.pool.get().await.map_err(unavailable)?;
        let tx = c.transaction().await.map_err(db)?;
        let e = pb::RepairOutOfStock { request_id: request_id.to_owned(), part_sku: sku.to_owned(), at: Some(now()) };
        paymesh_repair_kit::outbox::append(&tx, topics::OUT_OF_STOCK, "repair.v1.RepairOutOfStock", request_id, &e.encode_to_vec())
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }
}

fn now() -> prost_types::Timestamp {
    std::time::SystemTime::now().into()
}

fn refused(item: &pb::DeskItem, what: &str) -> Status {
    let status = pb::DeskStatus::try_from(item.status).map(|s| s.as_str_name()).unwrap_or("unknown");
    Status::failed_precondition(format!("request '{}' is {status}: it cannot be {what}", item.request_id))
}

#[tonic::async_trait]
impl pb::service_desk_server::ServiceDesk for Desk {
    async fn list_requests(&self, request: Request<pb::ListRequestsRequest>) -> Result<Response<pb::ListRequestsResponse>, Status> {
        check::caller(self.policy, &request)?;
        let r = request.into_inner();
        let size = match r.page_size {
            0 => DEFAULT_PAGE,
            n if (1..=MAX_PAGE).contains(&n) => n,
            n => return Err(Status::invalid_argument(format!("page_size: must be 1..{MAX_PAGE}, got {n}"))),
        };
        let after: i64 = match r.page_token.as_str() {
            "" => 0,
            t => t.parse().map_err(|_| Status::invalid_argument("page_token: pass next_page_token from the previous page, or nothing"))?,
        };
        let status = pb::DeskStatus::try_from(r.status)
            .map_err(|_| Status::invalid_argument(format!("status: {} is not a desk status", r.status)))?;
        let c = self.pool.get().await.map_err(unavailable)?;
        let rows = match status_name(status) {
            Some(s) => {
                c.query(
                    &format!("SELECT {COLUMNS} FROM desk_item WHERE seq > $1 AND status = $2 ORDER BY seq LIMIT $3"),
                    &[&after, &s, &i64::from(size)],
                )
                .await
            }
            None => {
                c.query(&format!("SELECT {COLUMNS} FROM desk_item WHERE seq > $1 ORDER BY seq LIMIT $2"), &[&after, &i64::from(size)]).await
            }
        }
        .map_err(db)?;
        let items: Vec<(i64, pb::DeskItem)> = rows.iter().map(item).collect();
        let next_page_token =
            if items.len() == size as usize { items.last().map(|(s, _)| s.to_string()).unwrap_or_default() } else { String::new() };
        Ok(Response::new(pb::ListRequestsResponse { items: items.into_iter().map(|(_, i)| i).collect(), next_page_token }))
    }

    async fn accept_request(&self, request: Request<pb::AcceptRequestRequest>) -> Result<Response<pb::DeskItem>, Status> {
        check::caller(self.policy, &request)?;
        let r = request.into_inner();
        check::id("request_id", &r.request_id)?;
        check::id("engineer_id", &r.engineer_id)?;
        check::id("part_sku", &r.part_sku)?;
        let current = self.load(&r.request_id).await?;
        let same = |i: &pb::DeskItem| i.engineer_id == r.engineer_id && i.part_sku == r.part_sku;
        match pb::DeskStatus::try_from(current.status) {
            Ok(pb::DeskStatus::Listed) => {}
            // Accepting again (a retry) is the same answer.
            Ok(pb::DeskStatus::Accepted) if same(&current) => return Ok(Response::new(current)),
            _ => return Err(refused(&current, "accepted")),
        }
        // Never accepted without a part: the part is reserved first, through the edge.
        if let Err(s) = self.edge.reserve(&r.part_sku, &r.request_id).await {
            if s.code() == Code::FailedPrecondition {
                self.out_of_stock(&r.request_id, &r.part_sku).await?;
            }
            return Err(upstream(&format!("reserving a '{}' part", r.part_sku), s));
        }
        let event = pb::RepairAccepted {
            request_id: r.request_id.clone(),
            engineer_id: r.engineer_id.clone(),
            part_sku: r.part_sku.clone(),
            at: Some(now()),
        };
        let mut c = self.pool.get().await.map_err(unavailable)?;
        let tx = c.transaction().await.map_err(db)?;
        let moved = tx
            .execute(
                "UPDATE desk_item SET status = 'accepted', updated_at = now(), engineer_id = $2, part_sku = $3 WHERE request_id = $1 AND status = 'listed'",
                &[&r.request_id, &r.engineer_id, &r.part_sku],
            )
            .await
            .map_err(db)?;
        if moved == 1 {
            paymesh_repair_kit::outbox::append(&tx, topics::ACCEPTED, "repair.v1.RepairAccepted", &r.request_id, &event.encode_to_vec())
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
        } else {
            drop(tx);
            // Cancelled meanwhile: the part reserved for it goes back (the releaser does it).
            let c = self.pool.get().await.map_err(unavailable)?;
            c.execute("UPDATE desk_item SET release_pending = true WHERE request_id = $1 AND status = 'cancelled'", &[&r.request_id])
                .await
                .map_err(db)?;
        }
        let after = self.load(&r.request_id).await?;
        match pb::DeskStatus::try_from(after.status) {
            Ok(pb::DeskStatus::Accepted) if same(&after) => Ok(Response::new(after)),
            _ => Err(refused(&after, "accepted")),
        }
    }

    async fn complete_request(&self, request: Request<pb::CompleteRequestRequest>) -> Result<Response<pb::DeskItem>, Status> {
        check::caller(self.policy, &request)?;
        let r = request.into_inner();
        check::id("request_id", &r.request_id)?;
        let currency = paymesh_core::money::currency(&r.currency)
            .ok_or_else(|| Status::invalid_argument(format!("currency: '{}' is not an ISO 4217 code", r.currency)))?;
        if r.amount <= 0 || r.amount > currency.max_amount() {
            return Err(Status::invalid_argument(format!(
                "amount: must be 1..{} minor units of {}, got {}",
                currency.max_amount(),
                r.currency,
                r.amount
            )));
        }
        let mut current = self.load(&r.request_id).await?;
        if current.status == pb::DeskStatus::Accepted as i32 {
            // The part is used up (again: the same answer), then the repair is recorded.
            self.edge.consume(&r.request_id).await.map_err(|s| upstream("consuming the reserved part", s))?;
            let e = pb::RepairRepaired { request_id: r.request_id.clone(), part_sku: current.part_sku.clone(), at: Some(now()) };
            self.step(&r.request_id, "accepted", "repaired", None, (topics::REPAIRED, "repair.v1.RepairRepaired", e.encode_to_vec()))
                .await?;
            current = self.load(&r.request_id).await?;
        }
        if current.status == pb::DeskStatus::Repaired as i32 {
            let payment = self.edge.charge(&r.request_id, r.amount, &r.currency).await.map_err(|s| upstream("taking the payment", s))?;
            let e = pb::RepairPaid {
                request_id: r.request_id.clone(),
                payment_id: payment.clone(),
                amount: r.amount,
                currency: r.currency.clone(),
                at: Some(now()),
            };
            self.step(&r.request_id, "repaired", "paid", Some(&payment), (topics::PAID, "repair.v1.RepairPaid", e.encode_to_vec())).await?;
            current = self.load(&r.request_id).await?;
        }
        match pb::DeskStatus::try_from(current.status) {
            Ok(pb::DeskStatus::Paid) => Ok(Response::new(current)),
            _ => Err(refused(&current, "completed (accept it first)")),
        }
    }
}
