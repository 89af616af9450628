//! The load tool against a real gRPC server that fails on demand: templated requests,
//! grpc-status (not HTTP status) counted, ghz's report fields, `-n` honoured.

use std::process::Command;

use paymesh_proto::payments::v1 as pb;
use tonic::{Request, Response, Status};

/// Authorize fails with UNAVAILABLE for even amounts.
struct Evens;

#[tonic::async_trait]
impl pb::payments_server::Payments for Evens {
    async fn authorize(&self, r: Request<pb::AuthorizeRequest>) -> Result<Response<pb::Payment>, Status> {
        let r = r.into_inner();
        if r.amount % 2 == 0 {
            return Err(Status::unavailable("even amounts fail"));
        }
        Ok(Response::new(pb::Payment { merchant_id: r.merchant_id, amount: r.amount, ..Default::default() }))
    }
    async fn capture(&self, _: Request<pb::CaptureRequest>) -> Result<Response<pb::Payment>, Status> {
        Err(Status::unimplemented("test server"))
    }
    async fn refund(&self, _: Request<pb::RefundRequest>) -> Result<Response<pb::RefundResponse>, Status> {
        Err(Status::unimplemented("test server"))
    }
    async fn void(&self, _: Request<pb::VoidRequest>) -> Result<Response<pb::Payment>, Status> {
        Err(Status::unimplemented("test server"))
    }
    async fn get_payment(&self, _: Request<pb::GetPaymentRequest>) -> Result<Response<pb::Payment>, Status> {
        Err(Status::unimplemented("test server"))
    }
}

/// Serves [`Evens`] on a free port.
async fn evens_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::payments_server::PaymentsServer::new(Evens))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_grpc_statuses_and_reports_like_ghz() {
    let addr = evens_server().await;
    let bin = env!("CARGO_BIN_EXE_paymesh-bench");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(["--call", "payments.v1.Payments/Authorize", "-n", "20", "-c", "4", "--insecure"])
            .args(["-d", r#"{"merchantId":"m-{{mod .RequestNumber 3}}","amount":{{.RequestNumber}},"currency":"USD","idempotencyKey":"k-{{.UUID}}"}"#])
            .arg(addr.to_string())
            .output()
    })
    .await
    .expect("join")
    .expect("run paymesh-bench");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(r["count"], 20);
    assert_eq!(r["statusCodeDistribution"]["OK"], 10);
    assert_eq!(r["statusCodeDistribution"]["Unavailable"], 10, "grpc-status counted, though HTTP said 200");
    assert_eq!(r["errorDistribution"]["rpc error: code = Unavailable desc = even amounts fail"], 10);
    for field in ["total", "average", "fastest", "slowest", "rps", "latencyDistribution", "histogram", "options", "date"] {
        assert!(r.get(field).is_some(), "{field} missing from {r}");
    }
    assert_eq!(r["latencyDistribution"].as_array().map(Vec::len), Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_a_ghz_config_file_and_skips_the_first_calls() {
    let addr = evens_server().await;
    let dir = std::env::temp_dir().join(format!("paymesh-ghz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("authorize.json");
    let text = serde_json::json!({
        "proto": "proto/payments/v1/payments.proto",
        "call": "payments.v1.Payments/Authorize",
        "host": addr.to_string(),
        "insecure": true,
        "total": 20,
        "concurrency": 1,
        "skipFirst": 6,
        "data": {"merchant_id": "m", "amount": "{{.RequestNumber}}", "currency": "USD", "idempotency_key": "{{.UUID}}"},
    });
    std::fs::write(&config, text.to_string()).expect("write config");
    let bin = env!("CARGO_BIN_EXE_paymesh-bench");
    let out = tokio::task::spawn_blocking(move || Command::new(bin).arg("--config").arg(&config).output())
        .await
        .expect("join")
        .expect("run paymesh-bench");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    // Calls 0..=5 are sent but not recorded; of 6..=19, the even amounts fail.
    assert_eq!(r["count"], 14, "{r}");
    assert_eq!(r["statusCodeDistribution"]["OK"], 7);
    assert_eq!(r["statusCodeDistribution"]["Unavailable"], 7);
}

#[test]
fn bad_requests_and_targets_are_explained() {
    let bin = env!("CARGO_BIN_EXE_paymesh-bench");
    let out = Command::new(bin).args(["--call", "payments.v1.Payments/Nope", "-n", "1", "127.0.0.1:1"]).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("payments.v1.Payments has no method Nope"));
}
