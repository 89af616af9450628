//! The gRPC side of the edge: decide where a gRPC call goes, then let pingora proxy it
//! byte for byte (trailers, trailers-only errors and streams included).
//!
//! The shard comes from a header when the client sends one, else from the request message:
//! for unary and server-streaming methods the edge reads the one request message (kept in
//! pingora's retry buffer, which then replays it upstream) and decodes it with the
//! method's descriptor.

use std::time::Duration;

use paymesh_core::ShardId;
use pingora::proxy::Session;
use prost_reflect::DynamicMessage;
use tonic::Code;

use crate::catalog::{MethodRoute, ServiceRoute};
use crate::io::{BodyError, grpc_trailers_only, header, read_body};
use crate::shardkey;
use crate::state::EdgeState;

/// pingora replays at most this much of a request body it has already read.
const RETRY_BUFFER_LIMIT: usize = 64 * 1024;

/// Where a gRPC call is going.
#[derive(Debug, Clone)]
pub struct Target {
    pub service: std::sync::Arc<ServiceRoute>,
    pub shard: Option<ShardId>,
    pub timeout: Duration,
    /// The merchant the call names, if known (for per-merchant rate limits).
    pub merchant: Option<String>,
    /// Whether the call may be sent again after an UNAVAILABLE answer.
    pub safe: bool,
}

/// Decides the target, or answers the call itself (trailers-only) and returns `None`.
pub async fn prepare(state: &EdgeState, session: &mut Session) -> pingora::Result<Option<Target>> {
    let path = session.req_header().uri.path().to_owned();
    let Some((service, method)) = state.catalog.grpc_route(&path) else {
        let routed: Vec<&str> = state.catalog.services.keys().map(String::as_str).collect();
        let msg = format!("the edge has no route for {path}; routed services: {}", routed.join(", "));
        grpc_trailers_only(session, Code::Unimplemented, &msg).await?;
        return Ok(None);
    };
    let timeout = header(session, "grpc-timeout").and_then(|t| parse_grpc_timeout(&t)).map_or(service.timeout, |t| t.min(service.timeout));
    let idempotent = method.as_ref().is_some_and(|m| m.idempotent);
    if !service.sharded {
        return Ok(Some(Target { service, shard: None, timeout, merchant: None, safe: idempotent }));
    }
    let Some(method) = method else {
        let msg = format!("{path} is not a method of {}", service.name);
        grpc_trailers_only(session, Code::Unimplemented, &msg).await?;
        return Ok(None);
    };
    match shard(state, session, &service, &method).await? {
        Ok((shard, msg)) => {
            let hdr = |name: &str| header(session, name);
            let merchant = shardkey::merchant_id(&method.keys, msg.as_ref(), &hdr);
            let safe = method.safe_to_repeat(msg.as_ref());
            Ok(Some(Target { service, shard: Some(shard), timeout, merchant, safe }))
        }
        Err(msg) => {
            grpc_trailers_only(session, Code::InvalidArgument, &msg).await?;
            Ok(None)
        }
    }
}

/// The call's shard, and its request message when the edge had to read it.
async fn shard(
    state: &EdgeState,
    session: &mut Session,
    service: &ServiceRoute,
    method: &MethodRoute,
) -> pingora::Result<Result<(ShardId, Option<DynamicMessage>), String>> {
    let shards = service.cluster.shards.unwrap_or(1);
    let hdr = |name: &str| header(session, name);
    if let Ok(s) = shardkey::shard_of(&method.keys, None, &hdr, shards) {
        return Ok(Ok((s, None)));
    }
    if method.desc.is_client_streaming() {
        let headers: Vec<&str> = method.keys.iter().filter_map(|k| k.header.as_deref()).collect();
        return Ok(Err(format!("{} streams its requests, so the edge routes it by metadata: send one of {headers:?}", method.grpc_path)));
    }
    let limit = state.config.max_body_bytes.min(RETRY_BUFFER_LIMIT);
    session.as_downstream_mut().enable_retry_buffering();
    let body = match read_body(session, limit).await {
        Ok(b) => b,
        Err(BodyError::TooLarge { limit }) => {
            return Ok(Err(format!("request message is larger than the {limit} bytes the edge reads to route it")));
        }
        Err(BodyError::Read(e)) => return Err(e),
    };
    let msg = match first_message(&body, method) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    let hdr = |name: &str| header(session, name);
    Ok(shardkey::shard_of(&method.keys, Some(&msg), &hdr, shards).map(|s| (s, Some(msg))).map_err(|e| e.0))
}

/// Decodes the first length-prefixed message of a gRPC request body.
fn first_message(body: &[u8], method: &MethodRoute) -> Result<DynamicMessage, String> {
    let header = body.get(..5).ok_or("the request has no complete gRPC message")?;
    if header[0] != 0 {
        return Err("compressed requests cannot be routed by their body; send the shard key as metadata or disable compression".into());
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let payload = body.get(5..5 + len).ok_or("the request's gRPC message is truncated")?;
    DynamicMessage::decode(method.desc.input(), payload)
        .map_err(|e| format!("the request is not a valid {}: {e}", method.desc.input().full_name()))
}

/// Parses a `grpc-timeout` header value: digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3_600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3_600)));
        assert_eq!(parse_grpc_timeout("10u"), Some(Duration::from_micros(10)));
        for bad in ["", "S", "5", "5s", "123456789S", "-1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
