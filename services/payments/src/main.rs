//! `payments --instance NAME [--config FILE]`: runs one payments instance from the mesh config.

fn main() -> std::process::ExitCode {
    paymesh_core::cli::run_instance("payments", |config, instance| async move {
        paymesh_payments::run(&config, &instance, paymesh_core::shutdown::signal()).await
    })
}
