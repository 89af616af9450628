//! gRPC status code names as the protocol spells them (`UNAVAILABLE`), for config files and
//! metric labels.

/// Names by numeric code, 0 (`OK`) to 16 (`UNAUTHENTICATED`).
const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The name of a numeric code; `UNKNOWN` for numbers outside the protocol's range.
pub fn name(code: i32) -> &'static str {
    usize::try_from(code).ok().and_then(|i| NAMES.get(i)).copied().unwrap_or("UNKNOWN")
}

/// The numeric code of a name, ignoring case.
pub fn from_name(name: &str) -> Option<i32> {
    NAMES.iter().position(|n| n.eq_ignore_ascii_case(name)).map(|i| i as i32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_round_trip() {
        for code in 0..17 {
            assert_eq!(super::from_name(super::name(code)), Some(code));
        }
        assert_eq!(super::name(14), "UNAVAILABLE");
        assert_eq!(super::name(99), "UNKNOWN");
        assert_eq!(super::from_name("unavailable"), Some(14));
        assert_eq!(super::from_name("NOPE"), None);
    }
}
