//! A repair service's database.

use paymesh_core::config::DatabaseConfig;

/// The pool of `db`, its connections named `application` (seen in `pg_stat_activity`).
pub fn pool(db: &DatabaseConfig, application: &str) -> Result<deadpool_postgres::Pool, String> {
    let mut pg: tokio_postgres::Config = db.url.parse().map_err(|e| format!("{}: {e}", db.url))?;
    if let Some(p) = &db.password {
        pg.password(p.expose());
    }
    pg.application_name(application);
    pg.connect_timeout(db.connect_timeout);
    pg.options(db.session_options());
    let manager = deadpool_postgres::Manager::new(pg, tokio_postgres::NoTls);
    deadpool_postgres::Pool::builder(manager).max_size(db.pool_size).build().map_err(|e| e.to_string())
}

/// What went wrong, with the server's own message when there is one (tokio-postgres's
/// `Display` says only "db error").
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Applies every migration of `service` the database lacks, in order, under one advisory
/// lock (instances starting together do not race); `migrations` are `(version, sql)`.
pub async fn migrate(pool: &deadpool_postgres::Pool, service: &str, migrations: &[(i32, &str)]) -> Result<(), String> {
    let fail = |e: tokio_postgres::Error| format!("migrating {service}'s database: {e}");
    let mut client = pool.get().await.map_err(|e| format!("{service}'s database is unreachable: {e}"))?;
    let tx = client.transaction().await.map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&format!("paymesh-{service}-migrations")]).await.map_err(fail)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(fail)?;
    for (version, sql) in migrations {
        if tx.query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[version]).await.map_err(fail)?.is_none() {
            tx.batch_execute(sql).await.map_err(fail)?;
            tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[version]).await.map_err(fail)?;
        }
    }
    tx.commit().await.map_err(fail)
}

/// Waits until the database takes a migration (it may still be starting), for at most
/// `patience`.
pub async fn migrate_when_up(
    pool: &deadpool_postgres::Pool,
    service: &str,
    migrations: &[(i32, &str)],
    patience: std::time::Duration,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        match migrate(pool, service, migrations).await {
            Ok(()) => return Ok(()),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "database not ready; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
