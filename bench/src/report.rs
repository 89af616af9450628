//! ghz's JSON report: count, total, average, fastest, slowest (nanoseconds), rps,
//! errorDistribution, statusCodeDistribution, latencyDistribution (p10..p99) and histogram.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::stats::percentile;

/// Builds the report from every recorded latency (microseconds), the status of each call,
/// and the error messages of failed calls.
pub fn ghz(
    latencies_us: &mut [u64],
    statuses: &BTreeMap<String, u64>,
    errors: &BTreeMap<String, u64>,
    total: Duration,
    options: serde_json::Value,
) -> serde_json::Value {
    latencies_us.sort_unstable();
    let count = latencies_us.len() as u64;
    let ns = |us: u64| us * 1_000;
    let average = ns(latencies_us.iter().sum::<u64>().checked_div(count).unwrap_or(0));
    let dist: Vec<serde_json::Value> = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0]
        .iter()
        .map(|p| serde_json::json!({ "percentage": *p as u64, "latency": ns(percentile(latencies_us, *p)) }))
        .collect();
    serde_json::json!({
        "date": paymesh_core::clock::rfc3339(std::time::SystemTime::now()),
        "options": options,
        "count": count,
        "total": total.as_nanos() as u64,
        "average": average,
        "fastest": latencies_us.first().map_or(0, |v| ns(*v)),
        "slowest": latencies_us.last().map_or(0, |v| ns(*v)),
        "rps": if total.is_zero() { 0.0 } else { count as f64 / total.as_secs_f64() },
        "errorDistribution": errors,
        "statusCodeDistribution": statuses,
        "latencyDistribution": dist,
        "histogram": histogram(latencies_us, 10),
    })
}

/// `buckets` equal-width buckets between the fastest and the slowest call; `mark` is each
/// bucket's upper bound in seconds, `frequency` its share of calls.
pub fn histogram(sorted_us: &[u64], buckets: usize) -> Vec<serde_json::Value> {
    let (Some(&lo), Some(&hi)) = (sorted_us.first(), sorted_us.last()) else { return Vec::new() };
    let width = ((hi - lo) as f64 / buckets as f64).max(1.0);
    let mut counts = vec![0u64; buckets];
    for &v in sorted_us {
        let i = (((v - lo) as f64 / width) as usize).min(buckets - 1);
        counts[i] += 1;
    }
    let n = sorted_us.len() as f64;
    counts
        .iter()
        .enumerate()
        .map(|(i, c)| serde_json::json!({ "mark": (lo as f64 + width * (i + 1) as f64) / 1e6, "count": c, "frequency": *c as f64 / n }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_has_ghz_fields_from_known_inputs() {
        let mut lat: Vec<u64> = (1..=100).map(|i| i * 1_000).collect();
        let statuses = BTreeMap::from([("OK".to_owned(), 98u64), ("Unavailable".to_owned(), 2)]);
        let errors = BTreeMap::from([("rpc error: code = Unavailable".to_owned(), 2u64)]);
        let r = ghz(&mut lat, &statuses, &errors, Duration::from_secs(2), serde_json::json!({"call": "x"}));
        for field in [
            "date",
            "options",
            "count",
            "total",
            "average",
            "fastest",
            "slowest",
            "rps",
            "errorDistribution",
            "statusCodeDistribution",
            "latencyDistribution",
            "histogram",
        ] {
            assert!(r.get(field).is_some(), "{field} missing");
        }
        assert_eq!(r["count"], 100);
        assert_eq!(r["total"], 2_000_000_000u64);
        assert_eq!(r["rps"], 50.0);
        assert_eq!((r["fastest"].as_u64(), r["slowest"].as_u64()), (Some(1_000_000), Some(100_000_000)));
        assert_eq!(r["average"], 50_500_000u64);
        let p = |pct: u64| {
            r["latencyDistribution"].as_array().and_then(|a| a.iter().find(|d| d["percentage"] == pct)).map(|d| d["latency"].clone())
        };
        assert_eq!(p(50), Some(serde_json::json!(50_000_000u64)));
        assert_eq!(p(99), Some(serde_json::json!(99_000_000u64)));
        assert_eq!(r["statusCodeDistribution"]["Unavailable"], 2);
        let h = r["histogram"].as_array().expect("histogram");
        assert_eq!(h.len(), 10);
        assert_eq!(h.iter().map(|b| b["count"].as_u64().unwrap_or(0)).sum::<u64>(), 100);
    }
}
