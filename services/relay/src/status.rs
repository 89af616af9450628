//! The relay's status endpoint (breaker state, like the seeds' `/circuit-breaker/kafka-publisher`)
//! and Prometheus metrics.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use paymesh_core::status::{Reply, serve_with};

use crate::publish::{LATENCY_BOUNDS, Relay};

/// Serves the relay's status and metrics, and `POST /config/reload` when `live` is given.
pub async fn serve_status(
    listener: tokio::net::TcpListener,
    relay: Arc<Relay>,
    live: Option<Arc<paymesh_core::reload::Live>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let reloads = live.clone();
    serve_with(
        listener,
        move |path| {
            let (relay, reloads) = (relay.clone(), reloads.clone());
            async move {
                match path.as_str() {
                    "/status" | "/circuit-breaker/kafka-publisher" => Reply::json(status(&relay).await),
                    "/metrics" => {
                        let mut out = metrics(&relay).await;
                        if let Some(r) = &reloads {
                            r.render_metrics(&mut out);
                        }
                        Reply::metrics(out)
                    }
                    _ => Reply::not_found(&path, "/status, /circuit-breaker/kafka-publisher, /metrics, POST /config/reload"),
                }
            }
        },
        live,
        shutdown,
    )
    .await;
}

async fn status(relay: &Relay) -> String {
    let b = relay.breaker_snapshot();
    let backlog = relay.backlog().await.unwrap_or(-1);
    format!(
        "{{\"relay\":\"{}\",\"shard\":{},\"source\":\"{}\",\"backlog\":{backlog},\"published\":{},\"dead\":{},\"breaker\":{{\"name\":\"{}\",\"state\":\"{}\",\"failure_rate\":{},\"slow_call_rate\":{},\"buffered_calls\":{},\"not_permitted_calls\":{}}}}}",
        relay.name,
        relay.source.shard().map_or("null".to_owned(), |s| s.0.to_string()),
        relay.source,
        relay.counters.published.load(Ordering::Relaxed),
        relay.counters.dead.load(Ordering::Relaxed),
        b.name,
        b.state.as_str(),
        b.failure_rate,
        b.slow_call_rate,
        b.buffered_calls,
        b.not_permitted_calls
    )
}

async fn metrics(relay: &Relay) -> String {
    let shard = relay.source.shard().map(|s| s.0.to_string()).unwrap_or_default();
    let l = format!("relay=\"{}\",shard=\"{shard}\",source=\"{}\"", relay.name, relay.source.label());
    let c = &relay.counters;
    let b = relay.breaker_snapshot();
    let backlog = relay.backlog().await.unwrap_or(-1);
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{l}}} {value}");
    };
    family("paymesh_relay_backlog_events", "gauge", "Outbox rows not yet published.", backlog.to_string());
    family("paymesh_relay_published_total", "counter", "Events the broker acknowledged.", c.published.load(Ordering::Relaxed).to_string());
    family(
        "paymesh_relay_publish_failures_total",
        "counter",
        "Publish attempts that failed (retried later).",
        c.failed.load(Ordering::Relaxed).to_string(),
    );
    family(
        "paymesh_relay_dlq_total",
        "counter",
        "Events sent to the DLQ after their last retry.",
        c.dead.load(Ordering::Relaxed).to_string(),
    );
    family(
        "paymesh_relay_breaker_open",
        "gauge",
        "1 while the publisher's breaker refuses calls.",
        u8::from(matches!(b.state.as_str(), "open" | "forced_open")).to_string(),
    );
    family(
        "paymesh_relay_breaker_failure_rate",
        "gauge",
        "Failure rate in percent over the breaker's window; -1 below the minimum calls.",
        b.failure_rate.to_string(),
    );
    let _ = writeln!(
        out,
        "# HELP paymesh_relay_publish_latency_seconds From the payment's commit to the broker's acknowledgement.\n# TYPE paymesh_relay_publish_latency_seconds histogram"
    );
    for (i, bound) in LATENCY_BOUNDS.iter().enumerate() {
        let _ = writeln!(
            out,
            "paymesh_relay_publish_latency_seconds_bucket{{{l},le=\"{bound}\"}} {}",
            c.latency_buckets[i].load(Ordering::Relaxed)
        );
    }
    let count = c.latency_count.load(Ordering::Relaxed);
    let _ = writeln!(out, "paymesh_relay_publish_latency_seconds_bucket{{{l},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "paymesh_relay_publish_latency_seconds_sum{{{l}}} {}", c.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6);
    let _ = writeln!(out, "paymesh_relay_publish_latency_seconds_count{{{l}}} {count}");
    out
}
