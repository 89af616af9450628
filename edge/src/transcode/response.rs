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
                wrapper.serialize_with_options(&mut tmp, &opts).map_err(|e| e.to_string())?;
                let v: serde_json::Value = serde_json::from_slice(&tmp.into_inner()).map_err(|e| e.to_string())?;
                let inner = v.get(f.json_name()).cloned().unwrap_or(serde_json::Value::Null);
                return Ok(inner.to_string().into_bytes());
            }
        },
    }
    Ok(out.into_inner())
}
