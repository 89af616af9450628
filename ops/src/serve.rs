//! paymesh-mcp's HTTP listener: MCP's streamable HTTP transport at `/mcp`, and load tests
//! on demand:
//!
//! - `POST /loadtests` with `{"method", "rate", "duration_s", "concurrency"}`: 202 and the
//!   run's id and links; 400 out of bounds (every bad field named); 409 while another runs;
//! - `GET /loadtests`: every kept run's progress, newest first;
//! - `GET /loadtests/<id>`: progress (state, calls, failures, share of the time done);
//! - `GET /loadtests/<id>/report`: ghz's report and the analysis (409 while running).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::loadtest::{LoadTests, Refused, Spec};
use crate::tools::Ops;

type Body = BoxBody<Bytes, Infallible>;

/// The largest request body taken on `/loadtests`.
const MAX_BODY: usize = 16 * 1024;

/// Serves `/mcp` (a new [`Ops`] per session from `ops`) and `/loadtests` on `listener`
/// until `stop` is cancelled.
pub async fn serve(listener: tokio::net::TcpListener, ops: Ops, loadtests: Arc<LoadTests>, stop: CancellationToken) {
    let config = StreamableHttpServerConfig::default().with_cancellation_token(stop.child_token());
    let mcp: StreamableHttpService<Ops, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(ops.clone()), Default::default(), config);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.cancelled() => return,
        };
        let Ok((stream, peer)) = accepted else { continue };
        let (mcp, loadtests, stop) = (mcp.clone(), loadtests.clone(), stop.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (mut mcp, loadtests) = (mcp.clone(), loadtests.clone());
                async move {
                    if req.uri().path() == "/mcp" {
                        return tower_service::Service::call(&mut mcp, req).await;
                    }
                    Ok::<_, Infallible>(loadtests_api(req, &loadtests).await)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r { tracing::debug!(%peer, error = %e, "connection ended") },
                () = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}

async fn loadtests_api(req: Request<Incoming>, loadtests: &Arc<LoadTests>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method().clone(), parts.as_slice()) {
        (Method::POST, ["loadtests"]) => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return reply(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        json!({"code": 3, "message": format!("the body is over {MAX_BODY} bytes")}),
                    );
                }
            };
            let spec: Spec = match serde_json::from_slice(&body) {
                Ok(s) => s,
                Err(e) => {
                    let msg =
                        format!("{e}; send {{\"method\": \"authorize\"|\"flow\", \"rate\": N, \"duration_s\": N, \"concurrency\": N}}");
                    return reply(StatusCode::BAD_REQUEST, json!({"code": 3, "message": msg}));
                }
            };
            match loadtests.start(spec) {
                Ok(run) => {
                    let id = &run.id;
                    let mut body = run.progress();
                    body["links"] = json!({"progress": format!("/loadtests/{id}"), "report": format!("/loadtests/{id}/report")});
                    reply(StatusCode::ACCEPTED, body)
                }
                Err(e @ Refused::Invalid(_)) => reply(StatusCode::BAD_REQUEST, json!({"code": 3, "message": e.to_string()})),
                Err(e @ Refused::Busy(_)) => reply(StatusCode::CONFLICT, json!({"code": 9, "message": e.to_string()})),
            }
        }
        (Method::GET, ["loadtests"]) => reply(
            StatusCode::OK,
            json!({"runs": loadtests.list(), "limits": {
                "max_rate": loadtests.limits.max_rate,
                "max_duration_s": loadtests.limits.max_duration.as_secs_f64(),
                "max_concurrency": loadtests.limits.max_concurrency,
            }}),
        ),
        (Method::GET, ["loadtests", id]) => match loadtests.get(id) {
            Some(run) => reply(StatusCode::OK, run.progress()),
            None => unknown_run(id),
        },
        (Method::GET, ["loadtests", id, "report"]) => match loadtests.get(id) {
            Some(run) if !run.is_done() => reply(
                StatusCode::CONFLICT,
                json!({"code": 9, "message": format!("load test {id} is still running; poll GET /loadtests/{id}"), "progress": run.progress()}),
            ),
            Some(run) => match run.result() {
                Ok(done) => {
                    reply(StatusCode::OK, json!({"id": run.id, "spec": run.spec, "report": done.report, "analysis": done.analysis}))
                }
                Err(e) => reply(StatusCode::OK, json!({"id": run.id, "spec": run.spec, "error": e})),
            },
            None => unknown_run(id),
        },
        (_, ["loadtests", ..]) => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"code": 12, "message": "POST /loadtests starts a run; GET /loadtests, /loadtests/<id> and /loadtests/<id>/report read them"}),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            json!({"code": 5, "message": format!("nothing at {path}; MCP is at /mcp, load tests at /loadtests")}),
        ),
    }
}

fn unknown_run(id: &str) -> Response<Body> {
    reply(StatusCode::NOT_FOUND, json!({"code": 5, "message": format!("no load test '{id}'; GET /loadtests lists them")}))
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let bytes = Bytes::from(serde_json::to_vec_pretty(&body).unwrap_or_default());
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// The address a listener is bound to, for the log line.
pub fn describe(addr: SocketAddr) -> String {
    format!("http://{addr}/mcp (MCP streamable HTTP), http://{addr}/loadtests (load tests)")
}
