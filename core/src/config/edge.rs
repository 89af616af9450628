//! The `[edge]` section: listeners, limits, timeouts, health checking, clusters and routes.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{PaymentsInstance, raw};
use crate::{ShardId, duration};

/// The edge proxy's settings.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// REST (HTTP/1.1 and h2c) and gRPC (h2c) on one port.
    pub listen: SocketAddr,
    /// Admin API: `/clusters`, `/routes`, `/ready`.
    pub admin_listen: SocketAddr,
    /// Largest accepted request body (REST JSON, or a gRPC request the edge must read to route).
    pub max_body_bytes: usize,
    pub connect_timeout: Duration,
    /// Default deadline of a call; routes may override it.
    pub request_timeout: Duration,
    /// Worker threads of the proxy.
    pub threads: usize,
    /// Extra FileDescriptorSet files (Paymesh's own are built in), resolved against the
    /// config file's directory.
    pub descriptor_sets: Vec<PathBuf>,
    pub health: HealthCheck,
    pub clusters: Vec<Cluster>,
    pub routes: Vec<Route>,
}

/// Active and passive health checking of upstream instances (Envoy's semantics).
#[derive(Clone, Debug)]
pub struct HealthCheck {
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passing checks that make an unhealthy instance healthy.
    pub healthy_threshold: u32,
    /// Consecutive failing checks that make a healthy instance unhealthy.
    pub unhealthy_threshold: u32,
    /// Consecutive connection failures of real traffic that eject an instance until it
    /// passes active checks again.
    pub passive_failures: u32,
}

/// A set of interchangeable upstream instances, optionally split into shards.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub name: String,
    /// `Some(n)`: every endpoint belongs to one of `n` shards. `None`: one pool.
    pub shards: Option<u32>,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Clone, Debug)]
pub struct Endpoint {
    pub name: String,
    pub address: SocketAddr,
    pub shard: Option<ShardId>,
}

/// Routes every method of one gRPC service (and its `google.api.http` REST bindings) to a
/// cluster.
#[derive(Clone, Debug)]
pub struct Route {
    /// Full gRPC service name, e.g. `payments.v1.Payments`.
    pub service: String,
    pub cluster: String,
    /// Where the shard is found, tried in order. Empty: any instance of the cluster.
    pub shard_keys: Vec<ShardKey>,
    /// Overrides `edge.request_timeout`.
    pub timeout: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardKey {
    /// Request field (proto name, dotted for nested fields) holding the key.
    pub field: String,
    pub kind: ShardKeyKind,
    /// Request header (gRPC metadata) that may carry the key instead, e.g. `x-merchant-id`.
    pub header: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardKeyKind {
    /// A merchant id: the shard is `shard_for_merchant(value, shards)`.
    Merchant,
    /// An id that carries its shard (`pay_<shard>_…`, `ref_<shard>_…`).
    ShardedId,
}

impl EdgeConfig {
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

pub(super) fn validate(
    raw: raw::Edge,
    base_dir: &Path,
    shard_count: u32,
    payments: &[PaymentsInstance],
    err: &dyn Fn(String, String) -> super::ConfigError,
) -> Result<EdgeConfig, super::ConfigError> {
    let addr = |key: &str, v: &str| -> Result<SocketAddr, super::ConfigError> {
        v.parse().map_err(|_| err(format!("edge.{key}"), format!("'{v}' is not an address; write host:port, e.g. 127.0.0.1:8080")))
    };
    let dur = |key: &str, v: &str| duration::parse(v).map_err(|m| err(format!("edge.{key}"), m));
    let listen = addr("listen", &raw.listen)?;
    let admin_listen = addr("admin_listen", &raw.admin_listen)?;
    if listen.port() != 0 && listen == admin_listen {
        return Err(err("edge.admin_listen".into(), format!("{admin_listen} is also edge.listen; give the admin API its own port")));
    }
    if !(1..=16 * 1024 * 1024).contains(&raw.max_body_bytes) {
        return Err(err("edge.max_body_bytes".into(), format!("{} is out of range; use 1 to 16777216", raw.max_body_bytes)));
    }
    if !(1..=64).contains(&raw.threads) {
        return Err(err("edge.threads".into(), format!("{} is out of range; use 1 to 64", raw.threads)));
    }
    let connect_timeout = dur("connect_timeout", &raw.connect_timeout)?;
    let request_timeout = dur("request_timeout", &raw.request_timeout)?;
    for (key, d) in [("connect_timeout", connect_timeout), ("request_timeout", request_timeout)] {
        if d.is_zero() {
            return Err(err(format!("edge.{key}"), "must be above zero".into()));
        }
    }

    let h = raw.health;
    let health = HealthCheck {
        interval: dur("health.interval", &h.interval)?,
        timeout: dur("health.timeout", &h.timeout)?,
        healthy_threshold: h.healthy_threshold,
        unhealthy_threshold: h.unhealthy_threshold,
        passive_failures: h.passive_failures,
    };
    if health.interval.is_zero() || health.timeout.is_zero() {
        return Err(err("edge.health".into(), "interval and timeout must be above zero".into()));
    }
    for (key, v) in [
        ("healthy_threshold", h.healthy_threshold),
        ("unhealthy_threshold", h.unhealthy_threshold),
        ("passive_failures", h.passive_failures),
    ] {
        if v == 0 {
            return Err(err(format!("edge.health.{key}"), "must be at least 1".into()));
        }
    }

    let mut clusters = Vec::with_capacity(raw.clusters.len());
    let mut names = HashSet::new();
    for (i, c) in raw.clusters.into_iter().enumerate() {
        let key = |k: &str| format!("edge.clusters[{i}].{k}");
        if c.name.is_empty() || !names.insert(c.name.clone()) {
            return Err(err(key("name"), format!("'{}' is empty or declared twice", c.name)));
        }
        let (shards, endpoints) = match (c.payments_instances, c.endpoints.is_empty()) {
            (true, true) => {
                let eps = payments.iter().map(|p| Endpoint { name: p.name.clone(), address: p.listen, shard: Some(p.shard) }).collect();
                (Some(shard_count), eps)
            }
            (true, false) => return Err(err(key("endpoints"), "set either payments_instances = true or endpoints, not both".into())),
            (false, true) => return Err(err(key("endpoints"), "a cluster needs endpoints (or payments_instances = true)".into())),
            (false, false) => explicit_endpoints(c.endpoints, &key, err)?,
        };
        clusters.push(Cluster { name: c.name, shards, endpoints });
    }

    let mut routes = Vec::with_capacity(raw.routes.len());
    let mut services = HashSet::new();
    for (i, r) in raw.routes.into_iter().enumerate() {
        let key = |k: &str| format!("edge.routes[{i}].{k}");
        if r.service.is_empty() || !services.insert(r.service.clone()) {
            return Err(err(key("service"), format!("'{}' is empty or routed twice", r.service)));
        }
        let Some(cluster) = clusters.iter().find(|c| c.name == r.cluster) else {
            let known: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
            return Err(err(key("cluster"), format!("no cluster is named '{}'; declared: {known:?}", r.cluster)));
        };
        if !r.shard_keys.is_empty() && cluster.shards.is_none() {
            return Err(err(key("shard_keys"), format!("cluster '{}' is not sharded, so a route to it cannot have shard keys", r.cluster)));
        }
        let mut shard_keys = Vec::with_capacity(r.shard_keys.len());
        for (j, k) in r.shard_keys.into_iter().enumerate() {
            let kind = match k.kind.as_str() {
                "merchant" => ShardKeyKind::Merchant,
                "sharded_id" => ShardKeyKind::ShardedId,
                other => {
                    return Err(err(
                        key(&format!("shard_keys[{j}].kind")),
                        format!("'{other}' is not a key kind; use \"merchant\" or \"sharded_id\""),
                    ));
                }
            };
            if k.field.is_empty() {
                return Err(err(key(&format!("shard_keys[{j}].field")), "must name a request field".into()));
            }
            let header = k.header.map(|h| h.to_ascii_lowercase());
            shard_keys.push(ShardKey { field: k.field, kind, header });
        }
        let timeout = r.timeout.as_deref().map(|t| dur(&format!("routes[{i}].timeout"), t)).transpose()?;
        routes.push(Route { service: r.service, cluster: r.cluster, shard_keys, timeout });
    }

    Ok(EdgeConfig {
        listen,
        admin_listen,
        max_body_bytes: raw.max_body_bytes,
        connect_timeout,
        request_timeout,
        threads: raw.threads,
        descriptor_sets: raw.descriptor_sets.iter().map(|p| base_dir.join(p)).collect(),
        health,
        clusters,
        routes,
    })
}

fn explicit_endpoints(
    raw: Vec<raw::EdgeEndpoint>,
    key: &dyn Fn(&str) -> String,
    err: &dyn Fn(String, String) -> super::ConfigError,
) -> Result<(Option<u32>, Vec<Endpoint>), super::ConfigError> {
    let sharded = raw.iter().any(|e| e.shard.is_some());
    let mut endpoints = Vec::with_capacity(raw.len());
    for (j, e) in raw.into_iter().enumerate() {
        let address: SocketAddr = e
            .address
            .parse()
            .map_err(|_| err(key(&format!("endpoints[{j}].address")), format!("'{}' is not an address; write host:port", e.address)))?;
        if sharded && e.shard.is_none() {
            return Err(err(key(&format!("endpoints[{j}].shard")), "some endpoints have a shard, so every endpoint needs one".into()));
        }
        let name = e.name.unwrap_or_else(|| address.to_string());
        endpoints.push(Endpoint { name, address, shard: e.shard.map(ShardId) });
    }
    if !sharded {
        return Ok((None, endpoints));
    }
    let n = endpoints.iter().filter_map(|e| e.shard).map(|s| s.0 + 1).max().unwrap_or(0);
    if let Some(missing) = (0..n).find(|s| !endpoints.iter().any(|e| e.shard == Some(ShardId(*s)))) {
        return Err(err(key("endpoints"), format!("shard {missing} has no endpoint; shards must be 0..{n} without gaps")));
    }
    Ok((Some(n), endpoints))
}
