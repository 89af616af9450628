//! Restarting the edge without refusing a connection, pingora's way: the new process is
//! started with `--upgrade` and waits on a Unix socket; the running one, on SIGQUIT, sends it
//! the listening socket (the same socket, not a copy bound again: connections queued in it
//! are accepted by the new process), then stops accepting and lets its connections and calls
//! finish. HTTP/2 clients get GOAWAY and reconnect, to the new process.
//!
//! The admin listener is bound with SO_REUSEPORT instead, so both processes hold it while
//! they overlap (an admin connection queued in the old one as it closes may be reset).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use pingora::server::Fds;

/// The key the listening socket is sent under (pingora's table is keyed by address).
fn key(listen: SocketAddr) -> String {
    format!("tcp://{listen}")
}

/// Where the new process waits for the running one's socket: one path per public port.
pub fn socket_path(listen: SocketAddr) -> PathBuf {
    std::env::temp_dir().join(format!("paymesh-edge-{}.upgrade.sock", listen.port()))
}

/// In the new process: waits (pingora's retries, about a minute) for the running edge to
/// send its listening socket for `listen`.
pub fn receive(listen: SocketAddr) -> Result<std::net::TcpListener, String> {
    let path = socket_path(listen);
    let path = path.to_str().ok_or("the upgrade socket's path is not UTF-8")?;
    let mut fds = Fds::new();
    fds.get_from_sock(path)
        .map_err(|e| format!("no listening socket came from a running edge over {path}: {e}; is one running, and was it sent SIGQUIT?"))?;
    let fd =
        *fds.get(&key(listen)).ok_or_else(|| format!("the running edge sent no socket for {listen}; is its listen address the same?"))?;
    let owned = owned(fd);
    let listener = std::net::TcpListener::from(owned);
    match listener.local_addr() {
        Ok(a) if a.port() == listen.port() => Ok(listener),
        Ok(a) => Err(format!("the socket received listens on {a}, not {listen}")),
        Err(e) => Err(format!("the descriptor received is not a listening TCP socket: {e}")),
    }
}

/// Takes ownership of a descriptor that just arrived over SCM_RIGHTS.
#[allow(unsafe_code)]
fn owned(fd: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: `fd` is a new descriptor the kernel created in this process when the message
    // carrying it was received (by `Fds::get_from_sock` just before); nothing else owns or
    // closes it, and it is taken here exactly once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// In the running process: sends the listening socket to a new process waiting on the
/// upgrade socket.
pub fn send(listen: SocketAddr, listener: &std::net::TcpListener) -> Result<(), String> {
    let path = socket_path(listen);
    let path = path.to_str().ok_or("the upgrade socket's path is not UTF-8")?;
    let mut fds = Fds::new();
    fds.add(key(listen), listener.as_raw_fd());
    fds.send_to_sock(path)
        .map(drop)
        .map_err(|e| format!("cannot hand the listening socket over at {path}: {e}; is a new edge waiting with --upgrade?"))
}
