//! mTLS on a payments instance (issue 12): with `[mesh_tls]`, only clients holding a
//! certificate from the mesh CA get a call through; a plaintext client, a client without a
//! certificate and one with a certificate from another CA are refused; a certificate
//! replaced on disk is used for new connections without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paymesh_core::config::MeshConfig;
use paymesh_core::tls::{MeshConnector, MeshTls, TlsFiles};
use paymesh_proto::payments::v1 as pb;
use paymesh_proto::payments::v1::payments_client::PaymentsClient;
use paymesh_testkit::certs::MeshCa;

use crate::harness::pg;

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("paymesh-mtls-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

async fn authorize(addr: std::net::SocketAddr, client: Option<Arc<MeshTls>>, key: &str) -> Result<pb::Payment, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).map_err(|e| e.to_string())?;
    let channel = match client {
        Some(tls) => endpoint.connect_with_connector(MeshConnector::new(tls, "payments-0")).await,
        None => endpoint.connect().await,
    }
    .map_err(|e| format!("connect: {e}"))?;
    let req = pb::AuthorizeRequest { merchant_id: "m-1".into(), amount: 100, currency: "USD".into(), idempotency_key: key.into() };
    PaymentsClient::new(channel).authorize(req).await.map(tonic::Response::into_inner).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_clients_with_a_mesh_certificate_get_in_and_a_rotated_certificate_is_used() {
    let certs = dir("certs");
    let ca = MeshCa::load_or_create(&certs, "Paymesh test mesh CA").expect("ca");
    for name in ["payments-0", "edge"] {
        ca.write_issued(&certs, name).expect("issue");
    }
    let stranger_dir = dir("stranger");
    let stranger_ca = MeshCa::new("Somebody else's CA").expect("ca");
    stranger_ca.write_ca(&stranger_dir).expect("ca");
    stranger_ca.write_issued(&stranger_dir, "edge").expect("issue");

    let db = pg().url(&pg().fresh_database("mtls").expect("createdb"));
    let text = format!(
        "[[shards]]\nid = 0\ndatabase_url = \"{db}\"\npool_size = 4\n[payments]\nhealth_check_interval = \"100ms\"\n\
         [[payments.instances]]\nname = \"payments-0\"\nshard = 0\nlisten = \"127.0.0.1:0\"\n\
         [mesh_tls]\nca = \"{ca}\"\ndir = \"{dir}\"\n",
        ca = certs.join("ca.pem").display(),
        dir = certs.display()
    );
    let config = MeshConfig::parse(Path::new("mtls.toml"), &text, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        paymesh_payments::serve(listener, &config, "payments-0", async move {
            let _ = stopped.await;
        })
        .await
    });

    let edge = Arc::new(MeshTls::load(TlsFiles::for_name(&certs.join("ca.pem"), &certs, "edge")).expect("edge tls"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match authorize(addr, Some(edge.clone()), "t-1").await {
            Ok(p) => {
                assert_eq!(p.merchant_id, "m-1");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "a mesh client never got through: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Plaintext, and a certificate from another CA: refused.
    assert!(authorize(addr, None, "t-2").await.is_err(), "a plaintext client got through");
    let stranger = Arc::new(MeshTls::load(TlsFiles::for_name(&certs.join("ca.pem"), &stranger_dir, "edge")).expect("stranger tls"));
    let refused = authorize(addr, Some(stranger), "t-3").await;
    assert!(refused.is_err(), "a client with another CA's certificate got through");

    // Rotation: the instance's certificate is replaced on disk; new connections see the new
    // one (its serial differs), with no restart and every call answered.
    let before = server_cert(addr, &edge).await;
    // Issued by the CA as `cargo xtask certs` would reload it from its files.
    let reloaded = MeshCa::load_or_create(&certs, "Paymesh test mesh CA").expect("reload");
    reloaded.write_issued(&certs, "payments-0").expect("rotate");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        authorize(addr, Some(edge.clone()), "t-4").await.expect("a call during rotation");
        if server_cert(addr, &edge).await != before {
            break;
        }
        assert!(Instant::now() < deadline, "the rotated certificate was never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    server.await.expect("join").expect("clean stop");
}

/// The certificate the server presents on a new connection (DER).
async fn server_cert(addr: std::net::SocketAddr, client: &Arc<MeshTls>) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("payments-0").expect("name");
    let conn = tokio_rustls::TlsConnector::from(client.client_config()).connect(name, tcp).await.expect("handshake");
    conn.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).expect("a certificate")
}
