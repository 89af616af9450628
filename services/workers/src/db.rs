//! The workers' database: pool and schema.

use paymesh_core::config::DatabaseConfig;

const MIGRATION_LOCK: i64 = 0x776f_726b_6572_7301;

const MIGRATIONS: &[(i32, &str)] = &[(1, V1), (2, V2)];

/// Ledger, settlement and read model, plus the dedupe record every worker writes.
const V1: &str = r"
CREATE TABLE processed_events (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Double-entry journal: every entry's postings balance (sum of debits = sum of credits).
CREATE TABLE ledger_entries (
    entry_id    bigserial   PRIMARY KEY,
    event_id    uuid        NOT NULL UNIQUE,
    payment_id  text        NOT NULL,
    merchant_id text        NOT NULL,
    kind        text        NOT NULL,
    currency    char(3)     NOT NULL,
    occurred_at timestamptz NOT NULL
);
CREATE TABLE ledger_postings (
    entry_id bigint NOT NULL REFERENCES ledger_entries (entry_id),
    account  text   NOT NULL,
    debit    bigint NOT NULL DEFAULT 0 CHECK (debit >= 0),
    credit   bigint NOT NULL DEFAULT 0 CHECK (credit >= 0),
    CHECK (debit = 0 OR credit = 0)
);
CREATE INDEX ledger_postings_by_account ON ledger_postings (account);

-- Settlement: per merchant, currency and UTC day; closed batches take no more changes.
CREATE TABLE settlement_batches (
    batch_id    bigserial   PRIMARY KEY,
    merchant_id text        NOT NULL,
    currency    char(3)     NOT NULL,
    day         date        NOT NULL,
    captured    bigint      NOT NULL DEFAULT 0,
    refunded    bigint      NOT NULL DEFAULT 0,
    adjustments bigint      NOT NULL DEFAULT 0,
    closed_at   timestamptz,
    UNIQUE (merchant_id, currency, day)
);

-- The read model: every payment of every shard.
CREATE TABLE payments_view (
    payment_id      text        PRIMARY KEY,
    merchant_id     text        NOT NULL,
    shard           integer     NOT NULL,
    amount          bigint      NOT NULL,
    currency        char(3)     NOT NULL,
    status          integer     NOT NULL,
    captured_amount bigint      NOT NULL,
    refunded_amount bigint      NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX payments_view_by_merchant ON payments_view (merchant_id, created_at DESC, payment_id DESC);
";

/// Sums that cannot overflow (settlement totals in `numeric`), the payment's version in the
/// read model (the highest version wins, whatever the clocks said), and merchant lookups in
/// the ledger by exact id.
const V2: &str = r"
ALTER TABLE settlement_batches
    ALTER COLUMN captured TYPE numeric(38, 0),
    ALTER COLUMN refunded TYPE numeric(38, 0),
    ALTER COLUMN adjustments TYPE numeric(38, 0);
ALTER TABLE payments_view ADD COLUMN version bigint NOT NULL DEFAULT 0;
CREATE INDEX ledger_entries_by_merchant ON ledger_entries (merchant_id, currency);
";

pub fn pool(db: &DatabaseConfig, application: &str) -> Result<deadpool_postgres::Pool, String> {
    let mut pg: tokio_postgres::Config = db.url.parse().map_err(|e| format!("workers.database_url: {e}"))?;
    if let Some(p) = &db.password {
        pg.password(p.expose());
    }
    pg.application_name(application);
    pg.connect_timeout(db.connect_timeout);
    pg.options(db.session_options());
    let manager = deadpool_postgres::Manager::new(pg, tokio_postgres::NoTls);
    deadpool_postgres::Pool::builder(manager).max_size(db.pool_size).build().map_err(|e| e.to_string())
}

/// Applies every migration the database lacks. Everything happens under one advisory lock,
/// so workers and query services starting together against a fresh database do not race.
pub async fn migrate(pool: &deadpool_postgres::Pool) -> Result<(), String> {
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(|e| e.to_string())?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS worker_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(|e| e.to_string())?;
    for (version, sql) in MIGRATIONS {
        if tx.query_opt("SELECT 1 FROM worker_migrations WHERE version = $1", &[version]).await.map_err(|e| e.to_string())?.is_none() {
            tx.batch_execute(sql).await.map_err(|e| e.to_string())?;
            tx.execute("INSERT INTO worker_migrations (version) VALUES ($1)", &[version]).await.map_err(|e| e.to_string())?;
        }
    }
    tx.commit().await.map_err(|e| e.to_string())
}
