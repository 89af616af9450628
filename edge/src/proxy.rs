//! The one `ProxyHttp` implementation. Its phases hand off to modules: `request_filter` to
//! [`crate::rest`] (answered in full) or [`crate::grpc`] (target chosen) and the route's
//! guards; `upstream_peer` to the cluster's balancer; `fail_to_connect` and
//! `upstream_response_filter` to outlier detection and the retry policy; `logging` to the
//! breaker; `fail_to_proxy` to a gRPC-shaped error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};
use tokio::sync::OwnedSemaphorePermit;
use tonic::Code;

use crate::balance::InFlight;
use crate::cluster::Upstream;
use crate::grpc::{self, Target};
use crate::io::{grpc_trailers_only, header, respond_error};
use crate::live::LiveEdge;
use crate::resilience::breaker::Permit;
use crate::resilience::guards::limit_headers;
use crate::resilience::retry::{self, Failure, Verdict};
use crate::rest;
use crate::state::EdgeState;

/// How many HTTP/2 streams share one upstream connection.
const MAX_H2_STREAMS: usize = 256;
/// How long an idle upstream connection is kept.
const UPSTREAM_IDLE: Duration = Duration::from_secs(60);
/// How often an upstream HTTP/2 connection is pinged (a missing answer closes it).
const UPSTREAM_PING: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct EdgeProxy {
    pub live: Arc<LiveEdge>,
}

/// Per-request state.
#[derive(Debug, Default)]
pub struct RequestCtx {
    /// The configuration the call started with; a reload meanwhile does not change it.
    state: Option<Arc<EdgeState>>,
    /// "grpc" or "rest": how the client called, for metrics.
    protocol: &'static str,
    grpc: Option<Target>,
    /// From the request sent upstream (its last body byte) to the upstream's answer, for the
    /// last attempt.
    upstream_time: Option<Duration>,
    /// When the last attempt's request body was sent in full.
    body_sent_at: Option<Instant>,
    /// The metrics label of a call the edge refused before it had a target.
    refused_label: Option<String>,
    started: Option<Instant>,
    tried: Vec<usize>,
    attempt: Option<Attempt>,
    permit: Option<Permit>,
    slot: Option<OwnedSemaphorePermit>,
    /// The last attempt's failure, if it failed.
    failure: Option<Failure>,
    /// grpc-status seen in response headers or trailers.
    status: Option<i32>,
    /// Set when the edge itself asked pingora to try again.
    retrying: bool,
    /// Why no upstream could be picked, for the error answer.
    no_endpoint: Option<String>,
    /// The request's trace span (closed when the context is dropped).
    span: RequestSpan,
}

impl RequestCtx {
    /// When the call must be answered: its start plus its target's timeout.
    fn deadline(&self) -> Option<Instant> {
        Some(self.started? + self.grpc.as_ref()?.timeout)
    }
}

/// A span that defaults to none (the context is created before the request is seen).
#[derive(Debug, Clone)]
struct RequestSpan(tracing::Span);

impl Default for RequestSpan {
    fn default() -> Self {
        Self(tracing::Span::none())
    }
}

impl std::ops::Deref for RequestSpan {
    type Target = tracing::Span;
    fn deref(&self) -> &tracing::Span {
        &self.0
    }
}

#[derive(Debug)]
struct Attempt {
    upstream: Arc<Upstream>,
    _in_flight: InFlight,
    started: Instant,
}

/// Whether the upstream said it never processed the request: RST_STREAM(REFUSED_STREAM) or
/// GOAWAY(NO_ERROR), from the upstream itself.
fn not_processed(e: &Error) -> bool {
    e.root_cause().downcast_ref::<h2::Error>().is_some_and(|h| {
        h.is_remote()
            && ((h.is_reset() && h.reason() == Some(h2::Reason::REFUSED_STREAM))
                || (h.is_go_away() && h.reason() == Some(h2::Reason::NO_ERROR)))
    })
}

fn is_grpc(session: &Session) -> bool {
    session.req_header().headers.get(http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

impl EdgeProxy {
    /// The configuration of this call (taken when it arrived).
    fn state(&self, ctx: &RequestCtx) -> Arc<EdgeState> {
        ctx.state.clone().unwrap_or_else(|| self.live.load())
    }

    /// Target and guards of a gRPC call (a client's, or the REST front's); `Ok(true)` when
    /// the edge answered it itself.
    async fn route_grpc(&self, session: &mut Session, ctx: &mut RequestCtx, call: Option<rest::RestCall>) -> pingora::Result<bool> {
        let state = self.state(ctx);
        let Some(target) = grpc::prepare(&state, session, call, &mut ctx.refused_label).await? else { return Ok(true) };
        ctx.span.record("route", target.route_label());
        // The client has sent what the edge needed; it may now rightly wait in silence.
        if let Some(armed) = crate::client_io::armed_of(session.as_downstream().stream()) {
            armed.set(false);
        }
        if !self.guard_grpc(session, ctx, &target).await? {
            ctx.grpc = Some(target);
            return Ok(true);
        }
        ctx.grpc = Some(target);
        Ok(false)
    }

    /// Rate limit, breaker and concurrency slot for a gRPC call; answers it on refusal.
    async fn guard_grpc(&self, session: &mut Session, ctx: &mut RequestCtx, target: &Target) -> pingora::Result<bool> {
        let guards = &target.service.guards;
        // An authenticated caller is limited as who it is, never by a header it picks.
        let client = match &target.identity {
            Some(identity) => Some(identity.limit_key()),
            None => guards.client_header().and_then(|h| header(session, h)),
        };
        if let Err(limited) = guards.admit(client.as_deref(), target.merchant.as_deref(), Instant::now()) {
            let msg =
                format!("rate limit of {} exceeded; retry in {} s", target.service.name, limited.retry_after.as_secs_f64().ceil().max(1.0));
            let mut h = pingora::http::ResponseHeader::build(http::StatusCode::OK, Some(8))?;
            h.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
            h.insert_header("grpc-status", (Code::ResourceExhausted as i32).to_string())?;
            h.insert_header("grpc-message", crate::status::encode_grpc_message(&msg))?;
            for (k, v) in limit_headers(&limited) {
                h.insert_header(k, v)?;
            }
            session.write_response_header(Box::new(h), true).await?;
            return Ok(false);
        }
        match guards.breaker(target.shard).try_acquire(Instant::now()) {
            Ok(p) => ctx.permit = Some(p),
            Err(refused) => {
                grpc_trailers_only(session, Code::Unavailable, &refused.to_string()).await?;
                return Ok(false);
            }
        }
        let service = &target.service;
        let limit = &service.limit;
        match limit.acquire(target.timeout).await {
            Ok(slot) => ctx.slot = Some(slot),
            Err(_) => {
                ctx.permit = None;
                let whose = if Arc::ptr_eq(limit, &service.cluster.limit) {
                    format!("cluster '{}'", service.cluster.name)
                } else {
                    format!("route '{}'", service.name)
                };
                let msg = format!(
                    "{whose} is at its limit of {} requests in flight and {} waiting; retry later",
                    limit.max_requests, limit.max_pending
                );
                grpc_trailers_only(session, Code::Unavailable, &msg).await?;
                return Ok(false);
            }
        }
        target.service.guards.budget.deposit();
        Ok(true)
    }

    /// What is left of the call's deadline (at least a millisecond).
    fn remaining(&self, ctx: &RequestCtx) -> Duration {
        ctx.deadline().map_or(Duration::ZERO, |d| d.saturating_duration_since(Instant::now())).max(Duration::from_millis(1))
    }

    /// Whether the call's deadline has passed by `now`.
    fn deadline_passed(&self, ctx: &RequestCtx, now: Instant) -> bool {
        ctx.deadline().is_some_and(|d| now >= d)
    }

    /// Whether another attempt is allowed after `failure`, spending budget if so.
    fn may_retry(&self, session: &Session, ctx: &RequestCtx, failure: Failure) -> bool {
        let Some(target) = &ctx.grpc else { return false };
        let guards = &target.service.guards;
        // pingora replays at most 64 KiB of a body it has already sent: beyond that, another
        // instance would get a truncated request.
        !session.as_downstream().retry_buffer_truncated()
            && guards.retry.enabled
            && (ctx.tried.len() as u32) < guards.retry.max_attempts
            && ctx.tried.len() < target.service.cluster.size(target.shard)
            && retry::retryable(failure, target.safe)
            && guards.budget.try_withdraw(Instant::now())
    }
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx { state: Some(self.live.load()), ..RequestCtx::default() }
    }

    fn allow_spawning_subrequest(&self, session: &Session, _ctx: &RequestCtx) -> bool {
        // The REST front runs each call as a subrequest; those do not spawn their own.
        session.subrequest_ctx.is_none()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<bool> {
        ctx.started = Some(Instant::now());
        // No read from a client waits longer than this: a stalled header or body, or an idle
        // keepalive connection, is closed.
        if session.subrequest_ctx.is_none() {
            let state = self.state(ctx);
            let cfg = &state.config;
            session.set_read_timeout(Some(cfg.client_read_timeout));
            // Only ever shorten an idle keepalive: pingora turns it off for a reason
            // (`Connection: close`, HTTP/1.0, both Content-Length and Transfer-Encoding, a
            // shutdown in progress).
            let ours = cfg.client_read_timeout.as_secs().max(1);
            if let Some(current) = session.get_keepalive() {
                session.set_keepalive(Some(if current == 0 { ours } else { current.min(ours) }));
            }
        }
        // A REST call handed over by the REST front: it continues that request's span and
        // runs as the gRPC call it was transcoded to.
        if let Some(call) = rest::take_call(session) {
            ctx.protocol = "rest";
            // The configuration the REST request started with, not a reload's since.
            ctx.state = Some(call.state.clone());
            ctx.span = RequestSpan(call.span.clone());
            // The client's clock started with its REST request (upload and transcoding count).
            ctx.started = Some(call.started);
            return self.route_grpc(session, ctx, Some(call)).await;
        }
        // One span per request, a child of the caller's trace when it sent `traceparent`.
        let span = tracing::info_span!("edge", otel.name = %session.req_header().uri.path(), http.method = %session.req_header().method, route = tracing::field::Empty, shard = tracing::field::Empty, instance = tracing::field::Empty, status = tracing::field::Empty);
        paymesh_core::telemetry::continue_trace(&span, &|k| header(session, k));
        ctx.span = RequestSpan(span.clone());
        if is_grpc(session) {
            ctx.protocol = "grpc";
            self.route_grpc(session, ctx, None).await
        } else {
            let state = self.state(ctx);
            let outcome = tracing::Instrument::instrument(rest::handle(&state, session, &span), span.clone()).await?;
            if let rest::Outcome::Rejected(code) = outcome {
                span.record("status", code as i32);
            }
            tracing::debug!(parent: &span, ?outcome, "rest request done");
            Ok(true)
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<Box<HttpPeer>> {
        // The previous attempt, if any, has been judged already.
        ctx.attempt = None;
        let Some(target) = &ctx.grpc else {
            return Err(Error::explain(ErrorType::InternalError, "no gRPC target was chosen for this request"));
        };
        if !ctx.tried.is_empty() {
            // A retry: jittered exponential backoff first.
            let wait = retry::backoff(&target.service.guards.retry, ctx.tried.len() as u32, &crate::balance::Rng::from_entropy());
            tokio::time::sleep(wait).await;
        }
        let up = match target.service.cluster.pick(target.shard, &ctx.tried) {
            Ok(up) => up,
            Err(e) => {
                ctx.no_endpoint = Some(e.to_string());
                return Err(Error::explain(ErrorType::ConnectNoRoute, e.to_string()));
            }
        };
        ctx.tried.push(up.id);
        ctx.span.record("route", target.service.name.as_str());
        ctx.span.record("instance", up.name.as_str());
        if let Some(s) = target.shard {
            ctx.span.record("shard", s.0);
        }
        ctx.failure = None;
        ctx.status = None;
        ctx.upstream_time = None;
        ctx.body_sent_at = None;
        ctx.retrying = false;
        let state = self.state(ctx);
        let cfg = &state.config;
        let tls = state.upstream_tls.as_ref().map(|t| t.material());
        // With mTLS the instance must present a mesh certificate for its own name.
        let sni = if tls.is_some() { crate::upstream_tls::server_name(&up.name, up.address) } else { String::new() };
        let mut peer = HttpPeer::new(up.address, tls.is_some(), sni);
        if let Some(m) = tls {
            peer.options.ca = Some(m.ca.clone());
            peer.client_cert_key = Some(m.cert_key.clone());
        }
        peer.options.set_http_version(2, 2);
        peer.options.max_h2_streams = MAX_H2_STREAMS;
        peer.options.connection_timeout = Some(cfg.connect_timeout);
        peer.options.total_connection_timeout = Some(cfg.connect_timeout);
        // What is left of the call's deadline (a retry does not start the clock again).
        let remaining = self.remaining(ctx);
        peer.options.read_timeout = Some(remaining);
        peer.options.write_timeout = Some(remaining);
        peer.options.idle_timeout = Some(UPSTREAM_IDLE);
        // A dead upstream connection (a host gone without a FIN) is found by pings, not by
        // the next call's timeout.
        peer.options.h2_ping_interval = Some(UPSTREAM_PING);
        ctx.attempt = Some(Attempt { _in_flight: up.load.start(), upstream: up, started: Instant::now() });
        Ok(Box::new(peer))
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if end_of_stream {
            ctx.body_sent_at = Some(Instant::now());
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        // Propagate what is left of the deadline (the client's `grpc-timeout`, capped by the
        // route's) so the upstream gives up when the caller does.
        if ctx.grpc.is_some() {
            upstream.insert_header("grpc-timeout", format!("{}m", self.remaining(ctx).as_millis().max(1)))?;
        }
        // The upstream continues the edge's span.
        let (tp, ts) = paymesh_core::telemetry::headers_of(&ctx.span);
        if let Some(tp) = tp {
            upstream.insert_header("traceparent", tp)?;
        }
        if let Some(ts) = ts {
            upstream.insert_header("tracestate", ts)?;
        }
        // The caller's identity is what the edge verified, never what the client sent; the
        // credential itself stays at the edge.
        for name in paymesh_core::identity::ALL {
            upstream.remove_header(name);
        }
        if let Some(identity) = ctx.grpc.as_ref().and_then(|t| t.identity.as_ref()) {
            upstream.remove_header(&http::header::AUTHORIZATION);
            upstream.remove_header(crate::auth::API_KEY_HEADER);
            upstream.insert_header(paymesh_core::identity::SUBJECT, identity.subject.as_str())?;
            if let Some(m) = &identity.merchant {
                upstream.insert_header(paymesh_core::identity::MERCHANT, m.as_str())?;
            }
            upstream.insert_header(paymesh_core::identity::SCOPES, identity.scopes.join(" "))?;
            upstream.insert_header(paymesh_core::identity::AUTHENTICATED_BY, identity.authenticated_by.as_str())?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let now = Instant::now();
        if let Some(a) = &ctx.attempt {
            a.upstream.load.observe(a.started.elapsed(), now);
            // The upstream's time starts when it has the whole request, not while a slow
            // client is still uploading it.
            let sent = ctx.body_sent_at.map_or(a.started, |b| b.max(a.started));
            ctx.upstream_time = Some(now.saturating_duration_since(sent));
        }
        // A trailers-only answer carries its status in the headers: an UNAVAILABLE for a call
        // that is safe to repeat is tried again on another instance before the caller sees it.
        if let Some(mut code) = grpc_status(&resp.headers) {
            // The upstream enforces the grpc-timeout the edge sent and answers CANCELLED when
            // it runs out: to the caller that is the deadline passing.
            if code == Code::Cancelled as i32 && self.deadline_passed(ctx, now) {
                code = Code::DeadlineExceeded as i32;
                resp.insert_header("grpc-status", code.to_string())?;
                resp.insert_header("grpc-message", "the upstream did not answer within the deadline")?;
            }
            ctx.status = Some(code);
            if code == Code::Unavailable as i32 && self.may_retry(session, ctx, Failure::Status(code)) {
                if let (Some(a), Some(t)) = (&ctx.attempt, &ctx.grpc) {
                    t.service.cluster.report(&a.upstream, true, now);
                }
                ctx.retrying = true;
                let mut e = Error::explain(ErrorType::HTTPStatus(503), "upstream answered UNAVAILABLE; retrying on another instance");
                e.set_retry(true);
                return Err(e);
            }
        }
        Ok(())
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if let Some(mut code) = grpc_status(trailers) {
            if code == Code::Cancelled as i32 && self.deadline_passed(ctx, Instant::now()) {
                code = Code::DeadlineExceeded as i32;
                trailers.insert("grpc-status", http::HeaderValue::from(code));
                trailers.insert("grpc-message", http::HeaderValue::from_static("the upstream did not answer within the deadline"));
            }
            ctx.status = Some(code);
        }
        Ok(())
    }

    fn fail_to_connect(&self, session: &mut Session, _peer: &HttpPeer, ctx: &mut RequestCtx, mut e: Box<Error>) -> Box<Error> {
        ctx.failure = Some(Failure::Connect);
        if let (Some(a), Some(t)) = (ctx.attempt.take(), &ctx.grpc) {
            t.service.cluster.report(&a.upstream, true, Instant::now());
        }
        // Nothing reached this instance, so another one of the same shard may take the call,
        // whatever the method.
        let retry = self.may_retry(session, ctx, Failure::Connect);
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        if ctx.retrying {
            // The edge itself turned a safe call's UNAVAILABLE into this error.
            e.set_retry(true);
            return e;
        }
        let unanswered = ctx.status.is_none();
        // The upstream said it never processed the stream (RFC 9113 section 8.7):
        // REFUSED_STREAM, or GOAWAY(NO_ERROR) before any answer. Another instance may take
        // the call whatever its method.
        let refused = unanswered && not_processed(&e);
        // pingora also marks a reused connection found dead as retryable, but the request
        // may have been processed there (an instance killed after committing a write): that
        // is an UNAVAILABLE, repeated only when the call is safe to repeat.
        e.retry.decide_reuse(client_reused);
        let dead_connection = unanswered && !refused && e.retry();
        if refused || dead_connection {
            let failure = if refused { Failure::RefusedStream } else { Failure::Status(Code::Unavailable as i32) };
            ctx.failure = Some(failure);
            // Judged here, once: an instance that refuses streams or drops connections is
            // not taking calls, and outlier detection sees it.
            if let (Some(a), Some(t)) = (ctx.attempt.take(), &ctx.grpc) {
                t.service.cluster.report(&a.upstream, true, Instant::now());
            }
            let retry = self.may_retry(session, ctx, failure);
            e.set_retry(retry);
            return e;
        }
        // Anything else may have been processed: never repeated.
        ctx.failure = Some(match e.etype() {
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => Failure::Timeout,
            _ => ctx.failure.unwrap_or(Failure::Status(Code::Unavailable as i32)),
        });
        e.set_retry(false);
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        // The client's side failed: it was too slow (its read deadline) or it is gone. Not
        // the upstream's doing, and there may be nobody to answer.
        if matches!(e.esource(), pingora::ErrorSource::Downstream) {
            let too_slow = matches!(e.etype(), ErrorType::ReadTimedout);
            if too_slow {
                let message = "the request did not arrive in time; send it at once";
                ctx.status.get_or_insert(Code::DeadlineExceeded as i32);
                let written = if is_grpc(session) {
                    grpc_trailers_only(session, Code::DeadlineExceeded, message).await
                } else {
                    respond_error(session, Code::DeadlineExceeded, message, Some(http::StatusCode::REQUEST_TIMEOUT), &[]).await
                };
                if let Err(w) = written {
                    tracing::debug!(error = %w, "could not write the error answer; the client is gone");
                }
            } else {
                ctx.status.get_or_insert(Code::Cancelled as i32);
            }
            return FailToProxy { error_code: if too_slow { 408 } else { 499 }, can_reuse_downstream: false };
        }
        let (code, message) = match e.etype() {
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                (Code::DeadlineExceeded, "the upstream did not answer in time".to_owned())
            }
            ErrorType::ConnectNoRoute if ctx.no_endpoint.is_some() => (Code::Unavailable, ctx.no_endpoint.clone().unwrap_or_default()),
            ErrorType::HTTPStatus(503) if ctx.retrying => (Code::Unavailable, "every instance tried answered UNAVAILABLE".to_owned()),
            ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectError
            | ErrorType::ConnectNoRoute
            | ErrorType::TLSHandshakeFailure => (Code::Unavailable, format!("cannot reach an upstream instance: {}", e.etype().as_str())),
            _ => (Code::Unavailable, format!("the upstream failed: {}", e.etype().as_str())),
        };
        ctx.status.get_or_insert(code as i32);
        let written = if is_grpc(session) {
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
        let now = Instant::now();
        // The next request on this connection is under the read deadline again (HTTP/1;
        // HTTP/2 connections stay disarmed).
        if session.subrequest_ctx.is_none()
            && !session.as_downstream().is_http2()
            && let Some(armed) = crate::client_io::armed_of(session.as_downstream().stream())
        {
            armed.set(true);
        }
        // A call the edge answered itself carries its status in the response it wrote.
        let written = session.as_downstream().response_written().and_then(|h| grpc_status(&h.headers));
        let code = ctx.status.or(written).unwrap_or(if e.is_some() { Code::Unavailable as i32 } else { 0 });
        ctx.span.record("status", code);
        // gRPC calls, and REST calls that reached the gRPC path (the REST front records
        // the ones it refused itself).
        if !ctx.protocol.is_empty() {
            let (route, shard) = match (&ctx.grpc, &ctx.refused_label) {
                (Some(t), _) => (t.route_label(), t.shard.map(|s| s.0)),
                (None, Some(label)) => (label.as_str(), None),
                (None, None) => ("unmatched", None),
            };
            let took = ctx.started.map_or(Duration::ZERO, |s| s.elapsed());
            self.state(ctx).requests.record(ctx.protocol, route, shard, crate::metrics::code_name(code), took);
            if crate::failures::is_server_failure(code) {
                // Why: the edge's own reason, else the grpc-message it answered with (its
                // own refusals: breaker, limits), else the transport's failure.
                let answered = session
                    .as_downstream()
                    .response_written()
                    .and_then(|h| h.headers.get("grpc-message"))
                    .and_then(|v| v.to_str().ok())
                    .and_then(crate::transcode::template::percent_decode);
                let message = match (e, answered, ctx.failure, &ctx.no_endpoint) {
                    (_, _, _, Some(why)) => why.clone(),
                    (Some(e), _, _, _) => e.to_string(),
                    (None, Some(m), _, _) => m,
                    (None, None, Some(f), _) => format!("{f:?}"),
                    (None, None, None, None) => String::new(),
                };
                self.state(ctx).failures.record(crate::failures::FailedCall {
                    at: crate::failures::now(),
                    protocol: ctx.protocol,
                    route: route.to_owned(),
                    shard,
                    instance: ctx.attempt.as_ref().map(|a| a.upstream.name.clone()),
                    code: crate::metrics::code_name(code),
                    message,
                });
            }
        }
        if let Some(target) = &ctx.grpc {
            // The call's outcome: a transport failure, else the grpc-status it ended with.
            let failure = ctx.failure.or_else(|| ctx.status.filter(|c| *c != 0).map(Failure::Status));
            // The client went away, or stalled mid-upload until the upstream timed out.
            let client_gone = e.is_some_and(|e| matches!(e.esource(), pingora::ErrorSource::Downstream))
                || (matches!(failure, Some(Failure::Timeout)) && !session.as_downstream_mut().is_body_done());
            let breaker = target.service.guards.breaker(target.shard);
            let verdict = retry::judge(failure, target.client_deadline, client_gone, |c| breaker.is_failure_code(c));
            if let Verdict::Counted { instance, breaker: failed } = verdict {
                if let Some(a) = &ctx.attempt {
                    target.service.cluster.report(&a.upstream, instance, now);
                }
                if let Some(permit) = ctx.permit.take() {
                    // Slow calls are timed from the request sent upstream to its answer, not
                    // including the client's upload or download.
                    let upstream_time = ctx.upstream_time.or_else(|| ctx.attempt.as_ref().map(|a| a.started.elapsed()));
                    breaker.record(permit, failed, upstream_time.unwrap_or_default(), now);
                }
            }
            // Otherwise the permit is dropped unrecorded: the client's doing counts for nobody.
            ctx.permit = None;
        }
        ctx.attempt = None;
        ctx.slot = None;
        if let Some(e) = e {
            tracing::debug!(path = %session.req_header().uri.path(), error = %e, "request failed");
        }
    }
}
