//! The fuzz targets: the edge's parsers of untrusted input, each with the properties it
//! must keep.
//!
//! | target | input | properties |
//! |---|---|---|
//! | `template` | a `google.api.http` path template, then request paths (one per line) | parsing and matching never panic; every bound variable is a field the template names |
//! | `rest` | `VERB /path?query`, a content type, a body: a REST request | routing and transcoding never panic; a built message encodes and decodes to itself and its JSON rendering is stable (render, parse, render gives the same text) |
//! | `json` | a selector byte, then a JSON body | proto3 JSON parsing never panics; what parses renders and re-parses to the same JSON |
//! | `grpc_frame` | a selector byte, then a gRPC request body; also as a `grpc-timeout` value | the frame peek and the timeout parser never panic |
//! | `token` | an `Authorization` value, then an `x-api-key` value | the authenticator refuses without panicking; nothing it never issued verifies |
//! | `config` | a mesh config file | parsing and validation never panic |

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use paymesh_core::config::{MeshConfig, Transcoding};
use paymesh_edge::catalog::{Catalog, MethodRoute};
use paymesh_edge::cluster::Cluster;
use paymesh_edge::transcode::{request, response, template::PathTemplate};
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage};

use crate::engine::Target;

/// Every target, built once (descriptors compiled, catalog and authenticator set up).
pub fn all() -> Result<Vec<Box<dyn Target>>, String> {
    let fixture = Fixture::build()?;
    Ok(vec![
        Box::new(TemplateTarget),
        Box::new(RestTarget { fixture: fixture.clone() }),
        Box::new(JsonTarget { fixture: fixture.clone() }),
        Box::new(GrpcFrameTarget { fixture: fixture.clone() }),
        Box::new(TokenTarget::build(&fixture)?),
        Box::new(ConfigTarget { key: paymesh_core::config::cipher::ConfigKey::generate()?.encoded() }),
    ])
}

/// The descriptors and catalog the targets share: Paymesh's own services and the edge
/// tests' bookstore (every rule shape), routed as the edge would route them.
#[derive(Clone)]
struct Fixture {
    catalog: Arc<Catalog>,
    dir: Arc<std::path::PathBuf>,
}

impl Fixture {
    fn build() -> Result<Self, String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut compiler = protox::Compiler::new([root.join("edge/tests/fixtures"), root.join("proto")]).map_err(|e| e.to_string())?;
        compiler.include_imports(false);
        compiler.open_file("bookstore.proto").map_err(|e| format!("the bookstore fixture does not compile: {e}"))?;
        let dir = std::env::temp_dir().join(format!("paymesh-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let fds = dir.join("bookstore.binpb");
        std::fs::write(&fds, compiler.encode_file_descriptor_set()).map_err(|e| e.to_string())?;
        let text = format!(
            r#"[[shards]]
id = 0
database_url = "postgres://fuzz@127.0.0.1:1/none"
[[shards]]
id = 1
database_url = "postgres://fuzz@127.0.0.1:1/none"
[[payments.instances]]
name = "p0"
shard = 0
listen = "127.0.0.1:1"
[[payments.instances]]
name = "p1"
shard = 1
listen = "127.0.0.1:2"
[edge]
descriptor_sets = ["{}"]
[[edge.clusters]]
name = "payments"
payments_instances = true
[[edge.clusters]]
name = "books"
endpoints = [{{ address = "127.0.0.1:3" }}]
[[edge.routes]]
service = "payments.v1.Payments"
cluster = "payments"
shard_keys = [{{ field = "merchant_id", kind = "merchant" }}, {{ field = "payment_id", kind = "sharded_id" }}]
[[edge.routes]]
service = "bookstore.v1.Bookstore"
cluster = "books"
"#,
            fds.display()
        );
        let cfg = MeshConfig::parse(&dir.join("fuzz.toml"), &text, &|_| None).map_err(|e| e.to_string())?;
        let edge = cfg.edge.ok_or("no [edge]")?;
        let clusters = edge.clusters.iter().map(|c| (c.name.clone(), Arc::new(Cluster::new(c, &edge.outlier)))).collect();
        let catalog = Catalog::build(&edge, &clusters).map_err(|e| e.to_string())?;
        Ok(Self { catalog: Arc::new(catalog), dir: Arc::new(dir) })
    }

    fn methods(&self) -> Vec<Arc<MethodRoute>> {
        let mut all: Vec<Arc<MethodRoute>> = self.catalog.services.values().flat_map(|s| s.methods.values().cloned()).collect();
        all.sort_by(|a, b| a.grpc_path.cmp(&b.grpc_path));
        all
    }

    fn message(&self, name: &str) -> MessageDescriptor {
        self.catalog.pool.get_message_by_name(name).unwrap_or_else(|| panic!("no message {name} in the fuzz descriptors"))
    }
}

/// Text of an input: invalid UTF-8 replaced, so every input means something.
fn text(input: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(input)
}

/// A message as proto3 JSON, parsed: compares as the message's meaning (a field set to its
/// default equals an unset one; map entries in any order; NaN as its text).
fn json_value(msg: &DynamicMessage) -> serde_json::Value {
    let text = response::to_json(msg, None).unwrap_or_else(|e| panic!("a parsed message does not render: {e}"));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("the rendering is not JSON: {e}: {}", String::from_utf8_lossy(&text)))
}

/// A message's JSON rendering parses back to the same message.
fn assert_json_round_trip(msg: &DynamicMessage) {
    let first = response::to_json(msg, None).unwrap_or_else(|e| panic!("a parsed message does not render: {e}"));
    let again = request::parse_json(&msg.descriptor(), &first)
        .unwrap_or_else(|e| panic!("the edge's own rendering does not parse back: {e}: {}", String::from_utf8_lossy(&first)));
    assert_eq!(json_value(&again), json_value(msg), "the JSON rendering does not parse back to the same message");
}

struct TemplateTarget;

impl Target for TemplateTarget {
    fn name(&self) -> &'static str {
        "template"
    }

    fn run(&self, input: &[u8]) -> bool {
        let text = text(input);
        let mut lines = text.split('\n');
        let Ok(template) = PathTemplate::parse(lines.next().unwrap_or_default()) else {
            return false;
        };
        let _ = (template.openapi(), template.shape(), template.specificity(), template.first_literal());
        let bound: Vec<&str> = template.bound_fields().collect();
        for path in lines {
            if let Some(vars) = template.matches(path) {
                assert_eq!(vars.len(), bound.len(), "{template} on {path:?}: every variable binds once");
                for (name, _) in &vars {
                    assert!(bound.contains(&name.as_str()), "{template} on {path:?} bound {name}, which it does not name");
                }
            }
        }
        true
    }

    fn dictionary(&self) -> &'static [&'static str] {
        &["/", "{", "}", "=", "*", "**", ":", "%2F", "%2f", "%3A", "%", "%zz", "{a.b=**}", "{x=*/y/**}", ":verb", "/v1/"]
    }
}

struct RestTarget {
    fixture: Fixture,
}

impl Target for RestTarget {
    fn name(&self) -> &'static str {
        "rest"
    }

    fn run(&self, input: &[u8]) -> bool {
        let mut parts = input.splitn(3, |b| *b == b'\n');
        let line = text(parts.next().unwrap_or_default()).into_owned();
        let content_type = text(parts.next().unwrap_or_default()).into_owned();
        let body = parts.next().unwrap_or_default();
        let Some((verb, target)) = line.split_once(' ') else {
            return false;
        };
        let Ok(verb) = http::Method::from_bytes(verb.as_bytes()) else {
            return false;
        };
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let Ok((binding, vars)) = self.fixture.catalog.rest_route(&verb, path) else {
            return false;
        };
        // Both of the transcoder's option sets, chosen by the input.
        let lenient = input.len() % 2 == 1;
        let opts = Transcoding { ignore_unknown_query_parameters: lenient, case_insensitive_enums: lenient, ..Transcoding::default() };
        let ct = (!content_type.is_empty()).then_some(content_type.as_str());
        if let Ok(msg) = request::build(binding, &vars, query, body, ct, &opts) {
            let wire = msg.encode_to_vec();
            let decoded = DynamicMessage::decode(msg.descriptor(), wire.as_slice())
                .unwrap_or_else(|e| panic!("a built request does not decode: {e}"));
            assert_eq!(json_value(&decoded), json_value(&msg), "a built request does not survive its encoding");
            assert_json_round_trip(&msg);
            let _ = response::render(&msg, None);
            return true;
        }
        false
    }

    fn dictionary(&self) -> &'static [&'static str] {
        &[
            "GET ",
            "POST ",
            "PATCH ",
            "PUT ",
            "DELETE ",
            "/v1/",
            "/api/payments/",
            "shelves/",
            "/books/",
            ":archive:now",
            ":tag",
            "?",
            "&",
            "=",
            "%",
            "%2F",
            "%00",
            "+",
            "{",
            "}",
            "[",
            "]",
            "\"",
            ":",
            ",",
            "null",
            "true",
            "1e400",
            "-0",
            "NaN",
            "\"Infinity\"",
            "9223372036854775808",
            "18446744073709551616",
            "\"\\ud800\"",
            "\"\\u0000\"",
            "filter.",
            "readMask=",
            "publishedAfter=",
            "maxReadTime=",
            "coverHash=",
            "genres=",
            "ids=",
            "editions=",
            "1970-01-01T00:00:00Z",
            "10000-01-01T00:00:00Z",
            "315576000001s",
            "application/json",
            "image/png",
            "\n",
        ]
    }
}

struct JsonTarget {
    fixture: Fixture,
}

const JSON_MESSAGES: &[&str] = &[
    "payments.v1.AuthorizeRequest",
    "payments.v1.RefundRequest",
    "bookstore.v1.Book",
    "bookstore.v1.FindBooksRequest",
    "bookstore.v1.UpdateBookRequest",
    "google.rpc.Status",
    "google.protobuf.Struct",
    "google.protobuf.Value",
];

impl Target for JsonTarget {
    fn name(&self) -> &'static str {
        "json"
    }

    fn run(&self, input: &[u8]) -> bool {
        let Some((selector, body)) = input.split_first() else {
            return false;
        };
        let desc = self.fixture.message(JSON_MESSAGES[usize::from(*selector & 0x7f) % JSON_MESSAGES.len()]);
        // With the selector's high bit set, the rest is not JSON but the entropy for a JSON
        // document shaped like the message (right names, edge-case values of the right and
        // wrong kinds), which gets past the syntax check far more often than mutated text.
        let generated;
        let body = if selector & 0x80 != 0 {
            generated = generate::message(&desc, &mut generate::Entropy::new(body), 0).to_string().into_bytes();
            &generated[..]
        } else {
            body
        };
        match request::parse_json(&desc, body) {
            Ok(msg) => {
                assert_json_round_trip(&msg);
                true
            }
            Err(_) => false,
        }
    }

    fn dictionary(&self) -> &'static [&'static str] {
        &[
            "{",
            "}",
            "[",
            "]",
            "\"",
            ":",
            ",",
            "null",
            "true",
            "false",
            "\"@type\"",
            "\"type.googleapis.com/google.rpc.ErrorInfo\"",
            "\"type.googleapis.com/google.protobuf.Duration\"",
            "\"value\"",
            "1e400",
            "-0",
            "\"NaN\"",
            "\"-Infinity\"",
            "9223372036854775807",
            "\"9223372036854775808\"",
            "4294967296",
            "\"\\ud800\\udc00\"",
            "\"\\u0000\"",
            "\"amount\"",
            "\"merchantId\"",
            "\"labels\"",
            "\"tags\"",
            "\"genre\"",
            "\"GENRE_FICTION\"",
            "\"publishedAfter\"",
            "\"2024-02-30T00:00:00Z\"",
            "\"1.000000001s\"",
            "\"readMask\"",
            "\"a.b,c\"",
            "\"details\"",
        ]
    }
}

struct GrpcFrameTarget {
    fixture: Fixture,
}

impl Target for GrpcFrameTarget {
    fn name(&self) -> &'static str {
        "grpc_frame"
    }

    fn run(&self, input: &[u8]) -> bool {
        let _ = paymesh_edge::grpc::parse_grpc_timeout(&text(input));
        let Some((selector, body)) = input.split_first() else {
            return false;
        };
        let methods = self.fixture.methods();
        let method = &methods[usize::from(*selector) % methods.len()];
        match paymesh_edge::grpc::first_message(body, method) {
            Ok(msg) => {
                let _ = method.safe_to_repeat(Some(&msg));
                true
            }
            Err(_) => false,
        }
    }

    fn dictionary(&self) -> &'static [&'static str] {
        &[
            "\u{0}\u{0}\u{0}\u{0}",
            "\u{0}\u{0}\u{0}\u{0}\u{5}",
            "\u{1}",
            "\u{7f}\u{7f}\u{7f}\u{7f}",
            "\n\u{3}abc",
            "\u{12}",
            "\u{10}\u{80}\u{80}\u{80}\u{80}\u{80}\u{80}\u{80}\u{80}\u{80}\u{1}",
            "5S",
            "1H",
            "99999999m",
        ]
    }
}

struct TokenTarget {
    auth: paymesh_edge::auth::Authenticator,
    runtime: tokio::runtime::Runtime,
}

impl TokenTarget {
    fn build(fixture: &Fixture) -> Result<Self, String> {
        // Ed25519's base point as the issuer's key: a valid key whose tokens only a signer
        // could make, and a fuzzer does not compute signatures.
        let jwks = fixture.dir.join("jwks.json");
        std::fs::write(
            &jwks,
            r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","alg":"EdDSA","x":"WGZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY"}]}"#,
        )
        .map_err(|e| e.to_string())?;
        let text = format!(
            r#"[[shards]]
id = 0
database_url = "postgres://fuzz@127.0.0.1:1/none"
[[payments.instances]]
name = "p0"
shard = 0
listen = "127.0.0.1:1"
[edge]
[edge.auth]
[[edge.auth.issuers]]
issuer = "fuzz"
audiences = ["paymesh"]
jwks_file = "{}"
[[edge.auth.api_keys]]
id = "k1"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
subject = "fuzz"
"#,
            jwks.display()
        );
        let cfg = MeshConfig::parse(&fixture.dir.join("auth.toml"), &text, &|_| None).map_err(|e| e.to_string())?;
        let auth_cfg = cfg.edge.and_then(|e| e.auth).ok_or("no [edge.auth]")?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let auth = runtime.block_on(async { paymesh_edge::auth::Authenticator::new(auth_cfg) })?;
        Ok(Self { auth, runtime })
    }
}

impl Target for TokenTarget {
    fn name(&self) -> &'static str {
        "token"
    }

    fn run(&self, input: &[u8]) -> bool {
        let (authorization, api_key) = match input.iter().position(|b| *b == b'\n') {
            Some(i) => (&input[..i], &input[i + 1..]),
            None => (input, &[][..]),
        };
        let authorization: Vec<&[u8]> = if authorization.is_empty() { vec![] } else { vec![authorization] };
        let api_keys: Vec<&[u8]> = if api_key.is_empty() { vec![] } else { vec![api_key] };
        let verdict = self.runtime.block_on(self.auth.authenticate(&authorization, &api_keys));
        assert!(verdict.is_err(), "a credential nobody issued was accepted: {:?}", text(input));
        // Deep: a JWT-shaped or key-shaped credential, not refused for its framing.
        authorization.iter().any(|a| a.split(|b| *b == b'.').count() == 3) || api_keys.iter().any(|k| k.starts_with(b"pmk_"))
    }

    fn dictionary(&self) -> &'static [&'static str] {
        &[
            "Bearer ",
            "bearer ",
            "Basic ",
            ".",
            "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0",
            "eyJhbGciOiJub25lIn0",
            "eyJhbGciOiJIUzI1NiJ9",
            "eyJpc3MiOiJmdXp6IiwiYXVkIjoicGF5bWVzaCIsInN1YiI6InMiLCJleHAiOjQxMDI0NDQ4MDB9",
            "pmk_",
            "pmk_k1_",
            "_",
            "=",
            "\n",
        ]
    }
}

struct ConfigTarget {
    key: String,
}

impl Target for ConfigTarget {
    fn name(&self) -> &'static str {
        "config"
    }

    fn run(&self, input: &[u8]) -> bool {
        let text = text(input);
        let env: HashMap<&str, &str> = [("PAYMESH_CONFIG_KEY", self.key.as_str()), ("DB_PASSWORD", "x")].into_iter().collect();
        MeshConfig::parse(Path::new("/nonexistent/paymesh-fuzz.toml"), &text, &|k| env.get(k).map(|v| (*v).to_owned())).is_ok()
    }

    fn dictionary(&self) -> &'static [&'static str] {
        &[
            "[[shards]]\n",
            "[edge]\n",
            "[[edge.routes]]\n",
            "[[edge.clusters]]\n",
            "[edge.auth]\n",
            "[edge.transcoding]\n",
            "[mesh_tls]\n",
            "[kafka]\n",
            "[workers]\n",
            "id = ",
            " = \"",
            "\"\n",
            "{cipher}",
            "${DB_PASSWORD}",
            "\"1s\"",
            "\"0s\"",
            "\"99999999999h\"",
            "4294967296",
            "-1",
            "true",
            "[",
            "]",
            "{",
            "}",
            "=",
            "\"127.0.0.1:0\"",
            "\"[::1]:80\"",
            "payments_instances = true\n",
            "shard_keys = [{ field = \"merchant_id\", kind = \"merchant\" }]\n",
            "max_body_bytes = ",
            "threads = ",
        ]
    }
}

/// JSON documents shaped like a message, driven by the input's bytes.
mod generate {
    use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
    use serde_json::{Value, json};

    pub struct Entropy<'a> {
        bytes: &'a [u8],
        at: usize,
    }

    impl<'a> Entropy<'a> {
        pub fn new(bytes: &'a [u8]) -> Self {
            Self { bytes, at: 0 }
        }

        fn byte(&mut self) -> u8 {
            let b = self.bytes.get(self.at).copied().unwrap_or(0);
            self.at += 1;
            b
        }

        fn pick<T: Clone>(&mut self, from: &[T]) -> T {
            from[usize::from(self.byte()) % from.len()].clone()
        }
    }

    pub fn message(desc: &MessageDescriptor, e: &mut Entropy<'_>, depth: usize) -> Value {
        if let Some(v) = well_known(desc, e, depth) {
            return v;
        }
        let fields: Vec<FieldDescriptor> = desc.fields().collect();
        let mut out = serde_json::Map::new();
        if fields.is_empty() || depth > 6 {
            return Value::Object(out);
        }
        for _ in 0..usize::from(e.byte() % 6) {
            let f = e.pick(&fields);
            let name = if e.byte().is_multiple_of(2) { f.json_name().to_owned() } else { f.name().to_owned() };
            out.insert(name, field(&f, e, depth));
        }
        if e.byte().is_multiple_of(16) {
            out.insert(e.pick(&["unknownField", "@type", ""]).to_owned(), json!(1));
        }
        Value::Object(out)
    }

    fn field(f: &FieldDescriptor, e: &mut Entropy<'_>, depth: usize) -> Value {
        if e.byte().is_multiple_of(32) {
            return e.pick(&[Value::Null, json!([]), json!({}), json!("x"), json!(1.5)]);
        }
        if f.is_map() {
            let Kind::Message(entry) = f.kind() else { return json!({}) };
            let (key, value) = (entry.map_entry_key_field(), entry.map_entry_value_field());
            let mut out = serde_json::Map::new();
            for _ in 0..usize::from(e.byte() % 4) {
                let k = match single(&key.kind(), e, depth) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.insert(k, single(&value.kind(), e, depth));
            }
            return Value::Object(out);
        }
        if f.is_list() {
            return Value::Array((0..usize::from(e.byte() % 4)).map(|_| single(&f.kind(), e, depth)).collect());
        }
        single(&f.kind(), e, depth)
    }

    fn single(kind: &Kind, e: &mut Entropy<'_>, depth: usize) -> Value {
        match kind {
            Kind::Bool => e.pick(&[json!(true), json!(false), json!("true"), json!(0)]),
            Kind::String => {
                e.pick(&[json!(""), json!("a"), json!("\u{fc}ber"), json!("\u{0}"), json!("{cipher}x"), json!("x".repeat(300))])
            }
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Uint32 | Kind::Fixed32 => e.pick(&[
                json!(0),
                json!(-1),
                json!(2_147_483_647),
                json!(-2_147_483_648_i64),
                json!(4_294_967_296_i64),
                json!("7"),
                json!(1.5),
                json!(1e2),
                json!("0x10"),
            ]),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => e.pick(&[
                json!("9223372036854775807"),
                json!("-9223372036854775808"),
                json!("18446744073709551615"),
                json!("18446744073709551616"),
                json!(9_007_199_254_740_993_i64),
                json!("1e3"),
                json!(-1),
                json!("1.0"),
            ]),
            Kind::Float | Kind::Double => {
                e.pick(&[json!(0.5), json!("NaN"), json!("Infinity"), json!("-Infinity"), json!(1e39), json!(-0.0), json!("1e-400")])
            }
            Kind::Bytes => e.pick(&[json!("AQID"), json!("-_8"), json!(""), json!("===="), json!("A")]),
            Kind::Enum(en) => {
                let names: Vec<Value> = en.values().map(|v| json!(v.name())).collect();
                match e.byte() % 4 {
                    0 => json!(en.values().map(|v| v.number()).max().unwrap_or(0) + 1),
                    1 => json!("NOT_A_VALUE"),
                    _ => e.pick(&names),
                }
            }
            Kind::Message(m) => message(m, e, depth + 1),
        }
    }

    fn well_known(desc: &MessageDescriptor, e: &mut Entropy<'_>, depth: usize) -> Option<Value> {
        let name = desc.full_name().strip_prefix("google.protobuf.")?;
        Some(match name {
            "Timestamp" => e.pick(&[
                json!("1970-01-01T00:00:00Z"),
                json!("0001-01-01T00:00:00Z"),
                json!("9999-12-31T23:59:59.999999999Z"),
                json!("2024-02-30T00:00:00Z"),
                json!("2024-01-01T00:00:00+25:00"),
                json!("10000-01-01T00:00:00Z"),
            ]),
            "Duration" => e.pick(&[json!("1s"), json!("-315576000000s"), json!("315576000001s"), json!("1.000000001s"), json!("1.5"), json!("-0.5s")]),
            "FieldMask" => e.pick(&[json!("a,b.c"), json!(""), json!("a_b"), json!(",")]),
            "Struct" if depth < 6 => json!({"a": message(desc, e, depth + 1), "b": [1, null, "x"]}),
            "Value" | "ListValue" | "Struct" => e.pick(&[json!(null), json!(1), json!("s"), json!([{"k": []}]), json!({"n": {"m": 1e308}})]),
            "Any" => e.pick(&[
                json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "R", "metadata": {"a": "b"}}),
                json!({"@type": "type.googleapis.com/google.protobuf.Duration", "value": "1s"}),
                json!({"@type": "type.googleapis.com/unknown.Type", "x": 1}),
                json!({"@type": "type.googleapis.com/google.protobuf.Any", "value": {"@type": "type.googleapis.com/google.protobuf.Empty", "value": {}}}),
                json!({"value": 1}),
            ]),
            "Empty" => json!({}),
            "DoubleValue" | "FloatValue" => e.pick(&[json!(1.5), json!("NaN"), json!(null)]),
            "Int64Value" | "UInt64Value" => e.pick(&[json!("9223372036854775807"), json!(-1), json!(null)]),
            "Int32Value" | "UInt32Value" => e.pick(&[json!(7), json!(-1), json!(4_294_967_296_i64)]),
            "BoolValue" => e.pick(&[json!(true), json!("false")]),
            "StringValue" => e.pick(&[json!("s"), json!(1)]),
            "BytesValue" => e.pick(&[json!("AQID"), json!("!")]),
            _ => return None,
        })
    }
}
