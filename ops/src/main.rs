//! `paymesh-mcp`: the Model Context Protocol server for operating a Paymesh mesh, over stdio
//! (an assistant starts it) or streamable HTTP (`--http ADDR`, which also serves load tests
//! on demand at `/loadtests`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use paymesh_ops::credentials::{Credentials, TOKEN_ENV};
use paymesh_ops::issuer::LocalIssuer;
use paymesh_ops::loadtest::{Limits, LoadTests};
use paymesh_ops::mesh::Mesh;
use paymesh_ops::tools::Ops;
use rmcp::ServiceExt;

const USAGE: &str = "usage: paymesh-mcp --config FILE [--http ADDR] [--issuer-dir DIR | --token-merchant M]
  (no --http)       MCP over stdio (what an assistant starts)
  --http ADDR       MCP over streamable HTTP at http://ADDR/mcp, load tests at http://ADDR/loadtests
  --issuer-dir DIR  mint short-lived tokens with the local issuer's key in DIR (cargo xtask up's .paymesh/auth)
  --token-merchant M  use the bearer token in $PAYMESH_OPS_TOKEN, which acts for merchant M
  --max-rate N, --max-duration-s N, --max-concurrency N   load-test limits (default 1000, 60, 64)";

fn main() -> ExitCode {
    let _telemetry = paymesh_core::telemetry::init("paymesh-mcp");
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("paymesh-mcp: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let (mut config, mut http, mut issuer_dir, mut merchant) = (None, None, None, None);
    let mut limits = Limits::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{a} needs a value\n{USAGE}"));
        let number = |v: String| match v.parse::<f64>() {
            Ok(n) if n.is_finite() && n >= 1.0 => Ok(n),
            _ => Err(format!("{a} takes a number of at least 1, not '{v}'")),
        };
        match a.as_str() {
            "--config" => config = Some(PathBuf::from(value()?)),
            "--http" => http = Some(value()?.parse::<std::net::SocketAddr>().map_err(|e| format!("--http: {e}"))?),
            "--issuer-dir" => issuer_dir = Some(PathBuf::from(value()?)),
            "--token-merchant" => merchant = Some(value()?),
            "--max-rate" => limits.max_rate = number(value()?)?,
            "--max-duration-s" => limits.max_duration = std::time::Duration::from_secs_f64(number(value()?)?),
            "--max-concurrency" => limits.max_concurrency = number(value()?)? as u32,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown option '{other}'\n{USAGE}")),
        }
    }
    let config = config.ok_or_else(|| format!("--config is required\n{USAGE}"))?;
    let config = paymesh_core::config::MeshConfig::load(&config).map_err(|e| e.to_string())?;
    let credentials = Arc::new(match (issuer_dir, merchant) {
        (Some(_), Some(_)) => return Err("give --issuer-dir or --token-merchant, not both".into()),
        (Some(dir), None) => Credentials::Issuer(LocalIssuer::open(&dir)?),
        (None, Some(merchant)) => {
            let token = std::env::var(TOKEN_ENV).map_err(|_| format!("--token-merchant needs the token in ${TOKEN_ENV}"))?;
            Credentials::Token { token, merchant }
        }
        (None, None) => Credentials::None,
    });
    let mesh = Arc::new(Mesh::of(&config));
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async move {
        let loadtests = LoadTests::new(mesh.edge, credentials.clone(), limits);
        let ops = Ops::new(mesh, credentials, loadtests.clone());
        match http {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
                let bound = listener.local_addr().map_err(|e| e.to_string())?;
                tracing::info!(listen = %paymesh_ops::serve::describe(bound), "paymesh-mcp serving");
                let stop = tokio_util::sync::CancellationToken::new();
                let stopper = stop.clone();
                tokio::spawn(async move {
                    paymesh_core::shutdown::signal().await;
                    stopper.cancel();
                });
                paymesh_ops::serve::serve(listener, ops, loadtests, stop).await;
                Ok(())
            }
            None => {
                let service = ops.serve(rmcp::transport::stdio()).await.map_err(|e| format!("MCP over stdio: {e}"))?;
                service.waiting().await.map_err(|e| format!("MCP over stdio: {e}"))?;
                Ok(())
            }
        }
    })
}
