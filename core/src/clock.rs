//! Wall-clock formatting without a date-time dependency: RFC 3339 timestamps for logs and
//! reports, and ISO dates for file names.

use std::time::{SystemTime, UNIX_EPOCH};

/// `(year, month, day)` of the UTC civil date `days` after 1970-01-01
/// (Howard Hinnant's days-to-civil algorithm, valid for the proleptic Gregorian calendar).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `2026-11-21T11:49:26.210894Z` (UTC, microseconds).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (year, month, day) = civil(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z", rem / 3_600, rem % 3_600 / 60, rem % 60, d.subsec_micros())
}

/// Today's UTC date as `2026-11-21`.
pub fn today() -> String {
    rfc3339(SystemTime::now())[..10].to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(super::rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        assert_eq!(super::rfc3339(UNIX_EPOCH + Duration::from_micros(1_795_261_765_729_518)), "2026-11-21T11:49:25.729518Z");
        assert_eq!(super::rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn today_is_a_date() {
        let t = super::today();
        assert_eq!(t.len(), 10);
        assert_eq!(&t[4..5], "-");
    }
}
