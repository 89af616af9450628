//! The REST side of the edge: match a `google.api.http` binding, transcode JSON to a request
//! message, pass the route's guards (rate limit, circuit breaker, cluster concurrency), route
//! it to a healthy instance of its shard, call it over gRPC (retrying only what is safe),
//! and answer JSON.
//!
//! Rejections happen before any upstream is contacted: 404 (no route), 405 (wrong verb),
//! 415 (not JSON), 413 (too large), 400 (malformed JSON, unknown field, wrong type, missing
//! shard key), 429 (rate limit), 503 (breaker open, cluster overloaded, no healthy instance).

use std::time::Instant;

use bytes::Bytes;
use http::StatusCode;
use pingora::proxy::Session;
use prost::Message;
use prost_reflect::DynamicMessage;
use tonic::Code;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::catalog::{BodyRule, RestBinding};
use crate::io::{BodyError, header, read_body, respond_error, respond_json};
use crate::resilience::guards::limit_headers;
use crate::resilience::retry::{self, Failure};
use crate::shardkey;
use crate::state::EdgeState;
use crate::transcode::{request, response};
use crate::upstream::{self, CallError};

/// Headers passed on to the upstream as gRPC metadata.
const FORWARDED: &[&str] = &["traceparent", "tracestate", "x-request-id", "x-merchant-id"];

/// What happened, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered by the edge without contacting an upstream.
    Rejected(Code),
    /// Answered by an upstream with this gRPC code.
    Upstream(Code),
    /// No instance could be reached.
    Unavailable,
}

/// Status codes that say the instance (not the request) is in trouble: they count toward
/// outlier ejection.
pub fn is_server_failure(code: i32) -> bool {
    matches!(Code::from_i32(code), Code::Unavailable | Code::Internal | Code::Unknown | Code::DataLoss | Code::DeadlineExceeded)
}

impl Outcome {
    pub fn code(self) -> Code {
        match self {
            Self::Rejected(c) | Self::Upstream(c) => c,
            Self::Unavailable => Code::Unavailable,
        }
    }
}

/// Handles one REST request completely, including writing the response, and records it in
/// the request metrics.
pub async fn handle(state: &EdgeState, session: &mut Session) -> pingora::Result<Outcome> {
    let started = Instant::now();
    let mut seen = Seen::default();
    let outcome = exchange(state, session, &mut seen, started).await?;
    state.requests.record(
        "rest",
        seen.route.unwrap_or("unmatched"),
        seen.shard,
        crate::metrics::code_name(outcome.code() as i32),
        started.elapsed(),
    );
    Ok(outcome)
}

/// Route and shard of a request, once known.
#[derive(Debug, Default)]
struct Seen<'a> {
    route: Option<&'a str>,
    shard: Option<u32>,
}

async fn exchange<'s>(state: &'s EdgeState, session: &mut Session, seen: &mut Seen<'s>, started: Instant) -> pingora::Result<Outcome> {
    let verb = session.req_header().method.clone();
    let uri = session.req_header().uri.clone();
    let path = uri.path();
    let (binding, vars) = match state.catalog.rest_route(&verb, path) {
        Ok(found) => found,
        Err(allowed) if allowed.is_empty() => {
            respond_error(session, Code::NotFound, &format!("no route for {verb} {path}"), Some(StatusCode::NOT_FOUND), &[]).await?;
            return Ok(Outcome::Rejected(Code::NotFound));
        }
        Err(allowed) => {
            let list = allowed.iter().map(http::Method::as_str).collect::<Vec<_>>().join(", ");
            let msg = format!("{verb} is not allowed on {path}; allowed: {list}");
            respond_error(session, Code::Unimplemented, &msg, Some(StatusCode::METHOD_NOT_ALLOWED), &[("allow", list)]).await?;
            return Ok(Outcome::Rejected(Code::Unimplemented));
        }
    };

    let takes_body = !matches!(binding.body, BodyRule::None);
    if takes_body && !is_json(header(session, "content-type").as_deref(), session) {
        let msg = "send the request body as JSON with Content-Type: application/json";
        respond_error(session, Code::InvalidArgument, msg, Some(StatusCode::UNSUPPORTED_MEDIA_TYPE), &[]).await?;
        return Ok(Outcome::Rejected(Code::InvalidArgument));
    }
    let body = match read_body(session, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(BodyError::TooLarge { limit }) => {
            let msg = format!("request body is larger than the limit of {limit} bytes");
            respond_error(session, Code::InvalidArgument, &msg, Some(StatusCode::PAYLOAD_TOO_LARGE), &[]).await?;
            return Ok(Outcome::Rejected(Code::InvalidArgument));
        }
        Err(BodyError::Read(e)) => return Err(e),
    };

    let msg = match request::build(binding, &vars, uri.query(), &body) {
        Ok(m) => m,
        Err(e) => return reject(session, Code::InvalidArgument, &e.0, &[]).await,
    };
    let service = &binding.service;
    let span = tracing::Span::current();
    span.record("route", binding.method.grpc_path.as_str());
    seen.route = Some(binding.method.grpc_path.as_str());
    let hdr = |name: &str| header(session, name);
    let shard = if service.sharded {
        match shardkey::shard_of(&binding.method.keys, Some(&msg), &hdr, service.cluster.shards.unwrap_or(1)) {
            Ok(s) => Some(s),
            Err(e) => return reject(session, Code::InvalidArgument, &e.0, &[]).await,
        }
    } else {
        None
    };
    seen.shard = shard.map(|s| s.0);

    // Guards, cheapest and most caller-specific first.
    let guards = &service.guards;
    let client = guards.client_header().and_then(|h| header(session, h));
    let merchant = shardkey::merchant_id(&binding.method.keys, Some(&msg), &hdr);
    if let Err(limited) = guards.admit(client.as_deref(), merchant.as_deref(), Instant::now()) {
        let msg = format!("rate limit of {} exceeded; retry in {} s", service.name, limited.retry_after.as_secs_f64().ceil().max(1.0));
        return reject(session, Code::ResourceExhausted, &msg, &limit_headers(&limited)).await;
    }
    let breaker = guards.breaker(shard);
    let permit = match breaker.try_acquire(Instant::now()) {
        Ok(p) => p,
        Err(refused) => return reject(session, Code::Unavailable, &refused.to_string(), &[]).await,
    };
    let deadline = started + service.timeout;
    let cluster = &service.cluster;
    let _slot = match cluster.limit.acquire(deadline.saturating_duration_since(Instant::now())).await {
        Ok(slot) => slot,
        Err(_) => {
            drop(permit);
            let msg = format!(
                "cluster '{}' is at its limit of {} requests in flight and {} waiting; retry later",
                cluster.name, cluster.limit.max_requests, cluster.limit.max_pending
            );
            return reject(session, Code::Unavailable, &msg, &[]).await;
        }
    };

    let metadata = forwarded_metadata(session);
    let encoded = Bytes::from(msg.encode_to_vec());
    let safe = verb == http::Method::GET || binding.method.safe_to_repeat(Some(&msg));
    guards.budget.deposit();
    let mut tried = Vec::new();
    let mut last: Option<(Failure, String)> = None;
    let (failure, message, code) = loop {
        let up = match cluster.pick(shard, &tried) {
            Ok(up) => up,
            Err(no) => {
                let message = match &last {
                    Some((_, e)) => format!("{no}: the instances tried failed (last: {e})"),
                    None => no.to_string(),
                };
                break (last.map_or(Failure::Connect, |(f, _)| f), message, Code::Unavailable);
            }
        };
        tried.push(up.id);
        span.record("instance", up.name.as_str());
        if let Some(s) = up.shard {
            span.record("shard", s.0);
        }
        let channel = upstream::channel(&up, state.config.connect_timeout);
        let in_flight = up.load.start();
        let sent = Instant::now();
        let result = upstream::unary(
            channel,
            &binding.method.grpc_path,
            encoded.clone(),
            metadata.clone(),
            deadline.saturating_duration_since(sent),
        )
        .await;
        drop(in_flight);
        let now = Instant::now();
        let (failure, status) = match result {
            Ok((_md, reply)) => {
                up.load.observe(sent.elapsed(), now);
                cluster.report(&up, false, now);
                breaker.record(permit, false, started.elapsed(), now);
                return answer(session, binding, &reply).await;
            }
            Err(CallError::Connect(status)) => (Failure::Connect, status),
            Err(CallError::Status(status)) => {
                up.load.observe(sent.elapsed(), now);
                let f = if status.code() == Code::DeadlineExceeded && now >= deadline {
                    Failure::Timeout
                } else {
                    Failure::Status(status.code() as i32)
                };
                (f, status)
            }
        };
        let server_side = match failure {
            Failure::Status(c) => is_server_failure(c),
            _ => true,
        };
        cluster.report(&up, server_side, now);
        let attempts = tried.len() as u32;
        let may_retry = guards.retry.enabled && attempts < guards.retry.max_attempts && retry::retryable(failure, safe);
        if may_retry && guards.budget.try_withdraw(now) {
            let wait = retry::backoff(&guards.retry, attempts, &crate::balance::Rng::from_entropy());
            if now + wait < deadline {
                tracing::debug!(upstream = %up.name, ?failure, attempt = attempts, ?wait, "retrying on another instance");
                tokio::time::sleep(wait).await;
                last = Some((failure, status.message().to_owned()));
                continue;
            }
        }
        match failure {
            Failure::Connect => break (failure, format!("cannot reach {}: {}", up.name, status.message()), Code::Unavailable),
            _ => break (failure, status.message().to_owned(), status.code()),
        }
    };
    let failed = match failure {
        Failure::Status(c) => breaker.is_failure_code(c),
        Failure::Connect | Failure::RefusedStream | Failure::Timeout => true,
    };
    breaker.record(permit, failed, started.elapsed(), Instant::now());
    respond_error(session, code, &message, None, &[]).await?;
    Ok(if code == Code::Unavailable && matches!(failure, Failure::Connect) { Outcome::Unavailable } else { Outcome::Upstream(code) })
}

async fn reject(session: &mut Session, code: Code, message: &str, extra: &[(&'static str, String)]) -> pingora::Result<Outcome> {
    respond_error(session, code, message, None, extra).await?;
    Ok(Outcome::Rejected(code))
}

async fn answer(session: &mut Session, binding: &RestBinding, reply: &[u8]) -> pingora::Result<Outcome> {
    let output = binding.method.desc.output();
    let rendered = DynamicMessage::decode(output, reply)
        .map_err(|e| e.to_string())
        .and_then(|m| response::to_json(&m, binding.response_body.as_ref()));
    match rendered {
        Ok(json) => {
            respond_json(session, StatusCode::OK, json, &[]).await?;
            Ok(Outcome::Upstream(Code::Ok))
        }
        Err(e) => {
            tracing::error!(error = %e, method = %binding.method.grpc_path, "upstream reply does not match its descriptor");
            respond_error(session, Code::Internal, "the upstream's reply could not be rendered as JSON", None, &[]).await?;
            Ok(Outcome::Upstream(Code::Internal))
        }
    }
}

/// `application/json` (any parameters, any `+json` suffix). An empty body needs no type.
fn is_json(content_type: Option<&str>, session: &Session) -> bool {
    match content_type {
        Some(ct) => {
            let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
        }
        None => session.req_header().headers.get(http::header::CONTENT_LENGTH).is_none_or(|v| v.as_bytes() == b"0"),
    }
}

/// Metadata for the upstream call: the forwarded headers, with the trace context replaced by
/// the edge's own span (a child of the caller's, if it sent one).
fn forwarded_metadata(session: &Session) -> MetadataMap {
    let mut md = MetadataMap::new();
    for name in FORWARDED {
        if let Some(v) = header(session, name).and_then(|v| MetadataValue::try_from(v.as_str()).ok()) {
            md.insert(*name, v);
        }
    }
    let (tp, ts) = paymesh_core::telemetry::headers_of(&tracing::Span::current());
    for (k, v) in [("traceparent", tp), ("tracestate", ts)] {
        if let Some(v) = v.and_then(|v| MetadataValue::try_from(v.as_str()).ok()) {
            md.insert(k, v);
        }
    }
    md
}
