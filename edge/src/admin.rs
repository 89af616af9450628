//! The admin API (default :9901): `GET /clusters`, `GET /routes`, `GET /ready`.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::state::EdgeState;

#[derive(Debug)]
pub struct Admin {
    pub state: Arc<EdgeState>,
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_owned();
        if method != http::Method::GET {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"code": 12, "message": format!("{method} is not allowed; the admin API is read-only (GET)")}),
            );
        }
        match path.as_str() {
            "/clusters" => reply(StatusCode::OK, clusters(&self.state)),
            "/routes" => reply(StatusCode::OK, routes(&self.state)),
            "/ready" => {
                let problems = unready(&self.state);
                if problems.is_empty() {
                    reply(StatusCode::OK, json!({"ready": true}))
                } else {
                    reply(StatusCode::SERVICE_UNAVAILABLE, json!({"ready": false, "problems": problems}))
                }
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                json!({"code": 5, "message": format!("no admin endpoint {path}; try /clusters, /routes, /ready")}),
            ),
        }
    }
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Vec<u8>> {
    let bytes = serde_json::to_vec_pretty(&body).unwrap_or_default();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, bytes.len())
        .body(bytes)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn clusters(state: &EdgeState) -> serde_json::Value {
    let now = Instant::now();
    let list: Vec<_> = state
        .clusters_in_order()
        .map(|c| {
            let endpoints: Vec<_> = c
                .endpoints
                .iter()
                .map(|e| {
                    json!({
                        "name": e.name,
                        "address": e.address.to_string(),
                        "shard": e.shard.map(|s| s.0),
                        "healthy": e.health.is_healthy(),
                        "ewma_ms": (e.load.estimate_ns(now) / 1e6 * 1000.0).round() / 1000.0,
                        "in_flight": e.load.in_flight(),
                        "ejections": e.health.ejections(),
                    })
                })
                .collect();
            json!({"name": c.name, "shards": c.shards, "endpoints": endpoints})
        })
        .collect();
    json!({ "clusters": list })
}

fn routes(state: &EdgeState) -> serde_json::Value {
    let grpc: Vec<_> = state
        .config
        .routes
        .iter()
        .filter_map(|r| state.catalog.services.get(&r.service))
        .map(|s| {
            let mut methods: Vec<&str> = s.methods.keys().map(String::as_str).collect();
            methods.sort_unstable();
            let keys: Vec<&str> = state
                .config
                .routes
                .iter()
                .find(|r| r.service == s.name)
                .map(|r| r.shard_keys.iter().map(|k| k.field.as_str()).collect())
                .unwrap_or_default();
            json!({
                "service": s.name,
                "cluster": s.cluster.name,
                "timeout_ms": s.timeout.as_millis() as u64,
                "shard_keys": keys,
                "methods": methods,
            })
        })
        .collect();
    let rest: Vec<_> = state
        .catalog
        .rest
        .iter()
        .map(|b| json!({"method": b.verb.as_str(), "path": b.template.to_string(), "grpc": b.method.grpc_path}))
        .collect();
    json!({ "grpc": grpc, "rest": rest })
}

/// Every shard (or unsharded cluster) that has no healthy instance.
pub fn unready(state: &EdgeState) -> Vec<String> {
    let mut problems = Vec::new();
    for c in state.clusters_in_order() {
        match c.shards {
            Some(n) => {
                for s in 0..n {
                    if !c.endpoints.iter().any(|e| e.shard.map(|x| x.0) == Some(s) && e.health.is_healthy()) {
                        problems.push(format!("shard {s} of cluster '{}' has no healthy instance", c.name));
                    }
                }
            }
            None if !c.endpoints.iter().any(|e| e.health.is_healthy()) => {
                problems.push(format!("cluster '{}' has no healthy instance", c.name))
            }
            None => {}
        }
    }
    problems
}
