//! The admin API (default :9901): the dashboard (`GET /`, `GET /dashboard/state`),
//! `GET /clusters`, `GET /routes`, `GET /ready`, `GET /breakers`, `GET /metrics`,
//! `GET /openapi.json`, `POST /breakers/<name>`, `POST /config/reload`.
//!
//! Reads are open (the listener is for operators and Prometheus; bind it to a private
//! address). When the edge authenticates callers (`[edge.auth]`), every `POST` needs a
//! credential with the `mesh:admin` scope.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use paymesh_core::identity::MESH_ADMIN_SCOPE;

use crate::live::{LiveEdge, ReloadError};
use crate::resilience::breaker::Force;
use crate::state::EdgeState;

#[derive(Debug)]
pub struct Admin {
    pub live: Arc<LiveEdge>,
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_owned();
        let query = session.req_header().uri.query().unwrap_or("").to_owned();
        let state = self.live.load();
        if method == http::Method::POST {
            if let Err(refused) = admin_caller(&state, session).await {
                return refused;
            }
            if path == "/config/reload" {
                return reload(&self.live).await;
            }
            return match path.strip_prefix("/breakers/") {
                Some(name) => match crate::transcode::template::percent_decode(name) {
                    Some(name) => force_breaker(&state, &name, &query),
                    None => {
                        reply(StatusCode::BAD_REQUEST, json!({"code": 3, "message": "the breaker name is not valid percent-encoded UTF-8"}))
                    }
                },
                None => reply(
                    StatusCode::NOT_FOUND,
                    json!({"code": 5, "message": format!("no admin endpoint POST {path}; POST /breakers/<name>?state=open|closed|normal, or POST /config/reload")}),
                ),
            };
        }
        if method != http::Method::GET {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"code": 12, "message": format!("{method} is not allowed; use GET, or POST /breakers/<name>?state=... or POST /config/reload")}),
            );
        }
        if let Some((content_type, body)) = crate::dashboard::asset(&path) {
            return asset(content_type, body);
        }
        match path.as_str() {
            "/dashboard/state" => reply(StatusCode::OK, crate::dashboard::state(&self.live, &state).await),
            "/breakers" => reply(StatusCode::OK, breakers(&state)),
            "/metrics" => {
                let mut out = crate::metrics::render(&state);
                self.live.render_metrics(&mut out);
                text(out)
            }
            "/clusters" => reply(StatusCode::OK, clusters(&state)),
            "/routes" => reply(StatusCode::OK, routes(&state)),
            "/openapi.json" => reply(StatusCode::OK, crate::openapi::document(&state.catalog, state.auth.is_some())),
            "/ready" => {
                let problems = unready(&state);
                if problems.is_empty() {
                    reply(StatusCode::OK, json!({"ready": true}))
                } else {
                    reply(StatusCode::SERVICE_UNAVAILABLE, json!({"ready": false, "problems": problems}))
                }
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                json!({"code": 5, "message": format!("no admin endpoint {path}; try / (the dashboard), /clusters, /routes, /breakers, /metrics, /ready, /openapi.json")}),
            ),
        }
    }
}

/// The caller of an admin `POST`: anyone when the edge does not authenticate, else a
/// credential with [`MESH_ADMIN_SCOPE`] (401 without a valid one, 403 without the scope).
async fn admin_caller(state: &EdgeState, session: &ServerSession) -> Result<(), Response<Vec<u8>>> {
    let Some(auth) = &state.auth else { return Ok(()) };
    let headers = &session.req_header().headers;
    let values = |name| headers.get_all(name).iter().map(|v| v.as_bytes()).collect::<Vec<&[u8]>>();
    match auth.authenticate(&values(http::header::AUTHORIZATION.as_str()), &values(crate::auth::API_KEY_HEADER)).await {
        Ok(id) if id.scopes.iter().any(|s| s == MESH_ADMIN_SCOPE) => {
            tracing::info!(subject = %id.subject, by = %id.authenticated_by, "admin change requested");
            Ok(())
        }
        Ok(id) => Err(reply(
            StatusCode::FORBIDDEN,
            json!({"code": 7, "message": format!("{} lacks the {MESH_ADMIN_SCOPE} scope that admin changes need", id.subject)}),
        )),
        Err(refusal) => {
            let mut r = reply(StatusCode::UNAUTHORIZED, json!({"code": 16, "message": refusal.message()}));
            if let Ok(v) = http::HeaderValue::from_str(&refusal.www_authenticate()) {
                r.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
            }
            Err(r)
        }
    }
}

/// Reads the config file again (off the async workers: it parses descriptors) and answers
/// what changed, or every problem of a refused file.
async fn reload(live: &Arc<LiveEdge>) -> Response<Vec<u8>> {
    let live = live.clone();
    match tokio::task::spawn_blocking(move || live.reload()).await {
        Ok(Ok(done)) => reply(
            StatusCode::OK,
            json!({"reloaded": true, "generation": done.generation, "applied": done.changes.applied, "restart_required": done.changes.restart_required}),
        ),
        Ok(Err(ReloadError::Invalid(problems))) => reply(StatusCode::BAD_REQUEST, paymesh_core::reload::refusal_of(&problems)),
        Ok(Err(e @ ReloadError::NoFile)) => reply(StatusCode::CONFLICT, json!({"code": 9, "message": e.to_string()})),
        Ok(Err(e)) => reply(StatusCode::BAD_REQUEST, paymesh_core::reload::refusal(&e)),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, json!({"code": 13, "message": format!("the reload did not finish: {e}")})),
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

fn asset(content_type: &'static str, body: &'static str) -> Response<Vec<u8>> {
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-cache")
        // The page loads only its own files and talks only to this listener.
        .header("content-security-policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
        .header("x-content-type-options", "nosniff")
        .body(body.as_bytes().to_vec())
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn text(body: String) -> Response<Vec<u8>> {
    let bytes = body.into_bytes();
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
        .header(http::header::CONTENT_LENGTH, bytes.len())
        .body(bytes)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

/// Every breaker's state and window, like Resilience4j's breaker endpoint.
fn breakers(state: &EdgeState) -> serde_json::Value {
    let now = Instant::now();
    let list: Vec<_> = state.routes_in_order().flat_map(|r| r.guards.breakers.iter()).map(|b| breaker_json(&b.snapshot(now))).collect();
    json!({ "breakers": list })
}

/// One breaker's state and window.
pub fn breaker_json(s: &paymesh_core::breaker::Snapshot) -> serde_json::Value {
    json!({
        "name": s.name,
        "state": s.state.as_str(),
        "failure_rate": s.failure_rate,
        "slow_call_rate": s.slow_call_rate,
        "buffered_calls": s.buffered_calls,
        "failed_calls": s.failed_calls,
        "slow_calls": s.slow_calls,
        "not_permitted_calls": s.not_permitted_calls,
    })
}

fn force_breaker(state: &EdgeState, name: &str, query: &str) -> Response<Vec<u8>> {
    let wanted = query.split('&').find_map(|kv| kv.strip_prefix("state="));
    let force = match wanted {
        Some("open") => Force::Open,
        Some("closed") => Force::Closed,
        Some("normal") => Force::Normal,
        other => {
            let msg = format!("state={} is not one of open, closed, normal", other.unwrap_or(""));
            return reply(StatusCode::BAD_REQUEST, json!({"code": 3, "message": msg}));
        }
    };
    let Some(b) = state.routes_in_order().flat_map(|r| r.guards.breakers.iter()).find(|b| b.name == name) else {
        let known: Vec<String> = state.routes_in_order().flat_map(|r| r.guards.breakers.iter()).map(|b| b.name.clone()).collect();
        return reply(
            StatusCode::NOT_FOUND,
            json!({"code": 5, "message": format!("no breaker named '{name}'; breakers: {}", known.join(", "))}),
        );
    };
    b.force(force, Instant::now());
    tracing::warn!(breaker = %name, ?force, "breaker forced by an operator");
    reply(StatusCode::OK, json!({"name": name, "state": b.state().as_str()}))
}

pub fn clusters(state: &EdgeState) -> serde_json::Value {
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
                        "ejected": e.health.is_ejected(now),
                        "ewma_ms": (e.load.estimate_ns(now) / 1e6 * 1000.0).round() / 1000.0,
                        "in_flight": e.load.in_flight(),
                        "ejections": e.health.ejections(),
                    })
                })
                .collect();
            json!({
                "name": c.name,
                "shards": c.shards,
                "in_flight": c.limit.in_flight(),
                "pending": c.limit.pending(),
                "max_requests": c.limit.max_requests,
                "max_pending": c.limit.max_pending,
                "overflows": c.limit.overflows(),
                "endpoints": endpoints,
            })
        })
        .collect();
    json!({ "clusters": list })
}

fn routes(state: &EdgeState) -> serde_json::Value {
    let bucket = |b: &paymesh_core::config::Bucket| json!({"rate": b.rate, "burst": b.burst});
    let grpc: Vec<_> = state
        .config
        .routes
        .iter()
        .filter_map(|r| state.catalog.services.get(&r.service).map(|s| (r, s)))
        .map(|(r, s)| {
            let mut methods: Vec<&str> = s.methods.keys().map(String::as_str).collect();
            methods.sort_unstable();
            let keys: Vec<&str> = r.shard_keys.iter().map(|k| k.field.as_str()).collect();
            let b = &r.breaker;
            json!({
                "service": s.name,
                "cluster": s.cluster.name,
                "timeout_ms": s.timeout.as_millis() as u64,
                "shard_keys": keys,
                "methods": methods,
                "breaker": {
                    "enabled": b.enabled,
                    "failure_rate_threshold": b.failure_rate_threshold,
                    "slow_call_rate_threshold": b.slow_call_rate_threshold,
                    "slow_call_duration_ms": b.slow_call_duration.as_millis() as u64,
                    "minimum_calls": b.minimum_calls,
                    "wait_in_open_ms": b.wait_in_open.as_millis() as u64,
                },
                "rate_limit": {
                    "route": r.rate_limit.route.as_ref().map(bucket),
                    "per_key": r.rate_limit.per_key.as_ref().map(|k| json!({
                        "rate": k.bucket.rate, "burst": k.bucket.burst, "header": k.header, "by_merchant": k.by_merchant,
                    })),
                },
                "retry": {"enabled": r.retry.enabled, "max_attempts": r.retry.max_attempts},
            })
        })
        .collect();
    let rest: Vec<_> = state
        .catalog
        .rest
        .iter()
        .map(|b| json!({"method": b.verb.as_str(), "path": b.template.to_string(), "grpc": b.method.grpc_path}))
        .collect();
    json!({ "grpc": grpc, "rest": rest, "skipped_bindings": state.catalog.skipped })
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

#[cfg(test)]
mod tests {
    #[test]
    fn breaker_names_are_percent_decoded_as_pages_send_them() {
        assert_eq!(
            crate::transcode::template::percent_decode("payments.v1.Payments%40shard-0").as_deref(),
            Some("payments.v1.Payments@shard-0")
        );
        assert_eq!(crate::transcode::template::percent_decode("plain@shard-1").as_deref(), Some("plain@shard-1"));
        assert_eq!(crate::transcode::template::percent_decode("bad%4"), None);
        assert_eq!(crate::transcode::template::percent_decode("bad%zz"), None);
        assert_eq!(crate::transcode::template::percent_decode("%ff"), None, "not UTF-8");
    }
}
