//! Building a gRPC request message from an HTTP request: JSON body (proto3 JSON mapping),
//! path variables and query parameters, per the binding's `body` rule.
//!
//! Every rejection names the field and says what was wrong, and happens before anything is
//! sent upstream.

use prost_reflect::{DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};

use crate::catalog::{BodyRule, RestBinding, field_path};
use crate::transcode::template::percent_decode;

/// A request the edge refuses: HTTP 400 with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// Builds the request message for `binding`.
pub fn build(
    binding: &RestBinding,
    path_vars: &[(String, String)],
    query: Option<&str>,
    body: &[u8],
) -> Result<DynamicMessage, BadRequest> {
    let input = binding.method.desc.input();
    let mut msg = match &binding.body {
        BodyRule::Whole => parse_json(&input, body)?,
        BodyRule::Field(f) => {
            let mut m = DynamicMessage::new(input.clone());
            if !is_blank(body) {
                let value = parse_json_field(f, body)?;
                m.set_field(f, value);
            }
            m
        }
        // A binding without `body` takes its fields from the path and the query; a body sent
        // anyway is ignored, as grpc-gateway and Envoy's transcoder do.
        BodyRule::None => DynamicMessage::new(input.clone()),
    };
    for (path, value) in path_vars {
        set_path(&mut msg, &input, path, value, "path variable")?;
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        if matches!(binding.body, BodyRule::Whole) {
            return Err(BadRequest(format!(
                "{} {} takes its fields from the JSON body, not the query string",
                binding.verb, binding.template
            )));
        }
        let bound: Vec<&str> = binding.template.bound_fields().collect();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = form_decode(k).ok_or_else(|| BadRequest(format!("query parameter '{k}' is not valid percent-encoding")))?;
            let value =
                form_decode(v).ok_or_else(|| BadRequest(format!("query parameter '{key}' has an invalid percent-encoded value")))?;
            let fields = field_path(&input, &key)
                .ok_or_else(|| BadRequest(format!("unknown query parameter '{key}': {} has no such field", input.full_name())))?;
            if bound.iter().any(|b| field_path(&input, b).is_some_and(|p| p[0] == fields[0])) {
                return Err(BadRequest(format!("query parameter '{key}' is already bound by the path")));
            }
            if let BodyRule::Field(f) = &binding.body
                && *f == fields[0]
            {
                return Err(BadRequest(format!("query parameter '{key}' is the request body field")));
            }
            set_fields(&mut msg, &fields, &key, &value, "query parameter")?;
        }
    }
    Ok(msg)
}

fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

/// Parses a JSON object into `desc`, rejecting unknown fields and wrong types and naming
/// the offending field.
pub fn parse_json(desc: &MessageDescriptor, body: &[u8]) -> Result<DynamicMessage, BadRequest> {
    if is_blank(body) {
        return Ok(DynamicMessage::new(desc.clone()));
    }
    let opts = DeserializeOptions::new().deny_unknown_fields(true);
    let mut track = serde_path_to_error::Track::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let result = DynamicMessage::deserialize_with_options(desc.clone(), serde_path_to_error::Deserializer::new(&mut de, &mut track), &opts);
    match result.and_then(|m| de.end().map(|()| m)) {
        Ok(m) => Ok(m),
        Err(e) => Err(BadRequest(describe_json_error(&track.path().to_string(), &e))),
    }
}

fn parse_json_field(f: &FieldDescriptor, body: &[u8]) -> Result<Value, BadRequest> {
    match f.kind() {
        Kind::Message(m) if !f.is_list() && !f.is_map() => parse_json(&m, body).map(Value::Message),
        _ => {
            let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| BadRequest(format!("invalid JSON body: {e}")))?;
            let text = match &v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => return Err(BadRequest(format!("{}: expected a {} value as the body", f.name(), kind_name(&f.kind())))),
            };
            scalar(f, &text).map_err(|why| BadRequest(format!("{}: {why}", f.name())))
        }
    }
}

fn describe_json_error(path: &str, e: &serde_json::Error) -> String {
    let what = e.to_string();
    // serde_json appends " at line L column C"; keep it, it helps with long bodies.
    match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => format!("malformed JSON body: {what}"),
        serde_json::error::Category::Io => format!("cannot read the JSON body: {what}"),
        serde_json::error::Category::Data if path.is_empty() || path == "." => format!("invalid JSON body: {what}"),
        serde_json::error::Category::Data => format!("invalid value for field '{path}': {what}"),
    }
}

fn set_path(msg: &mut DynamicMessage, input: &MessageDescriptor, path: &str, value: &str, what: &str) -> Result<(), BadRequest> {
    let fields = field_path(input, path).ok_or_else(|| BadRequest(format!("{what} '{path}' is not a field of {}", input.full_name())))?;
    set_fields(msg, &fields, path, value, what)
}

/// Sets (or appends to, for repeated fields) the field at `fields` from its text form.
fn set_fields(msg: &mut DynamicMessage, fields: &[FieldDescriptor], name: &str, text: &str, what: &str) -> Result<(), BadRequest> {
    let (last, parents) = fields.split_last().ok_or_else(|| BadRequest(format!("{what} '{name}' is empty")))?;
    let mut target = msg;
    for f in parents {
        let Value::Message(m) = target.get_field_mut(f) else {
            return Err(BadRequest(format!("{what} '{name}': {} is not a message", f.name())));
        };
        target = m;
    }
    if last.is_map() || matches!(last.kind(), Kind::Message(_)) {
        return Err(BadRequest(format!(
            "{what} '{name}' names a message or map field, which cannot be set from text; send it in the JSON body"
        )));
    }
    let value = scalar(last, text).map_err(|why| BadRequest(format!("{what} '{name}': {why}")))?;
    if last.is_list() {
        if let Value::List(items) = target.get_field_mut(last) {
            items.push(value);
        }
    } else {
        target.set_field(last, value);
    }
    Ok(())
}

/// Converts the text form of a scalar (path or query) to the field's type.
fn scalar(f: &FieldDescriptor, text: &str) -> Result<Value, String> {
    let bad = || format!("'{text}' is not a valid {}", kind_name(&f.kind()));
    Ok(match f.kind() {
        Kind::String => Value::String(text.to_owned()),
        Kind::Bool => Value::Bool(match text {
            "true" => true,
            "false" => false,
            _ => return Err(bad()),
        }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(text.parse().map_err(|_| bad())?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(text.parse().map_err(|_| bad())?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(text.parse().map_err(|_| bad())?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(text.parse().map_err(|_| bad())?),
        Kind::Float => Value::F32(text.parse().map_err(|_| bad())?),
        Kind::Double => Value::F64(text.parse().map_err(|_| bad())?),
        Kind::Enum(e) => {
            let v = e.get_value_by_name(text).or_else(|| text.parse().ok().and_then(|n| e.get_value(n)));
            Value::EnumNumber(
                v.ok_or_else(|| {
                    let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
                    format!("'{text}' is not one of {}", names.join(", "))
                })?
                .number(),
            )
        }
        Kind::Bytes | Kind::Message(_) => return Err(format!("{} fields cannot be set from text", kind_name(&f.kind()))),
    })
}

fn kind_name(k: &Kind) -> String {
    match k {
        Kind::Message(m) => m.full_name().to_owned(),
        Kind::Enum(e) => e.full_name().to_owned(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// `application/x-www-form-urlencoded` decoding of one query component.
fn form_decode(s: &str) -> Option<String> {
    percent_decode(&s.replace('+', " "))
}
