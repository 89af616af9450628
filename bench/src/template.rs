//! Per-request templating of request bodies, with ghz's variables, so every call can carry
//! its own idempotency key and merchant:
//!
//! | template | value |
//! |---|---|
//! | `{{.RequestNumber}}` | the call's sequence number, from 0 |
//! | `{{.WorkerID}}` | the worker sending it |
//! | `{{.UUID}}`, `{{newUUID}}` | a fresh UUID |
//! | `{{.TimestampUnix}}`, `{{.TimestampUnixMilli}}`, `{{.TimestampUnixNano}}` | now |
//! | `{{randomInt A B}}` | a pseudo-random integer in `[A, B)` |
//! | `{{mod .RequestNumber N}}` | the sequence number modulo N (spread over N merchants) |

use std::time::{SystemTime, UNIX_EPOCH};

/// What a template may refer to.
#[derive(Debug, Clone, Copy)]
pub struct Vars {
    pub request_number: u64,
    pub worker_id: usize,
}

/// Renders `tpl`; an unknown or malformed action is an error naming it.
pub fn render(tpl: &str, v: Vars) -> Result<String, String> {
    let mut out = String::with_capacity(tpl.len() + 32);
    let mut rest = tpl;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| format!("unclosed '{{{{' in template at '{}'", &rest[start..]))?;
        out.push_str(&action(after[..end].trim(), v)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn action(a: &str, v: Vars) -> Result<String, String> {
    let now = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let words: Vec<&str> = a.split_whitespace().collect();
    Ok(match words.as_slice() {
        [".RequestNumber"] => v.request_number.to_string(),
        [".WorkerID"] => v.worker_id.to_string(),
        [".UUID"] | ["newUUID"] => uuid::Uuid::now_v7().to_string(),
        [".TimestampUnix"] => now().as_secs().to_string(),
        [".TimestampUnixMilli"] => now().as_millis().to_string(),
        [".TimestampUnixNano"] => now().as_nanos().to_string(),
        ["randomInt", a, b] => {
            let (a, b): (i64, i64) = (
                a.parse().map_err(|_| format!("randomInt: '{a}' is not an integer"))?,
                b.parse().map_err(|_| format!("randomInt: '{b}' is not an integer"))?,
            );
            if b <= a {
                return Err(format!("randomInt {a} {b}: the upper bound must be above the lower"));
            }
            let x = crate::template::mix(v.request_number ^ now().subsec_nanos() as u64);
            (a + (x % (b - a) as u64) as i64).to_string()
        }
        ["mod", ".RequestNumber", n] => {
            let n: u64 = n.parse().ok().filter(|n| *n > 0).ok_or_else(|| format!("mod: '{n}' is not a positive integer"))?;
            (v.request_number % n).to_string()
        }
        _ => return Err(format!("unknown template action '{{{{{a}}}}}'; see bench/README.md for the supported ones")),
    })
}

/// splitmix64: a cheap, well-spread hash for pseudo-random template values.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn v(n: u64) -> Vars {
        Vars { request_number: n, worker_id: 3 }
    }

    #[test]
    fn every_request_gets_a_unique_key() {
        let tpl = r#"{"merchantId":"m-{{mod .RequestNumber 10}}","idempotencyKey":"k-{{.RequestNumber}}-{{.UUID}}","w":{{.WorkerID}}}"#;
        let bodies: Vec<String> = (0..1_000).map(|n| render(tpl, v(n)).expect("renders")).collect();
        let keys: HashSet<&str> =
            bodies.iter().map(|b| b.split("idempotencyKey\":\"").nth(1).and_then(|r| r.split('"').next()).expect("key")).collect();
        assert_eq!(keys.len(), 1_000);
        let merchants: HashSet<&str> =
            bodies.iter().map(|b| b.split("merchantId\":\"").nth(1).and_then(|r| r.split('"').next()).expect("merchant")).collect();
        assert_eq!(merchants.len(), 10, "spread over exactly 10 merchants");
        assert!(bodies[7].contains("\"w\":3"));
        assert!(bodies.iter().all(|b| serde_json::from_str::<serde_json::Value>(b).is_ok()), "still JSON");
    }

    #[test]
    fn random_ints_stay_in_range() {
        for n in 0..500 {
            let x: i64 = render("{{randomInt 5 9}}", v(n)).expect("renders").parse().expect("int");
            assert!((5..9).contains(&x));
        }
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        assert!(render("{{.Nope}}", v(0)).expect_err("unknown").contains("unknown template action '{{.Nope}}'"));
        assert!(render("{{.RequestNumber", v(0)).expect_err("unclosed").contains("unclosed"));
        assert!(render("{{randomInt 9 5}}", v(0)).is_err());
        assert_eq!(render("no actions", v(0)).expect("plain"), "no actions");
    }
}
