//! `query --instance NAME [--config FILE]`: serves cross-shard queries.

fn main() -> std::process::ExitCode {
    paymesh_core::cli::run_instance("query", |config, instance| async move {
        paymesh_query::run(&config, &instance, paymesh_core::shutdown::signal()).await
    })
}
