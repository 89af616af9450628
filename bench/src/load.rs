//! Load from `concurrency` workers: closed loop (each sends the next call as soon as the
//! previous one is answered) or paced at a fixed rate. Calls during the warm-up are sent but
//! not recorded.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::stats::{Recorder, Summary};

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Open-loop pacing: call `n` is not sent before `start + n / rps` (ghz's `--rps`).
    pub rps: Option<f64>,
    /// Stop after this many calls (ghz's `-n`), warm-up included.
    pub total: Option<u64>,
    /// Calls sent but not recorded before recording starts (ghz's `--skipFirst`), on top of
    /// the time-based warm-up.
    pub skip_first: u64,
    /// Print a progress line to stderr every second.
    pub progress: bool,
}

/// How one call went: its status name (`OK` on success) and, if it failed, why.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: String,
    pub error: Option<String>,
}

impl From<String> for Outcome {
    fn from(status: String) -> Self {
        Self { status, error: None }
    }
}

/// Runs `call(seq)` from `plan.concurrency` workers; `seq` is unique across workers. The
/// call returns its status name (`OK` for success).
pub async fn run<F, Fut, O>(plan: Plan, call: F) -> Summary
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = O> + Send,
    O: Into<Outcome>,
{
    run_recording(plan, call).await.0
}

/// [`run`], also returning everything recorded (for ghz's report) and the measured time.
pub async fn run_recording<F, Fut, O>(plan: Plan, call: F) -> (Summary, Recorder, Duration)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = O> + Send,
    O: Into<Outcome>,
{
    let call = Arc::new(call);
    let seq = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let progress = plan.progress.then(|| {
        let seq = seq.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = seq.load(Ordering::Relaxed);
                eprintln!("[{:>5.1}s] {n} calls sent, {} in the last second", start.elapsed().as_secs_f64(), n - last);
                last = n;
            }
        })
    });
    let mut workers = Vec::with_capacity(plan.concurrency);
    for _ in 0..plan.concurrency {
        let (call, seq) = (call.clone(), seq.clone());
        workers.push(tokio::spawn(async move {
            let mut rec = Recorder::default();
            loop {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                if plan.total.is_some_and(|t| n >= t) {
                    return rec;
                }
                if let Some(rps) = plan.rps {
                    let at = start + Duration::from_secs_f64(n as f64 / rps);
                    if at >= end {
                        return rec;
                    }
                    tokio::time::sleep_until(at.into()).await;
                }
                let sent = Instant::now();
                if sent >= end {
                    return rec;
                }
                let outcome: Outcome = call(n).await.into();
                if sent >= measure_from && n >= plan.skip_first {
                    rec.record(sent.elapsed(), &outcome.status);
                    if let Some(e) = &outcome.error {
                        rec.record_error(e);
                    }
                }
            }
        }));
    }
    let mut all = Recorder::default();
    for w in workers {
        if let Ok(rec) = w.await {
            all.merge(rec);
        }
    }
    if let Some(p) = progress {
        p.abort();
    }
    // With -n the run may end before the duration: measure what it took.
    let measured = start.elapsed().saturating_sub(plan.warmup).min(plan.duration).max(Duration::from_micros(1));
    (all.clone().summary(measured), all, measured)
}
