//! The OpenAPI 3.1 document of every REST binding the edge serves, generated from the
//! descriptors and the config at start (`GET /openapi.json` on the admin listener): what the
//! edge actually does, not what a generator run last week thought it would.
//!
//! Schemas follow the proto3 JSON mapping the transcoder uses: lowerCamelCase names, 64-bit
//! integers as strings, enums by name, bytes as base64, the well-known types by their JSON
//! forms. A path variable spanning several segments (`{name=shelves/*}`) is one parameter
//! whose description gives its pattern (OpenAPI has no multi-segment parameters).

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Value, json};

use crate::catalog::{BodyRule, Catalog, RestBinding, field_path};
use crate::transcode::response::HTTP_BODY;

/// How deep the query parameters of nested request messages are listed.
const QUERY_DEPTH: usize = 3;

/// The document of what `catalog` serves, as JSON; `authenticated` when the edge checks
/// callers (`[edge.auth]`): every route that is not public then needs a credential.
pub fn document(catalog: &Catalog, authenticated: bool) -> Value {
    let mut schemas = Schemas::default();
    let mut paths: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    let mut operation_ids = BTreeSet::new();
    for b in &catalog.rest {
        let (path, operation) = operation(b, &mut schemas, &mut operation_ids, authenticated && !b.service.public);
        paths.entry(path).or_default().insert(b.verb.as_str().to_ascii_lowercase(), operation);
    }
    schemas.defs.insert(
        "google.rpc.Status".to_owned(),
        json!({
            "type": "object",
            "description": "An error: its gRPC code, a message, and google.rpc details (each with its @type).",
            "properties": {
                "code": {"type": "integer", "format": "int32"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object", "properties": {"@type": {"type": "string"}}, "additionalProperties": true}}
            },
            "required": ["code", "message", "details"]
        }),
    );
    let mut components = json!({ "schemas": schemas.defs });
    if authenticated {
        components["securitySchemes"] = json!({
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}
        });
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Paymesh edge",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every REST binding (google.api.http) the edge serves, generated live from its descriptors and config."
        },
        "paths": paths,
        "components": components,
    })
}

fn operation(b: &RestBinding, schemas: &mut Schemas, ids: &mut BTreeSet<String>, secured: bool) -> (String, Value) {
    let (path, path_params) = b.template.openapi();
    let input = b.method.desc.input();
    let mut parameters = Vec::new();
    let mut bound = Vec::new();
    for p in &path_params {
        let fields = p.field.as_deref().and_then(|f| field_path(&input, f));
        let schema = fields.as_ref().and_then(|f| f.last()).map_or_else(|| json!({"type": "string"}), |f| schemas.field(f));
        let description = match &p.field {
            Some(f) if p.pattern != "*" => format!("Sets `{f}`; matches `{}` (segments separated by '/').", p.pattern),
            Some(f) => format!("Sets `{f}`."),
            None => format!("Matches `{}`; binds no field.", p.pattern),
        };
        parameters.push(json!({"name": p.name, "in": "path", "required": true, "schema": schema, "description": description}));
        bound.extend(fields);
    }
    let body_fields = match &b.body {
        BodyRule::Field(f) => Some(f.clone()),
        _ => None,
    };
    if !matches!(b.body, BodyRule::Whole) {
        let mut taken: Vec<Vec<FieldDescriptor>> = bound.clone();
        taken.extend(body_fields.clone());
        query_parameters(&input, &mut Vec::new(), &taken, schemas, &mut parameters, 0);
    }
    let mut op = serde_json::Map::new();
    let service = b.method.desc.parent_service();
    let mut id = format!("{}_{}", service.name(), b.method.desc.name());
    let mut n = 1;
    while !ids.insert(id.clone()) {
        n += 1;
        id = format!("{}_{}{n}", service.name(), b.method.desc.name());
    }
    op.insert("operationId".into(), json!(id));
    op.insert("tags".into(), json!([service.full_name()]));
    op.insert("summary".into(), json!(format!("{} (gRPC {})", b.method.desc.name(), b.method.grpc_path)));
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    if let Some(body) = request_body(b, body_fields.as_deref(), schemas) {
        op.insert("requestBody".into(), body);
    }
    op.insert(
        "responses".into(),
        json!({
            "200": response(b, schemas),
            "default": {
                "description": "An error, with the HTTP status of its gRPC code.",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}}
            }
        }),
    );
    if secured {
        op.insert("security".into(), json!([{"bearer": []}, {"apiKey": []}]));
    }
    (path, Value::Object(op))
}

/// Every scalar (or text-form) field of `msg` not bound by the path or the body, by dotted
/// JSON name, down to [`QUERY_DEPTH`] levels of nested messages.
fn query_parameters(
    msg: &MessageDescriptor,
    prefix: &mut Vec<FieldDescriptor>,
    taken: &[Vec<FieldDescriptor>],
    schemas: &mut Schemas,
    out: &mut Vec<Value>,
    depth: usize,
) {
    for f in msg.fields() {
        prefix.push(f.clone());
        // Bound by the path or the body, or inside a field that is.
        let bound = taken.iter().any(|t| t.len() <= prefix.len() && crate::catalog::overlaps(t, prefix));
        match f.kind() {
            _ if bound || f.is_map() => {}
            Kind::Message(m) if !is_text_form(&m) => {
                if !f.is_list() && depth + 1 < QUERY_DEPTH {
                    query_parameters(&m, prefix, taken, schemas, out, depth + 1);
                }
            }
            _ => {
                let name = prefix.iter().map(FieldDescriptor::json_name).collect::<Vec<_>>().join(".");
                let mut p = json!({"name": name, "in": "query", "required": false, "schema": schemas.field(&f)});
                if f.is_list() {
                    p["style"] = json!("form");
                    p["explode"] = json!(true);
                }
                out.push(p);
            }
        }
        prefix.pop();
    }
}

/// Well-known types a query parameter or path variable can carry as text.
fn is_text_form(m: &MessageDescriptor) -> bool {
    matches!(
        m.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

fn request_body(b: &RestBinding, body_field: Option<&[FieldDescriptor]>, schemas: &mut Schemas) -> Option<Value> {
    if b.raw_request() {
        return Some(json!({
            "required": true,
            "description": "Any bytes, with their Content-Type (a google.api.HttpBody).",
            "content": {"*/*": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}
        }));
    }
    let schema = match (&b.body, body_field.and_then(<[FieldDescriptor]>::last)) {
        (BodyRule::Whole, _) => schemas.message(&b.method.desc.input()),
        (BodyRule::Field(_), Some(f)) => schemas.field(f),
        _ => return None,
    };
    Some(json!({"required": false, "content": {"application/json": {"schema": schema}}}))
}

fn response(b: &RestBinding, schemas: &mut Schemas) -> Value {
    let output = b.method.desc.output();
    let target = b.response_body.as_deref().and_then(<[FieldDescriptor]>::last);
    let is_raw = match target {
        None => output.full_name() == HTTP_BODY,
        Some(f) => matches!(f.kind(), Kind::Message(m) if m.full_name() == HTTP_BODY) && !f.is_list(),
    };
    if is_raw {
        return json!({
            "description": "The bytes of a google.api.HttpBody, with its content type.",
            "content": {"*/*": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}
        });
    }
    let one = match target {
        Some(f) => schemas.field(f),
        None => schemas.message(&output),
    };
    if b.method.desc.is_server_streaming() {
        return json!({
            "description": "A server stream: a JSON array of the messages (an error after the first ends it as {\"error\": Status}), or one message per line when the request's Accept asks for application/x-ndjson.",
            "content": {
                "application/json": {"schema": {"type": "array", "items": one}},
                "application/x-ndjson": {"schema": one}
            }
        });
    }
    json!({"description": "OK", "content": {"application/json": {"schema": one}}})
}

/// The JSON Schemas of the messages the document refers to, by full name.
#[derive(Default)]
struct Schemas {
    defs: BTreeMap<String, Value>,
}

impl Schemas {
    /// A field's schema (its list or map form included).
    fn field(&mut self, f: &FieldDescriptor) -> Value {
        if f.is_map() {
            let value = match f.kind() {
                Kind::Message(entry) => entry.map_entry_value_field(),
                _ => return json!({"type": "object"}),
            };
            return json!({"type": "object", "additionalProperties": self.single(&value.kind())});
        }
        let one = self.single(&f.kind());
        if f.is_list() { json!({"type": "array", "items": one}) } else { one }
    }

    fn single(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Double | Kind::Float => json!({"type": "number"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({"type": "integer", "format": "int32"}),
            Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int64", "minimum": 0}),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": "string", "format": "int64"}),
            Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64"}),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Enum(e) => json!({"type": "string", "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>()}),
            Kind::Message(m) => self.message(m),
        }
    }

    /// A `$ref` to the message's schema, adding it (and what it refers to) once.
    fn message(&mut self, m: &MessageDescriptor) -> Value {
        let name = m.full_name().to_owned();
        if let Some(wkt) = well_known(m) {
            return wkt;
        }
        if !self.defs.contains_key(&name) {
            // Inserted first, so a message that refers to itself stops here.
            self.defs.insert(name.clone(), json!({}));
            let mut props = serde_json::Map::new();
            for f in m.fields() {
                props.insert(f.json_name().to_owned(), self.field(&f));
            }
            self.defs.insert(name.clone(), json!({"type": "object", "properties": props, "additionalProperties": false}));
        }
        json!({"$ref": format!("#/components/schemas/{name}")})
    }
}

/// The JSON forms of the well-known types.
fn well_known(m: &MessageDescriptor) -> Option<Value> {
    let name = m.full_name().strip_prefix("google.protobuf.")?;
    Some(match name {
        "Timestamp" => json!({"type": "string", "format": "date-time"}),
        "Duration" => {
            json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$", "description": "seconds with an 's' suffix, e.g. 1.5s"})
        }
        "FieldMask" => json!({"type": "string", "description": "comma-separated lowerCamelCase field paths"}),
        "Struct" => json!({"type": "object"}),
        "Value" => json!({}),
        "ListValue" => json!({"type": "array"}),
        "Empty" => json!({"type": "object", "additionalProperties": false}),
        "Any" => json!({"type": "object", "properties": {"@type": {"type": "string"}}, "required": ["@type"]}),
        "DoubleValue" | "FloatValue" => json!({"type": ["number", "null"]}),
        "Int32Value" => json!({"type": ["integer", "null"], "format": "int32"}),
        "UInt32Value" => json!({"type": ["integer", "null"], "minimum": 0}),
        "Int64Value" | "UInt64Value" => json!({"type": ["string", "null"], "format": "int64"}),
        "BoolValue" => json!({"type": ["boolean", "null"]}),
        "StringValue" => json!({"type": ["string", "null"]}),
        "BytesValue" => json!({"type": ["string", "null"], "contentEncoding": "base64"}),
        _ => return None,
    })
}
