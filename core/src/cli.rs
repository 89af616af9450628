//! The shared `main` of every per-instance Paymesh binary:
//! `PROGRAM --instance NAME [--config FILE]`. Parses the arguments, starts logging, loads
//! and validates the mesh config, runs the instance on a multi-threaded runtime until
//! SIGTERM or Ctrl-C, and turns the outcome into an exit code (2 for usage and config
//! errors, 1 for failures).

use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::MeshConfig;

pub fn run_instance<F, Fut, E>(program: &str, run: F) -> ExitCode
where
    F: FnOnce(MeshConfig, String) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let usage = format!(
        "usage: {program} --instance NAME [--config FILE]\n  --instance NAME   which instance of the mesh config to run\n  --config FILE     mesh config (default: $PAYMESH_CONFIG, else mesh-config/paymesh.toml)"
    );
    let mut config = std::env::var_os("PAYMESH_CONFIG").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("mesh-config/paymesh.toml"));
    let mut instance = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--instance", Some(v)) => instance = Some(v),
            ("--config", Some(v)) => config = PathBuf::from(v),
            ("-h" | "--help", _) => {
                println!("{usage}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("{program}: unexpected argument '{arg}'\n{usage}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(instance) = instance else {
        eprintln!("{program}: --instance is required\n{usage}");
        return ExitCode::from(2);
    };
    let config = match MeshConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{program}: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{program}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let _telemetry = crate::telemetry::init(program);
        run(config, instance).await
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{program} failed");
            eprintln!("{program}: {e}");
            ExitCode::FAILURE
        }
    }
}
