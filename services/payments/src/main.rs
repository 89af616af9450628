//! `payments --instance NAME [--config FILE]`: runs one payments instance from the mesh config.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: payments --instance NAME [--config FILE]
  --instance NAME   which [[payments.instances]] entry of the config to run
  --config FILE     mesh config (default: $PAYMESH_CONFIG, else mesh-config/paymesh.toml)";

fn main() -> ExitCode {
    let mut instance = None;
    let mut config = std::env::var_os("PAYMESH_CONFIG").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("mesh-config/paymesh.toml"));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--instance", Some(v)) => instance = Some(v),
            ("--config", Some(v)) => config = PathBuf::from(v),
            ("-h" | "--help", _) => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("payments: unexpected argument '{arg}'\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(instance) = instance else {
        eprintln!("payments: --instance is required\n{USAGE}");
        return ExitCode::from(2);
    };
    paymesh_core::telemetry::init("payments");
    let config = match paymesh_core::config::MeshConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("payments: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("payments: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(paymesh_payments::run(&config, &instance, paymesh_core::shutdown::signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "payments instance failed");
            eprintln!("payments: {e}");
            ExitCode::FAILURE
        }
    }
}
