//! The MCP tools (the seeds' `circuit-breaker-mcp` and `loadtest-mcp` in one server): read
//! the edge's clusters and breakers, force a breaker, read any configured process's
//! metrics, read the event pipeline's backlog and lag, and run a bounded load test.
//!
//! Every tool answers JSON text. A bad argument, a refused target or an unreachable process
//! is a tool error (`isError: true`) whose text says what to do.

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, schemars, tool, tool_handler, tool_router};
use serde_json::{Value, json};

use crate::credentials::Credentials;
use crate::loadtest::{LoadTests, Spec};
use crate::mesh::{self, Kind, Mesh};

/// At most this many samples come back from one `read_metrics`.
const MAX_SAMPLES: usize = 500;

/// The paymesh-mcp server: one per MCP session, sharing the mesh and the load tests.
#[derive(Debug, Clone)]
pub struct Ops {
    mesh: Arc<Mesh>,
    credentials: Arc<Credentials>,
    loadtests: Arc<LoadTests>,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct ForceArgs {
    /// The breaker's name as list_breakers shows it, e.g. `payments.v1.Payments@shard-0`.
    pub name: String,
    /// `open` (refuse every call), `closed` (let every call through), or `normal` (back to
    /// counting failures).
    pub state: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct MetricsArgs {
    /// A process of the mesh config: `edge`, a payments instance, a relay or a worker (an
    /// unknown name is refused with the list of names there are).
    pub process: String,
    /// Only samples whose metric name starts with this (default `paymesh_`).
    #[serde(default)]
    pub prefix: Option<String>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct LoadArgs {
    /// `authorize` (gRPC Authorize through the edge) or `flow` (REST authorize, capture and
    /// refund through the edge).
    pub method: String,
    /// Calls per second, 1 to the server's limit (1000 by default).
    pub rate: f64,
    /// Seconds, 1 to the server's limit (60 by default).
    pub duration_s: f64,
    /// Calls in flight at most, 1 to the server's limit (64 by default).
    pub concurrency: u32,
}

#[tool_router]
impl Ops {
    pub fn new(mesh: Arc<Mesh>, credentials: Arc<Credentials>, loadtests: Arc<LoadTests>) -> Self {
        Self { mesh, credentials, loadtests, tool_router: Self::tool_router() }
    }

    #[tool(
        description = "Every cluster of the edge with its instances: shard, health, ejection, latency estimate (EWMA), calls in flight."
    )]
    async fn list_clusters(&self) -> Result<String, String> {
        let clusters = edge_get(&self.mesh, "/clusters").await?;
        let ready = edge_get(&self.mesh, "/ready").await.unwrap_or(Value::Null);
        Ok(json!({"clusters": clusters["clusters"], "ready": ready["ready"], "problems": ready["problems"]}).to_string())
    }

    #[tool(
        description = "Every circuit breaker: the edge's (one per route and shard) with state, failure and slow-call rates and refused calls, and each relay's Kafka publisher breaker."
    )]
    async fn list_breakers(&self) -> Result<String, String> {
        let edge = edge_get(&self.mesh, "/breakers").await?;
        let mut relays = Vec::new();
        for p in self.mesh.of_kind(Kind::Relay) {
            relays.push(match status(p).await {
                Ok(s) => json!({"relay": p.name, "breaker": s["breaker"]}),
                Err(e) => json!({"relay": p.name, "error": e}),
            });
        }
        Ok(json!({"edge": edge["breakers"], "relays": relays}).to_string())
    }

    #[tool(
        description = "Force an edge breaker open (fail fast, nothing reaches the shard), closed (everything goes through), or back to normal. Needs the mesh:admin scope when the edge authenticates."
    )]
    async fn force_breaker(&self, Parameters(args): Parameters<ForceArgs>) -> Result<String, String> {
        if !matches!(args.state.as_str(), "open" | "closed" | "normal") {
            return Err(format!("state '{}' is not one of: open, closed, normal", args.state));
        }
        if args.name.is_empty() || !args.name.chars().all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c)) {
            return Err(format!("'{}' is not a breaker name (letters, digits and . _ @ -); list_breakers names them", args.name));
        }
        let admin = self.mesh.admin()?;
        let authorization = self.credentials.admin()?;
        let headers: Vec<(&str, &str)> = authorization.iter().map(|a| ("authorization", a.as_str())).collect();
        let answer = mesh::http(admin, "POST", &format!("/breakers/{}?state={}", args.name, args.state), &headers).await?;
        let body = answer.json().unwrap_or_else(|_| json!({"message": answer.body}));
        if answer.status != 200 {
            return Err(format!("the edge refused: HTTP {}: {}", answer.status, body["message"].as_str().unwrap_or("")));
        }
        Ok(body.to_string())
    }

    #[tool(
        description = "Prometheus metrics of one process of the configured mesh (edge, payments instances, relays, workers) as samples: name, labels, value. Refuses any process the mesh config does not name."
    )]
    async fn read_metrics(&self, Parameters(args): Parameters<MetricsArgs>) -> Result<String, String> {
        let process = self.mesh.process(&args.process)?;
        let answer = mesh::http(process.address, "GET", "/metrics", &[]).await?;
        if answer.status != 200 {
            return Err(format!("{} answered HTTP {} for /metrics", process.name, answer.status));
        }
        let prefix = args.prefix.as_deref().unwrap_or("paymesh_");
        let mut samples = crate::metrics_text::parse(&answer.body, prefix);
        let total = samples.len();
        samples.truncate(MAX_SAMPLES);
        Ok(json!({
            "process": process.name, "address": process.address.to_string(), "prefix": prefix,
            "samples": samples, "total_samples": total, "truncated": total > MAX_SAMPLES,
        })
        .to_string())
    }

    #[tool(
        description = "The event pipeline: each relay's outbox backlog, published and dead-lettered events and breaker; each worker's consumer lag, applied events, duplicates skipped and DLQ count."
    )]
    async fn pipeline_status(&self) -> Result<String, String> {
        let mut relays = Vec::new();
        let mut workers = Vec::new();
        for p in self.mesh.processes.iter().filter(|p| matches!(p.kind, Kind::Relay | Kind::Worker)) {
            let mut doc = status(p).await.unwrap_or_else(|e| json!({"error": e}));
            doc["name"] = json!(p.name);
            if p.kind == Kind::Relay { relays.push(doc) } else { workers.push(doc) }
        }
        let sum = |list: &[Value], key: &str| list.iter().filter_map(|d| d[key].as_i64()).filter(|n| *n >= 0).sum::<i64>();
        Ok(json!({
            "backlog": sum(&relays, "backlog"), "lag": sum(&workers, "lag"),
            "relays": relays, "workers": workers,
        })
        .to_string())
    }

    #[tool(
        description = "Run a bounded load test through the configured edge and wait for it: ghz-style report and an analysis (p50/p95/p99, error rate, throughput, a grade and a summary in plain words). One run at a time."
    )]
    async fn run_load_test(&self, Parameters(args): Parameters<LoadArgs>) -> Result<String, String> {
        let spec = Spec { method: args.method, rate: args.rate, duration_s: args.duration_s, concurrency: args.concurrency };
        let run = self.loadtests.start(spec).map_err(|e| e.to_string())?;
        run.finished().await;
        let done = run.result()?;
        Ok(json!({"id": run.id, "report": done.report, "analysis": done.analysis}).to_string())
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Ops {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("paymesh-mcp", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Operate a Paymesh mesh: list_clusters and list_breakers to see it, pipeline_status for the outbox and Kafka \
                 consumers, read_metrics for any process's Prometheus metrics, force_breaker to open or close a breaker, \
                 run_load_test for a bounded load test with a graded analysis.",
            )
    }
}

/// `GET path` on the edge's admin listener, as JSON.
async fn edge_get(mesh: &Mesh, path: &str) -> Result<Value, String> {
    let answer = mesh::http(mesh.admin()?, "GET", path, &[]).await?;
    answer.json()
}

/// A relay's or worker's `/status`.
async fn status(p: &mesh::Process) -> Result<Value, String> {
    let answer = mesh::http(p.address, "GET", "/status", &[]).await?;
    if answer.status != 200 {
        return Err(format!("{} answered HTTP {} for /status", p.name, answer.status));
    }
    answer.json()
}
