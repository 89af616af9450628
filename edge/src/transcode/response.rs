//! Rendering a gRPC response message as JSON (proto3 JSON mapping: lowerCamelCase names,
//! 64-bit integers as strings, enums by name, default values omitted).

use prost_reflect::{DynamicMessage, FieldDescriptor, ReflectMessage, SerializeOptions, Value};

/// The full name of the message that stands for a raw HTTP body.
pub const HTTP_BODY: &str = "google.api.HttpBody";

/// The answer's Content-Type and bytes: a `google.api.HttpBody` (the reply itself, or the
/// `response_body` field naming one) as its raw `data` with its `content_type`, anything
/// else as JSON ([`to_json`]).
pub fn render(msg: &DynamicMessage, response_body: Option<&[FieldDescriptor]>) -> Result<(String, Vec<u8>), String> {
    if let Some(body) = http_body_of(msg, response_body) {
        return Ok(raw(&body));
    }
    Ok(("application/json".to_owned(), to_json(msg, response_body)?))
}

/// The HttpBody the answer is, if it is one.
pub fn http_body_of(msg: &DynamicMessage, response_body: Option<&[FieldDescriptor]>) -> Option<DynamicMessage> {
    let mut current = msg.clone();
    for f in response_body.unwrap_or_default() {
        if f.is_list() || f.is_map() {
            return None;
        }
        current = match current.get_field(f).into_owned() {
            Value::Message(m) => m,
            _ => return None,
        };
    }
    (current.descriptor().full_name() == HTTP_BODY).then_some(current)
}

/// `(content type, data)` of an HttpBody; no content type means bytes of no known kind.
pub fn raw(body: &DynamicMessage) -> (String, Vec<u8>) {
    let content_type = body.get_field_by_name("content_type").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let data = body.get_field_by_name("data").and_then(|v| v.as_bytes().map(|b| b.to_vec())).unwrap_or_default();
    let content_type = if content_type.is_empty() { "application/octet-stream".to_owned() } else { content_type };
    (content_type, data)
}

/// Renders `msg`, or with `response_body` (`"field"`, `"a.b"`) only that field of it: a
/// message as its JSON object, anything else (a scalar, a list, a map) as its JSON value,
/// defaults included (an empty list is `[]`, never `null`).
pub fn to_json(msg: &DynamicMessage, response_body: Option<&[FieldDescriptor]>) -> Result<Vec<u8>, String> {
    let mut out = serde_json::Serializer::new(Vec::with_capacity(256));
    let opts = SerializeOptions::new();
    let Some((last, parents)) = response_body.and_then(<[FieldDescriptor]>::split_last) else {
        msg.serialize_with_options(&mut out, &opts).map_err(|e| e.to_string())?;
        return Ok(out.into_inner());
    };
    let mut holder = std::borrow::Cow::Borrowed(msg);
    for f in parents {
        holder = match holder.get_field(f).into_owned() {
            Value::Message(m) => std::borrow::Cow::Owned(m),
            _ => return Err(format!("response_body: {} is not a message", f.name())),
        };
    }
    match holder.get_field(last).as_ref() {
        Value::Message(m) if !last.is_list() && !last.is_map() => {
            m.serialize_with_options(&mut out, &opts).map_err(|e| e.to_string())?;
            Ok(out.into_inner())
        }
        other => {
            // Rendered as the one field of its message, defaults included, and cut out.
            let mut wrapper = DynamicMessage::new(holder.descriptor());
            wrapper.set_field(last, other.clone());
            let with_defaults = SerializeOptions::new().skip_default_fields(false);
            let v = wrapper.serialize_with_options(serde_json::value::Serializer, &with_defaults).map_err(|e| e.to_string())?;
            let inner = v.get(last.json_name()).cloned().unwrap_or(serde_json::Value::Null);
            Ok(inner.to_string().into_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_repeated_response_body_is_an_empty_list() {
        let pool = prost_reflect::DescriptorPool::decode(paymesh_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
        let desc = pool.get_message_by_name("query.v1.ListMerchantPaymentsResponse").expect("message");
        let field = desc.get_field_by_name("payments").expect("field");
        let empty = DynamicMessage::new(desc.clone());
        assert_eq!(to_json(&empty, Some(&[field])).expect("json"), b"[]");
        let token = desc.get_field_by_name("next_page_token").expect("field");
        assert_eq!(to_json(&empty, Some(&[token])).expect("json"), b"\"\"");
    }
}
