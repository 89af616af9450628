//! `redrive [--config FILE] [--list]`: lists dead-lettered events (dead outbox rows on every
//! shard, messages in every worker DLQ) and, without `--list`, re-drives them
//! (see `paymesh_relay::redrive`). Exits 1 if something could not be read or re-driven.

use std::path::PathBuf;
use std::process::ExitCode;

use paymesh_core::config::MeshConfig;

const USAGE: &str = "usage: redrive [--config FILE] [--list]
  --config FILE   mesh config (default: $PAYMESH_CONFIG, else mesh-config/paymesh.toml)
  --list          only list what is dead-lettered; change nothing";

fn main() -> ExitCode {
    let mut config = std::env::var_os("PAYMESH_CONFIG").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("mesh-config/paymesh.toml"));
    let mut only_list = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--list" => only_list = true,
            "--config" => match args.next() {
                Some(v) => config = PathBuf::from(v),
                None => return usage("--config needs a file"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unexpected argument '{other}'")),
        }
    }
    let config = match MeshConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("redrive: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("redrive: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        if only_list { paymesh_relay::redrive::list(&config).await } else { paymesh_relay::redrive::redrive(&config).await }
    });
    match outcome {
        Ok(report) => {
            print!("{}{report}", if only_list { "dead-lettered, not re-driven:\n" } else { "re-driven:\n" });
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("redrive: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("redrive: {problem}\n{USAGE}");
    ExitCode::from(2)
}
