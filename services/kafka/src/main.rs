//! `broker [--config FILE]`: runs the local Kafka-protocol broker (librdkafka's mock cluster)
//! with Paymesh's topics, and writes its bootstrap address where `[kafka] bootstrap =
//! "file:..."` points, so the relay and workers find it. Stops on SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use paymesh_core::config::{Bootstrap, MeshConfig};

fn main() -> ExitCode {
    let mut config = std::env::var_os("PAYMESH_CONFIG").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("mesh-config/paymesh.toml"));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--config", Some(v)) => config = PathBuf::from(v),
            _ => {
                eprintln!("usage: broker [--config FILE]");
                return ExitCode::from(2);
            }
        }
    }
    let cfg = match MeshConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("broker: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(kafka) = cfg.kafka else {
        eprintln!("broker: {}: no [kafka] section", config.display());
        return ExitCode::from(2);
    };
    let broker = match paymesh_kafka::local::LocalBroker::start(3, kafka.topic_partitions, kafka.dlq_partitions) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("broker: cannot start the mock cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bootstrap = broker.bootstrap();
    if let Bootstrap::File(path) = &kafka.bootstrap {
        let tmp = path.with_extension("tmp");
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, &bootstrap))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            eprintln!("broker: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    tracing::info!(%bootstrap, "broker serving");
    println!("{bootstrap}");
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("broker: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let _telemetry = paymesh_core::telemetry::init("broker");
        paymesh_core::shutdown::signal().await
    });
    drop(broker);
    ExitCode::SUCCESS
}
