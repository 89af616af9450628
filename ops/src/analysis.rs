//! A finished run's figures in plain words: percentiles, error rate, throughput against what
//! was asked, and a grade an operator can act on (the seeds' `/monitoring/loadtest/analyze`).

use serde_json::Value;

/// What a run measured, and what it means.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Analysis {
    pub calls: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Failed calls / all calls, 0..1.
    pub error_rate: f64,
    /// Calls per second achieved.
    pub throughput: f64,
    /// Calls per second asked for.
    pub asked_rate: f64,
    /// A (healthy) to F (failing).
    pub grade: String,
    /// The figures and the grade's reason, in a sentence or two.
    pub summary: String,
}

/// p99 at or under this is "fast" for a payments call through the edge on this hardware.
const FAST_P99_MS: f64 = 100.0;
const SLOW_P99_MS: f64 = 250.0;
const VERY_SLOW_P99_MS: f64 = 1_000.0;

/// Reads ghz's report (`report::ghz`) of a run that asked for `asked_rate` calls per second.
pub fn analyze(report: &Value, asked_rate: f64) -> Analysis {
    let calls = report["count"].as_u64().unwrap_or(0);
    let percentile = |p: u64| {
        report["latencyDistribution"]
            .as_array()
            .and_then(|d| d.iter().find(|e| e["percentage"].as_u64() == Some(p)))
            .and_then(|e| e["latency"].as_f64())
            .map_or(0.0, |ns| ns / 1e6)
    };
    let statuses = report["statusCodeDistribution"].as_object();
    let ok = statuses.and_then(|s| s.get("OK")).and_then(Value::as_u64).unwrap_or(0);
    let failed = calls.saturating_sub(ok);
    let error_rate = if calls == 0 { 0.0 } else { failed as f64 / calls as f64 };
    let throughput = report["rps"].as_f64().unwrap_or(0.0);
    let (p50_ms, p95_ms, p99_ms) = (percentile(50), percentile(95), percentile(99));
    let kept_up = throughput >= 0.9 * asked_rate;

    let mut failures: Vec<(String, u64)> = statuses
        .map(|s| s.iter().filter(|(k, _)| *k != "OK").map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
        .unwrap_or_default();
    failures.sort_by_key(|f| std::cmp::Reverse(f.1));
    let failing = failures.iter().take(3).map(|(k, n)| format!("{k} x{n}")).collect::<Vec<_>>().join(", ");

    let (grade, why) = if calls == 0 {
        ("F", "no call was answered: is the edge up and the route configured?".to_owned())
    } else if error_rate > 0.05 {
        ("F", format!("more than 5 % of calls failed ({failing})"))
    } else if error_rate > 0.01 {
        ("D", format!("more than 1 % of calls failed ({failing})"))
    } else if p99_ms > VERY_SLOW_P99_MS {
        ("D", format!("p99 is over {VERY_SLOW_P99_MS} ms"))
    } else if !kept_up {
        ("C", format!("the mesh answered {throughput:.1} calls/s of the {asked_rate} asked: it did not keep up"))
    } else if p99_ms > SLOW_P99_MS {
        ("C", format!("p99 is over {SLOW_P99_MS} ms"))
    } else if error_rate > 0.0 || p99_ms > FAST_P99_MS {
        ("B", if error_rate > 0.0 { format!("a few calls failed ({failing})") } else { format!("p99 is over {FAST_P99_MS} ms") })
    } else {
        ("A", "healthy: no failed call and p99 under 100 ms at the asked rate".to_owned())
    };
    let summary = format!(
        "{calls} calls at {throughput:.1}/s (asked {asked_rate}/s), {:.2} % failed, p50 {p50_ms:.1} ms, p95 {p95_ms:.1} ms, p99 {p99_ms:.1} ms. Grade {grade}: {why}.",
        error_rate * 100.0
    );
    Analysis { calls, p50_ms, p95_ms, p99_ms, error_rate, throughput, asked_rate, grade: grade.to_owned(), summary }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn report(count: u64, ok: u64, rps: f64, p99_ms: f64) -> Value {
        let mut statuses = serde_json::Map::new();
        statuses.insert("OK".into(), json!(ok));
        if count > ok {
            statuses.insert("UNAVAILABLE".into(), json!(count - ok));
        }
        json!({
            "count": count, "rps": rps, "statusCodeDistribution": statuses,
            "latencyDistribution": [
                {"percentage": 50, "latency": 2_000_000u64},
                {"percentage": 95, "latency": 5_000_000u64},
                {"percentage": 99, "latency": (p99_ms * 1e6) as u64},
            ],
        })
    }

    #[test]
    fn grades_follow_errors_latency_and_throughput() {
        let grade = |r: Value, asked: f64| analyze(&r, asked).grade;
        assert_eq!(grade(report(1000, 1000, 100.0, 20.0), 100.0), "A");
        assert_eq!(grade(report(1000, 999, 100.0, 20.0), 100.0), "B");
        assert_eq!(grade(report(1000, 1000, 100.0, 150.0), 100.0), "B");
        assert_eq!(grade(report(1000, 1000, 100.0, 300.0), 100.0), "C");
        assert_eq!(grade(report(1000, 1000, 50.0, 20.0), 100.0), "C");
        assert_eq!(grade(report(1000, 980, 100.0, 20.0), 100.0), "D");
        assert_eq!(grade(report(1000, 1000, 100.0, 2000.0), 100.0), "D");
        assert_eq!(grade(report(1000, 900, 100.0, 20.0), 100.0), "F");
        assert_eq!(grade(json!({"count": 0}), 100.0), "F");
    }

    #[test]
    fn the_summary_holds_the_figures() {
        let a = analyze(&report(1000, 900, 98.5, 12.0), 100.0);
        assert_eq!((a.p50_ms, a.p95_ms, a.p99_ms), (2.0, 5.0, 12.0));
        assert!((a.error_rate - 0.1).abs() < 1e-9);
        assert!(
            a.summary.contains("1000 calls") && a.summary.contains("10.00 % failed") && a.summary.contains("UNAVAILABLE x100"),
            "{}",
            a.summary
        );
    }
}
