//! Server streaming over REST: each message of the gRPC stream is written to the client as
//! it arrives (never the whole stream buffered), as
//!
//! - a JSON array (`[{...},{...}]`, Envoy's transcoder), the default;
//! - NDJSON, one message per line (`application/x-ndjson`), when the client's `Accept` asks
//!   for it or `[edge.transcoding] stream_format = "ndjson"`;
//! - raw bytes for a stream of `google.api.HttpBody` (a download), with the first message's
//!   content type.
//!
//! An error before the first message is an ordinary JSON error with its HTTP status; an
//! empty stream is `[]` (or an empty body). An error after the first message cannot change
//! the status any more: the array or NDJSON stream ends with `{"error": {code, message,
//! details}}`; a raw download is cut off (no final chunk), so the client sees it incomplete.

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use paymesh_core::config::StreamFormat;
use pingora::protocols::http::HttpTask;
use pingora::protocols::http::ServerSession as HttpSession;
use pingora::proxy::Session;
use pingora::proxy::subrequest::{BodyMode, Ctx as SubrequestCtx};
use prost_reflect::{DescriptorPool, DynamicMessage};
use tonic::Code;

use super::{Outcome, Reply, RestCall, answer_error, head_only, metadata};
use crate::catalog::RestBinding;
use crate::transcode::response;

/// How the messages of a stream are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Array,
    Ndjson,
    /// `google.api.HttpBody` messages: their data, back to back.
    Raw,
}

impl Format {
    pub fn of(binding: &RestBinding, accept: Option<&str>, default: StreamFormat) -> Self {
        let output = binding.method.desc.output();
        if binding.response_body.is_none() && output.full_name() == response::HTTP_BODY {
            return Self::Raw;
        }
        let asks =
            |ty: &str| accept.is_some_and(|a| a.split(',').any(|p| p.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(ty)));
        if asks("application/x-ndjson") || asks("application/jsonl") {
            return Self::Ndjson;
        }
        if asks("application/json") {
            return Self::Array;
        }
        match default {
            StreamFormat::Array => Self::Array,
            StreamFormat::Ndjson => Self::Ndjson,
        }
    }
}

/// Runs a server-streaming call through the gRPC path, writing its messages to the client
/// as they come.
pub async fn relay(
    session: &mut Session,
    binding: &RestBinding,
    pool: &DescriptorPool,
    format: Format,
    head: Vec<u8>,
    call: RestCall,
    frame: Bytes,
) -> pingora::Result<Outcome> {
    let mut grpc_request = HttpSession::new_http1(Box::new(head_only::HeadOnly::new(head)));
    grpc_request.read_request().await?;
    let Some(spawner) = session.subrequest_spawner.as_ref() else {
        return Err(pingora::Error::explain(pingora::ErrorType::InternalError, "the proxy does not allow subrequests"));
    };
    let ctx = SubrequestCtx::builder().body_mode(BodyMode::ExpectBody).user_ctx(Box::new(Some(call))).build();
    let (subrequest, handle) = spawner.create_subrequest(&grpc_request, ctx);
    let (tx, rx) = (handle.tx, handle.rx);
    let writer = Writer { session, binding, pool, format, started: false, messages: 0, pending: BytesMut::new(), reply: Reply::default() };
    // Both run in this task. When the writer stops early (the client left), it drops the
    // receiver: the subrequest's next send fails and it ends, resetting the upstream stream.
    let pump = async move {
        if tx.send(HttpTask::Body(Some(frame), true)).await.is_err() {
            return Err(pingora::Error::explain(pingora::ErrorType::InternalError, "the gRPC path ended before reading the request"));
        }
        writer.pump(rx).await
    };
    let ((), outcome) = tokio::join!(subrequest.run(), pump);
    outcome
}

struct Writer<'a> {
    session: &'a mut Session,
    binding: &'a RestBinding,
    pool: &'a DescriptorPool,
    format: Format,
    /// The response head is written.
    started: bool,
    messages: usize,
    /// Bytes of a gRPC frame not complete yet.
    pending: BytesMut,
    reply: Reply,
}

impl Writer<'_> {
    async fn pump(mut self, mut rx: tokio::sync::mpsc::Receiver<HttpTask>) -> pingora::Result<Outcome> {
        while let Some(task) = rx.recv().await {
            match task {
                HttpTask::Header(h, end) => {
                    self.reply.take_head(&h.headers, false);
                    if end {
                        break;
                    }
                }
                HttpTask::Body(Some(b), _) | HttpTask::UpgradedBody(Some(b), _) => {
                    self.pending.extend_from_slice(&b);
                    while let Some(payload) = self.next_frame() {
                        match payload {
                            Ok(p) => self.message(&p).await?,
                            Err(why) => {
                                self.reply.broken = Some(why);
                                return self.finish().await;
                            }
                        }
                    }
                }
                HttpTask::Body(None, _) | HttpTask::UpgradedBody(None, _) | HttpTask::Trailer(None) => {}
                HttpTask::Trailer(Some(t)) => self.reply.take_head(&t, true),
                HttpTask::Done => break,
                HttpTask::Failed(e) => {
                    self.reply.broken = Some(format!("the call failed: {e}"));
                    break;
                }
            }
        }
        self.finish().await
    }

    /// The next complete frame's payload, if one is buffered.
    fn next_frame(&mut self) -> Option<Result<Bytes, String>> {
        let header = self.pending.get(..5)?;
        if header[0] != 0 {
            return Some(Err("the upstream compressed its answer although the edge did not offer compression".into()));
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        // One message is held whole to render it: the same bound as a unary answer, so an
        // upstream announcing a huge frame cannot make the edge buffer it.
        if len > super::MAX_RESPONSE_BYTES {
            return Some(Err(format!(
                "the upstream streamed a message larger than the {} bytes the edge renders",
                super::MAX_RESPONSE_BYTES
            )));
        }
        if self.pending.len() < 5 + len {
            return None;
        }
        self.pending.advance(5);
        Some(Ok(self.pending.split_to(len).freeze()))
    }

    async fn message(&mut self, payload: &[u8]) -> pingora::Result<()> {
        let output = self.binding.method.desc.output();
        let msg = match DynamicMessage::decode(output, payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, method = %self.binding.method.grpc_path, "a streamed message does not match its descriptor");
                self.reply.broken = Some("the upstream's reply could not be rendered".into());
                return Ok(());
            }
        };
        let (content_type, piece) = match self.format {
            Format::Raw => response::http_body_of(&msg, None).map(|b| response::raw(&b)).unwrap_or_default(),
            Format::Array | Format::Ndjson => match response::to_json(&msg, self.binding.response_body.as_deref()) {
                Ok(json) => ("application/json".to_owned(), json),
                Err(e) => {
                    tracing::error!(error = %e, method = %self.binding.method.grpc_path, "a streamed message cannot be rendered");
                    return Ok(());
                }
            },
        };
        if !self.started {
            self.start(&content_type).await?;
        }
        let mut out = Vec::with_capacity(piece.len() + 2);
        match self.format {
            Format::Array => out.push(if self.messages == 0 { b'[' } else { b',' }),
            Format::Ndjson | Format::Raw => {}
        }
        out.extend_from_slice(&piece);
        if self.format == Format::Ndjson {
            out.push(b'\n');
        }
        self.messages += 1;
        if out.is_empty() {
            return Ok(());
        }
        self.session.write_response_body(Some(Bytes::from(out)), false).await
    }

    /// Writes the response head: 200, the stream's content type, chunked on HTTP/1.1.
    async fn start(&mut self, content_type: &str) -> pingora::Result<()> {
        let content_type = match self.format {
            Format::Array => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Raw => content_type,
        };
        let mut h = pingora::http::ResponseHeader::build(StatusCode::OK, Some(2 + self.reply.headers.len()))?;
        h.insert_header(http::header::CONTENT_TYPE, content_type)?;
        if self.session.req_header().version == http::Version::HTTP_11 {
            h.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
        }
        for (k, v) in &self.reply.headers {
            h.append_header(k.clone(), v.as_str())?;
        }
        self.session.write_response_header(Box::new(h), false).await?;
        self.started = true;
        Ok(())
    }

    async fn finish(mut self) -> pingora::Result<Outcome> {
        // Bytes of a message that never completed: the stream was cut, whatever its status.
        if self.reply.broken.is_none() && !self.pending.is_empty() {
            self.reply.broken = Some("the upstream's stream ended inside a message".into());
        }
        let code = match (&self.reply.broken, self.reply.status) {
            (Some(_), _) => Code::Unavailable,
            (None, None) => Code::Internal,
            (None, Some(c)) => Code::from_i32(c),
        };
        let message = match (&self.reply.broken, self.reply.status) {
            (Some(why), _) => why.clone(),
            (None, None) => "the upstream's answer carried no grpc-status".to_owned(),
            (None, Some(_)) => self.reply.message.clone().unwrap_or_default(),
        };
        let details = self.reply.details.as_deref().map(|d| metadata::status_details(self.pool, d)).unwrap_or_default();
        if !self.started {
            if code != Code::Ok {
                let headers = std::mem::take(&mut self.reply.headers);
                answer_error(self.session, code, &message, details, &headers).await?;
                return Ok(Outcome::Answered(code));
            }
            // An empty stream: `[]`, or an empty body.
            self.start("application/octet-stream").await?;
        }
        let tail: Vec<u8> = match (self.format, code) {
            (Format::Raw, Code::Ok) => Vec::new(),
            (Format::Raw, _) => {
                // No final chunk: the client sees the download incomplete.
                return Err(pingora::Error::explain(pingora::ErrorType::HTTPStatus(502), format!("the stream failed: {message}")));
            }
            (Format::Array, Code::Ok) => {
                if self.messages == 0 {
                    b"[]".to_vec()
                } else {
                    b"]".to_vec()
                }
            }
            (Format::Ndjson, Code::Ok) => Vec::new(),
            (Format::Array | Format::Ndjson, _) => {
                let error = serde_json::json!({ "error": { "code": code as i32, "message": message, "details": details } });
                let mut out = Vec::new();
                if self.format == Format::Array {
                    out.push(if self.messages == 0 { b'[' } else { b',' });
                }
                out.extend_from_slice(error.to_string().as_bytes());
                out.extend_from_slice(if self.format == Format::Array { b"]" } else { b"\n" });
                out
            }
        };
        self.session.write_response_body(Some(Bytes::from(tail)), true).await?;
        Ok(Outcome::Answered(code))
    }
}
