//! Free loopback ports.

use std::net::{Ipv4Addr, TcpListener};

/// A port that was free a moment ago. Another process may still take it before the caller
/// binds, so callers that start servers retry on "address in use".
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}
