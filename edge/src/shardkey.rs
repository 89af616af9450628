//! Finding a request's shard without any lookup: from a merchant id (through the shared
//! shard function) or from an id that carries its shard, in a request field or a header.

use std::borrow::Cow;

use paymesh_core::ShardId;
use paymesh_core::config::ShardKeyKind;
use paymesh_core::shard::shard_for_merchant;
use prost_reflect::{DynamicMessage, Value};

use crate::catalog::ResolvedKey;

/// Why a request cannot be routed to a shard: the caller's fault (INVALID_ARGUMENT / 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// The shard named by the first key present in the request message, else (when the edge
/// has no message, as for client streams) in a header. A routing header that disagrees with
/// the message is refused: it would send the call to a shard that does not own it, or let a
/// client rotate a header to dodge per-merchant limits.
pub fn shard_of(
    keys: &[ResolvedKey],
    msg: Option<&DynamicMessage>,
    header: &dyn Fn(&str) -> Option<String>,
    shards: u32,
) -> Result<ShardId, KeyError> {
    let from_field = keys.iter().find_map(|k| msg.and_then(|m| field_value(m, k)).filter(|v| !v.is_empty()).map(|v| (k, v)));
    if let Some((key, value)) = from_field {
        let shard = resolve(key, &value, shards)?;
        for k in keys {
            let Some(h) = k.header.as_deref() else { continue };
            let Some(sent) = header(h).filter(|v| !v.is_empty()) else { continue };
            let agrees = if std::ptr::eq(k, key) { sent == value } else { resolve(k, &sent, shards).is_ok_and(|s| s == shard) };
            if !agrees {
                return Err(KeyError(format!(
                    "the {h} header ('{sent}') disagrees with the request's {} ('{value}'); send the same value or leave the header out",
                    key.name
                )));
            }
        }
        return Ok(shard);
    }
    for k in keys {
        if let Some(v) = k.header.as_deref().and_then(header).filter(|v| !v.is_empty()) {
            return resolve(k, &v, shards);
        }
    }
    let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    Err(KeyError(format!("{} is required: the edge routes this request by it", names.join(" or "))))
}

/// The merchant id a request names (the message's field, else the header), for
/// per-merchant limits.
pub fn merchant_id(keys: &[ResolvedKey], msg: Option<&DynamicMessage>, header: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let merchants = || keys.iter().filter(|k| k.kind == ShardKeyKind::Merchant);
    merchants()
        .find_map(|k| msg.and_then(|m| field_value(m, k)).filter(|v| !v.is_empty()))
        .or_else(|| merchants().find_map(|k| k.header.as_deref().and_then(header).filter(|v| !v.is_empty())))
}

/// The shard a key's value names.
pub fn resolve(k: &ResolvedKey, value: &str, shards: u32) -> Result<ShardId, KeyError> {
    match k.kind {
        ShardKeyKind::Merchant => Ok(shard_for_merchant(value, shards)),
        ShardKeyKind::ShardedId => {
            let shard = paymesh_core::ids::shard_of(value).map_err(|e| KeyError(format!("{}: {e}", k.name)))?;
            if shard.0 >= shards {
                return Err(KeyError(format!("{}: '{value}' names shard {shard}, but the mesh has shards 0..{}", k.name, shards - 1)));
            }
            Ok(shard)
        }
    }
}

fn field_value(msg: &DynamicMessage, k: &ResolvedKey) -> Option<String> {
    let (first, rest) = k.path.split_first()?;
    // An unset field reads as an owned default, which cannot hold a key: stop there.
    match (msg.get_field(first), rest.is_empty()) {
        (Cow::Borrowed(Value::String(s)), true) => Some(s.clone()),
        (Cow::Borrowed(Value::Message(m)), false) => {
            field_value(m, &ResolvedKey { path: rest.to_vec(), name: k.name.clone(), kind: k.kind, header: None })
        }
        _ => None,
    }
}
