//! `echo-upstream --listen HOST:PORT [--descriptor-set-out FILE]`: the bench's upstream
//! that does no work (see `paymesh_bench::echo`). Stops on SIGTERM or Ctrl-C.

use std::process::ExitCode;

const USAGE: &str = "usage: echo-upstream --listen HOST:PORT [--descriptor-set-out FILE]";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let (mut listen, mut out) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(v)) => listen = Some(v),
            ("--descriptor-set-out", Some(v)) => out = Some(v),
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
    match paymesh_bench::echo::serve(listener, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-upstream: {e}");
            ExitCode::FAILURE
        }
    }
}
