//! The stock database: parts by SKU, one reservation per repair request, and the keys of
//! additions already made. Every change is one transaction; counts can never go negative or
//! reserve more than is on hand (CHECK constraints hold it even against a bug).

use tokio_postgres::error::SqlState;

/// The stock service's migrations.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE part (
        sku       text   PRIMARY KEY,
        on_hand   bigint NOT NULL CHECK (on_hand >= 0 AND on_hand <= 1000000000),
        reserved  bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand)
    );
    CREATE TABLE reservation (
        request_id  text        PRIMARY KEY,
        sku         text        NOT NULL REFERENCES part (sku),
        consumed    boolean     NOT NULL DEFAULT false,
        created_at  timestamptz NOT NULL DEFAULT now(),
        consumed_at timestamptz
    );
    CREATE TABLE addition (
        idempotency_key text        PRIMARY KEY,
        sku             text        NOT NULL,
        quantity        bigint      NOT NULL,
        created_at      timestamptz NOT NULL DEFAULT now()
    );",
    ),
    (2, "ALTER TABLE reservation ADD COLUMN released boolean NOT NULL DEFAULT false CHECK (NOT (released AND consumed));"),
];

/// A SKU's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub on_hand: i64,
    pub reserved: i64,
}

/// A reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub request_id: String,
    pub sku: String,
    pub consumed: bool,
    /// Given back (the request was cancelled after its accept).
    pub released: bool,
}

/// Why a stock change was refused, or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum StockError {
    #[error("no part with SKU '{0}'; add parts first (AddParts)")]
    UnknownSku(String),
    #[error("no '{0}' part is available: all {1} on hand are reserved; add parts or wait for a repair to finish")]
    OutOfStock(String, i64),
    #[error("request '{request}' already holds a '{held}' part, not '{asked}'")]
    HoldsAnother { request: String, held: String, asked: String },
    #[error("no part is reserved for request '{0}'; reserve one first")]
    NoReservation(String),
    #[error("the part of request '{0}' was {1} already")]
    Settled(String, &'static str),
    #[error("idempotency key '{0}' was used for a different addition; use a new key")]
    KeyReused(String),
    #[error("adding {0} would put more than 1,000,000,000 parts on hand")]
    TooMany(i64),
    #[error("the stock database is unavailable ({0}); retry")]
    Unavailable(String),
}

impl From<tokio_postgres::Error> for StockError {
    fn from(e: tokio_postgres::Error) -> Self {
        StockError::Unavailable(paymesh_repair_kit::db::describe(&e))
    }
}

impl From<deadpool_postgres::PoolError> for StockError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StockError::Unavailable(e.to_string())
    }
}

/// The stock of one database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: deadpool_postgres::Pool,
}

impl Store {
    pub fn new(pool: deadpool_postgres::Pool) -> Self {
        Self { pool }
    }

    /// Adds `quantity` parts of `sku` once per `key`; the SKU's counts after it.
    pub async fn add(&self, sku: &str, quantity: i64, key: &str) -> Result<Counts, StockError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let first = tx
            .execute(
                "INSERT INTO addition (idempotency_key, sku, quantity) VALUES ($1, $2, $3) ON CONFLICT (idempotency_key) DO NOTHING",
                &[&key, &sku, &quantity],
            )
            .await?
            == 1;
        if !first {
            let row = tx.query_one("SELECT sku, quantity FROM addition WHERE idempotency_key = $1", &[&key]).await?;
            if row.get::<_, String>(0) != sku || row.get::<_, i64>(1) != quantity {
                return Err(StockError::KeyReused(key.to_owned()));
            }
        } else {
            let added = tx
                .execute(
                    "INSERT INTO part (sku, on_hand) VALUES ($1, $2) ON CONFLICT (sku) DO UPDATE SET on_hand = part.on_hand + EXCLUDED.on_hand",
                    &[&sku, &quantity],
                )
                .await;
            if let Err(e) = added {
                return Err(if e.code() == Some(&SqlState::CHECK_VIOLATION) { StockError::TooMany(quantity) } else { e.into() });
            }
        }
        let counts = counts(&tx, sku).await?.ok_or_else(|| StockError::UnknownSku(sku.to_owned()))?;
        tx.commit().await?;
        Ok(counts)
    }

    pub async fn get(&self, sku: &str) -> Result<Counts, StockError> {
        let c = self.pool.get().await?;
        let row = c.query_opt("SELECT on_hand, reserved FROM part WHERE sku = $1", &[&sku]).await?;
        row.map(|r| Counts { on_hand: r.get(0), reserved: r.get(1) }).ok_or_else(|| StockError::UnknownSku(sku.to_owned()))
    }

    /// Sets one `sku` part aside for `request`; the same request again gets its reservation.
    pub async fn reserve(&self, sku: &str, request: &str) -> Result<Reservation, StockError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        // Concurrent reserves for one request wait here on the primary key; only one inserts.
        let inserted =
            tx.execute("INSERT INTO reservation (request_id, sku) SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM part WHERE sku = $2) ON CONFLICT (request_id) DO NOTHING", &[&request, &sku]).await?;
        if inserted == 0 {
            let held = tx.query_opt("SELECT sku, consumed, released FROM reservation WHERE request_id = $1", &[&request]).await?;
            return match held {
                Some(r) if r.get::<_, bool>(2) => Err(StockError::Settled(request.to_owned(), "released")),
                Some(r) if r.get::<_, String>(0) == sku => {
                    Ok(Reservation { request_id: request.to_owned(), sku: sku.to_owned(), consumed: r.get(1), released: false })
                }
                Some(r) => Err(StockError::HoldsAnother { request: request.to_owned(), held: r.get(0), asked: sku.to_owned() }),
                None => Err(StockError::UnknownSku(sku.to_owned())),
            };
        }
        let taken = tx.execute("UPDATE part SET reserved = reserved + 1 WHERE sku = $1 AND on_hand - reserved >= 1", &[&sku]).await?;
        if taken == 0 {
            let on_hand = counts(&tx, sku).await?.map_or(0, |c| c.on_hand);
            // Rolled back: the reservation row goes with it.
            return Err(StockError::OutOfStock(sku.to_owned(), on_hand));
        }
        tx.commit().await?;
        Ok(Reservation { request_id: request.to_owned(), sku: sku.to_owned(), consumed: false, released: false })
    }

    /// Uses up the part reserved for `request`; again: the same answer, nothing more.
    pub async fn consume(&self, request: &str) -> Result<Reservation, StockError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let row = tx
            .query_opt(
                "UPDATE reservation SET consumed = true, consumed_at = now() WHERE request_id = $1 AND NOT consumed AND NOT released RETURNING sku",
                &[&request],
            )
            .await?;
        let sku: String = match row {
            Some(r) => {
                let sku: String = r.get(0);
                tx.execute("UPDATE part SET on_hand = on_hand - 1, reserved = reserved - 1 WHERE sku = $1", &[&sku]).await?;
                sku
            }
            None => match tx.query_opt("SELECT sku, released FROM reservation WHERE request_id = $1", &[&request]).await? {
                Some(r) if r.get::<_, bool>(1) => return Err(StockError::Settled(request.to_owned(), "released")),
                Some(r) => r.get(0),
                None => return Err(StockError::NoReservation(request.to_owned())),
            },
        };
        tx.commit().await?;
        Ok(Reservation { request_id: request.to_owned(), sku, consumed: true, released: false })
    }

    /// Gives back the part reserved for `request`; again: the same answer, nothing more.
    pub async fn release(&self, request: &str) -> Result<Reservation, StockError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let row = tx
            .query_opt(
                "UPDATE reservation SET released = true WHERE request_id = $1 AND NOT consumed AND NOT released RETURNING sku",
                &[&request],
            )
            .await?;
        let sku: String = match row {
            Some(r) => {
                let sku: String = r.get(0);
                tx.execute("UPDATE part SET reserved = reserved - 1 WHERE sku = $1", &[&sku]).await?;
                sku
            }
            None => match tx.query_opt("SELECT sku, consumed FROM reservation WHERE request_id = $1", &[&request]).await? {
                Some(r) if r.get::<_, bool>(1) => return Err(StockError::Settled(request.to_owned(), "consumed")),
                Some(r) => r.get(0),
                None => return Err(StockError::NoReservation(request.to_owned())),
            },
        };
        tx.commit().await?;
        Ok(Reservation { request_id: request.to_owned(), sku, consumed: false, released: true })
    }
}

async fn counts(c: &tokio_postgres::Transaction<'_>, sku: &str) -> Result<Option<Counts>, tokio_postgres::Error> {
    Ok(c.query_opt("SELECT on_hand, reserved FROM part WHERE sku = $1", &[&sku])
        .await?
        .map(|r| Counts { on_hand: r.get(0), reserved: r.get(1) }))
}
