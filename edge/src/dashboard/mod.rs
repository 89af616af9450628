//! The admin dashboard: a page at `GET /` of the admin listener (HTML, CSS and JS embedded in
//! the binary, so it works with no network), and `GET /dashboard/state`, the one JSON
//! document it polls: the edge's clusters, breakers, rate limits, request totals and latest
//! failures, and each relay's and worker's status read from its status listener.

pub mod pipeline;

use std::time::Instant;

use serde_json::json;

use crate::live::LiveEdge;
use crate::state::EdgeState;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("dashboard.js");
const STYLE: &str = include_str!("dashboard.css");

/// The embedded file at `path`, with its content type.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/index.html" => Some(("text/html; charset=utf-8", INDEX)),
        "/dashboard.js" => Some(("text/javascript; charset=utf-8", SCRIPT)),
        "/dashboard.css" => Some(("text/css; charset=utf-8", STYLE)),
        _ => None,
    }
}

/// Everything the page shows, read now.
pub async fn state(live: &LiveEdge, state: &EdgeState) -> serde_json::Value {
    let (relays, workers) = pipeline::read(&live.peers()).await;
    let totals = state.requests.totals();
    let (requests, errors) = totals.values().fold((0, 0), |(a, b), (r, e)| (a + r, b + e));
    let by_route: Vec<_> = totals.iter().map(|(route, (r, e))| json!({"route": route, "requests": r, "errors": e})).collect();
    json!({
        "edge": {
            "generation": live.generation(),
            "uptime_s": live.uptime().as_secs_f64(),
            "listen": state.config.listen.to_string(),
            "admin_auth": state.auth.is_some(),
        },
        "totals": {"requests": requests, "errors": errors, "by_route": by_route},
        "clusters": crate::admin::clusters(state)["clusters"].take(),
        "breakers": breakers(state),
        "rate_limits": rate_limits(state),
        "relays": relays,
        "workers": workers,
        "failures": state.failures.latest(),
    })
}

/// Every breaker with its route and shard.
fn breakers(state: &EdgeState) -> Vec<serde_json::Value> {
    let now = Instant::now();
    state
        .routes_in_order()
        .flat_map(|r| {
            r.guards.breakers.iter().enumerate().map(move |(shard, b)| {
                let mut v = crate::admin::breaker_json(&b.snapshot(now));
                v["route"] = json!(r.name);
                v["shard"] = if r.sharded { json!(shard) } else { json!(null) };
                v
            })
        })
        .collect()
}

fn rate_limits(state: &EdgeState) -> Vec<serde_json::Value> {
    let bucket = |b: &paymesh_core::config::Bucket| json!({"rate": b.rate, "burst": b.burst});
    state
        .config
        .routes
        .iter()
        .filter(|r| r.rate_limit.route.is_some() || r.rate_limit.per_key.is_some())
        .map(|r| {
            let refused = state.catalog.services.get(&r.service).map_or(0, |s| s.guards.rate_limited());
            json!({
                "route": r.service,
                "refused": refused,
                "route_bucket": r.rate_limit.route.as_ref().map(bucket),
                "per_key": r.rate_limit.per_key.as_ref().map(|k| json!({
                    "rate": k.bucket.rate, "burst": k.bucket.burst, "header": k.header, "by_merchant": k.by_merchant,
                })),
            })
        })
        .collect()
}
