//! Free loopback ports.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// A port that was free a moment ago. Another process may still take it before the caller
/// binds, so callers that start servers retry on "address in use". Like
/// [`free_port_below_ephemeral`], a port is handed out at most once per process: the kernel
/// may offer a port again while nothing is bound to it, and a config that asks for several
/// ports before its servers bind would give two servers one port.
pub fn free_port() -> std::io::Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..1000 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "the kernel offered only ports already handed out"))
}

/// Where [`free_port_below_ephemeral`] looks: from 10000 up to the kernel's ephemeral range.
const LOWEST: u16 = 10_000;

/// A free loopback port below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`),
/// for servers that are stopped and restarted on the same port. The kernel never gives such a
/// port to an outgoing connection, so nothing takes it while its server is down, and a client
/// reconnecting in a loop cannot end up connected to itself (TCP simultaneous open: source
/// port = destination port), which can happen on an ephemeral port.
///
/// A port is handed out at most once per process: a config asks for many ports before any of
/// its servers binds, and a port free at every ask would otherwise go to two of them.
pub fn free_port_below_ephemeral() -> std::io::Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let end = ephemeral_start().max(LOWEST + 1);
    let span = u32::from(end - LOWEST);
    // Start somewhere different in every process and call, so parallel callers rarely collide.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let seed = nanos ^ std::process::id().wrapping_mul(2_654_435_761) ^ NEXT.fetch_add(7919, Ordering::Relaxed);
    for i in 0..span.min(2000) {
        let port = LOWEST + u16::try_from((seed.wrapping_add(i)) % span).unwrap_or(0);
        if !handed_out.contains(&port) && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, format!("no free port found between {LOWEST} and {end}")))
}

/// The first port of the kernel's ephemeral range (32768 unless configured otherwise).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One stack's config asks for a score of ports; two of its servers given the same port
    /// left one of them failing to bind on every restart (a CI run lost its ledger worker so).
    #[test]
    fn below_ephemeral_ports_are_never_handed_out_twice() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3000 {
            let port = free_port_below_ephemeral().expect("a port");
            assert!(seen.insert(port), "port {port} handed out twice in one process");
        }
    }

    #[test]
    fn free_ports_are_never_handed_out_twice() {
        // 3,000 draws from the kernel's ~28,000 ephemeral ports repeat one almost surely
        // (the bench's stack once gave a shard's PostgreSQL and a payments instance one port).
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3000 {
            let port = free_port().expect("a port");
            assert!(seen.insert(port), "port {port} handed out twice in one process");
        }
    }

    #[test]
    fn below_ephemeral_ports_are_outside_the_range() {
        for _ in 0..20 {
            let port = free_port_below_ephemeral().expect("a port");
            assert!((LOWEST..ephemeral_start()).contains(&port), "{port}");
        }
    }
}
