//! Service plumbing: health follows the database, reflection v1 and v1alpha, migrations,
//! graceful shutdown.

use std::time::{Duration, Instant};

use paymesh_proto::payments::v1 as pb;
use paymesh_testkit::PgServer;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::harness::*;

#[tokio::test]
async fn health_is_serving_only_while_the_database_answers() {
    // A private server, so stopping it does not disturb other tests.
    let pg = tokio::task::spawn_blocking(PgServer::start).await.expect("join").expect("postgres");
    let url = pg.url(&pg.fresh_database("health").expect("createdb"));
    let mesh = TestMesh::start_on(vec![url]).await;
    assert_eq!(mesh.health(0, pb::SERVICE_NAME).await.expect("check"), ServingStatus::Serving);
    assert_eq!(mesh.health(0, "").await.expect("check"), ServingStatus::Serving);

    tokio::task::spawn_blocking(move || pg.stop()).await.expect("stop postgres");
    let start = Instant::now();
    loop {
        if mesh.health(0, pb::SERVICE_NAME).await.expect("check") == ServingStatus::NotServing {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "health never left SERVING after the database stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Calls fail as retryable UNAVAILABLE, not INTERNAL.
    let m = mesh.merchant_on(0, 0);
    let err = mesh.client(0).await.authorize(authorize_req(&m, 1, "USD")).await.expect_err("no database");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("retry"), "{}", err.message());
    mesh.stop().await;
}

async fn list_services_v1(mesh: &TestMesh) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut c = ServerReflectionClient::new(mesh.channel(0).await);
    let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
    let mut stream = c.server_reflection_info(tokio_stream::iter(vec![req])).await.expect("reflection v1").into_inner();
    match stream.message().await.expect("message").and_then(|m| m.message_response) {
        Some(MessageResponse::ListServicesResponse(l)) => l.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

async fn list_services_v1alpha(mesh: &TestMesh) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let mut c = ServerReflectionClient::new(mesh.channel(0).await);
    let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
    let mut stream = c.server_reflection_info(tokio_stream::iter(vec![req])).await.expect("reflection v1alpha").into_inner();
    match stream.message().await.expect("message").and_then(|m| m.message_response) {
        Some(MessageResponse::ListServicesResponse(l)) => l.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test]
async fn reflection_lists_the_services_in_both_versions() {
    let mesh = TestMesh::start(1).await;
    for services in [list_services_v1(&mesh).await, list_services_v1alpha(&mesh).await] {
        assert!(services.iter().any(|s| s == "payments.v1.Payments"), "{services:?}");
        assert!(services.iter().any(|s| s == "grpc.health.v1.Health"), "{services:?}");
    }
    mesh.stop().await;
}

#[tokio::test]
async fn restarting_keeps_data_and_reapplies_no_migration() {
    let mesh = TestMesh::start(2).await;
    let m = mesh.merchant_on(1, 0);
    let p = authorized(&mesh, &m, 4_200).await;
    let urls = mesh.db_urls.clone();
    mesh.stop().await;

    let again = TestMesh::start_on(urls).await;
    let got =
        again.client(1).await.get_payment(pb::GetPaymentRequest { payment_id: p.payment_id.clone() }).await.expect("get").into_inner();
    assert_eq!(got, p);
    let versions: i64 = again.db(1).await.query_one("SELECT count(*) FROM schema_migrations", &[]).await.expect("count").get(0);
    assert_eq!(versions, 4);
    again.stop().await;
}

#[tokio::test]
async fn shutdown_drains_then_finishes_in_flight_calls_and_stops_accepting() {
    // A lock wait longer than the drain, so the capture is still in flight when it ends.
    let url = pg().url(&pg().fresh_database("drain").expect("createdb"));
    let mut mesh = TestMesh::start_with(vec![url], "pool_size = 8\nlock_timeout = \"20s\"\nstatement_timeout = \"30s\"\n").await;
    let m = mesh.merchant_on(0, 0);
    let p = authorized(&mesh, &m, 1_000).await;

    // Hold the payment's row lock from outside so a capture stays in flight.
    let mut blocker = mesh.db(0).await;
    let tx = blocker.transaction().await.expect("begin");
    tx.query_one("SELECT 1 FROM payments WHERE payment_id = $1 FOR UPDATE", &[&p.payment_id]).await.expect("lock");
    let mut c = mesh.client(0).await;
    let req = pb::CaptureRequest { payment_id: p.payment_id.clone(), amount: None, idempotency_key: key() };
    let in_flight = tokio::spawn(async move { c.capture(req).await });
    // Wait until the capture is really waiting on our lock.
    let watcher = mesh.db(0).await;
    let start = Instant::now();
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = 'paymesh-payments' AND datname = current_database()",
                &[],
            )
            .await
            .expect("activity")
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "the capture never reached the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let addr = mesh.addrs[0];
    let server = mesh.stop_instance(0);
    // Draining first: NOT_SERVING, while still answering (for `drain_delay`).
    let start = Instant::now();
    while mesh.health(0, "").await.ok() != Some(ServingStatus::NotServing) {
        assert!(start.elapsed() < DEADLINE, "never reported NOT_SERVING after shutdown began");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Then stops accepting: new connections are refused once the listener is gone.
    let start = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(start.elapsed() < DEADLINE, "still accepting connections after shutdown began");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!server.is_finished(), "server exited with a call in flight");

    tx.commit().await.expect("release the lock");
    let captured = in_flight.await.expect("join").expect("the in-flight capture completes").into_inner();
    assert_eq!(captured.captured_amount, 1_000);
    server.await.expect("join").expect("clean exit");
    drop(blocker);
}

#[tokio::test]
async fn metrics_count_calls_by_method_and_code_and_show_the_pool() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mesh = TestMesh::start(1).await;
    let m = mesh.merchant_on(0, 0);
    let mut c = mesh.client(0).await;
    c.authorize(authorize_req(&m, 10, "USD")).await.expect("authorize");
    let _ = c.authorize(authorize_req(&m, 0, "USD")).await.expect_err("invalid");
    let addr = mesh.config.payments.instances[0].status_listen.expect("status listener");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let mut body = String::new();
    s.read_to_string(&mut body).await.expect("read");
    for want in [
        "paymesh_payments_requests_total{instance=\"payments-0\",shard=\"0\",method=\"Authorize\",code=\"OK\"} 1",
        "paymesh_payments_requests_total{instance=\"payments-0\",shard=\"0\",method=\"Authorize\",code=\"INVALID_ARGUMENT\"} 1",
        "paymesh_payments_request_duration_seconds_count{instance=\"payments-0\",shard=\"0\",method=\"Authorize\"} 2",
        "paymesh_payments_pool_max_connections{instance=\"payments-0\",shard=\"0\"} 8",
    ] {
        assert!(body.contains(want), "{want} missing from\n{body}");
    }
    mesh.stop().await;
}
