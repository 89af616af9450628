//! What a load test asks for, and the bounds every request is held to.

use std::time::Duration;

/// What a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// One gRPC Authorize through the edge per call, each a new payment.
    Authorize,
    /// Authorize, capture and refund over REST through the edge, one payment per call.
    Flow,
}

impl Method {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "authorize" => Ok(Self::Authorize),
            "flow" => Ok(Self::Flow),
            other => Err(format!("method '{other}' is not one of: authorize (gRPC Authorize), flow (REST authorize, capture, refund)")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorize => "authorize",
            Self::Flow => "flow",
        }
    }
}

/// A requested run, as the HTTP API and the MCP tool take it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub method: String,
    /// Calls per second (paced, open loop).
    pub rate: f64,
    pub duration_s: f64,
    /// Calls in flight at most.
    pub concurrency: u32,
}

/// The bounds on a run (a load test on demand must not become an outage on demand).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_rate: f64,
    pub max_duration: Duration,
    pub max_concurrency: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_rate: 1_000.0, max_duration: Duration::from_secs(60), max_concurrency: 64 }
    }
}

/// A spec within the limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Checked {
    pub method: Method,
    pub rate: f64,
    pub duration: Duration,
    pub concurrency: usize,
}

impl Spec {
    /// The spec if it is within `limits`; otherwise every field that is not, with its bounds.
    pub fn check(&self, limits: &Limits) -> Result<Checked, String> {
        let mut problems = Vec::new();
        let method = Method::parse(&self.method).map_err(|e| problems.push(e)).ok();
        if !(self.rate.is_finite() && self.rate >= 1.0 && self.rate <= limits.max_rate) {
            problems.push(format!("rate {} is out of bounds: use 1 to {} calls per second", self.rate, limits.max_rate));
        }
        let max_s = limits.max_duration.as_secs_f64();
        if !(self.duration_s.is_finite() && self.duration_s >= 1.0 && self.duration_s <= max_s) {
            problems.push(format!("duration_s {} is out of bounds: use 1 to {max_s} seconds", self.duration_s));
        }
        if self.concurrency < 1 || self.concurrency > limits.max_concurrency {
            problems.push(format!("concurrency {} is out of bounds: use 1 to {}", self.concurrency, limits.max_concurrency));
        }
        match (method, problems.is_empty()) {
            (Some(method), true) => Ok(Checked {
                method,
                rate: self.rate,
                duration: Duration::from_secs_f64(self.duration_s),
                concurrency: self.concurrency as usize,
            }),
            _ => Err(problems.join("; ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(method: &str, rate: f64, duration_s: f64, concurrency: u32) -> Spec {
        Spec { method: method.into(), rate, duration_s, concurrency }
    }

    #[test]
    fn in_bounds_passes_and_each_bound_is_enforced() {
        let l = Limits::default();
        let ok = spec("authorize", 50.0, 2.0, 4).check(&l).expect("in bounds");
        assert_eq!((ok.method, ok.concurrency, ok.duration), (Method::Authorize, 4, Duration::from_secs(2)));
        assert!(spec("flow", 1.0, 60.0, 64).check(&l).is_ok(), "the bounds themselves are allowed");
        for (bad, word) in [
            (spec("authorize", 1e6, 2.0, 4), "rate"),
            (spec("authorize", 0.5, 2.0, 4), "rate"),
            (spec("authorize", f64::NAN, 2.0, 4), "rate"),
            (spec("authorize", 10.0, 61.0, 4), "duration_s"),
            (spec("authorize", 10.0, 0.0, 4), "duration_s"),
            (spec("authorize", 10.0, 2.0, 0), "concurrency"),
            (spec("authorize", 10.0, 2.0, 65), "concurrency"),
            (spec("delete_everything", 10.0, 2.0, 4), "delete_everything"),
        ] {
            let e = bad.check(&l).expect_err("out of bounds");
            assert!(e.contains(word), "{e} should name {word}");
        }
        let all = spec("x", 1e9, 1e9, 0).check(&l).expect_err("all wrong");
        assert!(all.contains("method") && all.contains("rate") && all.contains("duration_s") && all.contains("concurrency"), "{all}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_str::<Spec>(r#"{"method":"authorize","rate":1,"duration_s":1,"concurrency":1,"target":"x"}"#)
            .expect_err("unknown field");
        assert!(e.to_string().contains("target"), "{e}");
    }
}
