//! The REST front of the edge: a request/response transformation around the gRPC path, as
//! Envoy's transcoder filter sits in front of its router.
//!
//! A REST request is matched to a `google.api.http` binding and transcoded to its request
//! message; then it runs as a gRPC call through the very same proxy code as any gRPC
//! client's call (a pingora subrequest carrying the encoded message): routing, shard pick,
//! rate limits, breaker, concurrency slots, deadlines, retries, metrics and upstream
//! connections exist once. The gRPC answer (headers, message, trailers) is rendered back as
//! JSON with the HTTP status of its gRPC code.
//!
//! Rejections made here, before the gRPC path runs: 404 (no route), 405 (wrong verb),
//! 415 (not JSON), 413 (too large), 400 (malformed JSON, unknown field, wrong type).

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use http::StatusCode;
use pingora::protocols::http::HttpTask;
use pingora::protocols::http::ServerSession as HttpSession;
use pingora::proxy::Session;
use pingora::proxy::subrequest::{BodyMode, Ctx as SubrequestCtx};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use tonic::Code;

use crate::catalog::{BodyRule, MethodRoute, RestBinding, ServiceRoute};
use crate::io::{BodyError, declared_length, header, linger, read_body, respond_error};
use crate::state::EdgeState;
use crate::transcode::{request, response};

mod head_only;
mod metadata;
mod stream;

/// The most response bytes the edge buffers to render one answer as JSON.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Response headers of the gRPC answer that a REST client also gets.
const PASSED_BACK: &[&str] = &["retry-after", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"];

/// What happened, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Refused by the REST front before the gRPC path ran.
    Rejected(Code),
    /// Answered by the gRPC path (the edge's guards or an upstream) with this code.
    Answered(Code),
    /// The client went away before the answer; the call was cancelled.
    ClientGone,
}

/// A transcoded REST call handed to the gRPC path (the subrequest's user context).
#[derive(Debug)]
pub struct RestCall {
    pub service: Arc<ServiceRoute>,
    pub method: Arc<MethodRoute>,
    /// The request message, already decoded, so the gRPC path need not decode it again.
    pub message: Option<DynamicMessage>,
    /// Length of the gRPC frame the subrequest's body carries.
    pub frame_len: usize,
    /// The request's span (the gRPC path continues it instead of opening its own).
    pub span: tracing::Span,
    /// When the REST request arrived: the call's clock (deadline, latency) starts there.
    pub started: Instant,
    /// The caller, verified by the REST front (`None` on a public route).
    pub identity: Option<std::sync::Arc<crate::auth::Identity>>,
    /// The configuration the REST request started with (the gRPC path keeps it).
    pub state: Arc<EdgeState>,
}

/// The REST call a subrequest carries, if this session is one.
pub fn take_call(session: &mut Session) -> Option<RestCall> {
    let ctx = session.subrequest_ctx.as_mut()?.user_ctx_mut()?;
    ctx.downcast_mut::<Option<RestCall>>()?.take()
}

/// Handles one REST request completely, including writing the response. Requests refused
/// here are recorded in the request metrics here; the rest by the gRPC path.
pub async fn handle(state: &Arc<EdgeState>, session: &mut Session, span: &tracing::Span) -> pingora::Result<Outcome> {
    let started = Instant::now();
    let mut route = None;
    let outcome = exchange(state, session, span, &mut route, started).await?;
    // The gRPC path records the calls it ran, except those whose client left (their
    // subrequest is dropped before it records anything).
    let code = match outcome {
        Outcome::Rejected(code) => Some(code),
        Outcome::ClientGone => Some(Code::Cancelled),
        Outcome::Answered(_) => None,
    };
    if let Some(code) = code {
        state.requests.record("rest", route.unwrap_or("unmatched"), None, crate::metrics::code_name(code as i32), started.elapsed());
    }
    Ok(outcome)
}

async fn exchange<'s>(
    state: &'s Arc<EdgeState>,
    session: &mut Session,
    span: &tracing::Span,
    route: &mut Option<&'s str>,
    started: Instant,
) -> pingora::Result<Outcome> {
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
    *route = Some(binding.method.grpc_path.as_str());
    span.record("route", binding.method.grpc_path.as_str());

    // Who is calling, before anything of the request is read.
    let identity = match crate::auth::check(state, &binding.service, session).await {
        Ok(identity) => identity,
        Err(refusal) => {
            let extra = [("www-authenticate", refusal.www_authenticate()), ("connection", "close".into())];
            respond_error(session, Code::Unauthenticated, &refusal.message(), Some(StatusCode::UNAUTHORIZED), &extra).await?;
            // A body the client is still sending is read and dropped for a moment, so it
            // can read the 401 rather than have the connection reset under it.
            if declared_length(session).is_some_and(|n| n > 0) || header(session, "transfer-encoding").is_some() {
                linger(session).await;
            }
            return Ok(Outcome::Rejected(Code::Unauthenticated));
        }
    };

    let takes_body = !matches!(binding.body, BodyRule::None);
    let content_type = header(session, "content-type");
    // An HttpBody request takes any body as it is; every other body is JSON.
    if takes_body && !binding.raw_request() && !is_json(content_type.as_deref()) {
        let msg = "send the request body as JSON with Content-Type: application/json";
        respond_error(session, Code::InvalidArgument, msg, Some(StatusCode::UNSUPPORTED_MEDIA_TYPE), &[]).await?;
        return Ok(Outcome::Rejected(Code::InvalidArgument));
    }
    // A client that asked to be told before sending its body (curl does for bodies over
    // 1 KiB) hears "100 Continue" once the request passed the checks so far, and is refused
    // (413) before sending a body that is too large.
    let withheld_continue = expects_continue(session) && declared_length(session).is_some_and(|n| n > state.config.max_body_bytes);
    if expects_continue(session) && !withheld_continue {
        session.as_downstream_mut().write_continue_response().await?;
    }
    let body = match read_body(session, state.config.max_body_bytes, state.config.body_read_deadline).await {
        Ok(b) => b,
        Err(BodyError::TooLarge { limit }) => {
            let msg = format!("request body is larger than the limit of {limit} bytes");
            respond_error(session, Code::InvalidArgument, &msg, Some(StatusCode::PAYLOAD_TOO_LARGE), &[("connection", "close".into())])
                .await?;
            // A client that waited for "100 Continue" and did not get it sends no body.
            if withheld_continue {
                session.set_keepalive(None);
            } else {
                linger(session).await;
            }
            return Ok(Outcome::Rejected(Code::InvalidArgument));
        }
        Err(BodyError::TooSlow { deadline }) => {
            let msg = format!("the request body did not arrive within {deadline:?}; send it at once");
            respond_error(session, Code::DeadlineExceeded, &msg, Some(StatusCode::REQUEST_TIMEOUT), &[("connection", "close".into())])
                .await?;
            // Read (and drop) what the client is still sending for a moment, so it can read
            // the 408 rather than have the connection reset under it.
            linger(session).await;
            return Ok(Outcome::Rejected(Code::DeadlineExceeded));
        }
        Err(BodyError::Read(e)) => return Err(e),
    };
    // The client has sent its request; it may now rightly be silent until the answer.
    if let Some(armed) = crate::client_io::armed_of(session.as_downstream().stream()) {
        armed.set(false);
    }
    let message = match request::build(binding, &vars, uri.query(), &body, content_type.as_deref(), &state.config.transcoding) {
        Ok(m) => m,
        Err(e) => {
            respond_error(session, Code::InvalidArgument, &e.0, None, &[]).await?;
            return Ok(Outcome::Rejected(Code::InvalidArgument));
        }
    };
    let frame = grpc_frame(&message);
    let call = RestCall {
        service: binding.service.clone(),
        method: binding.method.clone(),
        message: Some(message),
        frame_len: frame.len(),
        span: span.clone(),
        started,
        identity,
        state: state.clone(),
    };
    let head = grpc_request_head(session, &call, &state.config.transcoding.request_headers);
    if binding.method.desc.is_server_streaming() {
        let format = stream::Format::of(binding, header(session, "accept").as_deref(), state.config.transcoding.stream_format);
        return stream::relay(session, binding, &state.catalog.pool, format, head, call, frame).await;
    }
    let reply = match call_grpc_path(session, head, call, frame).await? {
        Some(reply) => reply,
        None => return Ok(Outcome::ClientGone),
    };
    render(session, binding, &state.catalog.pool, reply).await
}

/// Runs the call through the gRPC path and collects its answer; `None` when the client
/// went away first (the call, and any retry of it, is then cancelled).
async fn call_grpc_path(session: &mut Session, head: Vec<u8>, call: RestCall, frame: Bytes) -> pingora::Result<Option<Reply>> {
    let Some(spawner) = session.subrequest_spawner.as_ref() else {
        return Err(pingora::Error::explain(pingora::ErrorType::InternalError, "the proxy does not allow subrequests"));
    };
    // The subrequest starts from a request head; the gRPC one is written here, so it does
    // not depend on the client's HTTP version.
    let mut grpc_request = HttpSession::new_http1(Box::new(head_only::HeadOnly::new(head)));
    grpc_request.read_request().await?;
    let ctx = SubrequestCtx::builder().body_mode(BodyMode::ExpectBody).user_ctx(Box::new(Some(call))).build();
    let (subrequest, handle) = spawner.create_subrequest(&grpc_request, ctx);
    // The subrequest runs in this task, next to the collection of its answer: no hop to
    // another thread, and dropping it (the client went away) resets the upstream stream and
    // stops any retry.
    let call = async move {
        let sent = handle.tx.send(HttpTask::Body(Some(frame), true)).await.is_ok();
        // `collect` owns the receiver: when it stops early (an oversized answer), the
        // subrequest's next send fails and it ends instead of waiting for a reader.
        let ((), reply) = tokio::join!(subrequest.run(), collect(handle.rx));
        (sent, reply)
    };
    tokio::pin!(call);
    let mut watch_client = true;
    let (sent, reply) = loop {
        tokio::select! {
            done = &mut call => break done,
            gone = session.as_downstream_mut().read_body_or_idle(true), if watch_client => match gone {
                // The connection closed or broke: the client is gone.
                Err(e) if matches!(e.etype(), pingora::ErrorType::ConnectionClosed | pingora::ErrorType::ReadError) => {
                    return Ok(None);
                }
                // Anything else (bytes of a pipelined next request, which the read consumed):
                // the client is still there. Stop watching, and do not reuse the connection.
                _ => {
                    watch_client = false;
                    session.set_keepalive(None);
                }
            },
        }
    };
    if !sent {
        return Err(pingora::Error::explain(pingora::ErrorType::InternalError, "the gRPC path ended before reading the request"));
    }
    Ok(Some(reply))
}

/// The HTTP/1.1 head of the gRPC request a REST call becomes: `POST /pkg.Service/Method`,
/// `application/grpc`, the frame's length, and the client's headers that
/// [`metadata::request_metadata`] passes (the allowlist, trace context, the deadline and
/// the route's routing headers).
fn grpc_request_head(session: &Session, call: &RestCall, allow: &[String]) -> Vec<u8> {
    let req = session.req_header();
    let routing = |name: &str| {
        call.method.keys.iter().any(|k| k.header.as_deref() == Some(name)) || call.service.guards.client_header() == Some(name)
    };
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"POST ");
    head.extend_from_slice(call.method.grpc_path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nhost: paymesh-edge\r\ncontent-type: application/grpc\r\nte: trailers\r\ncontent-length: ");
    head.extend_from_slice(call.frame_len.to_string().as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &req.headers {
        let Some(name) = metadata::request_metadata(name.as_str(), allow, routing) else {
            continue;
        };
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// A gRPC answer as the gRPC path delivered it.
#[derive(Debug, Default)]
struct Reply {
    /// The REST headers of the answer's metadata and trailers ([`metadata::response_header`]).
    headers: Vec<(String, String)>,
    status: Option<i32>,
    message: Option<String>,
    /// `details` of the google.rpc.Status in `grpc-status-details-bin`.
    details: Option<String>,
    body: BytesMut,
    /// Why the answer is unusable, if it is.
    broken: Option<String>,
}

impl Reply {
    fn take_head(&mut self, headers: &http::HeaderMap, trailer: bool) {
        if let Some(code) = headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()) {
            self.status = Some(code);
            self.message = headers.get("grpc-message").and_then(|v| v.to_str().ok()).map(decode_grpc_message);
            self.details = headers.get("grpc-status-details-bin").and_then(|v| v.to_str().ok()).map(str::to_owned);
        }
        for (name, value) in headers {
            if let (Some(rest_name), Ok(v)) = (metadata::response_header(name.as_str(), trailer, PASSED_BACK), value.to_str()) {
                self.headers.push((rest_name, v.to_owned()));
            }
        }
    }
}

async fn collect(mut rx: tokio::sync::mpsc::Receiver<HttpTask>) -> Reply {
    let mut reply = Reply::default();
    while let Some(task) = rx.recv().await {
        match task {
            HttpTask::Header(h, end) => {
                reply.take_head(&h.headers, false);
                if end {
                    break;
                }
            }
            HttpTask::Body(Some(b), _) | HttpTask::UpgradedBody(Some(b), _) => {
                if reply.body.len() + b.len() > MAX_RESPONSE_BYTES {
                    reply.broken = Some(format!("the upstream's answer is larger than the {MAX_RESPONSE_BYTES} bytes the edge renders"));
                    break;
                }
                reply.body.extend_from_slice(&b);
            }
            HttpTask::Body(None, _) | HttpTask::UpgradedBody(None, _) => {}
            HttpTask::Trailer(Some(t)) => reply.take_head(&t, true),
            HttpTask::Trailer(None) => {}
            HttpTask::Done => break,
            HttpTask::Failed(e) => {
                reply.broken = Some(format!("the call failed: {e}"));
                break;
            }
        }
    }
    reply
}

async fn render(session: &mut Session, binding: &RestBinding, pool: &DescriptorPool, reply: Reply) -> pingora::Result<Outcome> {
    let Reply { headers, status, message, details, body, broken } = reply;
    let code = match (broken, status) {
        (Some(why), _) => {
            answer_error(session, Code::Unavailable, &why, Vec::new(), &headers).await?;
            return Ok(Outcome::Answered(Code::Unavailable));
        }
        (None, None) => {
            answer_error(session, Code::Internal, "the upstream's answer carried no grpc-status", Vec::new(), &headers).await?;
            return Ok(Outcome::Answered(Code::Internal));
        }
        (None, Some(code)) => Code::from_i32(code),
    };
    if code != Code::Ok {
        let details = details.map(|d| metadata::status_details(pool, &d)).unwrap_or_default();
        answer_error(session, code, message.as_deref().unwrap_or(""), details, &headers).await?;
        return Ok(Outcome::Answered(code));
    }
    let rendered = first_message(&body)
        .and_then(|payload| DynamicMessage::decode(binding.method.desc.output(), payload).map_err(|e| e.to_string()))
        .and_then(|m| response::render(&m, binding.response_body.as_deref()));
    match rendered {
        Ok((content_type, bytes)) => {
            answer(session, StatusCode::OK, &content_type, bytes, &headers).await?;
            Ok(Outcome::Answered(Code::Ok))
        }
        Err(e) => {
            tracing::error!(error = %e, method = %binding.method.grpc_path, "upstream reply does not match its descriptor");
            answer_error(session, Code::Internal, "the upstream's reply could not be rendered", Vec::new(), &[]).await?;
            Ok(Outcome::Answered(Code::Internal))
        }
    }
}

/// Writes a complete answer with the headers of the gRPC answer.
async fn answer(
    session: &mut Session,
    status: StatusCode,
    content_type: &str,
    body: Vec<u8>,
    headers: &[(String, String)],
) -> pingora::Result<()> {
    let mut h = pingora::http::ResponseHeader::build(status, Some(2 + headers.len()))?;
    h.insert_header(http::header::CONTENT_TYPE, content_type)?;
    h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    for (k, v) in headers {
        h.append_header(k.clone(), v.as_str())?;
    }
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(Bytes::from(body)), true).await
}

/// A `google.rpc.Status`-shaped JSON error with the HTTP status of `code`.
async fn answer_error(
    session: &mut Session,
    code: Code,
    message: &str,
    details: Vec<serde_json::Value>,
    headers: &[(String, String)],
) -> pingora::Result<()> {
    let body = crate::status::json_error(code, message, details);
    answer(session, crate::status::http_status(code), "application/json", body, headers).await
}

/// A message as one uncompressed gRPC frame.
fn grpc_frame(message: &DynamicMessage) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    message.encode_raw(&mut buf);
    buf.freeze()
}

/// The payload of the first gRPC frame of a response body.
fn first_message(body: &[u8]) -> Result<&[u8], String> {
    let header = body.get(..5).ok_or("the upstream answered OK without a message")?;
    if header[0] != 0 {
        return Err("the upstream compressed its answer although the edge did not offer compression".into());
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    body.get(5..5 + len).ok_or_else(|| "the upstream's answer is truncated".to_owned())
}

/// Undoes the percent-encoding of a `grpc-message` value.
fn decode_grpc_message(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = v.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `Expect: 100-continue` from an HTTP/1.1 client (HTTP/1.0 has no 100 responses).
fn expects_continue(session: &Session) -> bool {
    let req = session.req_header();
    req.version != http::Version::HTTP_10
        && req.headers.get(http::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// `application/json` (any parameters, any `+json` suffix). An empty body needs no type.
fn is_json(content_type: Option<&str>) -> bool {
    match content_type {
        Some(ct) => {
            let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
        }
        // No declared type: read as JSON, as Envoy's transcoder and grpc-gateway do.
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_round_trip_through_percent_encoding() {
        for m in ["plain", "shard 1: 100% down\né", "%zz stays", ""] {
            assert_eq!(decode_grpc_message(&crate::status::encode_grpc_message(m)), m);
        }
        assert_eq!(decode_grpc_message("%zz"), "%zz");
    }
}
