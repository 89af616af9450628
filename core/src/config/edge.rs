//! The `[edge]` section: listeners, limits, timeouts, health checking, clusters and routes.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{PaymentsInstance, raw};
use crate::{ShardId, duration};

/// The edge proxy's settings.
#[derive(Clone, Debug, PartialEq)]
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
    /// Longest wait for any read from a client (a stalled header or body, an idle keepalive
    /// connection): the connection is closed after it.
    pub client_read_timeout: Duration,
    /// Longest time a client may take to send a whole body the edge reads itself (a REST
    /// body, or the gRPC request message it routes by): a client trickling bytes cannot
    /// hold a connection past it.
    pub body_read_deadline: Duration,
    /// Worker threads of the proxy.
    pub threads: usize,
    /// Extra FileDescriptorSet files (Paymesh's own are built in), resolved against the
    /// config file's directory.
    pub descriptor_sets: Vec<PathBuf>,
    pub health: HealthCheck,
    pub outlier: Outlier,
    pub clusters: Vec<Cluster>,
    pub routes: Vec<Route>,
    /// Who may call; `None`: every route is public.
    pub auth: Option<super::Auth>,
    /// HTTPS on the public listener (HTTP/2 or HTTP/1.1 by ALPN); `None`: plaintext (h2c).
    pub tls: Option<EdgeTls>,
    /// How REST requests become gRPC calls where gateways differ.
    pub transcoding: Transcoding,
    /// Reload the config file when its content changes (checked every 2 s), e.g. a mounted
    /// Kubernetes ConfigMap; SIGHUP and `POST /config/reload` work either way.
    pub reload_on_change: bool,
}

/// The REST transcoder's choices (`[edge.transcoding]`; docs/TRANSCODING.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transcoding {
    /// A query parameter naming no field is ignored instead of refused with 400.
    pub ignore_unknown_query_parameters: bool,
    /// Enum values in paths and query strings match their names in any case.
    pub case_insensitive_enums: bool,
    /// Request headers a REST call passes to the service as gRPC metadata, lowercase; a
    /// trailing `*` matches a prefix. `grpc-metadata-NAME` arrives as `NAME`.
    pub request_headers: Vec<String>,
    /// How a server-streaming method answers a REST client that did not ask.
    pub stream_format: StreamFormat,
}

/// The body of a server-streaming answer over REST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFormat {
    /// One JSON array of the messages (Envoy's transcoder), written as they arrive.
    Array,
    /// One JSON message per line (`application/x-ndjson`; grpc-gateway wraps each in
    /// `{"result": ...}`, the edge does not).
    Ndjson,
}

impl Default for Transcoding {
    fn default() -> Self {
        Self {
            ignore_unknown_query_parameters: false,
            case_insensitive_enums: false,
            request_headers: ["authorization", "x-request-id", "grpc-metadata-*"].map(str::to_owned).to_vec(),
            stream_format: StreamFormat::Array,
        }
    }
}

/// The public listener's certificate (PEM files, re-read when they change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Active and passive health checking of upstream instances (Envoy's semantics).
#[derive(Clone, Debug, PartialEq)]
pub struct HealthCheck {
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passing checks that make an unhealthy instance healthy.
    pub healthy_threshold: u32,
    /// Consecutive failing checks that make a healthy instance unhealthy.
    pub unhealthy_threshold: u32,
}

/// Outlier ejection from real traffic (Envoy's semantics): consecutive failures eject an
/// instance for `base_ejection_time` x how often it has been ejected, at most
/// `max_ejection_time`; never more than `max_ejection_percent` of a shard (but at least one).
#[derive(Clone, Debug, PartialEq)]
pub struct Outlier {
    pub consecutive_failures: u32,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

/// A circuit breaker's settings (Resilience4j's semantics; the seeds' values by default).
#[derive(Clone, Debug, PartialEq)]
pub struct Breaker {
    pub enabled: bool,
    pub window: BreakerWindow,
    /// Percent of failed calls in the window that opens the breaker.
    pub failure_rate_threshold: f64,
    /// Percent of slow calls in the window that opens the breaker.
    pub slow_call_rate_threshold: f64,
    pub slow_call_duration: Duration,
    /// Calls the window must hold before rates are evaluated.
    pub minimum_calls: u32,
    pub wait_in_open: Duration,
    /// Trial calls admitted in half-open; their outcome closes or reopens the breaker.
    pub half_open_calls: u32,
    /// gRPC codes (numbers) that count as failures; connection errors and timeouts always do.
    pub failure_codes: Vec<i32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerWindow {
    /// The last N calls.
    Count(u32),
    /// The calls of the last N seconds.
    Time(Duration),
}

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    pub rate: f64,
    pub burst: u32,
}

/// Rate limits of a route.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RateLimit {
    /// One bucket for the whole route.
    pub route: Option<Bucket>,
    /// One bucket per client key.
    pub per_key: Option<KeyedLimit>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct KeyedLimit {
    pub bucket: Bucket,
    /// Header naming the client (e.g. an API key); checked first.
    pub header: Option<String>,
    /// Fall back to the request's merchant id when the header is absent.
    pub by_merchant: bool,
    /// Most keys kept in memory; idle keys are evicted first.
    pub max_keys: usize,
}

/// When and how a failed call is retried (only ever to another instance of the same shard).
#[derive(Clone, Debug, PartialEq)]
pub struct Retry {
    pub enabled: bool,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Retries may add at most this share of the route's requests (linkerd's retry budget)...
    pub budget_ratio: f64,
    /// ...plus this many retries per second, so quiet routes can still retry.
    pub min_retries_per_second: u32,
    /// Request field whose non-empty value makes a write safe to retry.
    pub idempotency_key_field: Option<String>,
}

/// A set of interchangeable upstream instances, optionally split into shards.
#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    pub name: String,
    /// `Some(n)`: every endpoint belongs to one of `n` shards. `None`: one pool.
    pub shards: Option<u32>,
    pub endpoints: Vec<Endpoint>,
    /// Most requests in flight to the cluster at once (Envoy's max_requests).
    pub max_requests: usize,
    /// Most requests waiting for an in-flight slot; beyond that, overflow is refused at once.
    pub max_pending: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub name: String,
    pub address: SocketAddr,
    pub shard: Option<ShardId>,
}

/// Routes every method of one gRPC service (and its `google.api.http` REST bindings) to a
/// cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Full gRPC service name, e.g. `payments.v1.Payments`.
    pub service: String,
    pub cluster: String,
    /// Where the shard is found, tried in order. Empty: any instance of the cluster.
    pub shard_keys: Vec<ShardKey>,
    /// Overrides `edge.request_timeout`.
    pub timeout: Option<Duration>,
    pub breaker: Breaker,
    pub rate_limit: RateLimit,
    pub retry: Retry,
    /// The route's own concurrency limit (max in flight, max waiting) instead of a share of
    /// its cluster's: control-plane traffic (reflection, health watches) cannot then take
    /// the slots of the cluster's calls.
    pub concurrency: Option<(usize, usize)>,
    /// Callers need no credentials (`auth = "public"`), e.g. health and reflection. Every
    /// route is public when the edge has no `[edge.auth]`.
    pub public: bool,
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
    let client_read_timeout = dur("client_read_timeout", &raw.client_read_timeout)?;
    let body_read_deadline = dur("body_read_deadline", &raw.body_read_deadline)?;
    for (key, d) in [
        ("connect_timeout", connect_timeout),
        ("request_timeout", request_timeout),
        ("client_read_timeout", client_read_timeout),
        ("body_read_deadline", body_read_deadline),
    ] {
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
    };
    if health.interval.is_zero() || health.timeout.is_zero() {
        return Err(err("edge.health".into(), "interval and timeout must be above zero".into()));
    }
    for (key, v) in [("healthy_threshold", h.healthy_threshold), ("unhealthy_threshold", h.unhealthy_threshold)] {
        if v == 0 {
            return Err(err(format!("edge.health.{key}"), "must be at least 1".into()));
        }
    }
    let o = raw.outlier;
    let outlier = Outlier {
        consecutive_failures: o.consecutive_failures,
        base_ejection_time: dur("outlier.base_ejection_time", &o.base_ejection_time)?,
        max_ejection_time: dur("outlier.max_ejection_time", &o.max_ejection_time)?,
        max_ejection_percent: o.max_ejection_percent,
    };
    if outlier.consecutive_failures == 0 {
        return Err(err("edge.outlier.consecutive_failures".into(), "must be at least 1".into()));
    }
    if outlier.max_ejection_percent > 100 {
        return Err(err("edge.outlier.max_ejection_percent".into(), "is a percentage: 0 to 100".into()));
    }
    if outlier.max_ejection_time < outlier.base_ejection_time {
        return Err(err("edge.outlier.max_ejection_time".into(), "must be at least base_ejection_time".into()));
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
        if c.max_requests == 0 {
            return Err(err(key("max_requests"), "must be at least 1".into()));
        }
        clusters.push(Cluster { name: c.name, shards, endpoints, max_requests: c.max_requests, max_pending: c.max_pending });
    }

    let raw_auth_absent = raw.auth.is_none();
    let auth = raw.auth.map(|a| super::auth::validate(a, base_dir, err)).transpose()?;
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
        let breaker = breaker(r.breaker, &|k: &str, m: String| err(key(&format!("breaker.{k}")), m))?;
        let rate_limit = rate_limit(r.rate_limit, &|k: &str, m: String| err(key(&format!("rate_limit.{k}")), m))?;
        let retry = retry(r.retry, &|k: &str, m: String| err(key(&format!("retry.{k}")), m))?;
        let concurrency = match r.concurrency {
            Some(c) if c.max_requests == 0 => return Err(err(key("concurrency.max_requests"), "must be at least 1".into())),
            Some(c) => Some((c.max_requests, c.max_pending)),
            None => None,
        };
        let public = match r.auth.as_deref() {
            None | Some("required") => raw_auth_absent,
            Some("public") => true,
            Some(other) => return Err(err(key("auth"), format!("'{other}' is not an auth mode; use \"required\" or \"public\""))),
        };
        if r.auth.as_deref() == Some("required") && raw_auth_absent {
            return Err(err(key("auth"), "is \"required\" but the edge has no [edge.auth] to check callers with".into()));
        }
        routes.push(Route { service: r.service, cluster: r.cluster, shard_keys, timeout, breaker, rate_limit, retry, concurrency, public });
    }

    let t = raw.transcoding;
    let stream_format = match t.stream_format.as_str() {
        "array" => StreamFormat::Array,
        "ndjson" => StreamFormat::Ndjson,
        other => {
            return Err(err("edge.transcoding.stream_format".into(), format!("'{other}' is not a format; use \"array\" or \"ndjson\"")));
        }
    };
    let mut request_headers = Vec::with_capacity(t.request_headers.len());
    for (i, h) in t.request_headers.iter().enumerate() {
        let name = h.strip_suffix('*').unwrap_or(h);
        if name.is_empty() && h != "*" || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(err(
                format!("edge.transcoding.request_headers[{i}]"),
                format!("'{h}' is not a header name (letters, digits, '-' and '_', optionally ending in '*')"),
            ));
        }
        request_headers.push(h.to_ascii_lowercase());
    }
    let transcoding = Transcoding {
        ignore_unknown_query_parameters: t.ignore_unknown_query_parameters,
        case_insensitive_enums: t.case_insensitive_enums,
        request_headers,
        stream_format,
    };

    Ok(EdgeConfig {
        transcoding,
        reload_on_change: raw.reload_on_change,
        listen,
        admin_listen,
        max_body_bytes: raw.max_body_bytes,
        connect_timeout,
        request_timeout,
        client_read_timeout,
        body_read_deadline,
        threads: raw.threads,
        descriptor_sets: raw.descriptor_sets.iter().map(|p| base_dir.join(p)).collect(),
        health,
        outlier,
        clusters,
        routes,
        auth,
        tls: raw.tls.map(|t| EdgeTls { cert: base_dir.join(t.cert), key: base_dir.join(t.key) }),
    })
}

type KeyErr<'a> = &'a dyn Fn(&str, String) -> super::ConfigError;

pub(super) fn breaker(b: raw::EdgeBreaker, err: KeyErr<'_>) -> Result<Breaker, super::ConfigError> {
    let d = |k: &str, v: &str| duration::parse(v).map_err(|m| err(k, m));
    let window = match b.window.as_str() {
        "count" if b.window_size >= 1 => BreakerWindow::Count(b.window_size),
        "time" if b.window_size >= 1 => BreakerWindow::Time(Duration::from_secs(u64::from(b.window_size))),
        "count" | "time" => return Err(err("window_size", "must be at least 1".into())),
        other => {
            return Err(err(
                "window",
                format!("'{other}' is not a window kind; use \"count\" (last N calls) or \"time\" (last N seconds)"),
            ));
        }
    };
    for (k, v) in [("failure_rate_threshold", b.failure_rate_threshold), ("slow_call_rate_threshold", b.slow_call_rate_threshold)] {
        if !(v > 0.0 && v <= 100.0) {
            return Err(err(k, format!("{v} is not a percentage above 0 and at most 100")));
        }
    }
    if b.minimum_calls == 0 || b.half_open_calls == 0 {
        return Err(err("minimum_calls", "minimum_calls and half_open_calls must be at least 1".into()));
    }
    let mut failure_codes = Vec::with_capacity(b.failure_codes.len());
    for c in &b.failure_codes {
        let n = crate::grpc_code::from_name(c)
            .ok_or_else(|| err("failure_codes", format!("'{c}' is not a gRPC status code name such as UNAVAILABLE")))?;
        if n == 0 {
            return Err(err("failure_codes", "OK cannot be a failure".into()));
        }
        failure_codes.push(n);
    }
    Ok(Breaker {
        enabled: b.enabled,
        window,
        failure_rate_threshold: b.failure_rate_threshold,
        slow_call_rate_threshold: b.slow_call_rate_threshold,
        slow_call_duration: d("slow_call_duration", &b.slow_call_duration)?,
        minimum_calls: b.minimum_calls,
        wait_in_open: d("wait_in_open", &b.wait_in_open)?,
        half_open_calls: b.half_open_calls,
        failure_codes,
    })
}

fn bucket(b: &raw::EdgeBucket, err: KeyErr<'_>, key: &str) -> Result<Bucket, super::ConfigError> {
    if !(b.rate > 0.0 && b.rate.is_finite()) {
        return Err(err(key, format!("rate {} must be above zero (tokens per second)", b.rate)));
    }
    if b.burst == 0 {
        return Err(err(key, "burst must be at least 1".into()));
    }
    Ok(Bucket { rate: b.rate, burst: b.burst })
}

fn rate_limit(r: raw::EdgeRateLimit, err: KeyErr<'_>) -> Result<RateLimit, super::ConfigError> {
    let route = r.route.as_ref().map(|b| bucket(b, err, "route")).transpose()?;
    let per_key = match r.per_key {
        None => None,
        Some(k) => {
            if k.header.is_none() && !k.by_merchant {
                return Err(err("per_key", "name a header, set by_merchant = true, or both".into()));
            }
            if k.max_keys == 0 {
                return Err(err("per_key.max_keys", "must be at least 1".into()));
            }
            Some(KeyedLimit {
                bucket: bucket(&raw::EdgeBucket { rate: k.rate, burst: k.burst }, err, "per_key")?,
                header: k.header.map(|h| h.to_ascii_lowercase()),
                by_merchant: k.by_merchant,
                max_keys: k.max_keys,
            })
        }
    };
    Ok(RateLimit { route, per_key })
}

fn retry(r: raw::EdgeRetry, err: KeyErr<'_>) -> Result<Retry, super::ConfigError> {
    let d = |k: &str, v: &str| duration::parse(v).map_err(|m| err(k, m));
    if r.max_attempts == 0 {
        return Err(err("max_attempts", "must be at least 1 (the first attempt)".into()));
    }
    if !(0.0..=1.0).contains(&r.budget_ratio) {
        return Err(err("budget_ratio", format!("{} is not a share between 0 and 1", r.budget_ratio)));
    }
    let (backoff_base, backoff_max) = (d("backoff_base", &r.backoff_base)?, d("backoff_max", &r.backoff_max)?);
    if backoff_max < backoff_base {
        return Err(err("backoff_max", "must be at least backoff_base".into()));
    }
    Ok(Retry {
        enabled: r.enabled,
        max_attempts: r.max_attempts,
        backoff_base,
        backoff_max,
        budget_ratio: r.budget_ratio,
        min_retries_per_second: r.min_retries_per_second,
        idempotency_key_field: r.idempotency_key_field.filter(|f| !f.is_empty()),
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
