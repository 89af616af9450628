//! `broker [--config FILE] [--control ADDR]`: runs the local Kafka-protocol broker
//! (librdkafka's mock cluster, three brokers) with Paymesh's topics, and writes its bootstrap
//! address where `[kafka] bootstrap = "file:..."` points, so the relay and workers find it.
//! Stops on SIGTERM or Ctrl-C.
//!
//! `--control ADDR` (or `PAYMESH_BROKER_CONTROL=ADDR`; loopback only; for fault drills such as
//! `cargo xtask chaos`) serves
//! `GET /brokers` (which are up), `/brokers/down` and `/brokers/up` (every broker), and
//! `/brokers/N/down`, `/brokers/N/up` (broker N of 1..3).

use std::path::PathBuf;
use std::process::ExitCode;

use paymesh_core::config::{Bootstrap, MeshConfig};

fn main() -> ExitCode {
    let mut config = std::env::var_os("PAYMESH_CONFIG").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("mesh-config/paymesh.toml"));
    // Also from the environment, so a supervisor that passes one environment to every process
    // (`cargo xtask chaos`) can turn it on.
    let mut control: Option<std::net::SocketAddr> =
        std::env::var("PAYMESH_BROKER_CONTROL").ok().and_then(|v| v.parse().ok()).filter(|a: &std::net::SocketAddr| a.ip().is_loopback());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--config", Some(v)) => config = PathBuf::from(v),
            ("--control", Some(v)) => match v.parse::<std::net::SocketAddr>() {
                Ok(addr) if addr.ip().is_loopback() => control = Some(addr),
                _ => {
                    eprintln!("broker: --control needs a loopback address such as 127.0.0.1:9000, not '{v}'");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("usage: broker [--config FILE] [--control ADDR]");
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
    let served: Result<(), String> = runtime.block_on(async {
        let _telemetry = paymesh_core::telemetry::init("broker");
        let stop = paymesh_core::shutdown::signal();
        let Some(addr) = control else {
            stop.await;
            return Ok(());
        };
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen for control on {addr}: {e}"))?;
        tracing::info!(%addr, "broker control listening");
        // The cluster is not `Send`: commands come to this task, which owns it.
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let server = paymesh_kafka::local::serve_control(listener, tx, stop);
        tokio::pin!(server);
        loop {
            tokio::select! {
                () = &mut server => return Ok(()),
                Some(req) = rx.recv() => {
                    let outcome = broker.apply(req.command);
                    tracing::warn!(command = ?req.command, ?outcome, "broker fault injection");
                    let _ = req.reply.send(outcome);
                }
            }
        }
    });
    drop(broker);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("broker: {e}");
            ExitCode::FAILURE
        }
    }
}
