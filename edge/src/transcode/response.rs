//! Rendering a gRPC response message as JSON (proto3 JSON mapping: lowerCamelCase names,
//! 64-bit integers as strings, enums by name, default values omitted).

use prost_reflect::{DynamicMessage, FieldDescriptor, ReflectMessage, SerializeOptions, Value};

pub fn to_json(msg: &DynamicMessage, response_body: Option<&FieldDescriptor>) -> Result<Vec<u8>, String> {
    let mut out = serde_json::Serializer::new(Vec::with_capacity(256));
    let opts = SerializeOptions::new();
    match response_body {
        None => msg.serialize_with_options(&mut out, &opts).map_err(|e| e.to_string())?,
        Some(f) => match msg.get_field(f).as_ref() {
            Value::Message(m) => m.serialize_with_options(&mut out, &opts).map_err(|e| e.to_string())?,
            other => {
                // A scalar response body: wrap in a one-field message is not needed; render the value.
                let mut wrapper = DynamicMessage::new(msg.descriptor());
                wrapper.set_field(f, other.clone());
                let mut tmp = serde_json::Serializer::new(Vec::new());
                // Defaults included: an empty repeated field is `[]`, an empty string `""`,
                // never a missing key rendered as `null`.
                let with_defaults = SerializeOptions::new().skip_default_fields(false);
                wrapper.serialize_with_options(&mut tmp, &with_defaults).map_err(|e| e.to_string())?;
                let v: serde_json::Value = serde_json::from_slice(&tmp.into_inner()).map_err(|e| e.to_string())?;
                let inner = v.get(f.json_name()).cloned().unwrap_or(serde_json::Value::Null);
                return Ok(inner.to_string().into_bytes());
            }
        },
    }
    Ok(out.into_inner())
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
        assert_eq!(to_json(&empty, Some(&field)).expect("json"), b"[]");
        let token = desc.get_field_by_name("next_page_token").expect("field");
        assert_eq!(to_json(&empty, Some(&token)).expect("json"), b"\"\"");
    }
}
