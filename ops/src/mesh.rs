//! The mesh as the operator's tools see it: the processes the mesh config declares and the
//! addresses of their admin or status listeners. Every read and every change goes to one of
//! these addresses and nowhere else: a name that is not in the config is refused.

use std::net::SocketAddr;
use std::time::Duration;

use paymesh_core::config::MeshConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one HTTP exchange with a process may take.
const WAIT: Duration = Duration::from_secs(3);
/// The most of an answer read (a metrics page of a busy edge is a few hundred KiB).
const MAX_ANSWER: u64 = 8 * 1024 * 1024;

/// What kind of process a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Edge,
    Payments,
    Relay,
    Worker,
}

/// A process with an HTTP listener the tools may read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Process {
    pub name: String,
    pub kind: Kind,
    /// The edge's admin listener, or the process's status listener.
    pub address: SocketAddr,
}

/// The configured mesh.
#[derive(Debug, Clone)]
pub struct Mesh {
    pub processes: Vec<Process>,
    /// The edge's public listener (where load tests send their calls).
    pub edge: Option<SocketAddr>,
    /// The edge's admin listener.
    pub admin: Option<SocketAddr>,
}

impl Mesh {
    pub fn of(config: &MeshConfig) -> Self {
        let mut processes = Vec::new();
        let (edge, admin) = match &config.edge {
            Some(e) => {
                processes.push(Process { name: "edge".into(), kind: Kind::Edge, address: e.admin_listen });
                (Some(e.listen), Some(e.admin_listen))
            }
            None => (None, None),
        };
        for i in &config.payments.instances {
            if let Some(a) = i.status_listen {
                processes.push(Process { name: i.name.clone(), kind: Kind::Payments, address: a });
            }
        }
        for i in config.relay.iter().flat_map(|r| &r.instances) {
            processes.push(Process { name: i.name.clone(), kind: Kind::Relay, address: i.status_listen });
        }
        for i in config.workers.iter().flat_map(|w| &w.instances) {
            processes.push(Process { name: i.name.clone(), kind: Kind::Worker, address: i.status_listen });
        }
        Self { processes, edge, admin }
    }

    /// The process called `name`, or why there is none (naming the ones there are).
    pub fn process(&self, name: &str) -> Result<&Process, String> {
        self.processes.iter().find(|p| p.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.processes.iter().map(|p| p.name.as_str()).collect();
            format!("'{name}' is not a process of the configured mesh; use one of: {}", known.join(", "))
        })
    }

    /// The processes of one kind.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Process> {
        self.processes.iter().filter(move |p| p.kind == kind)
    }

    /// The edge's admin listener, or why there is none.
    pub fn admin(&self) -> Result<SocketAddr, String> {
        self.admin.ok_or_else(|| "the mesh config has no [edge] section: there is no edge to ask".to_owned())
    }

    /// The edge's public listener, or why there is none.
    pub fn edge(&self) -> Result<SocketAddr, String> {
        self.edge.ok_or_else(|| "the mesh config has no [edge] section: there is no edge to send load to".to_owned())
    }
}

/// An HTTP answer: status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    /// The body as JSON, or why it is not.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_str(&self.body).map_err(|e| format!("the answer (HTTP {}) is not JSON: {e}", self.status))
    }
}

/// One HTTP/1.1 exchange on a new connection to `addr` (a configured process's listener).
pub async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<Answer, String> {
    tokio::time::timeout(WAIT, exchange(addr, method, path, headers))
        .await
        .map_err(|_| format!("{addr} did not answer {method} {path} within {} s", WAIT.as_secs()))?
}

async fn exchange(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<Answer, String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: 0\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.map_err(|e| format!("{addr}: {e}"))?;
    let mut raw = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut raw).await.map_err(|e| format!("{addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("{addr} sent no HTTP answer"))?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("{addr} sent no HTTP status"))?;
    let chunked =
        head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    Ok(Answer { status, body })
}

/// The payload of a chunked body.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks() {
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
        assert_eq!(dechunk("zz\r\n"), "");
    }
}
