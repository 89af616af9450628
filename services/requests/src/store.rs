//! The intake database: requests, the idempotency record of each filing, and the outbox.
//! A filing or a cancellation and its event are written in one transaction: an acknowledged
//! request is never without its event, and a refused one writes nothing.

use std::time::SystemTime;

use paymesh_repair_proto::repair::v1 as pb;
use paymesh_repair_proto::topics;
use prost::Message;

/// The intake service's migrations.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE repair_request (
            request_id  text        PRIMARY KEY,
            customer_id text        NOT NULL,
            product     text        NOT NULL,
            description text        NOT NULL,
            cancelled   boolean     NOT NULL DEFAULT false,
            created_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE filing_key (
            customer_id     text NOT NULL,
            idempotency_key text NOT NULL,
            request_id      text NOT NULL REFERENCES repair_request (request_id),
            PRIMARY KEY (customer_id, idempotency_key)
        );",
    ),
    (2, paymesh_repair_kit::outbox::DDL),
];

/// A request as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub request_id: String,
    pub customer_id: String,
    pub product: String,
    pub description: String,
    pub cancelled: bool,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("no repair request '{0}'")]
    NotFound(String),
    #[error("repair request '{0}' is cancelled already")]
    AlreadyCancelled(String),
    #[error("idempotency key '{0}' was used for a different request of this customer; use a new key")]
    KeyReused(String),
    #[error("the intake database is unavailable ({0}); retry")]
    Unavailable(String),
}

impl From<tokio_postgres::Error> for IntakeError {
    fn from(e: tokio_postgres::Error) -> Self {
        IntakeError::Unavailable(paymesh_repair_kit::db::describe(&e))
    }
}

impl From<deadpool_postgres::PoolError> for IntakeError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        IntakeError::Unavailable(e.to_string())
    }
}

const COLUMNS: &str = "request_id, customer_id, product, description, cancelled, created_at, updated_at";

fn stored(r: &tokio_postgres::Row) -> Stored {
    Stored {
        request_id: r.get(0),
        customer_id: r.get(1),
        product: r.get(2),
        description: r.get(3),
        cancelled: r.get(4),
        created_at: r.get(5),
        updated_at: r.get(6),
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    t.into()
}

/// The intake of one database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: deadpool_postgres::Pool,
}

impl Store {
    pub fn new(pool: deadpool_postgres::Pool) -> Self {
        Self { pool }
    }

    /// Files a request once per (customer, key): the same again returns the first.
    pub async fn file(&self, customer: &str, product: &str, description: &str, key: &str) -> Result<Stored, IntakeError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        // Two filings with one key at once: the second waits here for the first's commit.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&format!("{customer} {key}")]).await?;
        let earlier = tx
            .query_opt(
                &format!("SELECT {COLUMNS} FROM repair_request WHERE request_id = (SELECT request_id FROM filing_key WHERE customer_id = $1 AND idempotency_key = $2)"),
                &[&customer, &key],
            )
            .await?;
        if let Some(row) = earlier {
            let s = stored(&row);
            return if s.product == product && s.description == description { Ok(s) } else { Err(IntakeError::KeyReused(key.to_owned())) };
        }
        let id = format!("rq_{}", uuid::Uuid::now_v7().simple());
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO repair_request (request_id, customer_id, product, description) VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
                ),
                &[&id, &customer, &product, &description],
            )
            .await?;
        tx.execute("INSERT INTO filing_key (customer_id, idempotency_key, request_id) VALUES ($1, $2, $3)", &[&customer, &key, &id])
            .await?;
        let s = stored(&row);
        let event = pb::RepairRequested {
            request_id: s.request_id.clone(),
            customer_id: s.customer_id.clone(),
            product: s.product.clone(),
            description: s.description.clone(),
            at: Some(timestamp(s.created_at)),
        };
        paymesh_repair_kit::outbox::append(&tx, topics::REQUESTED, "repair.v1.RepairRequested", &s.request_id, &event.encode_to_vec())
            .await?;
        tx.commit().await?;
        Ok(s)
    }

    /// Cancels a filed request, once.
    pub async fn cancel(&self, request: &str) -> Result<Stored, IntakeError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let row = tx
            .query_opt(&format!("SELECT {COLUMNS} FROM repair_request WHERE request_id = $1 FOR UPDATE"), &[&request])
            .await?
            .ok_or_else(|| IntakeError::NotFound(request.to_owned()))?;
        if stored(&row).cancelled {
            return Err(IntakeError::AlreadyCancelled(request.to_owned()));
        }
        let row = tx
            .query_one(
                &format!("UPDATE repair_request SET cancelled = true, updated_at = now() WHERE request_id = $1 RETURNING {COLUMNS}"),
                &[&request],
            )
            .await?;
        let s = stored(&row);
        let event = pb::RepairCancelled { request_id: s.request_id.clone(), at: Some(timestamp(s.updated_at)) };
        paymesh_repair_kit::outbox::append(&tx, topics::CANCELLED, "repair.v1.RepairCancelled", &s.request_id, &event.encode_to_vec())
            .await?;
        tx.commit().await?;
        Ok(s)
    }

    pub async fn get(&self, request: &str) -> Result<Stored, IntakeError> {
        let c = self.pool.get().await?;
        let row = c.query_opt(&format!("SELECT {COLUMNS} FROM repair_request WHERE request_id = $1"), &[&request]).await?;
        row.map(|r| stored(&r)).ok_or_else(|| IntakeError::NotFound(request.to_owned()))
    }
}

impl From<Stored> for pb::RepairRequest {
    fn from(s: Stored) -> Self {
        let status = if s.cancelled { pb::RequestStatus::Cancelled } else { pb::RequestStatus::Requested };
        pb::RepairRequest {
            request_id: s.request_id,
            customer_id: s.customer_id,
            product: s.product,
            description: s.description,
            status: status as i32,
            created_at: Some(timestamp(s.created_at)),
            updated_at: Some(timestamp(s.updated_at)),
        }
    }
}
