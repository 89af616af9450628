//! Headers across the REST <-> gRPC boundary, as grpc-gateway maps them:
//!
//! - a request header reaches the service as gRPC metadata when `[edge.transcoding]
//!   request_headers` allows it (`authorization`, `x-request-id` and `grpc-metadata-*` by
//!   default); `Grpc-Metadata-Name` arrives as `name`;
//! - the service's response metadata comes back as `Grpc-Metadata-Name` headers and its
//!   trailers as `Grpc-Trailer-Name` headers (on unary answers; a stream's trailers arrive
//!   after its headers were sent);
//! - `grpc-status-details-bin` (a `google.rpc.Status`) becomes the `details` of the JSON
//!   error, each detail rendered by its type when the edge knows it.

use std::borrow::Cow;

use base64::Engine;
use prost_reflect::{DescriptorPool, DynamicMessage, Value};

/// Headers the edge itself reads from a REST request on its gRPC path (deadline, trace
/// context): always passed, whatever the allowlist says.
const ALWAYS: &[&str] = &["grpc-timeout", "traceparent", "tracestate", "baggage"];

/// Headers of an answer that describe the exchange, not the call: never passed back.
const RESERVED: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "date",
    "server",
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "grpc-encoding",
    "grpc-accept-encoding",
];

/// The metadata name a request header is passed as, or `None` if it is not passed.
/// `routing` says whether the route itself reads the header (shard keys, the rate-limit key).
pub fn request_metadata<'a>(name: &'a str, allow: &[String], routing: impl Fn(&str) -> bool) -> Option<Cow<'a, str>> {
    if ALWAYS.contains(&name) || routing(name) {
        return Some(Cow::Borrowed(name));
    }
    if !allow.iter().any(|a| allowed(a, name)) {
        return None;
    }
    let out = name.strip_prefix("grpc-metadata-").unwrap_or(name);
    // Nothing a client picks may pose as the protocol's own headers.
    if out.is_empty() || out.starts_with("grpc-") || RESERVED.contains(&out) || out == "host" {
        return None;
    }
    Some(Cow::Borrowed(out))
}

fn allowed(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// The REST header a response header (`trailer` false) or trailer of the answer becomes, if
/// any. `passed_as_is` are the edge's own headers (rate-limit hints) a client gets unchanged.
pub fn response_header(name: &str, trailer: bool, passed_as_is: &[&str]) -> Option<String> {
    if passed_as_is.contains(&name) {
        return (!trailer).then(|| name.to_owned());
    }
    if name.starts_with(':') || RESERVED.contains(&name) {
        return None;
    }
    Some(format!("{}{name}", if trailer { "grpc-trailer-" } else { "grpc-metadata-" }))
}

/// The `details` of a `grpc-status-details-bin` value: each `google.protobuf.Any` rendered
/// as proto3 JSON (`{"@type": ..., fields...}`) when its type is in `pool`, else as
/// `{"@type": ..., "value": "<base64>"}`. Malformed values give no details.
pub fn status_details(pool: &DescriptorPool, header: &str) -> Vec<serde_json::Value> {
    let Some(desc) = pool.get_message_by_name("google.rpc.Status") else {
        return Vec::new();
    };
    let engine = base64::engine::general_purpose::STANDARD_NO_PAD;
    let Ok(bytes) = engine.decode(header.trim().trim_end_matches('=')) else {
        return Vec::new();
    };
    let Ok(status) = DynamicMessage::decode(desc, bytes.as_slice()) else {
        return Vec::new();
    };
    let Some(Value::List(details)) = status.get_field_by_name("details").map(Cow::into_owned) else {
        return Vec::new();
    };
    details
        .into_iter()
        .filter_map(|d| match d {
            Value::Message(any) => Some(render_any(&any)),
            _ => None,
        })
        .collect()
}

fn render_any(any: &DynamicMessage) -> serde_json::Value {
    if let Ok(v) = any.serialize_with_options(serde_json::value::Serializer, &prost_reflect::SerializeOptions::new()) {
        return v;
    }
    let url = any.get_field_by_name("type_url").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let value = any.get_field_by_name("value").and_then(|v| v.as_bytes().cloned()).unwrap_or_default();
    serde_json::json!({ "@type": url, "value": base64::engine::general_purpose::STANDARD.encode(value) })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn defaults() -> Vec<String> {
        paymesh_core::config::Transcoding::default().request_headers
    }

    #[test]
    fn request_headers_pass_by_the_allowlist() {
        let allow = defaults();
        assert_eq!(request_metadata("authorization", &allow, |_| false).as_deref(), Some("authorization"));
        assert_eq!(request_metadata("x-request-id", &allow, |_| false).as_deref(), Some("x-request-id"));
        assert_eq!(request_metadata("grpc-metadata-tenant", &allow, |_| false).as_deref(), Some("tenant"));
        assert_eq!(request_metadata("grpc-timeout", &allow, |_| false).as_deref(), Some("grpc-timeout"));
        assert_eq!(request_metadata("x-merchant-id", &allow, |n| n == "x-merchant-id").as_deref(), Some("x-merchant-id"));
        assert_eq!(request_metadata("cookie", &allow, |_| false), None);
        assert_eq!(request_metadata("user-agent", &allow, |_| false), None);
        // A client cannot pose as the protocol through the prefix.
        assert_eq!(request_metadata("grpc-metadata-grpc-status", &allow, |_| false), None);
        assert_eq!(request_metadata("grpc-metadata-content-type", &allow, |_| false), None);
        assert_eq!(request_metadata("grpc-metadata-", &allow, |_| false), None);
        let everything = vec!["*".to_owned()];
        assert_eq!(request_metadata("user-agent", &everything, |_| false).as_deref(), Some("user-agent"));
    }

    #[test]
    fn answers_come_back_prefixed() {
        assert_eq!(response_header("x-book-etag", false, &[]).as_deref(), Some("grpc-metadata-x-book-etag"));
        assert_eq!(response_header("x-cost", true, &[]).as_deref(), Some("grpc-trailer-x-cost"));
        assert_eq!(response_header("grpc-status", true, &[]), None);
        assert_eq!(response_header("content-type", false, &[]), None);
        assert_eq!(response_header("retry-after", false, &["retry-after"]).as_deref(), Some("retry-after"));
    }

    #[test]
    fn status_details_render_known_and_unknown_types() {
        use paymesh_proto::google::rpc;
        let pool = DescriptorPool::decode(paymesh_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
        let info = rpc::ErrorInfo { reason: "OUT_OF_BOOKS".into(), domain: "bookstore".into(), ..Default::default() };
        let status = rpc::Status {
            code: 9,
            message: "no".into(),
            details: vec![
                prost_types::Any { type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(), value: info.encode_to_vec() },
                prost_types::Any { type_url: "type.googleapis.com/acme.Secret".into(), value: vec![1, 2, 3] },
            ],
        };
        let header = base64::engine::general_purpose::STANDARD_NO_PAD.encode(status.encode_to_vec());
        let details = status_details(&pool, &header);
        assert_eq!(
            details,
            vec![
                serde_json::json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "OUT_OF_BOOKS", "domain": "bookstore"}),
                serde_json::json!({"@type": "type.googleapis.com/acme.Secret", "value": "AQID"}),
            ]
        );
        assert!(status_details(&pool, "%%% not base64").is_empty());
    }
}
