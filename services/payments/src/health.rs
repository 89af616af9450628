//! gRPC health: SERVING only while this instance's database answers.

use std::time::Duration;

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The names health is reported under: the whole server ("") and the payments service.
const SERVICES: [&str; 2] = ["", paymesh_proto::payments::v1::SERVICE_NAME];

pub async fn set(reporter: &HealthReporter, status: ServingStatus) {
    for s in SERVICES {
        reporter.set_service_status(s, status).await;
    }
}

/// Pings the database every `interval` and reports the result, until dropped.
pub async fn watch_database(reporter: HealthReporter, pool: deadpool_postgres::Pool, interval: Duration) {
    let mut last = None;
    loop {
        let up = tokio::time::timeout(interval.max(Duration::from_secs(1)), ping(&pool)).await.unwrap_or(false);
        if last != Some(up) {
            if up {
                tracing::info!("database reachable; health SERVING");
            } else {
                tracing::warn!("database unreachable; health NOT_SERVING");
            }
            set(&reporter, if up { ServingStatus::Serving } else { ServingStatus::NotServing }).await;
            last = Some(up);
        }
        tokio::time::sleep(interval).await;
    }
}

async fn ping(pool: &deadpool_postgres::Pool) -> bool {
    match pool.get().await {
        Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
        Err(_) => false,
    }
}
