//! Per-cluster concurrency limits in Envoy's style: at most `max_requests` in flight; up to
//! `max_pending` more may wait for a slot (no longer than the call's deadline); anything
//! beyond is refused at once and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub struct ConcurrencyLimit {
    pub max_requests: usize,
    pub max_pending: usize,
    slots: Arc<Semaphore>,
    pending: AtomicUsize,
    overflows: AtomicU64,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// All slots busy and the waiting line full.
    Full,
    /// Waited for a slot until the deadline.
    Timeout,
}

impl ConcurrencyLimit {
    pub fn new(max_requests: usize, max_pending: usize) -> Self {
        Self {
            max_requests,
            max_pending,
            slots: Arc::new(Semaphore::new(max_requests.max(1))),
            pending: AtomicUsize::new(0),
            overflows: AtomicU64::new(0),
        }
    }

    /// A slot, held until the returned permit is dropped.
    pub async fn acquire(&self, wait: Duration) -> Result<OwnedSemaphorePermit, Overflow> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.overflows.fetch_add(1, Ordering::Relaxed);
            return Err(Overflow::Full);
        }
        // Leaves the waiting line however the wait ends, a cancelled call (its client gone)
        // included.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let waiting = Waiting(&self.pending);
        let waited = tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await;
        drop(waiting);
        match waited {
            Ok(Ok(p)) => Ok(p),
            _ => {
                self.overflows.fetch_add(1, Ordering::Relaxed);
                Err(Overflow::Timeout)
            }
        }
    }

    pub fn in_flight(&self) -> usize {
        self.max_requests.max(1) - self.slots.available_permits()
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    pub fn overflows(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn overflow_is_refused_at_once_when_nothing_may_wait() {
        let l = ConcurrencyLimit::new(2, 0);
        let a = l.acquire(LONG).await.expect("1");
        let _b = l.acquire(LONG).await.expect("2");
        assert_eq!(l.acquire(LONG).await.expect_err("3"), Overflow::Full);
        assert_eq!((l.in_flight(), l.overflows()), (2, 1));
        drop(a);
        assert!(l.acquire(LONG).await.is_ok());
    }

    #[tokio::test]
    async fn pending_requests_wait_for_a_slot_and_the_line_is_bounded() {
        let l = Arc::new(ConcurrencyLimit::new(1, 1));
        let first = l.acquire(LONG).await.expect("slot");
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move { l.acquire(LONG).await.map(|_| ()) })
        };
        // Wait until the second request is really queued.
        while l.pending() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(l.acquire(LONG).await.expect_err("line full"), Overflow::Full);
        drop(first);
        waiter.await.expect("join").expect("the waiting request got the slot");
        assert_eq!(l.overflows(), 1);
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_the_line() {
        let l = Arc::new(ConcurrencyLimit::new(1, 1));
        let _first = l.acquire(LONG).await.expect("slot");
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move { l.acquire(LONG).await.map(|_| ()) })
        };
        while l.pending() == 0 {
            tokio::task::yield_now().await;
        }
        // The waiting call's client goes away: its future is dropped mid-wait.
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(l.pending(), 0, "the cancelled call still holds its place in line");
    }
}
