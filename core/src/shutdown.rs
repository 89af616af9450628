//! The process-wide shutdown signal: SIGTERM (what orchestrators send) or Ctrl-C.
//!
//! One listener per process counts the signals from the moment it starts ([`listen`], which
//! `cli::run_instance` calls before anything else), so a signal is never lost or ignored,
//! whatever the process is doing. [`signal`] is the graceful path a service awaits in its main
//! loop; [`forced`] says when the process must stop without waiting for that any longer:
//! at once if the first signal comes while nothing awaits [`signal`] yet (still starting up,
//! e.g. waiting for its database), on a second signal, or when the grace period runs out.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

struct Listener {
    /// How many termination signals have arrived.
    received: watch::Sender<u32>,
    /// Whether a [`signal`] future has been polled: the process has reached the point where
    /// it stops gracefully.
    awaited: AtomicBool,
}

/// Starts listening for SIGTERM and Ctrl-C, once per process (later calls do nothing). From
/// then on these signals no longer kill the process by default: they are counted for
/// [`signal`] and [`forced`]. Must be called inside a Tokio runtime, which must outlive it.
pub fn listen() {
    listener();
}

fn listener() -> &'static Listener {
    static LISTENER: OnceLock<Listener> = OnceLock::new();
    LISTENER.get_or_init(|| {
        let (received, _) = watch::channel(0);
        let counter = received.clone();
        #[cfg(unix)]
        let streams = {
            use tokio::signal::unix::{SignalKind, signal};
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        };
        tokio::spawn(async move {
            #[cfg(unix)]
            let (mut term, mut int) = match streams {
                (Ok(t), Ok(i)) => (t, i),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM and Ctrl-C; they will kill this process as by default");
                    return;
                }
            };
            loop {
                #[cfg(unix)]
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "Ctrl-C",
                };
                #[cfg(not(unix))]
                let name = match tokio::signal::ctrl_c().await {
                    Ok(()) => "Ctrl-C",
                    Err(_) => return,
                };
                counter.send_modify(|n| *n += 1);
                if *counter.borrow() == 1 {
                    tracing::info!("{name} received; shutting down");
                } else {
                    tracing::warn!("{name} received again; exiting now");
                }
            }
        });
        Listener { received, awaited: AtomicBool::new(false) }
    })
}

/// Resolves when the process is asked to stop. A service awaits it (or passes it on) where it
/// can stop gracefully; from its first poll on, a signal waits for the service to finish
/// (see [`forced`]).
pub async fn signal() {
    let l = listener();
    l.awaited.store(true, Ordering::SeqCst);
    let mut received = l.received.subscribe();
    // The sender lives in a static, so this only ends by a signal.
    let _ = received.wait_for(|n| *n >= 1).await;
}

/// Why a process must exit without waiting any longer for its graceful stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forced {
    /// The signal came before anything awaited [`signal`]: the process was still starting
    /// (or retrying its start), holds nothing in flight, and stops at once.
    DuringStartup,
    /// A second signal: the operator insists.
    SecondSignal,
    /// The graceful stop took longer than this after the first signal.
    GraceExpired(Duration),
}

/// Resolves when the process must exit regardless of its graceful stop: see [`Forced`].
/// Never resolves without a signal.
pub async fn forced(grace: Duration) -> Forced {
    let l = listener();
    let mut received = l.received.subscribe();
    let _ = received.wait_for(|n| *n >= 1).await;
    if !l.awaited.load(Ordering::SeqCst) {
        return Forced::DuringStartup;
    }
    tokio::select! {
        _ = received.wait_for(|n| *n >= 2) => Forced::SecondSignal,
        () = tokio::time::sleep(grace) => Forced::GraceExpired(grace),
    }
}
