//! The edge's state in Prometheus text format (`GET /metrics` on the admin listener),
//! rendered from the live structures at scrape time, so there is no second bookkeeping.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, Upstream};
use crate::resilience::breaker::State;
use crate::state::EdgeState;

/// Upper bounds (seconds) of the request latency histogram.
const BUCKETS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Requests by protocol, route, shard and outcome, with a latency histogram per protocol,
/// route and shard. Labels come from config (routes, shards, one `<unknown>` method per
/// service) and the fixed set of gRPC codes, so cardinality is bounded. No lock is shared
/// by all requests: each thread records into its own slot (a route's key is allocated the
/// first time a slot sees it), and a scrape adds the slots up.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    slots: [Mutex<BTreeMap<String, RouteSeries>>; SLOTS],
}

/// Independent recording slots; threads are spread over them.
const SLOTS: usize = 16;

/// This thread's slot.
fn slot() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    }
    SLOT.with(|s| *s)
}

/// A route's series by protocol and shard.
type RouteSeries = BTreeMap<(&'static str, Option<u32>), Series>;

/// One protocol, route and shard: answers by gRPC code, and their latency.
#[derive(Debug, Default, Clone)]
struct Series {
    codes: BTreeMap<&'static str, u64>,
    latency: Histogram,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; 13],
    count: u64,
    sum: f64,
}

impl Series {
    fn add(&mut self, other: &Series) {
        for (code, n) in &other.codes {
            *self.codes.entry(code).or_default() += n;
        }
        let (h, o) = (&mut self.latency, &other.latency);
        for (b, n) in h.buckets.iter_mut().zip(o.buckets) {
            *b += n;
        }
        h.count += o.count;
        h.sum += o.sum;
    }
}

impl RequestMetrics {
    /// Records one request. `route` is the gRPC method path (or `unmatched`), `code` the
    /// gRPC status name of the answer.
    pub fn record(&self, protocol: &'static str, route: &str, shard: Option<u32>, code: &'static str, took: Duration) {
        let mut by_route = self.slots[slot()].lock().unwrap_or_else(|e| e.into_inner());
        let series = match by_route.get_mut(route) {
            Some(r) => r,
            None => by_route.entry(route.to_owned()).or_default(),
        };
        let s = series.entry((protocol, shard)).or_default();
        *s.codes.entry(code).or_default() += 1;
        let h = &mut s.latency;
        let secs = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Every slot added up.
    fn merged(&self) -> BTreeMap<String, RouteSeries> {
        let mut by_route: BTreeMap<String, RouteSeries> = BTreeMap::new();
        for slot in &self.slots {
            let slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            for (route, series) in slot.iter() {
                let merged = by_route.entry(route.clone()).or_default();
                for (key, s) in series {
                    merged.entry(*key).or_default().add(s);
                }
            }
        }
        by_route
    }

    /// Per route: requests answered, and how many of them were the server side's failures
    /// ([`crate::failures::is_server_failure`]).
    pub fn totals(&self) -> BTreeMap<String, (u64, u64)> {
        let failure = |name: &str| (0..17).any(|c| crate::failures::is_server_failure(c) && code_name(c) == name);
        self.merged()
            .into_iter()
            .map(|(route, series)| {
                let (mut all, mut failed) = (0, 0);
                for s in series.values() {
                    for (code, n) in &s.codes {
                        all += n;
                        if failure(code) {
                            failed += n;
                        }
                    }
                }
                (route, (all, failed))
            })
            .collect()
    }

    fn render(&self, out: &mut String) {
        let by_route = self.merged();
        let series = || {
            by_route.iter().flat_map(|(r, m)| {
                m.iter().map(move |((p, shard), s)| {
                    let shard = shard.map(|n| n.to_string()).unwrap_or_default();
                    (format!("protocol=\"{p}\",route=\"{r}\",shard=\"{shard}\""), s)
                })
            })
        };
        family(
            out,
            "paymesh_edge_requests_total",
            "counter",
            "Requests answered, by protocol, route (gRPC method), shard and gRPC status.",
            series().flat_map(|(l, s)| s.codes.iter().map(move |(c, n)| (format!("{l},code=\"{c}\""), n.to_string()))),
        );
        let name = "paymesh_edge_request_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Time from the request reaching the edge to its answer.\n# TYPE {name} histogram");
        for (l, s) in series() {
            let h = &s.latency;
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"{b}\"}} {}", h.buckets[i]);
            }
            let _ =
                writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {}\n{name}_sum{{{l}}} {}\n{name}_count{{{l}}} {}", h.count, h.sum, h.count);
        }
    }
}

/// The gRPC code name of a numeric status, as the metrics label it.
pub fn code_name(code: i32) -> &'static str {
    paymesh_core::grpc_code::name(code)
}

/// One metric family: name, type, help, and `(labels, value)` rows.
fn family(out: &mut String, name: &str, kind: &str, help: &str, rows: impl IntoIterator<Item = (String, String)>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in rows {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

pub fn render(state: &EdgeState) -> String {
    let now = Instant::now();
    let mut out = String::with_capacity(8192);
    state.requests.render(&mut out);

    let snaps: Vec<_> = state.routes_in_order().flat_map(|r| r.guards.breakers.iter()).map(|b| b.snapshot(now)).collect();
    let by_breaker =
        |f: fn(&crate::resilience::breaker::Snapshot) -> String| snaps.iter().map(move |s| (format!("breaker=\"{}\"", s.name), f(s)));
    family(
        &mut out,
        "paymesh_edge_breaker_state",
        "gauge",
        "1 for the circuit breaker's current state, 0 for the others.",
        snaps.iter().flat_map(|s| {
            State::ALL
                .iter()
                .map(move |st| (format!("breaker=\"{}\",state=\"{}\"", s.name, st.as_str()), u8::from(*st == s.state).to_string()))
        }),
    );
    family(
        &mut out,
        "paymesh_edge_breaker_failure_rate",
        "gauge",
        "Failure rate in percent over the window; -1 below the minimum calls.",
        by_breaker(|s| s.failure_rate.to_string()),
    );
    family(
        &mut out,
        "paymesh_edge_breaker_slow_call_rate",
        "gauge",
        "Slow-call rate in percent over the window; -1 below the minimum calls.",
        by_breaker(|s| s.slow_call_rate.to_string()),
    );
    family(
        &mut out,
        "paymesh_edge_breaker_buffered_calls",
        "gauge",
        "Calls in the breaker's window.",
        by_breaker(|s| s.buffered_calls.to_string()),
    );
    family(
        &mut out,
        "paymesh_edge_breaker_not_permitted_calls_total",
        "counter",
        "Calls the breaker refused.",
        by_breaker(|s| s.not_permitted_calls.to_string()),
    );

    let routes: Vec<_> = state.routes_in_order().collect();
    let by_route = |f: &dyn Fn(&crate::catalog::ServiceRoute) -> String| {
        routes.iter().map(|r| (format!("route=\"{}\"", r.name), f(r))).collect::<Vec<_>>()
    };
    family(
        &mut out,
        "paymesh_edge_rate_limited_total",
        "counter",
        "Requests refused by a rate limit.",
        by_route(&|r| r.guards.rate_limited().to_string()),
    );
    family(
        &mut out,
        "paymesh_edge_rate_limit_keys",
        "gauge",
        "Client keys held by the route's per-key limiter.",
        by_route(&|r| r.guards.keys_tracked().to_string()),
    );
    family(
        &mut out,
        "paymesh_edge_retries_total",
        "counter",
        "Retries the budget allowed.",
        by_route(&|r| r.guards.budget.counts().0.to_string()),
    );
    family(
        &mut out,
        "paymesh_edge_retries_refused_total",
        "counter",
        "Retries the budget refused.",
        by_route(&|r| r.guards.budget.counts().1.to_string()),
    );

    let clusters: Vec<_> = state.clusters_in_order().collect();
    let by_cluster =
        |f: &dyn Fn(&Cluster) -> String| clusters.iter().map(|c| (format!("cluster=\"{}\"", c.name), f(c))).collect::<Vec<_>>();
    family(
        &mut out,
        "paymesh_edge_cluster_overflow_total",
        "counter",
        "Requests refused at max_requests with max_pending waiting.",
        by_cluster(&|c| c.limit.overflows().to_string()),
    );
    family(
        &mut out,
        "paymesh_edge_cluster_in_flight_requests",
        "gauge",
        "Requests in flight to the cluster.",
        by_cluster(&|c| c.limit.in_flight().to_string()),
    );

    let endpoints: Vec<(&Cluster, &Upstream)> = clusters.iter().flat_map(|c| c.endpoints.iter().map(move |e| (&***c, &**e))).collect();
    let by_endpoint = |f: &dyn Fn(&Upstream) -> String| {
        endpoints
            .iter()
            .map(|(c, e)| {
                (
                    format!(
                        "cluster=\"{}\",endpoint=\"{}\",shard=\"{}\"",
                        c.name,
                        e.name,
                        e.shard.map(|s| s.0.to_string()).unwrap_or_default()
                    ),
                    f(e),
                )
            })
            .collect::<Vec<_>>()
    };
    family(
        &mut out,
        "paymesh_edge_upstream_healthy",
        "gauge",
        "1 if the instance passes active health checks.",
        by_endpoint(&|e| u8::from(e.health.is_healthy()).to_string()),
    );
    family(
        &mut out,
        "paymesh_edge_upstream_ejected",
        "gauge",
        "1 while outlier detection has the instance ejected.",
        by_endpoint(&|e| u8::from(e.health.is_ejected(now)).to_string()),
    );
    family(
        &mut out,
        "paymesh_edge_upstream_ejections_total",
        "counter",
        "Outlier ejections of the instance.",
        by_endpoint(&|e| e.health.ejections().to_string()),
    );
    family(
        &mut out,
        "paymesh_edge_upstream_ewma_seconds",
        "gauge",
        "Peak-EWMA latency estimate of the instance.",
        by_endpoint(&|e| (e.load.estimate_ns(now) / 1e9).to_string()),
    );
    family(
        &mut out,
        "paymesh_edge_upstream_in_flight_requests",
        "gauge",
        "Requests in flight to the instance.",
        by_endpoint(&|e| e.load.in_flight().to_string()),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_adds_up_every_threads_slot() {
        let m = std::sync::Arc::new(RequestMetrics::default());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let code = if i % 4 == 0 { "UNAVAILABLE" } else { "OK" };
                        m.record("grpc", "/a.B/C", Some(t % 2), code, Duration::from_millis(2));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let mut out = String::new();
        m.render(&mut out);
        for shard in ["0", "1"] {
            let labels = format!("protocol=\"grpc\",route=\"/a.B/C\",shard=\"{shard}\"");
            assert!(out.contains(&format!("paymesh_edge_requests_total{{{labels},code=\"OK\"}} 300")), "{out}");
            assert!(out.contains(&format!("paymesh_edge_requests_total{{{labels},code=\"UNAVAILABLE\"}} 100")), "{out}");
            assert!(out.contains(&format!("paymesh_edge_request_duration_seconds_count{{{labels}}} 400")), "{out}");
            assert!(out.contains(&format!("paymesh_edge_request_duration_seconds_bucket{{{labels},le=\"0.0025\"}} 400")), "{out}");
        }
    }
}
