//! mTLS inside the mesh (issue 12), through the real edge to real payments instances: with
//! `[mesh_tls]` the edge's calls and health checks go over TLS with its client certificate;
//! an instance refuses a plaintext client; a payments instance's certificate and the
//! edge's own are rotated on disk under load, and no call fails.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use paymesh_proto::payments::v1 as pb;
use paymesh_proto::payments::v1::payments_client::PaymentsClient;
use paymesh_testkit::certs::MeshCa;

use crate::harness::*;
use crate::http_client::post_json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_reaches_instances_over_mtls_and_rotations_under_load_lose_no_call() {
    let dir = std::env::temp_dir().join(format!("paymesh-edge-mtls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = MeshCa::new("Paymesh test mesh CA").expect("ca");
    ca.write_ca(&dir).expect("ca.pem");
    for name in ["edge", "payments-0a", "payments-0b", "payments-1a", "payments-1b", "inventory-1"] {
        ca.write_issued(&dir, name).expect("issue");
    }
    let mesh_tls = format!("[mesh_tls]\nca = \"{}\"\ndir = \"{}\"\n", dir.join("ca.pem").display(), dir.display());
    // Ready means every instance passed a health check: over mTLS.
    let stack = Stack::start_with(&mesh_tls).await;
    let m = stack.merchant_on(0, 0);
    let body = |k: &str| format!(r#"{{"merchantId":"{m}","amount":100,"currency":"USD","idempotencyKey":"{k}"}}"#);
    let r = post_json(stack.edge, "/api/payments/authorize", &body("first")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Straight at an instance without TLS: refused.
    let plain = async {
        let mut c = PaymentsClient::connect(format!("http://{}", stack.instances[0].addr)).await.map_err(|e| e.to_string())?;
        let req = pb::AuthorizeRequest { merchant_id: m.clone(), amount: 1, currency: "USD".into(), idempotency_key: "plain".into() };
        c.authorize(req).await.map_err(|e| e.to_string())
    };
    assert!(plain.await.is_err(), "a plaintext client got an answer from an mTLS instance");

    // Load through the edge while the certificates of shard 0's instances and of the edge
    // are replaced on disk.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed, edge, m) = (stop.clone(), ok.clone(), failed.clone(), stack.edge, m.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let b = format!(r#"{{"merchantId":"{m}","amount":100,"currency":"USD","idempotencyKey":"load-{n}"}}"#);
                let r = crate::http_client::try_send(
                    edge,
                    crate::http_client::Version::Http1,
                    "POST",
                    "/api/payments/authorize",
                    &[("content-type", "application/json")],
                    bytes::Bytes::from(b),
                )
                .await;
                match r {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    other => {
                        eprintln!("call {n} failed: {other:?}");
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        })
    };
    let wait_calls = |at_least: u64| {
        let ok = ok.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while ok.load(Ordering::SeqCst) < at_least {
                assert!(Instant::now() < deadline, "the load stalled at {} calls", ok.load(Ordering::SeqCst));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_calls(20).await;
    for name in ["payments-0a", "payments-0b", "edge"] {
        ca.write_issued(&dir, name).expect("rotate");
    }
    // The load keeps running until both instances of shard 0 present their new
    // certificates to new connections (they look at their files once a second).
    for (i, name) in ["payments-0a", "payments-0b"].iter().enumerate() {
        let rotated = std::fs::read_to_string(dir.join(format!("{name}.pem"))).expect("pem");
        let want = rustls_pki_types::CertificateDer::from_pem_slice(rotated.as_bytes()).expect("der").to_vec();
        let deadline = Instant::now() + Duration::from_secs(30);
        while presented(stack.instances[i].addr, &dir, name).await != want {
            assert!(Instant::now() < deadline, "{name} never served its rotated certificate");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let after = ok.load(Ordering::SeqCst);
    wait_calls(after + 50).await;
    let r = post_json(stack.edge, "/api/payments/authorize", &body("after")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    stop.store(true, Ordering::SeqCst);
    load.await.expect("load");
    assert_eq!(failed.load(Ordering::SeqCst), 0, "calls failed during the rotation ({} succeeded)", ok.load(Ordering::SeqCst));
    stack.stop().await;
}

/// The certificate instance `name` at `addr` presents to a new mesh connection (DER).
async fn presented(addr: std::net::SocketAddr, dir: &std::path::Path, name: &str) -> Vec<u8> {
    let client = paymesh_core::tls::MeshTls::load(paymesh_core::tls::TlsFiles::for_name(&dir.join("ca.pem"), dir, "inventory-1"))
        .expect("client tls");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let server = rustls_pki_types::ServerName::try_from(name.to_owned()).expect("name");
    let conn = tokio_rustls::TlsConnector::from(client.client_config()).connect(server, tcp).await.expect("handshake");
    conn.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).expect("a certificate")
}
