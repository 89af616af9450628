//! Logging setup shared by every binary.
//!
//! Filter with `RUST_LOG` (default `info`). Tracing export over OTLP arrives with the
//! telemetry work; until then spans are only logged.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber for a process named `service`. Call once, from `main`.
pub fn init(service: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let installed =
        tracing_subscriber::fmt().with_env_filter(filter).with_target(true).with_ansi(ansi).with_writer(std::io::stderr).try_init();
    if installed.is_ok() {
        tracing::debug!(service, "logging initialised");
    }
}
