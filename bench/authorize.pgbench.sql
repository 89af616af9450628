-- The statements of one Authorize, as the payments service sends them (see
-- services/payments/src/store/mutations.rs): claim the idempotency key, write the payment,
-- its operation and the outbox row (whose trigger notifies the relay), store the answer.
-- `cargo xtask bench` runs it with pgbench against each shard as the database ceiling.
\set m random(0, 999)
BEGIN;
SELECT gen_random_uuid()::text AS id \gset
INSERT INTO idempotency_keys (merchant_id, idempotency_key, method, request, created_at, expires_at)
  VALUES ('pgbench-m' || CAST(:m AS text), CAST(:id AS text), 'Authorize', '\x0a0470676231', now(), now() + interval '1 day')
  ON CONFLICT (merchant_id, idempotency_key) DO UPDATE
    SET method = EXCLUDED.method, request = EXCLUDED.request, response = NULL, payment_id = NULL,
        created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
    WHERE idempotency_keys.expires_at <= EXCLUDED.created_at
  RETURNING 1;
INSERT INTO payments (payment_id, merchant_id, amount, currency, status, captured_amount, refunded_amount, created_at, updated_at)
  VALUES (CAST(:id AS text), 'pgbench-m' || CAST(:m AS text), 1250, 'KRW', 'AUTHORIZED', 0, 0, now(), now());
INSERT INTO payment_operations (operation_id, payment_id, kind, amount, idempotency_key, created_at)
  VALUES (CAST(:id AS text), CAST(:id AS text), 'AUTHORIZE', 1250, CAST(:id AS text), now());
INSERT INTO outbox_event (event_id, aggregate_type, aggregate_id, event_type, payload, headers)
  VALUES (gen_random_uuid(), 'payment', CAST(:id AS text), 'PaymentAuthorized', '\x0a0470676231',
          jsonb_strip_nulls(jsonb_build_object('content-type', 'application/x-protobuf', 'message', 'payments.v1.PaymentAuthorized',
                                               'traceparent', NULL::text, 'tracestate', NULL::text)));
UPDATE idempotency_keys SET response = '\x0a0470676231', payment_id = CAST(:id AS text)
  WHERE merchant_id = 'pgbench-m' || CAST(:m AS text) AND idempotency_key = CAST(:id AS text);
COMMIT;
