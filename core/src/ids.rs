//! Ids that carry their shard.
//!
//! A payment id reads `pay_<shard>_<32 hex digits>`, e.g. `pay_1_0193a0c2f4d87e4b9a1c6f0e2d3b4a59`.
//! The hex part is a UUIDv7 (time-ordered, so new rows append to the primary-key index).
//! Because the shard is in the id, the edge and the services route capture, refund, void and
//! reads without a lookup. Refund ids use the same shape with the `ref_` prefix.

use std::fmt;
use std::str::FromStr;

use crate::ShardId;

/// Largest shard index an id may carry; far above any real deployment, it bounds parsing.
pub const MAX_SHARD: u32 = 9_999;

/// An id with a kind prefix, a shard and a unique part.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ShardedId {
    shard: ShardId,
    unique: uuid::Uuid,
}

impl ShardedId {
    fn parse(prefix: &'static str, s: &str) -> Result<Self, IdError> {
        let malformed = |why: &'static str| IdError { prefix, input: s.to_owned(), why };
        let rest = s
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('_'))
            .ok_or_else(|| malformed("it does not start with the expected prefix"))?;
        let (shard, hex) = rest.split_once('_').ok_or_else(|| malformed("the shard is not followed by '_'"))?;
        if shard.is_empty() || shard.len() > 4 || !shard.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed("the shard is not a number of 1 to 4 digits"));
        }
        if shard.len() > 1 && shard.starts_with('0') {
            return Err(malformed("the shard has a leading zero"));
        }
        if hex.len() != 32 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(malformed("the unique part is not 32 lower-case hex digits"));
        }
        let shard: u32 = shard.parse().map_err(|_| malformed("the shard is not a number"))?;
        let unique = uuid::Uuid::try_parse(hex).map_err(|_| malformed("the unique part is not a UUID"))?;
        Ok(Self { shard: ShardId(shard), unique })
    }

    fn fmt(&self, prefix: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{prefix}_{}_{}", self.shard.0, self.unique.simple())
    }
}

/// The shard of any id of the form `<prefix>_<shard>_<32 hex digits>` (payment ids, refund
/// ids): what the edge needs to route a request without knowing the id's kind.
pub fn shard_of(id: &str) -> Result<ShardId, IdError> {
    let prefix = id.split('_').next().unwrap_or("");
    let known = [PaymentId::PREFIX, RefundId::PREFIX];
    let prefix = known.into_iter().find(|p| *p == prefix).unwrap_or(PaymentId::PREFIX);
    ShardedId::parse(prefix, id).map(|i| i.shard)
}

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{input}' is not a valid {prefix} id: {why}; expected {prefix}_<shard>_<32 hex digits>, e.g. {prefix}_0_0193a0c2f4d87e4b9a1c6f0e2d3b4a59"
)]
pub struct IdError {
    prefix: &'static str,
    input: String,
    why: &'static str,
}

macro_rules! sharded_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub struct $name(ShardedId);

        impl $name {
            /// The id's prefix, e.g. `pay`.
            pub const PREFIX: &'static str = $prefix;

            /// A new, time-ordered id on `shard`.
            pub fn new(shard: ShardId) -> Self {
                assert!(shard.0 <= MAX_SHARD, "shard index above MAX_SHARD");
                Self(ShardedId { shard, unique: uuid::Uuid::now_v7() })
            }

            /// The shard that holds this object.
            pub fn shard(&self) -> ShardId {
                self.0.shard
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                ShardedId::parse($prefix, s).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt($prefix, f)
            }
        }
    };
}

sharded_id!(
    /// The id of a payment: `pay_<shard>_<uuid hex>`.
    PaymentId,
    "pay"
);
sharded_id!(
    /// The id of a refund: `ref_<shard>_<uuid hex>`.
    RefundId,
    "ref"
);

/// The longest merchant id, in characters.
pub const MAX_MERCHANT_ID_CHARS: usize = 64;

/// Checks a merchant id: 1 to 64 of ASCII letters, digits, `.`, `_` and `-`. Every service
/// that takes a merchant id checks it with this, so a pattern character (`%`) or a
/// separator (`:`) never reaches a query. The error says what is wrong, without the field
/// name.
pub fn check_merchant_id(raw: &str) -> Result<(), String> {
    if raw.is_empty() {
        return Err("is required".into());
    }
    if raw.chars().count() > MAX_MERCHANT_ID_CHARS {
        return Err(format!("is longer than {MAX_MERCHANT_ID_CHARS} characters"));
    }
    if !raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(format!("'{raw}' has characters other than letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for shard in [0, 1, 7, 42, MAX_SHARD] {
            let id = PaymentId::new(ShardId(shard));
            let text = id.to_string();
            assert!(text.starts_with(&format!("pay_{shard}_")));
            let back: PaymentId = text.parse().expect("own ids parse");
            assert_eq!(back, id);
            assert_eq!(back.shard(), ShardId(shard));
        }
    }

    #[test]
    fn ids_are_unique_and_time_ordered() {
        let a = PaymentId::new(ShardId(0)).to_string();
        let b = PaymentId::new(ShardId(0)).to_string();
        assert_ne!(a, b);
        assert!(a < b, "uuidv7 ids sort by creation: {a} !< {b}");
    }

    #[test]
    fn shard_of_reads_any_known_id() {
        let p = PaymentId::new(ShardId(3)).to_string();
        let r = RefundId::new(ShardId(5)).to_string();
        assert_eq!(shard_of(&p), Ok(ShardId(3)));
        assert_eq!(shard_of(&r), Ok(ShardId(5)));
        assert!(shard_of("xyz_1_0193a0c2f4d87e4b9a1c6f0e2d3b4a59").is_err());
        assert!(shard_of("pay_1").is_err());
    }

    #[test]
    fn rejects_malformed_ids_with_a_reason() {
        let cases = [
            ("", "prefix"),
            ("pay", "prefix"),
            ("ref_0_0193a0c2f4d87e4b9a1c6f0e2d3b4a59", "prefix"),
            ("pay_0", "'_'"),
            ("pay__0193a0c2f4d87e4b9a1c6f0e2d3b4a59", "1 to 4 digits"),
            ("pay_x_0193a0c2f4d87e4b9a1c6f0e2d3b4a59", "1 to 4 digits"),
            ("pay_12345_0193a0c2f4d87e4b9a1c6f0e2d3b4a59", "1 to 4 digits"),
            ("pay_01_0193a0c2f4d87e4b9a1c6f0e2d3b4a59", "leading zero"),
            ("pay_0_0193A0C2F4D87E4B9A1C6F0E2D3B4A59", "32 lower-case hex"),
            ("pay_0_0193a0c2", "32 lower-case hex"),
            ("pay_0_0193a0c2f4d87e4b9a1c6f0e2d3b4a59ff", "32 lower-case hex"),
            ("pay_-1_0193a0c2f4d87e4b9a1c6f0e2d3b4a59", "1 to 4 digits"),
        ];
        for (input, why) in cases {
            let err = input.parse::<PaymentId>().expect_err(input).to_string();
            assert!(err.contains(why), "{input:?}: {err}");
            assert!(err.contains("expected pay_<shard>_<32 hex digits>"), "{err}");
        }
    }
}
