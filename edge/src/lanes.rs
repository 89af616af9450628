//! One lane per worker thread: each client connection lives on one thread, start to end.
//!
//! pingora's multi-threaded runtime lets any thread run any task, and it spawns a task per
//! HTTP/2 stream and per upstream connection. A proxied call then wakes the client
//! connection's task, the stream's task and the upstream connection's task, and on a
//! machine with few cores those often sit on different threads: every hand-off is a futex
//! wake and a context switch, which cost more CPU than the proxying itself.
//!
//! The edge instead runs nginx's shape: `threads` lanes, each a single-threaded tokio
//! runtime on its own OS thread with its own copy of the proxy app (so its own upstream
//! connections). All lanes accept from one listening socket (each registers its own copy
//! of the descriptor with its own reactor, so a lane that is busy simply accepts less), and
//! a connection is served where it was accepted, with every task pingora spawns for it
//! (pingora spawns on the current runtime) and every upstream connection it opens. Shared
//! state (routes, breakers, limits, metrics) is the same [`EdgeState`] for every lane.
//!
//! [`EdgeState`]: crate::state::EdgeState

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};

/// Connections the kernel queues before a lane accepts them.
const BACKLOG: u32 = 1024;

/// The running lanes: their threads, and the switches that stop them.
pub struct Lanes {
    /// Flipped when the edge begins to shut down: lanes stop accepting and their
    /// connections wind down (HTTP/2 sends GOAWAY, HTTP/1 stops keep-alive).
    draining: watch::Sender<bool>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    local: SocketAddr,
    /// The listening socket itself (each lane holds a copy), to hand to a new process; the
    /// lanes drop it when they drain, so a draining edge refuses new connections at once.
    socket: Spare,
}

/// A copy of the listening socket kept for a handover.
type Spare = Arc<std::sync::Mutex<Option<std::net::TcpListener>>>;

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes").field("lanes", &self.threads.len()).field("local", &self.local).finish()
    }
}

impl Lanes {
    /// Binds `listen` and starts `count` lanes, each serving with the app `make_app` builds
    /// for it. Fails (with nothing left running) when the address cannot be bound.
    pub fn start<A: ServerApp + Send + Sync + 'static>(
        listen: SocketAddr,
        count: usize,
        tls: Option<Arc<crate::public_tls::PublicTls>>,
        make_app: impl FnMut() -> A,
    ) -> std::io::Result<Self> {
        Self::start_on(listen, None, count, tls, make_app)
    }

    /// [`Lanes::start`] on `inherited`, a listening socket a running edge handed over, when
    /// given; else on a socket bound to `listen`.
    pub fn start_on<A: ServerApp + Send + Sync + 'static>(
        listen: SocketAddr,
        inherited: Option<std::net::TcpListener>,
        count: usize,
        tls: Option<Arc<crate::public_tls::PublicTls>>,
        mut make_app: impl FnMut() -> A,
    ) -> std::io::Result<Self> {
        let (draining, _) = watch::channel(false);
        let mut lanes = Self { draining, stops: Vec::new(), threads: Vec::new(), local: listen, socket: Spare::default() };
        let mut first: Option<std::net::TcpListener> = None;
        let mut inherited = inherited;
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let listener = {
                // Registering the listener binds it to this lane's reactor.
                let _in_lane = runtime.enter();
                match &first {
                    None => {
                        let l = match inherited.take() {
                            Some(socket) => {
                                socket.set_nonblocking(true)?;
                                TcpListener::from_std(socket)?
                            }
                            None => bind(listen)?,
                        };
                        lanes.local = l.local_addr()?;
                        first = Some(std::net::TcpListener::from(l.as_fd().try_clone_to_owned()?));
                        l
                    }
                    Some(f) => {
                        let copy = std::net::TcpListener::from(f.as_fd().try_clone_to_owned()?);
                        copy.set_nonblocking(true)?;
                        TcpListener::from_std(copy)?
                    }
                }
            };
            let app = Arc::new(make_app());
            let tls = tls.clone();
            let draining = lanes.draining.subscribe();
            let spare = lanes.socket.clone();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new().name(format!("edge lane {i}")).spawn(move || {
                runtime.block_on(async move {
                    accept_loop(listener, app, tls, draining, spare).await;
                    // Connections still open keep being served until the edge stops.
                    let _ = stop_rx.await;
                });
                // Whatever is still running is dropped, as pingora drops its own tasks.
                runtime.shutdown_timeout(Duration::from_secs(1));
            });
            match thread {
                Ok(t) => {
                    lanes.stops.push(stop_tx);
                    lanes.threads.push(t);
                }
                Err(e) => {
                    lanes.stop();
                    return Err(e);
                }
            }
        }
        *lanes.socket.lock().unwrap_or_else(|e| e.into_inner()) = first;
        Ok(lanes)
    }

    /// The address the lanes accept on (the bound port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Wraps the server's shutdown signal so that the lanes start draining with it. On a
    /// graceful upgrade (SIGQUIT) the listening socket is first handed to the new process
    /// waiting for it (see [`crate::upgrade`]), keyed by the configured `listen` address; if
    /// none takes it, the edge keeps running.
    pub fn drain_on(
        &self,
        listen: SocketAddr,
        signal: Box<dyn ShutdownSignalWatch + Send + Sync>,
    ) -> Box<dyn ShutdownSignalWatch + Send + Sync> {
        Box::new(DrainOn { signal, draining: self.draining.clone(), listen, socket: self.socket.clone() })
    }

    /// Stops every lane: its remaining tasks are dropped, so its connections close; then
    /// the threads are joined.
    pub fn stop(self) {
        let _ = self.draining.send(true);
        for stop in self.stops {
            let _ = stop.send(());
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A listening socket with the edge's options.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // A restarted edge can bind while the old one's connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr).map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    socket.listen(BACKLOG)
}

/// Accepts until the edge drains, serving each connection on this lane.
async fn accept_loop<A: ServerApp + Send + Sync + 'static>(
    listener: TcpListener,
    app: Arc<A>,
    tls: Option<Arc<crate::public_tls::PublicTls>>,
    mut draining: watch::Receiver<bool>,
    spare: Spare,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = draining.wait_for(|d| *d) => {
                // No copy of the socket may outlive the lanes' own: a new connection is then
                // refused at once, not queued where nobody accepts it.
                drop(spare.lock().unwrap_or_else(|e| e.into_inner()).take());
                return;
            }
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or memory: back off briefly rather than spin.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let app = app.clone();
        let shutdown = draining.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let stream = match tls {
                None => Box::new(into_stream(tcp, peer)) as Stream,
                Some(tls) => {
                    let acceptor = tls.acceptor();
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.tls_handshake(into_stream(tcp, peer))).await {
                        Ok(Ok(s)) => Box::new(s) as Stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "the client did not finish the TLS handshake in time");
                            return;
                        }
                    }
                }
            };
            let mut next = app.process_new(stream, &shutdown).await;
            // HTTP/1 keep-alive hands the connection back for its next request.
            while let Some(stream) = next {
                next = app.process_new(stream, &shutdown).await;
            }
        });
    }
}

/// Longest a client may take to finish a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An accepted connection as pingora's stream, as pingora's own listener prepares it.
fn into_stream(tcp: tokio::net::TcpStream, peer: SocketAddr) -> pingora::protocols::l4::stream::Stream {
    let _ = tcp.set_nodelay(true);
    let mut stream = pingora::protocols::l4::stream::Stream::from(tcp);
    let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
    let _ = digest.peer_addr.set(Some(pingora::protocols::l4::socket::SocketAddr::Inet(peer)));
    stream.set_socket_digest(digest);
    stream
}

/// The server's shutdown signal, also telling the lanes (and handing the socket over on an
/// upgrade).
struct DrainOn {
    signal: Box<dyn ShutdownSignalWatch + Send + Sync>,
    draining: watch::Sender<bool>,
    listen: SocketAddr,
    socket: Spare,
}

impl DrainOn {
    fn drain(&self) {
        let _ = self.draining.send(true);
    }
}

#[async_trait]
impl ShutdownSignalWatch for DrainOn {
    async fn recv(&self) -> ShutdownSignal {
        loop {
            let signal = self.signal.recv().await;
            if !matches!(signal, ShutdownSignal::GracefulUpgrade) {
                self.drain();
                return signal;
            }
            let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(|s| s.try_clone().ok());
            let Some(socket) = socket else {
                tracing::error!("SIGQUIT: no listening socket to hand over; still running");
                continue;
            };
            let listen = self.listen;
            match tokio::task::spawn_blocking(move || crate::upgrade::send(listen, &socket)).await {
                Ok(Ok(())) => {
                    tracing::info!(%listen, "listening socket handed to the new edge; draining");
                    self.drain();
                    // pingora's own upgrade would send its listeners too: this edge has
                    // handed over what it must, so it stops as on SIGTERM.
                    return ShutdownSignal::GracefulTerminate;
                }
                Ok(Err(e)) => tracing::error!(%e, "SIGQUIT: upgrade failed; still running"),
                Err(e) => tracing::error!(%e, "SIGQUIT: upgrade failed; still running"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use pingora::server::ShutdownWatch;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Answers each connection with the name of the thread that served it, then closes it.
    #[derive(Default)]
    struct WhichThread;

    #[async_trait]
    impl ServerApp for WhichThread {
        async fn process_new(self: &Arc<Self>, mut stream: Stream, _shutdown: &ShutdownWatch) -> Option<Stream> {
            let name = std::thread::current().name().unwrap_or("?").to_owned();
            let _ = stream.write_all(name.as_bytes()).await;
            let _ = stream.flush().await;
            None
        }
    }

    async fn served_by(addr: SocketAddr) -> std::io::Result<String> {
        let mut c = tokio::net::TcpStream::connect(addr).await?;
        let mut name = String::new();
        c.read_to_string(&mut name).await?;
        Ok(name)
    }

    #[tokio::test]
    async fn connections_are_served_on_the_lane_threads_and_stop_closes_the_listener() {
        let lanes = Lanes::start(SocketAddr::from(([127, 0, 0, 1], 0)), 2, None, WhichThread::default).expect("lanes start");
        let addr = lanes.local_addr();
        assert_ne!(addr.port(), 0, "the bound port is reported");
        for _ in 0..8 {
            let name = served_by(addr).await.expect("served");
            assert!(name.starts_with("edge lane "), "served on {name:?}, not on a lane");
        }
        tokio::task::spawn_blocking(move || lanes.stop()).await.expect("lanes stop");
        assert!(served_by(addr).await.is_err(), "a stopped edge still accepts");
    }

    #[tokio::test]
    async fn draining_stops_accepting() {
        let lanes = Lanes::start(SocketAddr::from(([127, 0, 0, 1], 0)), 2, None, WhichThread::default).expect("lanes start");
        let addr = lanes.local_addr();
        served_by(addr).await.expect("served before draining");
        lanes.draining.send(true).expect("lanes listen");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        // Every lane drops its copy of the listener; then connecting is refused.
        loop {
            match served_by(addr).await {
                Err(_) => break,
                Ok(_) => assert!(tokio::time::Instant::now() < deadline, "still accepting 10 s after draining began"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::task::spawn_blocking(move || lanes.stop()).await.expect("lanes stop");
    }

    #[test]
    fn an_address_in_use_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = taken.local_addr().expect("its address");
        let err = Lanes::start(addr, 2, None, WhichThread::default).expect_err("the port is taken");
        assert!(err.to_string().contains(&format!("cannot listen on {addr}")), "{err}");
    }
}
