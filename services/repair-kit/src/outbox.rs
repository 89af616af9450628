//! The transactional outbox of a repair service: the same table the payments shards have, so
//! the same relay publishes it (`[[relay.instances]] outbox = "repair.<service>"`). An event
//! is appended inside the transaction of the change it announces; the relay sends it to the
//! topic named by its `event_type`, keyed by its `aggregate_id` (the request id: the
//! correlation key).

/// The outbox's table, its indexes, and the NOTIFY that wakes the relay on every insert.
pub const DDL: &str = r"
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
    dead            boolean     NOT NULL DEFAULT false,
    next_attempt_at timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_event_pending ON outbox_event (id) WHERE NOT published AND NOT dead;
CREATE INDEX outbox_event_unpublished_by_aggregate ON outbox_event (aggregate_id, id) WHERE NOT published;
CREATE FUNCTION outbox_event_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox_event', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_event_notify AFTER INSERT ON outbox_event
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_event_notify();
";

/// Appends one event about `aggregate_id` (a request id) inside `tx`, with the current
/// trace's context so the relay's publish and every consumer join the same trace.
pub async fn append(
    tx: &tokio_postgres::Transaction<'_>,
    event_type: &str,
    message: &str,
    aggregate_id: &str,
    payload: &[u8],
) -> Result<(), tokio_postgres::Error> {
    let (traceparent, tracestate) = paymesh_core::telemetry::headers_of(&tracing::Span::current());
    tx.execute(
        "INSERT INTO outbox_event (event_id, aggregate_type, aggregate_id, event_type, payload, headers)
         VALUES ($1, 'repair_request', $2, $3, $4,
                 jsonb_strip_nulls(jsonb_build_object('content-type', 'application/x-protobuf', 'message', $5::text,
                                                      'traceparent', $6::text, 'tracestate', $7::text)))",
        &[&uuid::Uuid::now_v7(), &aggregate_id, &event_type, &payload, &message, &traceparent, &tracestate],
    )
    .await?;
    Ok(())
}
