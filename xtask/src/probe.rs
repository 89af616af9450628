//! Waits for a gRPC server to report SERVING on grpc.health.v1.

use std::time::{Duration, Instant};

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// One health check; `None` if the server cannot be asked.
pub async fn check(addr: std::net::SocketAddr, service: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .ok()?;
    let reply = HealthClient::new(channel).check(HealthCheckRequest { service: service.into() }).await.ok()?;
    Some(reply.into_inner().status())
}

/// Polls until `addr` is SERVING or `timeout` passes.
pub async fn wait_serving(addr: std::net::SocketAddr, service: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = check(addr, service).await;
        if status == Some(ServingStatus::Serving) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{addr} did not report SERVING within {timeout:?} (last answer: {status:?})"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
