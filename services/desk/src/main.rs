//! `desk --instance NAME [--config FILE]`: serves the repair centre's service desk and
//! consumes the intake's events into its list.

fn main() -> std::process::ExitCode {
    paymesh_core::cli::run_instance("desk", |config, instance| async move {
        paymesh_repair_desk::run(&config, &instance, paymesh_core::shutdown::signal()).await
    })
}
