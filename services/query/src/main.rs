//! `query --instance NAME [--config FILE]`: serves cross-shard queries.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut config = std::env::var_os("PAYMESH_CONFIG").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("mesh-config/paymesh.toml"));
    let mut instance = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--config", Some(v)) => config = PathBuf::from(v),
            ("--instance", Some(v)) => instance = Some(v),
            _ => {
                eprintln!("usage: query --instance NAME [--config FILE]");
                return ExitCode::from(2);
            }
        }
    }
    let Some(instance) = instance else {
        eprintln!("query: --instance is required");
        return ExitCode::from(2);
    };
    paymesh_core::telemetry::init("query");
    let cfg = match paymesh_core::config::MeshConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("query: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("query: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(paymesh_query::run(&cfg, &instance, paymesh_core::shutdown::signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("query: {e}");
            ExitCode::FAILURE
        }
    }
}
