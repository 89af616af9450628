//! The shard's schema, applied at start.
//!
//! Migrations are numbered and append-only: never edit one that has shipped, add the next.
//! Each runs in its own transaction under an advisory lock, so several instances starting
//! against one shard at once apply each migration exactly once.

use tokio_postgres::Client;

/// Arbitrary constant naming the "payments migrations" advisory lock.
const MIGRATION_LOCK: i64 = 0x7061_796d_6573_6801;

const MIGRATIONS: &[(i32, &str)] = &[(1, V1), (2, V2), (3, V3), (4, V4)];

/// Payments, their operations, idempotency records and the outbox. The CHECK constraints
/// restate the money rules so that even a bug in the service cannot store an impossible
/// payment.
const V1: &str = r"
CREATE TABLE payments (
    payment_id      text        PRIMARY KEY,
    merchant_id     text        NOT NULL,
    amount          bigint      NOT NULL CHECK (amount > 0),
    currency        char(3)     NOT NULL,
    status          text        NOT NULL CHECK (status IN ('AUTHORIZED', 'CAPTURED', 'PARTIALLY_REFUNDED', 'REFUNDED', 'VOIDED')),
    captured_amount bigint      NOT NULL DEFAULT 0 CHECK (captured_amount >= 0 AND captured_amount <= amount),
    refunded_amount bigint      NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0 AND refunded_amount <= captured_amount),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX payments_by_merchant ON payments (merchant_id, created_at DESC);

-- One row per accepted mutation (authorize, capture, each refund, void).
CREATE TABLE payment_operations (
    operation_id    text        PRIMARY KEY,
    payment_id      text        NOT NULL REFERENCES payments (payment_id),
    kind            text        NOT NULL CHECK (kind IN ('AUTHORIZE', 'CAPTURE', 'REFUND', 'VOID')),
    amount          bigint      NOT NULL CHECK (amount >= 0),
    idempotency_key text        NOT NULL,
    created_at      timestamptz NOT NULL
);
CREATE INDEX payment_operations_by_payment ON payment_operations (payment_id, created_at);

-- Stripe-style idempotency: the first answer to (merchant, key), replayed until it expires.
CREATE TABLE idempotency_keys (
    merchant_id     text        NOT NULL,
    idempotency_key text        NOT NULL,
    method          text        NOT NULL,
    request         bytea       NOT NULL,
    response        bytea,
    payment_id      text,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (merchant_id, idempotency_key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

-- The transactional outbox: written with the change it announces, published by the relay.
CREATE TABLE outbox_event (
    id              bigserial   PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    event_type      text        NOT NULL,
    payload         bytea       NOT NULL,
    headers         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    published       boolean     NOT NULL DEFAULT false,
    published_at    timestamptz,
    retry_count     integer     NOT NULL DEFAULT 0,
    last_retry_at   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_event_unpublished ON outbox_event (id) WHERE NOT published;
";

/// What the relay needs: dead-lettering, scheduled retries, the last error, and a wake-up on
/// every insert (delivered when the inserting transaction commits).
const V2: &str = r"
ALTER TABLE outbox_event
    ADD COLUMN dead            boolean     NOT NULL DEFAULT false,
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN last_error      text;
DROP INDEX outbox_event_unpublished;
CREATE INDEX outbox_event_pending ON outbox_event (id) WHERE NOT published AND NOT dead;

CREATE FUNCTION outbox_event_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox_event', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_event_notify AFTER INSERT ON outbox_event
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_event_notify();
";

/// A version per payment, incremented under the row lock by every change, so consumers
/// order a payment's states without trusting clocks.
const V3: &str = r"
ALTER TABLE payments ADD COLUMN version bigint NOT NULL DEFAULT 1 CHECK (version >= 1);
";

/// The relay publishes a payment's events in commit order: a row waits while an earlier row
/// of the same payment is unpublished. This index answers "is there one?".
const V4: &str = r"
CREATE INDEX outbox_event_unpublished_by_aggregate ON outbox_event (aggregate_id, id) WHERE NOT published;
";

/// Applies every migration the database lacks, all under one advisory lock so several
/// instances starting at once against a fresh shard do not race. Returns how many were applied.
pub async fn migrate(client: &mut Client) -> Result<usize, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let mut applied = 0;
    for (version, sql) in MIGRATIONS {
        if tx.query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[version]).await?.is_none() {
            tx.batch_execute(sql).await?;
            tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[version]).await?;
            applied += 1;
        }
    }
    tx.commit().await?;
    Ok(applied)
}
