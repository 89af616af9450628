//! A small HTTP client for the tests (hyper), over HTTP/1.1 or HTTP/2 prior knowledge.

#![allow(dead_code)]

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON; panics with the body text if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Version {
    Http1,
    Http2,
}

pub async fn send(addr: SocketAddr, version: Version, method: &str, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
    try_send(addr, version, method, path, headers, body).await.unwrap_or_else(|e| panic!("HTTP exchange with the edge failed: {e}"))
}

pub async fn try_send(
    addr: SocketAddr,
    version: Version,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Reply, String> {
    let mut builder = Client::builder(TokioExecutor::new());
    if let Version::Http2 = version {
        builder.http2_only(true);
    }
    let client = builder.build_http::<Full<Bytes>>();
    let mut req = http::Request::builder().method(method).uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).expect("request");
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Reply { status, headers, body })
}

/// POST JSON over HTTP/1.1.
pub async fn post_json(addr: SocketAddr, path: &str, body: &str) -> Reply {
    send(addr, Version::Http1, "POST", path, &[("content-type", "application/json")], body.to_owned()).await
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    send(addr, Version::Http1, "GET", path, &[], Bytes::new()).await
}
