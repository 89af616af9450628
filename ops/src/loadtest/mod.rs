//! Load tests on demand: a bounded run against the configured edge, one at a time, with its
//! progress while it runs and ghz's report and an [`analysis`](crate::analysis) when done.
//!
//! - [`spec`]: what a run asks for and the limits;
//! - [`LoadTests`]: starting runs, finding them, the last few kept.

pub mod spec;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use paymesh_bench::{load, report, target};
use paymesh_proto::payments::v1 as pb;
use serde_json::{Value, json};

use crate::analysis::{Analysis, analyze};
use crate::credentials::Credentials;
pub use spec::{Checked, Limits, Method, Spec};

/// Runs kept for reading after they finish.
const KEPT: usize = 20;

/// Why a run did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The spec is out of bounds or malformed.
    Invalid(String),
    /// Another run is in progress (its id).
    Busy(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(why) => f.write_str(why),
            Self::Busy(id) => write!(f, "load test {id} is still running; one runs at a time: wait for it (GET /loadtests/{id})"),
        }
    }
}

/// The load tests of this process.
#[derive(Debug)]
pub struct LoadTests {
    pub limits: Limits,
    edge: Option<SocketAddr>,
    credentials: Arc<Credentials>,
    runs: Mutex<VecDeque<Arc<Run>>>,
    next: AtomicU64,
}

/// One run.
#[derive(Debug)]
pub struct Run {
    pub id: String,
    pub spec: Spec,
    checked: Checked,
    started_at: String,
    started: Instant,
    sent: AtomicU64,
    failed: AtomicU64,
    outcome: Mutex<Option<Result<Finished, String>>>,
    done: tokio::sync::watch::Sender<bool>,
}

/// A finished run's figures.
#[derive(Debug, Clone)]
pub struct Finished {
    pub report: Value,
    pub analysis: Analysis,
}

impl LoadTests {
    /// Load tests against the edge at `edge` (none: every start is refused).
    pub fn new(edge: Option<SocketAddr>, credentials: Arc<Credentials>, limits: Limits) -> Arc<Self> {
        Arc::new(Self { limits, edge, credentials, runs: Mutex::new(VecDeque::new()), next: AtomicU64::new(1) })
    }

    /// Starts `spec` in the background, or says why not.
    pub fn start(self: &Arc<Self>, spec: Spec) -> Result<Arc<Run>, Refused> {
        let checked = spec.check(&self.limits).map_err(Refused::Invalid)?;
        let edge = self.edge.ok_or_else(|| Refused::Invalid("the mesh config has no [edge]: there is nothing to load".into()))?;
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(busy) = runs.iter().find(|r| !r.is_done()) {
            return Err(Refused::Busy(busy.id.clone()));
        }
        let id = format!("lt-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let run = Arc::new(Run {
            id,
            spec,
            checked,
            started_at: paymesh_core::clock::rfc3339(SystemTime::now()),
            started: Instant::now(),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            outcome: Mutex::new(None),
            done: tokio::sync::watch::Sender::new(false),
        });
        if runs.len() == KEPT {
            runs.pop_front();
        }
        runs.push_back(run.clone());
        drop(runs);
        tracing::info!(id = %run.id, method = checked.method.as_str(), rate = checked.rate, duration_s = checked.duration.as_secs_f64(), concurrency = checked.concurrency, "load test started");
        let (r, credentials) = (run.clone(), self.credentials.clone());
        tokio::spawn(async move {
            let outcome = execute(&r, edge, &credentials).await;
            match &outcome {
                Ok(f) => tracing::info!(id = %r.id, grade = %f.analysis.grade, summary = %f.analysis.summary, "load test finished"),
                Err(e) => tracing::warn!(id = %r.id, error = %e, "load test failed"),
            }
            *r.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
            r.done.send_replace(true);
        });
        Ok(run)
    }

    /// The run called `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Run>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|r| r.id == id).cloned()
    }

    /// Every kept run's progress, newest first.
    pub fn list(&self) -> Vec<Value> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).iter().rev().map(|r| r.progress()).collect()
    }
}

impl Run {
    pub fn is_done(&self) -> bool {
        *self.done.borrow()
    }

    /// Waits until the run has finished.
    pub async fn finished(&self) {
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Where the run is: state, calls so far, failures so far, share of its time elapsed.
    pub fn progress(&self) -> Value {
        let elapsed = self.started.elapsed();
        let planned = self.checked.duration;
        let (state, error) = match &*self.outcome.lock().unwrap_or_else(|e| e.into_inner()) {
            None => ("running", None),
            Some(Ok(_)) => ("finished", None),
            Some(Err(e)) => ("failed", Some(e.clone())),
        };
        let done = state != "running";
        json!({
            "id": self.id,
            "state": state,
            "spec": self.spec,
            "started_at": self.started_at,
            "elapsed_s": elapsed.as_secs_f64(),
            "calls": self.sent.load(Ordering::Relaxed),
            "failed_calls": self.failed.load(Ordering::Relaxed),
            "progress": if done { 1.0 } else { (elapsed.as_secs_f64() / planned.as_secs_f64()).min(0.99) },
            "error": error,
        })
    }

    /// The report and analysis of a finished run; `Err` says why there is none (yet).
    pub fn result(&self) -> Result<Finished, String> {
        match &*self.outcome.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Err(format!("load test {} is still running; poll GET /loadtests/{}", self.id, self.id)),
            Some(Ok(f)) => Ok(f.clone()),
            Some(Err(e)) => Err(format!("load test {} failed: {e}", self.id)),
        }
    }
}

/// Sends the run's calls and builds its report.
async fn execute(run: &Arc<Run>, edge: SocketAddr, credentials: &Credentials) -> Result<Finished, String> {
    let c = run.checked;
    let callers = credentials.callers(c.duration + Duration::from_secs(120))?;
    let callers: Arc<Vec<(String, target::Headers)>> = Arc::new(
        callers
            .into_iter()
            .map(|(merchant, auth)| (merchant, Arc::new(auth.map(|a| ("authorization".to_owned(), a)).into_iter().collect())))
            .collect(),
    );
    let plan = load::Plan {
        concurrency: c.concurrency,
        warmup: Duration::ZERO,
        duration: c.duration,
        rps: Some(c.rate),
        total: None,
        skip_first: 0,
        progress: false,
    };
    let tag = format!("{}-{}", run.id, std::process::id());
    let counted = |r: Arc<Run>| {
        move |status: String| {
            r.sent.fetch_add(1, Ordering::Relaxed);
            if status != "OK" {
                r.failed.fetch_add(1, Ordering::Relaxed);
            }
            status
        }
    };
    let (_, recorder, elapsed) = match c.method {
        Method::Authorize => {
            let channels = Arc::new(target::channels(edge, c.concurrency.div_ceil(16)).await?);
            let (count, callers, tag) = (counted(run.clone()), callers.clone(), tag.clone());
            load::run_recording(plan, move |seq| {
                let (merchant, headers) = &callers[seq as usize % callers.len()];
                let req = request(&tag, seq, merchant);
                let (channel, headers, count) = (channels[seq as usize % channels.len()].clone(), headers.clone(), count.clone());
                async move { count(target::grpc_authorize(channel, req, &headers).await) }
            })
            .await
        }
        Method::Flow => {
            let client = target::http_client();
            let (count, callers, tag) = (counted(run.clone()), callers.clone(), tag.clone());
            load::run_recording(plan, move |seq| {
                let (merchant, headers) = &callers[seq as usize % callers.len()];
                let req = request(&tag, seq, merchant);
                let (client, headers, count) = (client.clone(), headers.clone(), count.clone());
                async move { count(target::rest_flow(client, edge, req, &headers).await) }
            })
            .await
        }
    };
    let (mut latencies, statuses, errors) = recorder.into_parts();
    let options = json!({
        "call": match c.method { Method::Authorize => "payments.v1.Payments.Authorize", Method::Flow => "REST authorize+capture+refund" },
        "host": edge.to_string(),
        "rps": c.rate,
        "concurrency": c.concurrency,
        "duration": format!("{}s", c.duration.as_secs_f64()),
    });
    let report = report::ghz(&mut latencies, &statuses, &errors, elapsed, options);
    let analysis = analyze(&report, c.rate);
    Ok(Finished { report, analysis })
}

/// Call `seq`'s Authorize: a new payment for `merchant` (its own idempotency key).
fn request(tag: &str, seq: u64, merchant: &str) -> pb::AuthorizeRequest {
    pb::AuthorizeRequest {
        merchant_id: merchant.to_owned(),
        amount: 1_000 + (seq % 9_000) as i64,
        currency: "KRW".into(),
        idempotency_key: format!("{tag}-{seq}"),
    }
}
