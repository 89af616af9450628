//! `stock --instance NAME [--config FILE]`: serves the repair centre's parts stock.

fn main() -> std::process::ExitCode {
    paymesh_core::cli::run_instance("stock", |config, instance| async move {
        paymesh_stock::run(&config, &instance, paymesh_core::shutdown::signal()).await
    })
}
