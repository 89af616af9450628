//! `requests --instance NAME [--config FILE]`: serves the repair centre's intake.

fn main() -> std::process::ExitCode {
    paymesh_core::cli::run_instance("requests", |config, instance| async move {
        paymesh_repair_requests::run(&config, &instance, paymesh_core::shutdown::signal()).await
    })
}
