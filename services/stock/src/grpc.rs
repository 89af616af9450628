//! `repair.v1.Stock` over gRPC: checks the request, calls the store, maps its refusals to
//! gRPC codes (the edge turns them into HTTP statuses for REST callers).

use paymesh_repair_kit::check;
use paymesh_repair_proto::repair::v1 as pb;
use tonic::{Request, Response, Status};

use crate::store::{Counts, Reservation, StockError, Store};

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct StockApi {
    store: Store,
    /// Whether callers must come through the edge with an identity.
    policy: paymesh_core::identity::Policy,
}

impl StockApi {
    pub fn new(store: Store, policy: paymesh_core::identity::Policy) -> Self {
        Self { store, policy }
    }
}

fn status(e: StockError) -> Status {
    let msg = e.to_string();
    match e {
        StockError::UnknownSku(_) | StockError::NoReservation(_) => Status::not_found(msg),
        StockError::OutOfStock(..) | StockError::TooMany(_) | StockError::Settled(..) => Status::failed_precondition(msg),
        // Not a shortage: the desk must not record it as one.
        StockError::HoldsAnother { .. } => Status::already_exists(msg),
        StockError::KeyReused(_) => Status::already_exists(msg),
        StockError::Unavailable(_) => Status::unavailable(msg),
    }
}

fn part(sku: String, c: Counts) -> pb::Part {
    pb::Part { sku, on_hand: c.on_hand, reserved: c.reserved, available: c.on_hand - c.reserved }
}

fn reservation(r: Reservation) -> pb::Reservation {
    let status = match (r.consumed, r.released) {
        (true, _) => pb::ReservationStatus::Consumed,
        (_, true) => pb::ReservationStatus::Released,
        _ => pb::ReservationStatus::Reserved,
    };
    pb::Reservation { request_id: r.request_id, sku: r.sku, status: status as i32 }
}

#[tonic::async_trait]
impl pb::stock_server::Stock for StockApi {
    async fn add_parts(&self, request: Request<pb::AddPartsRequest>) -> Result<Response<pb::Part>, Status> {
        check::caller(self.policy, &request)?;
        let r = request.into_inner();
        check::id("sku", &r.sku)?;
        if !(1..=100_000).contains(&r.quantity) {
            return Err(Status::invalid_argument(format!("quantity: must be 1..100000, got {}", r.quantity)));
        }
        check::idempotency_key(&r.idempotency_key)?;
        let counts = self.store.add(&r.sku, r.quantity, &r.idempotency_key).await.map_err(status)?;
        Ok(Response::new(part(r.sku, counts)))
    }

    async fn get_part(&self, request: Request<pb::GetPartRequest>) -> Result<Response<pb::Part>, Status> {
        check::caller(self.policy, &request)?;
        let sku = request.into_inner().sku;
        check::id("sku", &sku)?;
        let counts = self.store.get(&sku).await.map_err(status)?;
        Ok(Response::new(part(sku, counts)))
    }

    async fn reserve(&self, request: Request<pb::ReserveRequest>) -> Result<Response<pb::Reservation>, Status> {
        check::caller(self.policy, &request)?;
        let r = request.into_inner();
        check::id("sku", &r.sku)?;
        check::id("request_id", &r.request_id)?;
        Ok(Response::new(reservation(self.store.reserve(&r.sku, &r.request_id).await.map_err(status)?)))
    }

    async fn consume(&self, request: Request<pb::ConsumeRequest>) -> Result<Response<pb::Reservation>, Status> {
        check::caller(self.policy, &request)?;
        let r = request.into_inner();
        check::id("request_id", &r.request_id)?;
        Ok(Response::new(reservation(self.store.consume(&r.request_id).await.map_err(status)?)))
    }

    async fn release(&self, request: Request<pb::ReleaseRequest>) -> Result<Response<pb::Reservation>, Status> {
        check::caller(self.policy, &request)?;
        let r = request.into_inner();
        check::id("request_id", &r.request_id)?;
        Ok(Response::new(reservation(self.store.release(&r.request_id).await.map_err(status)?)))
    }
}
