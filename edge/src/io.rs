//! Small helpers for reading requests and writing responses on a pingora session.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use tonic::Code;

use crate::status::{encode_grpc_message, http_status, json_error};

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    TooLarge {
        limit: usize,
    },
    /// The client did not send the whole body within the deadline.
    TooSlow {
        deadline: Duration,
    },
    Read(Box<pingora::Error>),
}

/// Reads the whole request body, refusing more than `limit` bytes (by Content-Length
/// before reading anything, or while reading) and bodies that take longer than `deadline`
/// to arrive (a client trickling bytes cannot hold the edge).
pub async fn read_body(session: &mut Session, limit: usize, deadline: Duration) -> Result<Bytes, BodyError> {
    if declared_length(session).is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge { limit });
    }
    let read = async {
        let mut buf = BytesMut::new();
        while let Some(chunk) = session.read_request_body().await.map_err(BodyError::Read)? {
            if buf.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge { limit });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(deadline, read).await.unwrap_or(Err(BodyError::TooSlow { deadline }))
}

/// The body length the request declares (`Content-Length`), if any.
pub fn declared_length(session: &Session) -> Option<usize> {
    session.req_header().headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

/// The most a refused request's body is read (and discarded) so its client can read the
/// answer: closing a connection with unread data resets it, and the client, still
/// writing, sees a broken pipe instead of the 413 (nginx calls this a lingering close).
const LINGER_BYTES: usize = 16 * 1024 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(2);

/// After an early answer: reads and discards what is left of the request body (bounded in
/// bytes and time), and marks the connection as not reusable.
pub async fn linger(session: &mut Session) {
    session.set_keepalive(None);
    let drain = async {
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            match session.read_request_body().await {
                Ok(Some(chunk)) => discarded += chunk.len(),
                Ok(None) | Err(_) => break,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// Writes a complete JSON response.
pub async fn respond_json(
    session: &mut Session,
    status: StatusCode,
    body: Vec<u8>,
    extra: &[(&'static str, String)],
) -> pingora::Result<()> {
    let mut h = ResponseHeader::build(status, Some(3 + extra.len()))?;
    h.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    for (k, v) in extra {
        h.insert_header(*k, v.as_str())?;
    }
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(Bytes::from(body)), true).await
}

/// Writes a `google.rpc.Status`-shaped JSON error with the HTTP status for `code`, or
/// `http` when given (for edge-side rejections such as 404, 405, 413, 415).
pub async fn respond_error(
    session: &mut Session,
    code: Code,
    message: &str,
    http: Option<StatusCode>,
    extra: &[(&'static str, String)],
) -> pingora::Result<()> {
    let status = http.unwrap_or_else(|| http_status(code));
    respond_json(session, status, json_error(code, message, Vec::new()), extra).await
}

/// Writes a trailers-only gRPC response carrying `code` and `message`.
pub async fn grpc_trailers_only(session: &mut Session, code: Code, message: &str) -> pingora::Result<()> {
    let mut h = ResponseHeader::build(StatusCode::OK, Some(3))?;
    h.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
    h.insert_header("grpc-status", (code as i32).to_string())?;
    h.insert_header("grpc-message", encode_grpc_message(message))?;
    session.write_response_header(Box::new(h), true).await
}

/// A request header as text, if present and valid.
pub fn header(session: &Session, name: &str) -> Option<String> {
    session.req_header().headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}
