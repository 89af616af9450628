//! Asks a gRPC server for its grpc.health.v1 status, and plain HTTP/1.1 for admin and
//! status endpoints.

use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// One health check, over mTLS with `tls` (the client's certificate, the server's name)
/// when given; `None` if the server cannot be asked.
pub async fn check_with(
    addr: std::net::SocketAddr,
    service: &str,
    tls: Option<(std::sync::Arc<paymesh_core::tls::MeshTls>, String)>,
) -> Option<ServingStatus> {
    let endpoint = tonic::transport::Channel::from_shared(format!("http://{addr}")).ok()?.connect_timeout(Duration::from_secs(1));
    let channel = match tls {
        Some((tls, name)) => endpoint.connect_with_connector(paymesh_core::tls::MeshConnector::new(tls, name)).await.ok()?,
        None => endpoint.connect().await.ok()?,
    };
    let reply = HealthClient::new(channel).check(HealthCheckRequest { service: service.into() }).await.ok()?;
    Some(reply.into_inner().status())
}

/// A minimal HTTP/1.1 exchange (Connection: close), enough for the admin API and smoke
/// checks without an HTTP client dependency. Returns the status and body.
pub async fn http(addr: std::net::SocketAddr, method: &str, path: &str, json_body: Option<&str>) -> Result<(u16, String), String> {
    http_with(addr, method, path, json_body, &[]).await
}

/// [`http`] with extra request headers.
pub async fn http_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    json_body: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let body = json_body.unwrap_or("");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if json_body.is_some() {
        req += "Content-Type: application/json\r\n";
    }
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    req += body;
    stream.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| "read timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("not an HTTP response: {text}"))?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("no status line: {head}"))?;
    Ok((status, body.to_owned()))
}
