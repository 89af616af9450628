//! `progress --instance NAME [--config FILE]`: serves the repair centre's progress view and
//! consumes every repair event into it.

fn main() -> std::process::ExitCode {
    paymesh_core::cli::run_instance("progress", |config, instance| async move {
        paymesh_repair_progress::run(&config, &instance, paymesh_core::shutdown::signal()).await
    })
}
