//! Latency statistics: exact percentiles from every recorded latency (nearest-rank), the
//! request rate, and error counts by status.

use std::collections::BTreeMap;
use std::time::Duration;

/// Everything one run recorded.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    latencies_us: Vec<u64>,
    ok_latencies_us: Vec<u64>,
    statuses: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

impl Recorder {
    pub fn record(&mut self, latency: Duration, status: &str) {
        self.latencies_us.push(latency.as_micros() as u64);
        if status == "OK" {
            self.ok_latencies_us.push(latency.as_micros() as u64);
        }
        *self.statuses.entry(status.to_owned()).or_default() += 1;
    }

    /// Counts a failed call's message (at most 100 distinct messages are kept).
    pub fn record_error(&mut self, message: &str) {
        if self.errors.len() < 100 || self.errors.contains_key(message) {
            *self.errors.entry(message.to_owned()).or_default() += 1;
        }
    }

    /// Every latency (microseconds), status counts and error counts.
    pub fn into_parts(self) -> (Vec<u64>, BTreeMap<String, u64>, BTreeMap<String, u64>) {
        (self.latencies_us, self.statuses, self.errors)
    }

    pub fn merge(&mut self, other: Recorder) {
        self.latencies_us.extend(other.latencies_us);
        self.ok_latencies_us.extend(other.ok_latencies_us);
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }

    /// Summarises a run that measured for `elapsed`.
    pub fn summary(mut self, elapsed: Duration) -> Summary {
        self.latencies_us.sort_unstable();
        self.ok_latencies_us.sort_unstable();
        let l = &self.latencies_us;
        let ok_l = &self.ok_latencies_us;
        let count = l.len() as u64;
        let ok = self.statuses.get("OK").copied().unwrap_or(0);
        let ms = |us: u64| us as f64 / 1_000.0;
        Summary {
            count,
            errors: count - ok,
            rps: if elapsed.is_zero() { 0.0 } else { count as f64 / elapsed.as_secs_f64() },
            average_ms: if l.is_empty() { 0.0 } else { ms(l.iter().sum::<u64>()) / l.len() as f64 },
            fastest_ms: l.first().map_or(0.0, |v| ms(*v)),
            slowest_ms: l.last().map_or(0.0, |v| ms(*v)),
            p50_ms: ms(percentile(l, 50.0)),
            p90_ms: ms(percentile(l, 90.0)),
            p95_ms: ms(percentile(l, 95.0)),
            p99_ms: ms(percentile(l, 99.0)),
            ok_p50_ms: ms(percentile(ok_l, 50.0)),
            ok_p99_ms: ms(percentile(ok_l, 99.0)),
            statuses: self.statuses,
        }
    }
}

/// Nearest-rank percentile of sorted values (0 when empty).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub errors: u64,
    pub rps: f64,
    pub average_ms: f64,
    pub fastest_ms: f64,
    pub slowest_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Percentiles of the successful calls only (what admitted requests saw under overload).
    pub ok_p50_ms: f64,
    pub ok_p99_ms: f64,
    /// Count by status: gRPC code name for gRPC, `OK`/`HTTP <n>` for REST.
    pub statuses: BTreeMap<String, u64>,
}

impl Summary {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "errors": self.errors,
            "rps": self.rps,
            "average_ms": self.average_ms,
            "fastest_ms": self.fastest_ms,
            "slowest_ms": self.slowest_ms,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "ok_p50_ms": self.ok_p50_ms,
            "ok_p99_ms": self.ok_p99_ms,
            "statusCodeDistribution": self.statuses,
        })
    }

    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        let f = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        let statuses = v.get("statusCodeDistribution")?.as_object()?.iter().map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0))).collect();
        Some(Self {
            count: v.get("count")?.as_u64()?,
            errors: v.get("errors")?.as_u64()?,
            rps: f("rps")?,
            average_ms: f("average_ms")?,
            fastest_ms: f("fastest_ms")?,
            slowest_ms: f("slowest_ms")?,
            p50_ms: f("p50_ms")?,
            p90_ms: f("p90_ms")?,
            p95_ms: f("p95_ms")?,
            p99_ms: f("p99_ms")?,
            ok_p50_ms: f("ok_p50_ms")?,
            ok_p99_ms: f("ok_p99_ms")?,
            statuses,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_of_known_inputs() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 90.0), 90);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), 2);
    }

    #[test]
    fn summary_counts_errors_by_status_and_rate() {
        let mut r = Recorder::default();
        for i in 1..=8 {
            r.record(Duration::from_millis(i), "OK");
        }
        r.record(Duration::from_millis(100), "Unavailable");
        r.record(Duration::from_millis(200), "HTTP 503");
        let s = r.summary(Duration::from_secs(2));
        assert_eq!((s.count, s.errors), (10, 2));
        assert_eq!(s.rps, 5.0);
        assert_eq!((s.fastest_ms, s.slowest_ms, s.p50_ms), (1.0, 200.0, 5.0));
        assert_eq!(s.statuses.get("Unavailable"), Some(&1));
        assert_eq!((s.ok_p50_ms, s.ok_p99_ms), (4.0, 8.0), "successes only");
        assert_eq!(Summary::from_json(&s.to_json()), Some(s));
    }
}
