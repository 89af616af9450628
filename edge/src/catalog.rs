//! The catalog: everything the edge knows about the services it routes, built once at start
//! from FileDescriptorSets and the config's routes.
//!
//! - REST bindings from each method's `google.api.http` rule (and its additional bindings);
//! - for gRPC, each routed service's cluster, timeout and per-method shard keys.
//!
//! Adding a service needs only its descriptors and a route in the mesh config.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use paymesh_core::config::{EdgeConfig, ShardKeyKind};
use prost_reflect::{DescriptorPool, DynamicMessage, ExtensionDescriptor, FieldDescriptor, Kind, MethodDescriptor, Value};

use crate::cluster::Cluster;
use crate::resilience::concurrency::ConcurrencyLimit;
use crate::resilience::guards::RouteGuards;
use crate::transcode::template::PathTemplate;

/// Why the catalog cannot be built; every message names the config key or descriptor.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CatalogError(pub String);

/// Path variables bound by a template: `(field path, value)`.
pub type PathVars = Vec<(String, String)>;

/// A routed gRPC service.
#[derive(Debug)]
pub struct ServiceRoute {
    pub name: String,
    pub cluster: Arc<Cluster>,
    pub timeout: Duration,
    /// Whether the route has shard keys (the cluster is sharded and requests must name one).
    pub sharded: bool,
    /// Breakers, rate limits, retry policy and budget; carried to the next configuration
    /// when the route did not change there.
    pub guards: Arc<RouteGuards>,
    /// Known methods by name (empty when the service has no descriptors: passthrough only).
    pub methods: HashMap<String, Arc<MethodRoute>>,
    /// The metrics label of calls to methods the descriptors do not know.
    pub unknown_method_label: String,
    /// The concurrency limit its calls take a slot of: the route's own when configured,
    /// else its cluster's.
    pub limit: Arc<ConcurrencyLimit>,
    /// Callers need no credentials.
    pub public: bool,
}

/// One method of a routed service.
#[derive(Debug)]
pub struct MethodRoute {
    pub desc: MethodDescriptor,
    /// `/package.Service/Method`.
    pub grpc_path: String,
    /// The shard keys present in this method's request, in the route's order.
    pub keys: Vec<ResolvedKey>,
    /// Declared side-effect free or idempotent (`option idempotency_level`): always safe to
    /// retry.
    pub idempotent: bool,
    /// The request field carrying an idempotency key, if the route names one and the
    /// request has it: a write with a non-empty key is safe to retry.
    pub idempotency_key: Option<FieldDescriptor>,
}

/// A shard key resolved against a request type.
#[derive(Debug, Clone)]
pub struct ResolvedKey {
    /// Proto name of the key, for messages (`merchant_id`, `book.id`).
    pub name: String,
    pub path: Vec<FieldDescriptor>,
    pub kind: ShardKeyKind,
    pub header: Option<String>,
}

/// Where the HTTP body goes in the request message.
#[derive(Debug, Clone)]
pub enum BodyRule {
    /// No body; every non-path field comes from the query string.
    None,
    /// `body: "*"`: the body is the whole request message.
    Whole,
    /// `body: "field"` (or a nested `"a.b"`): the body is that field; the rest comes from
    /// the path and the query string.
    Field(Vec<FieldDescriptor>),
}

/// One REST binding: verb + path template -> gRPC method.
#[derive(Debug)]
pub struct RestBinding {
    pub verb: Method,
    pub template: PathTemplate,
    pub body: BodyRule,
    /// `response_body: "field"` (or `"a.b"`): the answer is that field of the reply.
    pub response_body: Option<Vec<FieldDescriptor>>,
    pub method: Arc<MethodRoute>,
    pub service: Arc<ServiceRoute>,
}

#[derive(Debug)]
pub struct Catalog {
    pub pool: DescriptorPool,
    pub services: HashMap<String, Arc<ServiceRoute>>,
    /// Most specific first.
    pub rest: Vec<RestBinding>,
    /// Bindings the edge cannot serve, with why (each logged at start): only they are left
    /// out, never their service.
    pub skipped: Vec<String>,
    /// Which bindings a path can match, by its first segment, so a request is compared with
    /// the few templates that start like it, not with every route.
    rest_index: RestIndex,
}

/// Positions in `Catalog::rest` (ascending, so most specific first) by a template's first
/// segment; templates starting with a variable or wildcard are candidates for every path.
#[derive(Debug, Default)]
struct RestIndex {
    by_first: HashMap<String, Vec<usize>>,
    any_first: Vec<usize>,
}

impl RestIndex {
    fn build(rest: &[RestBinding]) -> Self {
        let mut index = Self::default();
        for (i, b) in rest.iter().enumerate() {
            match b.template.first_literal() {
                // Keyed as a path's first segment is looked up: without a `:verb`.
                Some(l) => index.by_first.entry(l.split(':').next().unwrap_or(l).to_owned()).or_default().push(i),
                None => index.any_first.push(i),
            }
        }
        index
    }

    /// The candidates for `path`, in `rest`'s order.
    fn candidates(&self, path: &str) -> impl Iterator<Item = usize> + '_ {
        // A verb (`:name`) is not part of a literal segment.
        let first = path.strip_prefix('/').unwrap_or(path).split('/').next().unwrap_or("").split(':').next().unwrap_or("");
        let keyed = self.by_first.get(first).map_or(&[][..], Vec::as_slice);
        let (mut a, mut b) = (keyed.iter().copied().peekable(), self.any_first.iter().copied().peekable());
        std::iter::from_fn(move || match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x < y => a.next(),
            (Some(_), Some(_)) | (None, Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, None) => None,
        })
    }
}

impl RestBinding {
    /// The request body is a `google.api.HttpBody` (the whole request, or the `body` field):
    /// any content type, taken as raw bytes.
    pub fn raw_request(&self) -> bool {
        let http_body = |m: &prost_reflect::MessageDescriptor| m.full_name() == crate::transcode::response::HTTP_BODY;
        match &self.body {
            BodyRule::None => false,
            BodyRule::Whole => http_body(&self.method.desc.input()),
            BodyRule::Field(fields) => fields.last().is_some_and(|f| !f.is_list() && matches!(f.kind(), Kind::Message(m) if http_body(&m))),
        }
    }
}

impl MethodRoute {
    /// Whether this request may be sent again: the method is idempotent, or the request
    /// carries a non-empty idempotency key.
    pub fn safe_to_repeat(&self, msg: Option<&DynamicMessage>) -> bool {
        self.idempotent
            || self
                .idempotency_key
                .as_ref()
                .is_some_and(|f| msg.is_some_and(|m| matches!(m.get_field(f).as_ref(), Value::String(s) if !s.is_empty())))
    }
}

impl Catalog {
    pub fn build(cfg: &EdgeConfig, clusters: &HashMap<String, Arc<Cluster>>) -> Result<Self, CatalogError> {
        Self::following(cfg, clusters, None)
    }

    /// The catalog of a new configuration: a route `previous` has with the same settings (and
    /// the same shard count) keeps its breakers, rate limiters, retry budget and its own
    /// concurrency limit, so a reload neither closes an open breaker nor refills a bucket.
    pub fn following(
        cfg: &EdgeConfig,
        clusters: &HashMap<String, Arc<Cluster>>,
        previous: Option<(&EdgeConfig, &Catalog)>,
    ) -> Result<Self, CatalogError> {
        let mut pool = DescriptorPool::new();
        pool.decode_file_descriptor_set(paymesh_proto::FILE_DESCRIPTOR_SET)
            .map_err(|e| CatalogError(format!("built-in descriptors do not load: {e}")))?;
        for path in &cfg.descriptor_sets {
            let bytes =
                std::fs::read(path).map_err(|e| CatalogError(format!("edge.descriptor_sets: cannot read {}: {e}", path.display())))?;
            pool.decode_file_descriptor_set(bytes.as_slice()).map_err(|e| {
                CatalogError(format!("edge.descriptor_sets: {} is not a FileDescriptorSet that fits the others: {e}", path.display()))
            })?;
        }
        let http_rule = pool.get_extension_by_name("google.api.http");

        let mut services = HashMap::new();
        let mut rest = Vec::new();
        let mut skipped = Vec::new();
        for (i, r) in cfg.routes.iter().enumerate() {
            let cluster = clusters
                .get(&r.cluster)
                .cloned()
                .ok_or_else(|| CatalogError(format!("edge.routes[{i}].cluster: '{}' is unknown", r.cluster)))?;
            let desc = pool.get_service_by_name(&r.service);
            if desc.is_none() && !r.shard_keys.is_empty() {
                return Err(CatalogError(format!(
                    "edge.routes[{i}].service: no descriptors for '{}', so its shard keys cannot be found; add its FileDescriptorSet to edge.descriptor_sets",
                    r.service
                )));
            }
            let mut methods = HashMap::new();
            for m in desc.iter().flat_map(|d| d.methods()) {
                let keys = resolve_keys(&m, r, i)?;
                // Declared so, or bound to GET (a read, by the HTTP rule's own contract): the
                // same answer for REST and gRPC callers of the method.
                let idempotent = matches!(m.options().get_field_by_name("idempotency_level").as_deref(), Some(Value::EnumNumber(1 | 2)))
                    || http_rule.as_ref().is_some_and(|ext| http_bindings(&m, ext).iter().any(|b| b.verb == Method::GET));
                let idempotency_key = r
                    .retry
                    .idempotency_key_field
                    .as_deref()
                    .and_then(|f| m.input().get_field_by_name(f))
                    .filter(|f| f.kind() == Kind::String);
                let route =
                    MethodRoute { grpc_path: format!("/{}/{}", r.service, m.name()), desc: m.clone(), keys, idempotent, idempotency_key };
                methods.insert(m.name().to_owned(), Arc::new(route));
            }
            let before = previous.and_then(|(old_cfg, old)| {
                let route = old_cfg.routes.iter().find(|o| o.service == r.service && *o == r)?;
                old.services.get(&route.service).filter(|s| s.cluster.shards == cluster.shards)
            });
            let guards = match before {
                Some(old) => old.guards.clone(),
                None => Arc::new(RouteGuards::new(r, cluster.shards, std::time::Instant::now())),
            };
            let limit = match (r.concurrency, before) {
                (Some(_), Some(old)) => old.limit.clone(),
                (Some((max_requests, max_pending)), None) => Arc::new(ConcurrencyLimit::new(max_requests, max_pending)),
                (None, _) => cluster.limit.clone(),
            };
            let service = Arc::new(ServiceRoute {
                name: r.service.clone(),
                cluster,
                timeout: r.timeout.unwrap_or(cfg.request_timeout),
                sharded: !r.shard_keys.is_empty(),
                guards,
                methods,
                unknown_method_label: format!("/{}/<unknown>", r.service),
                limit,
                public: r.public,
            });
            if let Some(ext) = &http_rule {
                let mut methods: Vec<&Arc<MethodRoute>> = service.methods.values().collect();
                methods.sort_by(|a, b| a.grpc_path.cmp(&b.grpc_path));
                for method in methods {
                    for rule in http_bindings(&method.desc, ext) {
                        match binding(rule, method, &service) {
                            Ok(b) => rest.push(b),
                            Err(why) => {
                                let why = format!("google.api.http of {}: {why}; that binding is not served", method.desc.full_name());
                                tracing::warn!("{why}");
                                skipped.push(why);
                            }
                        }
                    }
                }
            }
            services.insert(r.service.clone(), service);
        }
        // Two bindings of one HTTP verb that match the same paths: which one serves a request
        // would be arbitrary, so the configuration is refused, naming both.
        let mut seen: HashMap<(Method, String), &RestBinding> = HashMap::new();
        for b in &rest {
            if let Some(other) = seen.insert((b.verb.clone(), b.template.shape()), b) {
                return Err(CatalogError(format!(
                    "{} {} ({}) and {} {} ({}) match the same requests; make one of the google.api.http bindings more specific",
                    other.verb, other.template, other.method.grpc_path, b.verb, b.template, b.method.grpc_path
                )));
            }
        }
        // Most specific first; ties in a fixed order (the template, then the method), so the
        // match never depends on hash order.
        rest.sort_by(|a, b| {
            b.template
                .specificity()
                .cmp(&a.template.specificity())
                .then_with(|| a.template.to_string().cmp(&b.template.to_string()))
                .then_with(|| a.method.grpc_path.cmp(&b.method.grpc_path))
        });
        let rest_index = RestIndex::build(&rest);
        Ok(Self { pool, services, rest, skipped, rest_index })
    }

    /// The service and method of a gRPC path `/package.Service/Method`.
    pub fn grpc_route(&self, path: &str) -> Option<(Arc<ServiceRoute>, Option<Arc<MethodRoute>>)> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        let route = self.services.get(service)?;
        Some((route.clone(), route.methods.get(method).cloned()))
    }

    /// Finds the REST binding for a request. `Err` lists the verbs allowed on the path when
    /// it matches some template but not for this verb (an empty list means no route at all).
    pub fn rest_route(&self, verb: &Method, path: &str) -> Result<(&RestBinding, PathVars), Vec<Method>> {
        let mut allowed = Vec::new();
        for b in self.rest_index.candidates(path).map(|i| &self.rest[i]) {
            if let Some(vars) = b.template.matches(path) {
                if b.verb == *verb {
                    return Ok((b, vars));
                }
                if !allowed.contains(&b.verb) {
                    allowed.push(b.verb.clone());
                }
            }
        }
        Err(allowed)
    }
}

/// One `google.api.http` rule of `method` as a binding, or why the edge cannot serve it.
fn binding(rule: HttpRule, method: &Arc<MethodRoute>, service: &Arc<ServiceRoute>) -> Result<RestBinding, String> {
    let HttpRule { verb, path, body, response_body } = rule;
    let template = PathTemplate::parse(&path).map_err(|e| e.to_string())?;
    let input = method.desc.input();
    for f in template.bound_fields() {
        let fields = field_path(&input, f).ok_or_else(|| format!("path variable '{f}' is not a field of {}", input.full_name()))?;
        if fields.last().is_some_and(|l| l.is_list() || l.is_map() || matches!(l.kind(), Kind::Message(_))) {
            return Err(format!("path variable '{f}' is a repeated, map or message field; bind a single-valued field"));
        }
    }
    let body = match body.as_str() {
        "" => BodyRule::None,
        "*" => BodyRule::Whole,
        f => {
            // A path variable inside the body field (`{book.name}` with `body: "book"`, the
            // usual update shape) is fine: the path's value wins.
            let fields = field_path(&input, f).ok_or_else(|| format!("body '{f}' is not a field of {}", input.full_name()))?;
            BodyRule::Field(fields)
        }
    };
    let response_body = match response_body.as_str() {
        "" => None,
        f => {
            let output = method.desc.output();
            Some(field_path(&output, f).ok_or_else(|| format!("response_body '{f}' is not a field of {}", output.full_name()))?)
        }
    };
    Ok(RestBinding { verb, template, body, response_body, method: method.clone(), service: service.clone() })
}

/// Whether one field path is the other or a prefix of it (setting one sets part of the other).
pub fn overlaps(a: &[FieldDescriptor], b: &[FieldDescriptor]) -> bool {
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// `a.b.c`, by proto names.
pub fn dotted(fields: &[FieldDescriptor]) -> String {
    fields.iter().map(FieldDescriptor::name).collect::<Vec<_>>().join(".")
}

/// Resolves the route's shard keys against a method's request type.
fn resolve_keys(m: &MethodDescriptor, r: &paymesh_core::config::Route, i: usize) -> Result<Vec<ResolvedKey>, CatalogError> {
    let input = m.input();
    let keys: Vec<ResolvedKey> = r
        .shard_keys
        .iter()
        .filter_map(|k| {
            field_path(&input, &k.field).map(|path| ResolvedKey { name: k.field.clone(), path, kind: k.kind, header: k.header.clone() })
        })
        .collect();
    if let Some(bad) = keys.iter().find(|k| k.path.last().is_some_and(|f| f.kind() != Kind::String || f.is_list())) {
        return Err(CatalogError(format!("edge.routes[{i}].shard_keys: {}.{} is not a string field", input.full_name(), bad.name)));
    }
    if !r.shard_keys.is_empty() && keys.is_empty() {
        let names: Vec<&str> = r.shard_keys.iter().map(|k| k.field.as_str()).collect();
        return Err(CatalogError(format!(
            "edge.routes[{i}].shard_keys: method {} has none of the key fields {names:?} in {}, so the edge could not route it",
            m.full_name(),
            input.full_name()
        )));
    }
    Ok(keys)
}

/// Resolves a dotted proto field path (`a.b.c`) through nested messages.
pub fn field_path(msg: &prost_reflect::MessageDescriptor, path: &str) -> Option<Vec<FieldDescriptor>> {
    let mut out = Vec::new();
    let mut current = msg.clone();
    let mut parts = path.split('.').peekable();
    while let Some(name) = parts.next() {
        let f = current.get_field_by_name(name).or_else(|| current.get_field_by_json_name(name))?;
        if parts.peek().is_some() {
            match f.kind() {
                Kind::Message(m) if !f.is_list() && !f.is_map() => current = m,
                _ => return None,
            }
        }
        out.push(f);
    }
    Some(out)
}

/// One rule of a method's `google.api.http` option (or one of its additional bindings).
struct HttpRule {
    verb: Method,
    path: String,
    body: String,
    response_body: String,
}

/// The method's rule and its additional bindings.
fn http_bindings(method: &MethodDescriptor, ext: &ExtensionDescriptor) -> Vec<HttpRule> {
    let options = method.options();
    if !options.has_extension(ext) {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Value::Message(rule) = options.get_extension(ext).as_ref() {
        push_rule(rule, &mut out);
        if let Some(Value::List(more)) = rule.get_field_by_name("additional_bindings").as_deref() {
            for b in more {
                if let Value::Message(m) = b {
                    push_rule(m, &mut out);
                }
            }
        }
    }
    out
}

fn push_rule(rule: &DynamicMessage, out: &mut Vec<HttpRule>) {
    let text = |name: &str| match rule.get_field_by_name(name).as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let (body, response_body) = (text("body"), text("response_body"));
    for (field, verb) in
        [("get", Method::GET), ("put", Method::PUT), ("post", Method::POST), ("delete", Method::DELETE), ("patch", Method::PATCH)]
    {
        if rule.has_field_by_name(field) {
            out.push(HttpRule { verb, path: text(field), body: body.clone(), response_body: response_body.clone() });
        }
    }
    if let Some(Value::Message(custom)) = rule.get_field_by_name("custom").as_deref()
        && rule.has_field_by_name("custom")
    {
        let kind = match custom.get_field_by_name("kind").as_deref() {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let path = match custom.get_field_by_name("path").as_deref() {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        if let Ok(verb) = Method::from_bytes(kind.as_bytes()) {
            out.push(HttpRule { verb, path, body, response_body });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use paymesh_core::config::MeshConfig;

    use super::*;

    const BASE: &str = r#"
[[shards]]
id = 0
database_url = "postgres://p@127.0.0.1:1/db"
[[payments.instances]]
name = "p0"
shard = 0
listen = "127.0.0.1:50061"
[edge]
[[edge.clusters]]
name = "payments"
payments_instances = true
"#;

    fn build(routes: &str) -> Result<Catalog, CatalogError> {
        let cfg = MeshConfig::parse(Path::new("t.toml"), &format!("{BASE}{routes}"), &|_| None).expect("config");
        let edge = cfg.edge.expect("edge");
        let clusters = edge.clusters.iter().map(|c| (c.name.clone(), Arc::new(Cluster::new(c, &edge.outlier)))).collect();
        Catalog::build(&edge, &clusters)
    }

    #[test]
    fn payments_bindings_come_from_the_annotations() {
        let c = build("[[edge.routes]]\nservice = \"payments.v1.Payments\"\ncluster = \"payments\"\nshard_keys = [{ field = \"merchant_id\", kind = \"merchant\" }, { field = \"payment_id\", kind = \"sharded_id\" }]\n").expect("catalog");
        let (b, vars) = c.rest_route(&Method::POST, "/api/payments/pay_0_x/capture").expect("capture route");
        assert_eq!(b.method.grpc_path, "/payments.v1.Payments/Capture");
        assert_eq!(vars, vec![("payment_id".to_owned(), "pay_0_x".to_owned())]);
        let (b, _) = c.rest_route(&Method::POST, "/api/payments/authorize").expect("authorize");
        assert_eq!(b.method.desc.name(), "Authorize", "the literal template wins over {{payment_id}}");
        assert_eq!(b.method.keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["merchant_id"]);
        assert_eq!(c.rest_route(&Method::DELETE, "/api/payments/x").expect_err("405"), vec![Method::GET]);
        assert!(c.rest_route(&Method::GET, "/elsewhere").expect_err("404").is_empty());
        assert!(c.grpc_route("/payments.v1.Payments/Void").is_some_and(|(_, m)| m.is_some()));
        assert!(c.grpc_route("/payments.v1.Payments/Nope").is_some_and(|(_, m)| m.is_none()));
        assert!(c.grpc_route("/other.v1.X/Y").is_none());
    }

    #[test]
    fn the_index_finds_what_a_scan_of_every_route_finds() {
        let c = build(
            "[[edge.routes]]\nservice = \"payments.v1.Payments\"\ncluster = \"payments\"\n\
             [[edge.routes]]\nservice = \"query.v1.MerchantQueries\"\ncluster = \"payments\"\n",
        )
        .expect("catalog");
        let scan = |verb: &Method, path: &str| {
            let mut allowed = Vec::new();
            for b in &c.rest {
                if let Some(vars) = b.template.matches(path) {
                    if b.verb == *verb {
                        return Ok((b.method.grpc_path.clone(), vars));
                    }
                    if !allowed.contains(&b.verb) {
                        allowed.push(b.verb.clone());
                    }
                }
            }
            Err(allowed)
        };
        let paths = [
            "/api/payments/authorize",
            "/api/payments/pay_0_x",
            "/api/payments/pay_0_x/capture",
            "/api/payments/pay_0_x/refund",
            "/api/payments/pay_0_x/void",
            "/api/merchants/m-1/payments",
            "/api/merchants/m-1/balance",
            "/api/merchants/m-1",
            "/api",
            "/",
            "",
            "/elsewhere/x",
            "/api:verb",
        ];
        for path in paths {
            for verb in [Method::GET, Method::POST, Method::DELETE] {
                let indexed = c.rest_route(&verb, path).map(|(b, vars)| (b.method.grpc_path.clone(), vars));
                assert_eq!(indexed, scan(&verb, path), "{verb} {path}");
            }
        }
    }

    #[test]
    fn the_shipped_config_builds_fences_off_control_plane_routes_and_authenticates_the_rest() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh-config/paymesh.toml");
        let text = std::fs::read_to_string(&path).expect("the shipped config");
        let cfg = MeshConfig::parse(&path, &text, &|_| Some("x".into())).expect("config");
        let edge = cfg.edge.expect("edge");
        let clusters = edge.clusters.iter().map(|c| (c.name.clone(), Arc::new(Cluster::new(c, &edge.outlier)))).collect();
        let c = Catalog::build(&edge, &clusters).expect("catalog");
        for name in ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"] {
            let route = c.services.get(name).unwrap_or_else(|| panic!("{name} is routed"));
            assert!(!Arc::ptr_eq(&route.limit, &route.cluster.limit), "{name} has its own concurrency limit");
            assert!(route.public, "{name} needs no credential");
        }
        let payments = c.services.get("payments.v1.Payments").expect("payments");
        assert!(!payments.public && edge.auth.is_some(), "the shipped stack authenticates payments calls");
        assert!(Arc::ptr_eq(&payments.limit, &payments.cluster.limit), "payments calls share their cluster's limit");
    }

    #[test]
    fn a_method_without_any_key_field_fails_at_start() {
        let err = build("[[edge.routes]]\nservice = \"payments.v1.Payments\"\ncluster = \"payments\"\nshard_keys = [{ field = \"merchant_id\", kind = \"merchant\" }]\n")
            .expect_err("Capture has no merchant_id")
            .to_string();
        assert!(err.contains("has none of the key fields [\"merchant_id\"]"), "{err}");
    }

    #[test]
    fn shard_keys_need_descriptors_and_string_fields() {
        let err = build(
            "[[edge.routes]]\nservice = \"nope.v1.Nope\"\ncluster = \"payments\"\nshard_keys = [{ field = \"id\", kind = \"merchant\" }]\n",
        )
        .expect_err("no descriptors")
        .to_string();
        assert!(err.contains("no descriptors for 'nope.v1.Nope'"), "{err}");
        let err = build("[[edge.routes]]\nservice = \"payments.v1.Payments\"\ncluster = \"payments\"\nshard_keys = [{ field = \"amount\", kind = \"merchant\" }, { field = \"payment_id\", kind = \"sharded_id\" }]\n")
            .expect_err("int64 key")
            .to_string();
        assert!(err.contains("is not a string field"), "{err}");
        // Without keys, an unknown service is fine: it is proxied as is.
        assert!(build("[[edge.routes]]\nservice = \"grpc.reflection.v1.ServerReflection\"\ncluster = \"payments\"\n").is_ok());
    }
}
