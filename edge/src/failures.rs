//! The latest failed calls, for the admin dashboard: a small ring, newest first, one for the
//! process's life (carried across reloads like the request counters).
//!
//! Only server-side outcomes count as failures here (the codes an operator acts on:
//! UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, ...); a caller's own mistakes (INVALID_ARGUMENT,
//! NOT_FOUND, PERMISSION_DENIED, ...) are the caller's to fix and would bury them.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

/// How many failures the ring keeps.
pub const KEPT: usize = 50;

/// One failed call.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedCall {
    /// RFC 3339, UTC.
    pub at: String,
    pub protocol: &'static str,
    pub route: String,
    pub shard: Option<u32>,
    /// The instance that answered (or did not), when one was picked.
    pub instance: Option<String>,
    pub code: &'static str,
    pub message: String,
}

/// The ring of the latest failed calls.
#[derive(Debug, Default)]
pub struct RecentFailures {
    ring: Mutex<VecDeque<FailedCall>>,
}

/// Whether a gRPC status is the server side's failure (counted as an error on the dashboard).
pub fn is_server_failure(code: i32) -> bool {
    // UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, UNIMPLEMENTED, INTERNAL,
    // UNAVAILABLE, DATA_LOSS.
    matches!(code, 2 | 4 | 8 | 10 | 12 | 13 | 14 | 15)
}

impl RecentFailures {
    /// Keeps `call`, dropping the oldest beyond [`KEPT`].
    pub fn record(&self, mut call: FailedCall) {
        if call.message.len() > 300 {
            let cut = (0..=300).rev().find(|i| call.message.is_char_boundary(*i)).unwrap_or(0);
            call.message.truncate(cut);
        }
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == KEPT {
            ring.pop_back();
        }
        ring.push_front(call);
    }

    /// The kept failures, newest first.
    pub fn latest(&self) -> Vec<FailedCall> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }
}

/// The current time as [`FailedCall::at`] writes it.
pub fn now() -> String {
    paymesh_core::clock::rfc3339(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(n: usize) -> FailedCall {
        FailedCall {
            at: now(),
            protocol: "grpc",
            route: format!("/r/{n}"),
            shard: Some(0),
            instance: None,
            code: "UNAVAILABLE",
            message: "é".repeat(400),
        }
    }

    #[test]
    fn keeps_the_newest_first_and_at_most_kept() {
        let r = RecentFailures::default();
        for n in 0..KEPT + 7 {
            r.record(call(n));
        }
        let latest = r.latest();
        assert_eq!(latest.len(), KEPT);
        assert_eq!(latest[0].route, format!("/r/{}", KEPT + 6));
        assert_eq!(latest[KEPT - 1].route, "/r/7");
        assert!(latest[0].message.len() <= 300, "messages are cut on a character boundary");
    }

    #[test]
    fn only_server_side_codes_are_failures() {
        for ok in [0, 1, 3, 5, 6, 7, 9, 11, 16] {
            assert!(!is_server_failure(ok), "{ok}");
        }
        for bad in [2, 4, 8, 10, 12, 13, 14, 15] {
            assert!(is_server_failure(bad), "{bad}");
        }
    }
}
