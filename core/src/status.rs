//! A tiny HTTP/1.1 server for the status and metrics endpoints of the services: `GET`, and
//! `POST /config/reload` ([`serve_with`]); one request per connection, answers built by the
//! caller. Not for traffic.

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An answer: status code, content type, body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn json(body: String) -> Self {
        Self { status: 200, content_type: "application/json", body }
    }
    pub fn metrics(body: String) -> Self {
        Self { status: 200, content_type: "text/plain; version=0.0.4; charset=utf-8", body }
    }
    pub fn not_found(path: &str, known: &str) -> Self {
        Self {
            status: 404,
            content_type: "application/json",
            body: format!("{{\"code\":5,\"message\":\"no endpoint {path}; try {known}\"}}"),
        }
    }
}

/// Serves `handler(path)` until `shutdown` resolves.
pub async fn serve<H, F>(listener: TcpListener, handler: H, shutdown: impl Future<Output = ()>)
where
    H: Fn(String) -> F + Send + Sync + 'static,
    F: Future<Output = Reply> + Send,
{
    serve_with(listener, handler, None, shutdown).await;
}

/// [`serve`], and `POST /config/reload` reloading `live` (see [`crate::reload`]).
pub async fn serve_with<H, F>(listener: TcpListener, handler: H, live: Option<Arc<crate::reload::Live>>, shutdown: impl Future<Output = ()>)
where
    H: Fn(String) -> F + Send + Sync + 'static,
    F: Future<Output = Reply> + Send,
{
    let handler = Arc::new(handler);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => return,
        };
        let Ok((mut stream, _)) = accepted else { continue };
        let handler = handler.clone();
        let live = live.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            // Read until the end of the request head (no bodies on GET).
            while len < buf.len() {
                match stream.read(&mut buf[len..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => len += n,
                }
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let mut parts = head.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/").to_owned());
            let reply = match (method, path.as_str(), live) {
                ("GET", _, _) => handler(path).await,
                ("POST", "/config/reload", Some(live)) => {
                    tokio::task::spawn_blocking(move || live.answer()).await.unwrap_or_else(|e| Reply {
                        status: 500,
                        content_type: "application/json",
                        body: format!("{{\"code\":13,\"message\":\"the reload did not finish: {e}\"}}"),
                    })
                }
                _ => Reply {
                    status: 405,
                    content_type: "application/json",
                    body: "{\"code\":12,\"message\":\"only GET is served here, and POST /config/reload\"}".into(),
                },
            };
            let reason = match reply.status {
                200 => "OK",
                400 => "Bad Request",
                404 => "Not Found",
                405 => "Method Not Allowed",
                _ => "Status",
            };
            let out = format!(
                "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                reply.status,
                reply.content_type,
                reply.body.len(),
                reply.body
            );
            let _ = stream.write_all(out.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
