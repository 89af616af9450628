//! The event pipeline as the dashboard shows it: each relay's outbox backlog and breaker and
//! each worker's consumer lag and DLQ count, read from their status listeners (the mesh
//! config names them) at the moment the page asks. A process that does not answer within
//! [`WAIT`] shows as unreachable; the others are not held up by it.

use std::net::SocketAddr;
use std::time::Duration;

use paymesh_core::config::MeshConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one status listener gets to answer.
const WAIT: Duration = Duration::from_millis(800);
/// The most of an answer read (a status document is a few hundred bytes).
const MAX_ANSWER: u64 = 64 * 1024;

/// A process of the pipeline with a status listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub kind: PeerKind,
    pub address: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    Relay,
    Worker,
}

/// Every relay and worker `config` declares.
pub fn peers_of(config: &MeshConfig) -> Vec<Peer> {
    let relays = config.relay.iter().flat_map(|r| &r.instances).map(|i| Peer {
        name: i.name.clone(),
        kind: PeerKind::Relay,
        address: i.status_listen,
    });
    let workers = config.workers.iter().flat_map(|w| &w.instances).map(|i| Peer {
        name: i.name.clone(),
        kind: PeerKind::Worker,
        address: i.status_listen,
    });
    relays.chain(workers).collect()
}

/// Reads every peer's `/status` at once: (relays, workers), each entry the process's own
/// status document with `name`, `address`, `ok` and `error` added.
pub async fn read(peers: &[Peer]) -> (Vec<Value>, Vec<Value>) {
    let reads = peers.iter().map(|p| async move {
        let (ok, mut doc, error) = match tokio::time::timeout(WAIT, get_status(p.address)).await {
            Ok(Ok(doc)) => (true, doc, None),
            Ok(Err(e)) => (false, json!({}), Some(e)),
            Err(_) => (false, json!({}), Some(format!("no answer within {} ms", WAIT.as_millis()))),
        };
        if let Some(map) = doc.as_object_mut() {
            map.insert("name".into(), json!(p.name));
            map.insert("address".into(), json!(p.address.to_string()));
            map.insert("ok".into(), json!(ok));
            map.insert("error".into(), json!(error));
        }
        (p.kind, doc)
    });
    let all = futures_util::future::join_all(reads).await;
    let pick = |kind| all.iter().filter(|(k, _)| *k == kind).map(|(_, d)| d.clone()).collect();
    (pick(PeerKind::Relay), pick(PeerKind::Worker))
}

/// `GET /status` over HTTP/1.1 on a new connection; the JSON body.
async fn get_status(addr: SocketAddr) -> Result<Value, String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let head = format!("GET /status HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.map_err(|e| format!("{addr}: {e}"))?;
    let mut answer = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut answer).await.map_err(|e| format!("{addr}: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("{addr} sent no HTTP answer"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("{addr} answered {status}"));
    }
    serde_json::from_str(body).map_err(|e| format!("{addr} sent a status that is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_silent_or_absent_peer_is_unreachable_and_the_others_answer() {
        // One answers, one accepts and never answers, one is not listening at all.
        let good = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (good_addr, silent_addr, gone_addr) =
            (good.local_addr().expect("addr"), silent.local_addr().expect("addr"), gone.local_addr().expect("addr"));
        drop(gone);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = good.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let body = r#"{"relay":"relay-0","backlog":7}"#;
                let _ = s.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes()).await;
            }
        });
        let _held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let peer = |name: &str, kind, address| Peer { name: name.into(), kind, address };
        let peers = [
            peer("relay-0", PeerKind::Relay, good_addr),
            peer("ledger-1", PeerKind::Worker, silent_addr),
            peer("view-1", PeerKind::Worker, gone_addr),
        ];
        let (relays, workers) = read(&peers).await;
        assert_eq!(relays.len(), 1);
        assert_eq!((relays[0]["ok"].as_bool(), relays[0]["backlog"].as_i64()), (Some(true), Some(7)));
        assert_eq!(relays[0]["name"], "relay-0");
        assert_eq!(workers.len(), 2);
        for w in &workers {
            assert_eq!(w["ok"], false, "{w}");
            assert!(w["error"].as_str().is_some_and(|e| !e.is_empty()), "{w}");
        }
        assert!(workers[0]["error"].as_str().unwrap_or("").contains("no answer"), "{}", workers[0]);
    }
}
