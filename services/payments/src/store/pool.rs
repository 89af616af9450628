//! The connection pool to one shard.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use paymesh_core::config::DatabaseConfig;

/// Pool sizing and timeouts, from the shard's config.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub max_size: usize,
    pub connect_timeout: Duration,
    /// How long a call waits for a free connection before failing UNAVAILABLE.
    pub wait_timeout: Duration,
}

impl From<&DatabaseConfig> for PoolSettings {
    fn from(db: &DatabaseConfig) -> Self {
        // The seeds' gateway gave pool acquisition 5 s.
        Self { max_size: db.pool_size, connect_timeout: db.connect_timeout, wait_timeout: Duration::from_secs(5) }
    }
}

/// Builds a pool for `db`. Connections are opened lazily; nothing is contacted here.
pub fn connect_pool(db: &DatabaseConfig) -> Result<Pool, String> {
    let settings = PoolSettings::from(db);
    let mut pg = tokio_postgres::Config::from_str(&db.url).map_err(|e| format!("database_url is not a valid PostgreSQL URL: {e}"))?;
    if let Some(password) = &db.password {
        pg.password(password.expose());
    }
    pg.connect_timeout(settings.connect_timeout);
    // Every statement is prepared once per connection and its best plan does not depend on
    // the values (primary-key lookups, `unnest` inserts): without this, PostgreSQL keeps
    // planning the batch statements again on every execution (their array parameters make
    // the generic plan's estimate look worse than the custom plans it compares it with).
    pg.options(format!("{} -c plan_cache_mode=force_generic_plan", db.session_options()));
    pg.application_name("paymesh-payments");
    let manager = Manager::from_config(pg, tokio_postgres::NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(settings.max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.wait_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .build()
        .map_err(|e| format!("cannot build the connection pool: {e}"))
}
