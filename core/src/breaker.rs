//! Circuit breakers with Resilience4j's semantics.
//!
//! - CLOSED: every call is permitted and its outcome recorded in a sliding window. Once the
//!   window holds `minimum_calls`, a failure rate or slow-call rate at or above its
//!   threshold opens the breaker.
//! - OPEN: calls are refused at once (and counted) until `wait_in_open` has passed; the next
//!   call then moves the breaker to HALF_OPEN.
//! - HALF_OPEN: exactly `half_open_calls` trial calls are admitted; when all have finished,
//!   their rates close the breaker (window cleared) or open it again.
//!
//! Every state change starts a new generation; outcomes of calls admitted in an earlier
//! generation are ignored, so a straggler cannot decide a half-open trial. A trial permit
//! dropped without an outcome (the caller went away) frees its slot for the next call. So the
//! breaker can never stay half-open while traffic flows: the seeds' stuck breaker cannot
//! happen here.
//!
//! Operators may force a breaker open or closed; `Normal` returns it to CLOSED with a clear
//! window. Time is passed in, so every transition is unit-tested with a controlled clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod window;

use crate::config::{self, BreakerWindow};

use window::{Totals, Window};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
    ForcedOpen,
    ForcedClosed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
            Self::ForcedClosed => "forced_closed",
        }
    }

    pub const ALL: [State; 5] = [State::Closed, State::Open, State::HalfOpen, State::ForcedOpen, State::ForcedClosed];
}

/// What an operator asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Force {
    Open,
    Closed,
    Normal,
}

#[derive(Debug)]
pub struct Breaker {
    pub name: String,
    cfg: config::Breaker,
    inner: Mutex<Inner>,
    not_permitted: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    state: State,
    generation: u64,
    window: Window,
    open_until: Instant,
    trial: Trial,
}

/// Half-open bookkeeping.
#[derive(Debug, Default, Clone, Copy)]
struct Trial {
    admitted: u32,
    done: u32,
    failures: u32,
    slow: u32,
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub breaker: String,
    pub state: State,
    /// When the breaker will admit calls again, if known.
    pub retry_in: Option<Duration>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "circuit breaker '{}' is {}", self.breaker, self.state.as_str())?;
        match (self.state, self.retry_in) {
            (_, Some(d)) => write!(f, "; it lets a trial call through in {:.1} s", d.as_secs_f64()),
            (State::HalfOpen, None) => write!(f, "; its trial calls are in flight, retry shortly"),
            (State::ForcedOpen, None) => write!(f, " by an operator (POST /breakers to release it)"),
            _ => Ok(()),
        }
    }
}

/// Leave to make one call. Report its outcome with [`Breaker::record`].
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<Breaker>,
    generation: u64,
    trial: bool,
    settled: bool,
}

/// A snapshot for the admin API and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub name: String,
    pub state: State,
    /// Percent, or -1 until the window holds `minimum_calls` (as Resilience4j reports).
    pub failure_rate: f64,
    pub slow_call_rate: f64,
    pub buffered_calls: u32,
    pub failed_calls: u32,
    pub slow_calls: u32,
    pub not_permitted_calls: u64,
}

impl Breaker {
    pub fn new(name: String, cfg: config::Breaker, now: Instant) -> Arc<Self> {
        let window = match cfg.window {
            BreakerWindow::Count(n) => Window::count(n as usize),
            BreakerWindow::Time(d) => Window::time(d, now),
        };
        let state = if cfg.enabled { State::Closed } else { State::ForcedClosed };
        Arc::new(Self {
            name,
            cfg,
            inner: Mutex::new(Inner { state, generation: 0, window, open_until: now, trial: Trial::default() }),
            not_permitted: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks to make a call at `now`.
    pub fn try_acquire(self: &Arc<Self>, now: Instant) -> Result<Permit, Refused> {
        let mut s = self.lock();
        if s.state == State::Open && now >= s.open_until {
            self.transition(&mut s, State::HalfOpen, now);
        }
        let refuse = |state, retry_in| {
            self.not_permitted.fetch_add(1, Ordering::Relaxed);
            Err(Refused { breaker: self.name.clone(), state, retry_in })
        };
        match s.state {
            State::Closed | State::ForcedClosed => Ok(self.permit(s.generation, false)),
            State::Open => refuse(State::Open, Some(s.open_until.saturating_duration_since(now))),
            State::ForcedOpen => refuse(State::ForcedOpen, None),
            State::HalfOpen if s.trial.admitted < self.cfg.half_open_calls => {
                s.trial.admitted += 1;
                Ok(self.permit(s.generation, true))
            }
            State::HalfOpen => refuse(State::HalfOpen, None),
        }
    }

    fn permit(self: &Arc<Self>, generation: u64, trial: bool) -> Permit {
        Permit { breaker: self.clone(), generation, trial, settled: false }
    }

    /// Records a call's outcome: whether it failed, and how long it took.
    pub fn record(&self, mut permit: Permit, failed: bool, elapsed: Duration, now: Instant) {
        permit.settled = true;
        let slow = elapsed >= self.cfg.slow_call_duration;
        let mut s = self.lock();
        if permit.generation != s.generation {
            return;
        }
        match s.state {
            State::Closed => {
                s.window.record(failed, slow, now);
                let t = s.window.totals(now);
                if t.calls >= self.cfg.minimum_calls && self.trips(t) {
                    self.transition(&mut s, State::Open, now);
                }
            }
            State::HalfOpen if permit.trial => {
                s.trial.done += 1;
                s.trial.failures += u32::from(failed);
                s.trial.slow += u32::from(slow);
                if s.trial.done >= self.cfg.half_open_calls {
                    let t = Totals { calls: s.trial.done, failures: s.trial.failures, slow: s.trial.slow };
                    let next = if self.trips(t) { State::Open } else { State::Closed };
                    self.transition(&mut s, next, now);
                }
            }
            _ => {}
        }
    }

    /// The code of a finished call, as the breaker's failure set sees it.
    pub fn is_failure_code(&self, code: i32) -> bool {
        self.cfg.failure_codes.contains(&code)
    }

    pub fn force(&self, f: Force, now: Instant) {
        let mut s = self.lock();
        let to = match f {
            Force::Open => State::ForcedOpen,
            Force::Closed => State::ForcedClosed,
            Force::Normal => State::Closed,
        };
        self.transition(&mut s, to, now);
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let mut s = self.lock();
        let t = s.window.totals(now);
        let rate = |n: u32| if t.calls >= self.cfg.minimum_calls { f64::from(n) * 100.0 / f64::from(t.calls) } else { -1.0 };
        Snapshot {
            name: self.name.clone(),
            state: s.state,
            failure_rate: rate(t.failures),
            slow_call_rate: rate(t.slow),
            buffered_calls: t.calls,
            failed_calls: t.failures,
            slow_calls: t.slow,
            not_permitted_calls: self.not_permitted.load(Ordering::Relaxed),
        }
    }

    pub fn state(&self) -> State {
        self.lock().state
    }

    fn trips(&self, t: Totals) -> bool {
        let pct = |n: u32| f64::from(n) * 100.0 / f64::from(t.calls.max(1));
        pct(t.failures) >= self.cfg.failure_rate_threshold || pct(t.slow) >= self.cfg.slow_call_rate_threshold
    }

    fn transition(&self, s: &mut Inner, to: State, now: Instant) {
        if s.state != to {
            tracing::info!(breaker = %self.name, from = s.state.as_str(), to = to.as_str(), "circuit breaker state change");
        }
        s.state = to;
        s.generation += 1;
        s.trial = Trial::default();
        match to {
            State::Open => s.open_until = now + self.cfg.wait_in_open,
            State::Closed => s.window.clear(),
            _ => {}
        }
    }

    /// A trial permit that was dropped unsettled frees its slot.
    fn release(&self, generation: u64) {
        let mut s = self.lock();
        if s.generation == generation && s.state == State::HalfOpen {
            s.trial.admitted = s.trial.admitted.saturating_sub(1);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.settled && self.trial {
            self.breaker.release(self.generation);
        }
    }
}

#[cfg(test)]
mod tests;
