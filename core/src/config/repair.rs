//! `[repair]`: seed 002's appliance repair centre, a second domain on the mesh. Each of its
//! services (`requests`, `desk`, `stock`, `progress`) has a database of its own and its
//! instances; the edge routes them from `[[edge.routes]]` and the repair descriptor set in
//! `edge.descriptor_sets`, with no code of its own for them.
//!
//! ```toml
//! [repair]
//! merchant_id = "repair-centre"   # the Paymesh merchant repairs are paid to
//!
//! [repair.stock]
//! database_url = "postgres://postgres@127.0.0.1:15435/repair_stock"
//! [[repair.stock.instances]]
//! name = "stock-1"
//! listen = "127.0.0.1:25091"
//! status_listen = "127.0.0.1:9941"   # optional: /status, /metrics
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::Deserialize;

use super::{ConfigError, DatabaseConfig, DbKeys};

/// The repair centre's services.
#[derive(Clone, Debug)]
pub struct RepairConfig {
    /// The Paymesh merchant a completed repair is charged to.
    pub merchant_id: String,
    /// The environment variable holding the credential the service desk presents to the edge
    /// (`Authorization` value, e.g. `Bearer <token>`, or an API key `pmk_...`) when the edge
    /// authenticates; it must act for `merchant_id`.
    pub credential_env: Option<String>,
    /// Its value, when the variable is set where the config was read (only the desk needs
    /// it; it refuses to start without it when the edge authenticates).
    pub credential: Option<super::Secret>,
    pub requests: Option<RepairService>,
    pub desk: Option<RepairService>,
    pub stock: Option<RepairService>,
    pub progress: Option<RepairService>,
}

/// One service of the repair centre: its database and its instances.
#[derive(Clone, Debug)]
pub struct RepairService {
    pub database: DatabaseConfig,
    pub instances: Vec<RepairInstance>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairInstance {
    pub name: String,
    /// gRPC.
    pub listen: SocketAddr,
    /// HTTP `/status` and `/metrics`, if set.
    pub status_listen: Option<SocketAddr>,
}

impl RepairConfig {
    /// Every service section with its name, in a fixed order.
    pub fn services(&self) -> impl Iterator<Item = (&'static str, &RepairService)> {
        [("requests", &self.requests), ("desk", &self.desk), ("stock", &self.stock), ("progress", &self.progress)]
            .into_iter()
            .filter_map(|(n, s)| s.as_ref().map(|s| (n, s)))
    }

    /// The instance called `name`, with its service's name and section.
    pub fn instance(&self, name: &str) -> Option<(&'static str, &RepairService, &RepairInstance)> {
        self.services().find_map(|(service, s)| s.instances.iter().find(|i| i.name == name).map(|i| (service, s, i)))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    #[serde(default = "default_merchant")]
    merchant_id: String,
    #[serde(default)]
    credential_env: Option<String>,
    #[serde(default)]
    requests: Option<RawService>,
    #[serde(default)]
    desk: Option<RawService>,
    #[serde(default)]
    stock: Option<RawService>,
    #[serde(default)]
    progress: Option<RawService>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    database_url: String,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default = "default_pool")]
    pool_size: usize,
    #[serde(default = "super::raw::default_connect_timeout")]
    connect_timeout: String,
    #[serde(default = "super::raw::default_lock_timeout")]
    lock_timeout: String,
    #[serde(default = "super::raw::default_statement_timeout")]
    statement_timeout: String,
    #[serde(default)]
    instances: Vec<RawInstance>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    name: String,
    listen: String,
    #[serde(default)]
    status_listen: Option<String>,
}

fn default_merchant() -> String {
    "repair-centre".into()
}
fn default_pool() -> usize {
    8
}

type Err<'a> = &'a dyn Fn(String, String) -> ConfigError;

/// Validates `[repair]`; `taken` holds the instance names already used in the mesh (a name
/// names one process).
pub(super) fn validate(
    raw: Raw,
    env: &dyn Fn(&str) -> Option<String>,
    err: Err<'_>,
    taken: &mut HashSet<String>,
) -> Result<RepairConfig, ConfigError> {
    if raw.merchant_id.is_empty()
        || raw.merchant_id.len() > 64
        || !raw.merchant_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(err("repair.merchant_id".into(), format!("'{}' is not a merchant id; use 1..64 of [A-Za-z0-9._-]", raw.merchant_id)));
    }
    let mut service = |name: &str, s: Option<RawService>| -> Result<Option<RepairService>, ConfigError> {
        let Some(s) = s else { return Ok(None) };
        let section = format!("repair.{name}");
        let keys = DbKeys {
            url: &s.database_url,
            password_env: s.password_env,
            password: s.password,
            pool_size: s.pool_size,
            connect_timeout: &s.connect_timeout,
            lock_timeout: &s.lock_timeout,
            statement_timeout: &s.statement_timeout,
        };
        let database = super::database(&section, keys, env, err)?;
        if s.instances.is_empty() {
            return Err(err(format!("{section}.instances"), format!("no instance; add a [[{section}.instances]] with name and listen")));
        }
        let mut instances = Vec::with_capacity(s.instances.len());
        for (i, inst) in s.instances.into_iter().enumerate() {
            let key = |k: &str| format!("{section}.instances[{i}].{k}");
            super::pipeline::name_ok(err, key("name"), &inst.name, taken)?;
            let addr = |k: &str, v: &str| super::pipeline::addr(err, key(k), v);
            let listen = addr("listen", &inst.listen)?;
            let status_listen = inst.status_listen.as_deref().map(|v| addr("status_listen", v)).transpose()?;
            instances.push(RepairInstance { name: inst.name, listen, status_listen });
        }
        Ok(Some(RepairService { database, instances }))
    };
    Ok(RepairConfig {
        requests: service("requests", raw.requests)?,
        desk: service("desk", raw.desk)?,
        stock: service("stock", raw.stock)?,
        progress: service("progress", raw.progress)?,
        merchant_id: raw.merchant_id,
        credential: raw.credential_env.as_deref().and_then(env).map(super::Secret::new),
        credential_env: raw.credential_env,
    })
}
