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
use crate::rest::RestCall;
use crate::shardkey;
use crate::state::EdgeState;

/// pingora replays at most this much of a request body it has already read.
const RETRY_BUFFER_LIMIT: usize = 64 * 1024;

/// Where a gRPC call is going.
#[derive(Debug, Clone)]
pub struct Target {
    pub service: std::sync::Arc<ServiceRoute>,
    /// The method, when the service's descriptors know it (else the call passes through).
    pub method: Option<std::sync::Arc<MethodRoute>>,
    pub shard: Option<ShardId>,
    pub timeout: Duration,
    /// The deadline is the client's (its `grpc-timeout` is shorter than the route's): running
    /// out of it is not the instance's failure.
    pub client_deadline: bool,
    /// The merchant the call names, if known (for per-merchant rate limits).
    pub merchant: Option<String>,
    /// Whether the call may be sent again after an UNAVAILABLE answer.
    pub safe: bool,
    /// The authenticated caller (`None` on a public route).
    pub identity: Option<std::sync::Arc<crate::auth::Identity>>,
}

impl Target {
    /// The metrics label of the call: its method path when the catalog knows the method,
    /// else one label per service, so client-chosen paths cannot grow the series.
    pub fn route_label(&self) -> &str {
        match &self.method {
            Some(m) => &m.grpc_path,
            None => &self.service.unknown_method_label,
        }
    }
}

/// Decides the target, or answers the call itself (trailers-only) and returns `None`.
/// `call` is the transcoded request when the call comes from the REST front. When the call
/// is refused once its route is known, `label` is set to its metrics label.
pub async fn prepare(
    state: &EdgeState,
    session: &mut Session,
    call: Option<RestCall>,
    label: &mut Option<String>,
) -> pingora::Result<Option<Target>> {
    let path = session.req_header().uri.path().to_owned();
    let from_rest = call.is_some();
    let (service, method, known, rest_identity) = match call {
        Some(c) => (c.service, Some(c.method), c.message, c.identity),
        None => {
            let Some((service, method)) = state.catalog.grpc_route(&path) else {
                let routed: Vec<&str> = state.catalog.services.keys().map(String::as_str).collect();
                let msg = format!("the edge has no route for {path}; routed services: {}", routed.join(", "));
                grpc_trailers_only(session, Code::Unimplemented, &msg).await?;
                return Ok(None);
            };
            (service, method, None, None)
        }
    };
    // The REST front has checked its caller already; a gRPC caller is checked here, before
    // its request is read.
    let identity = if from_rest {
        rest_identity
    } else {
        match crate::auth::check(state, &service, session).await {
            Ok(identity) => identity,
            Err(refusal) => {
                *label = Some(method.as_ref().map_or_else(|| service.unknown_method_label.clone(), |m| m.grpc_path.clone()));
                let mut h = pingora::http::ResponseHeader::build(http::StatusCode::OK, Some(4))?;
                h.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
                h.insert_header("grpc-status", (Code::Unauthenticated as i32).to_string())?;
                h.insert_header("grpc-message", crate::status::encode_grpc_message(&refusal.message()))?;
                h.insert_header(http::header::WWW_AUTHENTICATE, refusal.www_authenticate())?;
                session.write_response_header(Box::new(h), true).await?;
                return Ok(None);
            }
        }
    };
    let asked = header(session, "grpc-timeout").and_then(|t| parse_grpc_timeout(&t));
    let timeout = asked.map_or(service.timeout, |t| t.min(service.timeout));
    let client_deadline = asked.is_some_and(|t| t < service.timeout);
    let Some(method) = method else {
        if service.sharded {
            let msg = format!("{path} is not a method of {}", service.name);
            *label = Some(service.unknown_method_label.clone());
            grpc_trailers_only(session, Code::Unimplemented, &msg).await?;
            return Ok(None);
        }
        // A method the descriptors do not know: passed through, never repeated.
        return Ok(Some(Target { service, method: None, shard: None, timeout, client_deadline, merchant: None, safe: false, identity }));
    };
    let msg = match request_message(state, session, &method, known).await? {
        Ok(m) => m,
        Err((code, e)) => {
            *label = Some(method.grpc_path.clone());
            grpc_trailers_only(session, code, &e).await?;
            return Ok(None);
        }
    };
    let shard = if service.sharded {
        let shards = service.cluster.shards.unwrap_or(1);
        let hdr = |name: &str| header(session, name);
        match shardkey::shard_of(&method.keys, msg.as_ref(), &hdr, shards) {
            Ok(s) => Some(s),
            Err(e) => {
                *label = Some(method.grpc_path.clone());
                grpc_trailers_only(session, Code::InvalidArgument, &e.0).await?;
                return Ok(None);
            }
        }
    } else {
        None
    };
    let hdr = |name: &str| header(session, name);
    let merchant = shardkey::merchant_id(&method.keys, msg.as_ref(), &hdr);
    let safe = method.safe_to_repeat(msg.as_ref());
    Ok(Some(Target { service, method: Some(method), shard, timeout, client_deadline, merchant, safe, identity }))
}

/// The call's request message: the one the REST front decoded, or the first message of a
/// unary or server-streaming call's body (read into pingora's retry buffer, which then
/// replays it upstream) when the route needs it. `None` for client streams, which the edge
/// routes by metadata.
async fn request_message(
    state: &EdgeState,
    session: &mut Session,
    method: &MethodRoute,
    known: Option<DynamicMessage>,
) -> pingora::Result<Result<Option<DynamicMessage>, (Code, String)>> {
    if let Some(m) = known {
        return Ok(Ok(Some(m)));
    }
    // Only what routing, per-merchant limits or retry safety need: an unsharded route
    // without an idempotency key field is proxied without being read.
    let needed = !method.keys.is_empty() || method.idempotency_key.is_some();
    if method.desc.is_client_streaming() || !needed {
        return Ok(Ok(None));
    }
    let limit = state.config.max_body_bytes.min(RETRY_BUFFER_LIMIT);
    session.as_downstream_mut().enable_retry_buffering();
    let body = match read_body(session, limit, state.config.body_read_deadline).await {
        Ok(b) => b,
        Err(BodyError::TooLarge { limit }) => {
            return Ok(Err((
                Code::InvalidArgument,
                format!("request message is larger than the {limit} bytes the edge reads to route it"),
            )));
        }
        Err(BodyError::TooSlow { deadline }) => {
            return Ok(Err((Code::DeadlineExceeded, format!("the request message did not arrive within {deadline:?}; send it at once"))));
        }
        Err(BodyError::Read(e)) => return Err(e),
    };
    Ok(first_message(&body, method).map(Some).map_err(|e| (Code::InvalidArgument, e)))
}

/// Decodes the first length-prefixed message of a gRPC request body.
pub fn first_message(body: &[u8], method: &MethodRoute) -> Result<DynamicMessage, String> {
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
    // The unit is one ASCII letter; anything else (a multi-byte last character included,
    // which the fuzzer found panicking here) is not a timeout.
    if !v.is_ascii() {
        return None;
    }
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
        for bad in ["", "S", "5", "5s", "123456789S", "-1S", "5\u{e9}", "\u{e9}"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
