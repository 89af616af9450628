//! `relay --instance NAME [--config FILE]`: publishes one shard's outbox to Kafka.

fn main() -> std::process::ExitCode {
    paymesh_core::cli::run_instance("relay", |config, instance| async move {
        paymesh_relay::run(&config, &instance, paymesh_core::shutdown::signal()).await
    })
}
