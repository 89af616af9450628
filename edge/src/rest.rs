//! The REST side of the edge: match a `google.api.http` binding, transcode JSON to a request
//! message, route it to a healthy instance of its shard, call it over gRPC, and answer JSON.
//!
//! Rejections happen before any upstream is contacted: 404 (no route), 405 (wrong verb),
//! 415 (not JSON), 413 (too large), 400 (malformed JSON, unknown field, wrong type, missing
//! shard key).

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

/// Handles one REST request completely, including writing the response.
pub async fn handle(state: &EdgeState, session: &mut Session) -> pingora::Result<Outcome> {
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
    let limit = state.config.max_body_bytes;
    let body = match read_body(session, limit).await {
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
        Err(e) => return reject(session, Code::InvalidArgument, &e.0).await,
    };
    let service = &binding.service;
    let shard = if service.sharded {
        let hdr = |name: &str| header(session, name);
        match shardkey::shard_of(&binding.method.keys, Some(&msg), &hdr, service.cluster.shards.unwrap_or(1)) {
            Ok(s) => Some(s),
            Err(e) => return reject(session, Code::InvalidArgument, &e.0).await,
        }
    } else {
        None
    };

    let metadata = forwarded_metadata(session);
    let encoded = Bytes::from(msg.encode_to_vec());
    let deadline = Instant::now() + service.timeout;
    let mut tried = Vec::new();
    let mut last_connect_error = None;
    loop {
        let up = match service.cluster.pick(shard, &tried) {
            Ok(up) => up,
            Err(no) => {
                let msg = match last_connect_error.take() {
                    Some(e) => format!("{no}: every instance refused the connection (last: {e})"),
                    None => no.to_string(),
                };
                respond_error(session, Code::Unavailable, &msg, None, &[]).await?;
                return Ok(Outcome::Unavailable);
            }
        };
        tried.push(up.id);
        let channel = upstream::channel(&up, state.config.connect_timeout);
        let in_flight = up.load.start();
        let started = Instant::now();
        let remaining = deadline.saturating_duration_since(started);
        let result = upstream::unary(channel, &binding.method.grpc_path, encoded.clone(), metadata.clone(), remaining).await;
        drop(in_flight);
        match result {
            Ok((_md, reply)) => {
                up.load.observe(started.elapsed(), Instant::now());
                up.health.record_success();
                return answer(session, binding, &reply).await;
            }
            Err(CallError::Connect(status)) => {
                // Nothing was sent: safe to try another instance of the same shard.
                if up.health.record_connect_failure(&state.config.health) {
                    tracing::warn!(upstream = %up.name, "ejected after consecutive connection failures");
                }
                last_connect_error = Some(status.message().to_owned());
            }
            Err(CallError::Status(status)) => {
                up.load.observe(started.elapsed(), Instant::now());
                if status.code() != Code::Unavailable {
                    up.health.record_success();
                }
                respond_error(session, status.code(), status.message(), None, &[]).await?;
                return Ok(Outcome::Upstream(status.code()));
            }
        }
    }
}

async fn reject(session: &mut Session, code: Code, message: &str) -> pingora::Result<Outcome> {
    respond_error(session, code, message, None, &[]).await?;
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

fn forwarded_metadata(session: &Session) -> MetadataMap {
    let mut md = MetadataMap::new();
    for name in FORWARDED {
        if let Some(v) = header(session, name).and_then(|v| MetadataValue::try_from(v.as_str()).ok()) {
            md.insert(*name, v);
        }
    }
    md
}
