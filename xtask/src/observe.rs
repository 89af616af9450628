//! Local observability for `cargo xtask up --observe` and the smoke run: rotel (an OTLP
//! receiver from PyPI) writing every span it receives to a JSON-lines file, and Debian's
//! Prometheus scraping every process of the stack with a generated config.

use std::path::{Path, PathBuf};

use paymesh_core::config::MeshConfig;
use paymesh_testkit::port::free_port;
use tokio::process::Child;

use crate::supervise::Program;

/// Writes every span rotel receives as a JSON line (rotel's Python processor interface).
const SPAN_WRITER: &str = r#"
import json, os
OUT = os.environ["PAYMESH_SPANS_FILE"]

def _text(v):
    inner = getattr(v, "value", v)
    return inner if isinstance(inner, str) else str(inner)

def process_spans(resource_spans):
    service = ""
    if resource_spans.resource is not None:
        for kv in resource_spans.resource.attributes:
            if kv.key == "service.name":
                service = _text(kv.value)
    with open(OUT, "a") as f:
        for ss in resource_spans.scope_spans:
            for s in ss.spans:
                f.write(json.dumps({"service": service, "trace_id": bytes(s.trace_id).hex(), "span_id": bytes(s.span_id).hex(), "name": s.name}) + "\n")
"#;

/// A running OTLP receiver.
#[derive(Debug)]
pub struct Receiver {
    _child: Child,
    /// `http://127.0.0.1:PORT`: what `OTEL_EXPORTER_OTLP_ENDPOINT` should be.
    pub endpoint: String,
    pub spans: PathBuf,
}

/// Starts rotel (killed with xtask; its output in `dir/rotel.log`).
pub async fn start_receiver(rotel: &Path, dir: &Path) -> Result<Receiver, String> {
    let spans = dir.join("spans.jsonl");
    let _ = std::fs::remove_file(&spans);
    std::fs::write(dir.join("span_writer.py"), SPAN_WRITER).map_err(|e| e.to_string())?;
    let (grpc, http) = (free_port().map_err(|e| e.to_string())?, free_port().map_err(|e| e.to_string())?);
    let mut program = Program::new(
        rotel,
        [
            "start",
            "--otlp-grpc-endpoint",
            &format!("127.0.0.1:{grpc}"),
            "--otlp-http-endpoint",
            &format!("127.0.0.1:{http}"),
            "--exporter",
            "blackhole",
            "--otlp-with-trace-processor",
        ],
    );
    program.args.push(dir.join("span_writer.py").into());
    program.env.push(("PAYMESH_SPANS_FILE".into(), spans.display().to_string()));
    program.log = Some(dir.join("rotel.log"));
    let child = program.spawn().await?;
    Ok(Receiver { _child: child, endpoint: format!("http://127.0.0.1:{grpc}"), spans })
}

/// A running Prometheus.
#[derive(Debug)]
pub struct Prometheus {
    _child: Child,
    pub addr: std::net::SocketAddr,
    /// How many targets it scrapes.
    pub targets: usize,
}

/// Every metrics endpoint the config declares: `(job, host:port)`.
pub fn targets(c: &MeshConfig) -> Vec<(String, String)> {
    let mut t = Vec::new();
    if let Some(e) = &c.edge {
        t.push(("edge".into(), e.admin_listen.to_string()));
    }
    for i in &c.payments.instances {
        if let Some(s) = i.status_listen {
            t.push(("payments".into(), s.to_string()));
        }
    }
    for r in c.relay.iter().flat_map(|r| &r.instances) {
        t.push(("relay".into(), r.status_listen.to_string()));
    }
    for w in c.workers.iter().flat_map(|w| &w.instances) {
        t.push(("workers".into(), w.status_listen.to_string()));
    }
    t
}

/// Starts Prometheus (killed with xtask; its output in `dir/prometheus.log`).
pub async fn start_prometheus(prometheus: &Path, config: &MeshConfig, dir: &Path) -> Result<Prometheus, String> {
    let targets = targets(config);
    let mut yml = String::from("global:\n  scrape_interval: 1s\nscrape_configs:\n");
    for (job, addr) in &targets {
        yml += &format!("  - job_name: {job}-{}\n    static_configs:\n      - targets: [\"{addr}\"]\n", addr.replace([':', '.'], "-"));
    }
    std::fs::write(dir.join("prometheus.yml"), yml).map_err(|e| e.to_string())?;
    let port = free_port().map_err(|e| e.to_string())?;
    let data = dir.join("prometheus-data");
    let _ = std::fs::remove_dir_all(&data);
    let mut program = Program::new(
        prometheus,
        [
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", data.display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ],
    );
    program.log = Some(dir.join("prometheus.log"));
    let child = program.spawn().await?;
    let addr = format!("127.0.0.1:{port}").parse().map_err(|_| "bad address")?;
    Ok(Prometheus { _child: child, addr, targets: targets.len() })
}
