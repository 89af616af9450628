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
}

/// Runs `call(seq)` from `plan.concurrency` workers; `seq` is unique across workers. The
/// call returns its status name (`OK` for success).
pub async fn run<F, Fut>(plan: Plan, call: F) -> Summary
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = String> + Send,
{
    let call = Arc::new(call);
    let seq = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let mut workers = Vec::with_capacity(plan.concurrency);
    for _ in 0..plan.concurrency {
        let (call, seq) = (call.clone(), seq.clone());
        workers.push(tokio::spawn(async move {
            let mut rec = Recorder::default();
            loop {
                let n = seq.fetch_add(1, Ordering::Relaxed);
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
                let status = call(n).await;
                if sent >= measure_from {
                    rec.record(sent.elapsed(), &status);
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
    all.summary(plan.duration)
}
