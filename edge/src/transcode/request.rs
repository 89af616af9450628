//! Building a gRPC request message from an HTTP request: JSON body (proto3 JSON mapping),
//! path variables and query parameters, per the binding's `body` rule.
//!
//! Every rejection names the field and says what was wrong, and happens before anything is
//! sent upstream.

use prost_reflect::{DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};

use paymesh_core::config::Transcoding;

use crate::catalog::{BodyRule, RestBinding, dotted, field_path, overlaps};
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
    content_type: Option<&str>,
    opts: &Transcoding,
) -> Result<DynamicMessage, BadRequest> {
    let input = binding.method.desc.input();
    let mut msg = match &binding.body {
        // A google.api.HttpBody takes the body as it came, with its Content-Type.
        BodyRule::Whole if binding.raw_request() => http_body(&input, body, content_type),
        BodyRule::Field(fields) if binding.raw_request() => {
            let mut m = DynamicMessage::new(input.clone());
            let (last, parents) = fields.split_last().ok_or_else(|| BadRequest("the body field is empty".into()))?;
            let Kind::Message(desc) = last.kind() else {
                return Err(BadRequest(format!("the body field {} is not a message", dotted(fields))));
            };
            let mut target = &mut m;
            for f in parents {
                let Value::Message(inner) = target.get_field_mut(f) else {
                    return Err(BadRequest(format!("body field {}: {} is not a message", dotted(fields), f.name())));
                };
                target = inner;
            }
            target.set_field(last, Value::Message(http_body(&desc, body, content_type)));
            m
        }
        BodyRule::Whole => parse_json(&input, body)?,
        BodyRule::Field(fields) => {
            let mut m = DynamicMessage::new(input.clone());
            if !is_blank(body) {
                set_body_field(&mut m, &input, fields, body)?;
            }
            m
        }
        // A binding without `body` takes its fields from the path and the query; a body sent
        // anyway is ignored, as grpc-gateway and Envoy's transcoder do.
        BodyRule::None => DynamicMessage::new(input.clone()),
    };
    let mut bound = Vec::with_capacity(path_vars.len());
    for (path, value) in path_vars {
        let fields = field_path(&input, path)
            .ok_or_else(|| BadRequest(format!("path variable '{path}' is not a field of {}", input.full_name())))?;
        set_fields(&mut msg, &fields, path, value, "path variable", opts)?;
        bound.push(fields);
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        if matches!(binding.body, BodyRule::Whole) {
            return Err(BadRequest(format!(
                "{} {} takes its fields from the JSON body, not the query string",
                binding.verb, binding.template
            )));
        }
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = form_decode(k).ok_or_else(|| BadRequest(format!("query parameter '{k}' is not valid percent-encoding")))?;
            let value =
                form_decode(v).ok_or_else(|| BadRequest(format!("query parameter '{key}' has an invalid percent-encoded value")))?;
            let Some(fields) = field_path(&input, &key) else {
                if opts.ignore_unknown_query_parameters {
                    continue;
                }
                return Err(BadRequest(format!("unknown query parameter '{key}': {} has no such field", input.full_name())));
            };
            // A sibling of a path-bound nested field is fine (`?book.title=` next to
            // `{book.id}`); the field itself, or one inside or around it, is not.
            if let Some(b) = bound.iter().find(|b| overlaps(b, &fields)) {
                return Err(BadRequest(format!("query parameter '{key}' overlaps '{}', which the path binds", dotted(b))));
            }
            if let BodyRule::Field(f) = &binding.body
                && overlaps(f, &fields)
            {
                return Err(BadRequest(format!("query parameter '{key}' overlaps '{}', the request body field", dotted(f))));
            }
            set_fields(&mut msg, &fields, &key, &value, "query parameter", opts)?;
        }
    }
    Ok(msg)
}

/// `body: "a.b"`: the JSON body is the value of that field (a message, a scalar, a list or a
/// map), parsed with the proto3 JSON mapping as the field's own value.
fn set_body_field(msg: &mut DynamicMessage, input: &MessageDescriptor, fields: &[FieldDescriptor], body: &[u8]) -> Result<(), BadRequest> {
    let (last, parents) = fields.split_last().ok_or_else(|| BadRequest("the body field is empty".into()))?;
    let parent = match parents.last().map(FieldDescriptor::kind) {
        Some(Kind::Message(m)) => m,
        _ => input.clone(),
    };
    // `{"field": <body>}` parsed as the parent message: the field's JSON rules, with errors
    // that name it.
    let mut wrapped = Vec::with_capacity(body.len() + last.name().len() + 5);
    wrapped.extend_from_slice(b"{\"");
    wrapped.extend_from_slice(last.name().as_bytes());
    wrapped.extend_from_slice(b"\":");
    wrapped.extend_from_slice(body);
    wrapped.push(b'}');
    let holder = parse_json(&parent, &wrapped)?;
    let value = holder.get_field(last).into_owned();
    let mut target = msg;
    for f in parents {
        let Value::Message(m) = target.get_field_mut(f) else {
            return Err(BadRequest(format!("body field {}: {} is not a message", dotted(fields), f.name())));
        };
        target = m;
    }
    target.set_field(last, value);
    Ok(())
}

fn http_body(desc: &MessageDescriptor, body: &[u8], content_type: Option<&str>) -> DynamicMessage {
    let mut m = DynamicMessage::new(desc.clone());
    m.set_field_by_name("content_type", Value::String(content_type.unwrap_or_default().to_owned()));
    m.set_field_by_name("data", Value::Bytes(bytes::Bytes::copy_from_slice(body)));
    m
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

/// Sets (or appends to, for repeated fields) the field at `fields` from its text form.
fn set_fields(
    msg: &mut DynamicMessage,
    fields: &[FieldDescriptor],
    name: &str,
    text: &str,
    what: &str,
    opts: &Transcoding,
) -> Result<(), BadRequest> {
    let (last, parents) = fields.split_last().ok_or_else(|| BadRequest(format!("{what} '{name}' is empty")))?;
    let mut target = msg;
    for f in parents {
        let Value::Message(m) = target.get_field_mut(f) else {
            return Err(BadRequest(format!("{what} '{name}': {} is not a message", f.name())));
        };
        target = m;
    }
    if last.is_map() {
        return Err(BadRequest(format!("{what} '{name}' names a map field, which cannot be set from text; send it in the JSON body")));
    }
    let value = scalar(last, text, opts).map_err(|why| BadRequest(format!("{what} '{name}': {why}")))?;
    if last.is_list() {
        if let Value::List(items) = target.get_field_mut(last) {
            items.push(value);
        }
    } else {
        target.set_field(last, value);
    }
    Ok(())
}

/// Converts the text form of a value (path or query) to the field's type: scalars, enums
/// (by name or number), bytes (base64, standard or URL-safe) and the well-known types with a
/// text form (Timestamp, Duration, FieldMask, the wrappers), as their proto3 JSON strings.
fn scalar(f: &FieldDescriptor, text: &str, opts: &Transcoding) -> Result<Value, String> {
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
            let v = e
                .get_value_by_name(text)
                .or_else(|| opts.case_insensitive_enums.then(|| e.values().find(|v| v.name().eq_ignore_ascii_case(text))).flatten())
                .or_else(|| text.parse().ok().and_then(|n| e.get_value(n)));
            Value::EnumNumber(
                v.ok_or_else(|| {
                    let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
                    format!("'{text}' is not one of {}", names.join(", "))
                })?
                .number(),
            )
        }
        Kind::Bytes => Value::Bytes(base64_any(text).ok_or_else(|| format!("'{text}' is not base64 (standard or URL-safe)"))?.into()),
        Kind::Message(m) => match well_known_text(&m, text) {
            Some(json) => Value::Message(
                DynamicMessage::deserialize(m.clone(), json).map_err(|e| format!("'{text}' is not a valid {}: {e}", m.full_name()))?,
            ),
            None => return Err(format!("{} fields cannot be set from text; send it in the JSON body", m.full_name())),
        },
    })
}

/// The proto3 JSON value of a well-known type given as text, if the type has a text form.
fn well_known_text(m: &MessageDescriptor, text: &str) -> Option<serde_json::Value> {
    let name = m.full_name().strip_prefix("google.protobuf.")?;
    Some(match name {
        "BoolValue" => match text {
            "true" => serde_json::Value::Bool(true),
            "false" => serde_json::Value::Bool(false),
            // Left to the parser, which says what is wrong.
            _ => serde_json::Value::String(text.to_owned()),
        },
        "Timestamp" | "Duration" | "FieldMask" | "StringValue" | "BytesValue" | "DoubleValue" | "FloatValue" | "Int64Value"
        | "UInt64Value" | "Int32Value" | "UInt32Value" => serde_json::Value::String(text.to_owned()),
        _ => return None,
    })
}

/// Base64 in either alphabet, padded or not.
fn base64_any(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let trimmed = text.trim_end_matches('=');
    STANDARD_NO_PAD.decode(trimmed).or_else(|_| URL_SAFE_NO_PAD.decode(trimmed)).ok()
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
