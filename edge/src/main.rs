//! `edge [--config FILE]`: runs the Paymesh edge from the mesh config's `[edge]` section.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: edge [--check | --upgrade] [--config FILE]
  --config FILE   mesh config (default: $PAYMESH_CONFIG, else mesh-config/paymesh.toml)
  --check         check the whole config (and the edge's routes and bindings) without
                  starting; print every problem as file:line: key: problem; exit 1 if any
  --upgrade       take over from the edge running with this config: wait for its listening
                  socket, which it hands over (then drains) when sent SIGQUIT";

fn main() -> ExitCode {
    let mut config = std::env::var_os("PAYMESH_CONFIG").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("mesh-config/paymesh.toml"));
    let mut check = false;
    let mut upgrade = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--check" {
            check = true;
            continue;
        }
        if arg == "--upgrade" {
            upgrade = true;
            continue;
        }
        match (arg.as_str(), args.next()) {
            ("--config", Some(v)) => config = PathBuf::from(v),
            ("-h" | "--help", _) => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("edge: unexpected argument '{arg}'\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if check {
        return match paymesh_edge::check::file(&config) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(problems) => {
                for p in problems {
                    eprintln!("{p}");
                }
                ExitCode::FAILURE
            }
        };
    }
    // pingora runs its own runtimes; this small one carries the trace exporter.
    let telemetry_runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("edge: cannot start the telemetry runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _telemetry = telemetry_runtime.block_on(async { paymesh_core::telemetry::init("edge") });
    let state = match paymesh_core::config::MeshConfig::load(&config).map_err(|e| e.to_string()).and_then(|c| {
        if let Some(filter) = &c.log_level {
            paymesh_core::telemetry::set_log_filter(filter)?;
        }
        paymesh_edge::prepare(&c).map_err(|e| e.to_string())
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("edge: {e}");
            return ExitCode::from(2);
        }
    };
    // Taking over: the running edge's socket, once it sends it (on SIGQUIT).
    let inherited = if upgrade {
        let listen = state.load().config.listen;
        tracing::info!(%listen, "waiting for the running edge's listening socket (send it SIGQUIT)");
        match paymesh_edge::upgrade::receive(listen) {
            Ok(socket) => Some(socket),
            Err(e) => {
                eprintln!("edge: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    match paymesh_edge::run_with(state, Box::new(paymesh_edge::UnixSignals), inherited) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge: {e}");
            ExitCode::FAILURE
        }
    }
}
