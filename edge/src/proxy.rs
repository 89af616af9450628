//! The one `ProxyHttp` implementation. Its phases hand off to modules: `request_filter` to
//! [`crate::rest`] (answered in full) or [`crate::grpc`] (target chosen), `upstream_peer` to
//! the cluster's balancer, `fail_to_connect` to passive health and retry, `fail_to_proxy`
//! to a gRPC-shaped error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};
use tonic::Code;

use crate::balance::InFlight;
use crate::cluster::Upstream;
use crate::grpc::{self, Target};
use crate::io::{grpc_trailers_only, respond_error};
use crate::rest;
use crate::state::EdgeState;

/// How many HTTP/2 streams share one upstream connection.
const MAX_H2_STREAMS: usize = 256;
/// How long an idle upstream connection is kept.
const UPSTREAM_IDLE: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct EdgeProxy {
    pub state: Arc<EdgeState>,
}

/// Per-request state.
#[derive(Debug, Default)]
pub struct RequestCtx {
    grpc: Option<Target>,
    tried: Vec<usize>,
    attempt: Option<Attempt>,
    /// Why no upstream could be picked, for the error answer.
    no_endpoint: Option<String>,
}

#[derive(Debug)]
struct Attempt {
    upstream: Arc<Upstream>,
    _in_flight: InFlight,
    started: Instant,
}

fn is_grpc(session: &Session) -> bool {
    session.req_header().headers.get(http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<bool> {
        if is_grpc(session) {
            match grpc::prepare(&self.state, session).await? {
                Some(target) => {
                    ctx.grpc = Some(target);
                    Ok(false)
                }
                None => Ok(true),
            }
        } else {
            let outcome = rest::handle(&self.state, session).await?;
            tracing::debug!(?outcome, "rest request done");
            Ok(true)
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<Box<HttpPeer>> {
        let Some(target) = &ctx.grpc else {
            return Err(Error::explain(ErrorType::InternalError, "no gRPC target was chosen for this request"));
        };
        let up = match target.service.cluster.pick(target.shard, &ctx.tried) {
            Ok(up) => up,
            Err(e) => {
                ctx.no_endpoint = Some(e.to_string());
                return Err(Error::explain(ErrorType::ConnectNoRoute, e.to_string()));
            }
        };
        ctx.tried.push(up.id);
        let cfg = &self.state.config;
        let mut peer = HttpPeer::new(up.address, false, String::new());
        peer.options.set_http_version(2, 2);
        peer.options.max_h2_streams = MAX_H2_STREAMS;
        peer.options.connection_timeout = Some(cfg.connect_timeout);
        peer.options.total_connection_timeout = Some(cfg.connect_timeout);
        peer.options.read_timeout = Some(target.timeout);
        peer.options.write_timeout = Some(target.timeout);
        peer.options.idle_timeout = Some(UPSTREAM_IDLE);
        ctx.attempt = Some(Attempt { _in_flight: up.load.start(), upstream: up, started: Instant::now() });
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        // Propagate the deadline so the upstream gives up when the caller does.
        if let Some(target) = &ctx.grpc
            && upstream.headers.get("grpc-timeout").is_none()
        {
            upstream.insert_header("grpc-timeout", format!("{}m", target.timeout.as_millis().max(1)))?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if let Some(a) = &ctx.attempt {
            a.upstream.load.observe(a.started.elapsed(), Instant::now());
            a.upstream.health.record_success();
        }
        Ok(())
    }

    fn fail_to_connect(&self, _session: &mut Session, _peer: &HttpPeer, ctx: &mut RequestCtx, mut e: Box<Error>) -> Box<Error> {
        if let Some(a) = ctx.attempt.take()
            && a.upstream.health.record_connect_failure(&self.state.config.health)
        {
            tracing::warn!(upstream = %a.upstream.name, "ejected after consecutive connection failures");
        }
        // The request never reached this instance, so another one of the same shard may
        // take it, whatever the method.
        if let Some(target) = &ctx.grpc
            && ctx.tried.len() < target.service.cluster.size(target.shard)
        {
            e.set_retry(true);
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let (code, message) = match e.etype() {
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                (Code::DeadlineExceeded, "the upstream did not answer in time".to_owned())
            }
            ErrorType::ConnectNoRoute if ctx.no_endpoint.is_some() => (Code::Unavailable, ctx.no_endpoint.clone().unwrap_or_default()),
            ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectError
            | ErrorType::ConnectNoRoute
            | ErrorType::TLSHandshakeFailure => (Code::Unavailable, format!("cannot reach an upstream instance: {}", e.etype().as_str())),
            _ => (Code::Unavailable, format!("the upstream failed: {}", e.etype().as_str())),
        };
        let written = if ctx.grpc.is_some() {
            grpc_trailers_only(session, code, &message).await
        } else {
            respond_error(session, code, &message, None, &[]).await
        };
        if let Err(w) = written {
            tracing::debug!(error = %w, "could not write the error answer; the client is gone");
        }
        FailToProxy { error_code: 200, can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        ctx.attempt = None;
        if let Some(e) = e {
            tracing::debug!(path = %session.req_header().uri.path(), error = %e, "request failed");
        }
    }
}
