//! Human durations in config files: `250ms`, `5s`, `2m`, `24h`.

use std::time::Duration;

/// Parses `<integer><unit>` with unit `ms`, `s`, `m` or `h`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let hint = "write an integer and a unit, e.g. \"250ms\", \"5s\", \"2m\", \"24h\"";
    let n: u64 = num.parse().map_err(|_| format!("'{text}' is not a duration; {hint}"))?;
    let secs = |mul: u64| n.checked_mul(mul).map(Duration::from_secs);
    let d = match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3_600),
        _ => return Err(format!("'{text}' has no known unit; {hint}")),
    };
    d.ok_or_else(|| format!("'{text}' is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse(" 24h "), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "h", "5", "5 s", "-5s", "1.5s", "5d", "99999999999999999999h"] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
