//! The shared `main` of every per-instance Paymesh binary:
//! `PROGRAM --instance NAME [--config FILE]`. Parses the arguments, starts logging, loads
//! and validates the mesh config, runs the instance on a multi-threaded runtime until
//! SIGTERM or Ctrl-C, and turns the outcome into an exit code (2 for usage and config
//! errors, 1 for failures).
//!
//! A termination signal is honoured in every state: the signal listener starts before the
//! instance does. Once the instance awaits `shutdown::signal()` it stops gracefully; a signal
//! before that (still starting, e.g. waiting for its database or the broker's address) exits
//! at once with 0; a second signal, or a graceful stop still running
//! `payments.drain_delay` + `payments.shutdown_grace` + 5 s after the first, exits at once
//! with 1.

use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::MeshConfig;
use crate::shutdown::Forced;

/// How much longer than the services' own shutdown grace a graceful stop may take.
const FORCE_MARGIN: Duration = Duration::from_secs(5);

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
    // A payments instance drains first, then lets its calls finish.
    let grace = config.payments.drain_delay + config.payments.shutdown_grace + FORCE_MARGIN;
    let outcome = runtime.block_on(async {
        crate::shutdown::listen();
        crate::reload::on_hangup();
        let _telemetry = crate::telemetry::init(program);
        if let Some(filter) = &config.log_level
            && let Err(e) = crate::telemetry::set_log_filter(filter)
        {
            tracing::warn!(%e, "the config's log_level was not applied");
        }
        tracing::info!(%instance, "{program} starting");
        tokio::select! {
            biased;
            r = run(config, instance) => r.map_err(|e| e.to_string()),
            why = crate::shutdown::forced(grace) => match why {
                Forced::DuringStartup => {
                    tracing::info!("{program} stopped before it finished starting");
                    Ok(())
                }
                Forced::SecondSignal => exit_now(program, "asked twice to stop"),
                Forced::GraceExpired(g) => exit_now(program, &format!("did not stop within {g:?} of the signal")),
            },
        }
    });
    // Blocking tasks still running (a stuck call) must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{program} failed");
            eprintln!("{program}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exits with 1 without waiting for anything (not even the telemetry flush, which could hang
/// on an unreachable collector).
fn exit_now(program: &str, why: &str) -> ! {
    tracing::error!("{program} {why}; exiting now");
    eprintln!("{program}: {why}; exiting now");
    std::process::exit(1)
}
