//! Checks of request fields shared by the repair services: each refusal names the field and
//! what it must be.

use tonic::Status;

/// Refuses a call that carries no caller identity when the mesh authenticates (the edge
/// forwards who called; a call without it did not come through the edge). Any authenticated
/// caller may use the repair services.
pub fn caller<T>(policy: paymesh_core::identity::Policy, request: &tonic::Request<T>) -> Result<(), Status> {
    let metadata = request.metadata();
    policy.caller(|k| metadata.get(k).and_then(|v| v.to_str().ok())).map(|_| ()).map_err(Status::unauthenticated)
}

/// An id of 1..64 of [A-Za-z0-9._-] (SKUs, request, customer and engineer ids).
pub fn id(field: &str, v: &str) -> Result<(), Status> {
    if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(Status::invalid_argument(format!("{field}: must be 1..64 of [A-Za-z0-9._-], got {:?}", shown(v))));
    }
    Ok(())
}

/// Text of 1..`max` characters (`min_one`), or 0..`max`.
pub fn text(field: &str, v: &str, min_one: bool, max: usize) -> Result<(), Status> {
    let n = v.chars().count();
    if (min_one && n == 0) || n > max {
        let range = if min_one { format!("1..{max}") } else { format!("at most {max}") };
        return Err(Status::invalid_argument(format!("{field}: must be {range} characters, got {n}")));
    }
    if v.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!("{field}: must not hold control characters")));
    }
    Ok(())
}

/// An idempotency key: 1..255 characters.
pub fn idempotency_key(v: &str) -> Result<(), Status> {
    text("idempotency_key", v, true, 255)
}

/// At most 70 characters of a refused value, for the message.
fn shown(v: &str) -> String {
    v.chars().take(70).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_field() {
        assert!(id("sku", "motor-a.1_B").is_ok());
        for bad in ["", "a b", "ü", &"x".repeat(65)] {
            assert!(id("sku", bad).expect_err(bad).message().starts_with("sku:"));
        }
        assert!(text("product", "washer", true, 100).is_ok());
        assert!(text("description", "", false, 10).is_ok());
        assert!(text("product", "", true, 100).is_err());
        assert!(text("product", "a\u{0}b", true, 100).is_err());
        assert!(text("product", &"é".repeat(101), true, 100).expect_err("long").message().contains("got 101"));
        assert!(idempotency_key(&"k".repeat(256)).is_err());
    }
}
