//! The outbox relay of one payments shard (or of one repair centre service's database).
//!
//! Each tick claims up to `batch_size` unpublished rows (`FOR UPDATE SKIP LOCKED`, so several
//! relays on one shard never take the same row), publishes them with an idempotent producer
//! (acks=all; key = payment id, so one payment's events stay in one partition, in order;
//! headers: event id, event type, trace context), and in the same transaction marks published
//! only the rows the broker acknowledged. A failed row is retried later (`retry_count`,
//! `last_retry_at`, `next_attempt_at`); after `max_retries` it goes to the DLQ topic and is
//! marked dead, never dropped. A circuit breaker (the seeds' settings) guards publishing:
//! while it is open the relay does not try, and the rows wait; intake is unaffected because
//! the payments service only writes the outbox.
//!
//! The relay wakes on `LISTEN outbox_event` (a trigger notifies on every insert) and polls
//! every `poll_interval` in case a notification is missed.

mod notify;
mod publish;
pub mod redrive;
mod status;

pub use publish::{Relay, RelayError, Tick};
pub use status::serve_status;

use std::future::Future;
use std::time::Duration;

use paymesh_core::config::MeshConfig;

/// Runs relay instance `name` of `config` until `shutdown` resolves.
pub async fn run(config: &MeshConfig, name: &str, shutdown: impl Future<Output = ()>) -> Result<(), RelayError> {
    let relay_cfg = config.relay.as_ref().ok_or_else(|| RelayError::Config("the mesh config has no [relay] section".into()))?;
    let inst = relay_cfg
        .instances
        .iter()
        .find(|i| i.name == name)
        .ok_or_else(|| RelayError::Config(format!("no [[relay.instances]] is named '{name}'")))?;
    let relay = std::sync::Arc::new(Relay::connect(config, inst.source.clone(), name).await?);
    let listener = tokio::net::TcpListener::bind(inst.status_listen)
        .await
        .map_err(|e| RelayError::Config(format!("cannot listen on {}: {e}", inst.status_listen)))?;
    // Reloads (SIGHUP, POST /config/reload on the status listener) change what they can.
    let live = {
        let relay = relay.clone();
        paymesh_core::reload::Live::new(config, Box::new(move |old, new, changes| relay.apply(old, new, changes)))
    };
    paymesh_core::reload::register(&live);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let status = tokio::spawn(serve_status(listener, relay.clone(), Some(live), {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.changed().await;
        }
    }));
    let mut wake = notify::listen(&relay.database_url(), relay.password());
    tokio::pin!(shutdown);
    tracing::info!(relay = name, source = %inst.source, "relay running");
    loop {
        let settings = relay.settings();
        let wait = match relay.tick().await {
            // A full batch: more are waiting; go on at once (but not past a shutdown).
            Ok(t) if t.claimed as i64 >= settings.batch_size && t.refused == 0 => Duration::ZERO,
            // The breaker is open: look again shortly (the wait in open is the breaker's).
            Ok(t) if t.refused > 0 => relay.breaker_retry_in().unwrap_or(settings.poll_interval),
            Ok(_) => settings.poll_interval,
            Err(e) => {
                tracing::warn!(error = %e, "relay tick failed; retrying");
                settings.poll_interval
            }
        };
        // Between batches, a shutdown comes first: the batch just published is committed,
        // the next one is not started.
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = wake.wait(wait) => {}
        }
    }
    let _ = stop_tx.send(true);
    let _ = status.await;
    tracing::info!(relay = name, "relay stopped");
    Ok(())
}
