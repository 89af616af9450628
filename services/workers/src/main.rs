//! `worker --instance NAME [--config FILE]`: runs one ledger, settlement or view worker.

fn main() -> std::process::ExitCode {
    paymesh_core::cli::run_instance("worker", |config, instance| async move {
        paymesh_workers::run(&config, &instance, paymesh_core::shutdown::signal()).await
    })
}
