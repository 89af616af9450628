//! The payments instance's Prometheus metrics: calls by method and code with latency
//! histograms, and the connection pool, served on the instance's `status_listen`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Cumulative bucket counts, observation count and sum (seconds) of one method's latency.
type Histogram = ([u64; 12], u64, f64);

#[derive(Debug, Default)]
pub struct RpcMetrics {
    calls: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
}

impl RpcMetrics {
    pub fn record(&self, method: &'static str, code: tonic::Code, took: Duration) {
        *self.calls.lock().unwrap_or_else(|e| e.into_inner()).entry((method, code_name(code))).or_default() += 1;
        let mut lat = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let h = lat.entry(method).or_default();
        let secs = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.0[i] += 1;
            }
        }
        h.1 += 1;
        h.2 += secs;
    }

    pub fn render(&self, labels: &str, pool: &deadpool_postgres::Pool) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP paymesh_payments_requests_total gRPC calls by method and status.\n# TYPE paymesh_payments_requests_total counter"
        );
        for ((m, c), n) in self.calls.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "paymesh_payments_requests_total{{{labels},method=\"{m}\",code=\"{c}\"}} {n}");
        }
        let name = "paymesh_payments_request_duration_seconds";
        let _ = writeln!(out, "# HELP {name} gRPC call latency.\n# TYPE {name} histogram");
        for (m, (buckets, count, sum)) in self.latency.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let l = format!("{labels},method=\"{m}\"");
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"{b}\"}} {}", buckets[i]);
            }
            let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {count}\n{name}_sum{{{l}}} {sum}\n{name}_count{{{l}}} {count}");
        }
        let st = pool.status();
        for (metric, help, v) in [
            ("paymesh_payments_pool_connections", "Connections open in the pool.", st.size),
            ("paymesh_payments_pool_idle_connections", "Open connections not in use.", st.available),
            ("paymesh_payments_pool_waiting_requests", "Calls waiting for a connection.", st.waiting),
            ("paymesh_payments_pool_max_connections", "The pool's size limit.", st.max_size),
        ] {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge\n{metric}{{{labels}}} {v}");
        }
        out
    }
}

/// Group commit's counters: batches, the requests in them (their ratio is the mean batch
/// size), and batches that had to run one request at a time.
pub fn render_batches(stats: Option<&crate::store::BatchStats>, labels: &str) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(s) = stats else { return String::new() };
    let mut out = String::new();
    for (metric, help, v) in [
        ("paymesh_payments_batches_total", "Group-commit batches committed or attempted.", s.batches.load(Relaxed)),
        ("paymesh_payments_batched_requests_total", "Mutations applied through group commit.", s.requests.load(Relaxed)),
        ("paymesh_payments_batch_fallbacks_total", "Batches rolled back and run one request at a time.", s.fallbacks.load(Relaxed)),
    ] {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter\n{metric}{{{labels}}} {v}");
    }
    out
}

fn code_name(c: tonic::Code) -> &'static str {
    paymesh_core::grpc_code::name(c as i32)
}
