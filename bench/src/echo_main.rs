//! `echo-upstream --listen HOST:PORT [--descriptor-set-out FILE] [--mtls DIR]`: the bench's
//! upstream that does no work (see `paymesh_bench::echo`); with `--mtls`, it serves mTLS only
//! with `DIR/echo.pem` and `DIR/echo.key`, trusting `DIR/ca.pem`. Stops on SIGTERM or Ctrl-C.

use std::process::ExitCode;

const USAGE: &str = "usage: echo-upstream --listen HOST:PORT [--descriptor-set-out FILE] [--mtls DIR]";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let (mut listen, mut out, mut mtls) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(v)) => listen = Some(v),
            ("--descriptor-set-out", Some(v)) => out = Some(v),
            ("--mtls", Some(v)) => mtls = Some(std::path::PathBuf::from(v)),
            _ => {
                eprintln!("echo-upstream: unexpected argument '{arg}'\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(path) = out
        && let Err(e) = std::fs::write(&path, paymesh_bench::echo::DESCRIPTOR_SET)
    {
        eprintln!("echo-upstream: cannot write {path}: {e}");
        return ExitCode::FAILURE;
    }
    let Some(listen) = listen else { return ExitCode::SUCCESS };
    let tls = match mtls.map(|d| paymesh_core::tls::MeshTls::load(paymesh_core::tls::TlsFiles::for_name(&d.join("ca.pem"), &d, "echo"))) {
        None => None,
        Some(Ok(t)) => Some(std::sync::Arc::new(t)),
        Some(Err(e)) => {
            eprintln!("echo-upstream: --mtls: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("echo-upstream: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    match paymesh_bench::echo::serve(listener, tls, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-upstream: {e}");
            ExitCode::FAILURE
        }
    }
}
