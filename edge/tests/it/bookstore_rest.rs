//! Issue 13's transcoding shapes through a real edge against the bookstore server: nested
//! bodies and response bodies, verbs with ':' after variables, `**` before other segments,
//! repeated and map bodies, query parameters into well-known types, server streams, HttpBody
//! in and out, headers and trailers, google.rpc details. Where Envoy and grpc-gateway differ,
//! the test names the side the edge takes (docs/TRANSCODING.md).

use serde_json::json;

use crate::bookstore::{BookStack, received_of};

const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

/// The shapes that used to refuse the whole configuration are served; a binding the edge
/// cannot serve is skipped alone (listed on the admin API), its method's other binding works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_shape_is_served_and_an_unservable_binding_is_skipped_alone() {
    let books = BookStack::start("").await;

    // body: "book" with {book.name=...} in the path: the path wins inside the body.
    let r = books.send("PATCH", "/v1/shelves/s1/books/b1", &JSON, r#"{"name":"ignored","title":"New","author":{"name":"Bo"}}"#).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(received_of(&r)["book"], json!({"name": "shelves/s1/books/b1", "title": "New", "author": {"name": "Bo"}}));

    // A nested body path: the body is the note's text.
    let r = books.send("PUT", "/v1/shelves/s1/books/b1/note", &JSON, r#""read twice""#).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(received_of(&r), json!({"name": "shelves/s1/books/b1", "note": {"text": "read twice"}}));
    // ... whose wrong type is a 400 naming the field, and reaches nothing.
    let before = books.calls();
    let r = books.send("PUT", "/v1/shelves/s1/books/b1/note", &JSON, r#"{"text":"x"}"#).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["message"].as_str().is_some_and(|m| m.contains("text")), "{}", r.json());
    assert_eq!(books.calls(), before, "a refused body reached the server");

    // A nested response_body path.
    let r = books.send("GET", "/v1/shelves/s1/books/b1/author", &[], "").await;
    assert_eq!((r.status, r.json()), (200, json!("Ann Author")));

    // Repeated and map body fields.
    let r = books.send("POST", "/v1/shelves/s1/books/b1:tag", &JSON, r#"["old","rare"]"#).await;
    assert_eq!(received_of(&r)["tags"], json!(["old", "rare"]), "{}", String::from_utf8_lossy(&r.body));
    let r = books.send("POST", "/v1/shelves/s1/books/b1:label", &JSON, r#"{"shelf":"top","state":"good"}"#).await;
    assert_eq!(received_of(&r)["labels"], json!({"shelf": "top", "state": "good"}), "{}", String::from_utf8_lossy(&r.body));

    // A verb with ':' inside, after a variable; the shorter verb matches nothing.
    let r = books.send("POST", "/v1/shelves/s1/books/b1:archive:now", &[], "").await;
    assert_eq!((r.status, received_of(&r)["name"].clone()), (200, json!("shelves/s1/books/b1")));
    assert_eq!(books.send("POST", "/v1/shelves/s1/books/b1:archive", &[], "").await.status, 404);

    // `**` before other segments.
    let r = books.send("GET", "/v1/a/b/c/versions/3", &[], "").await;
    assert_eq!(received_of(&r), json!({"name": "a/b/c", "version": 3}), "{}", String::from_utf8_lossy(&r.body));

    // The unservable binding is skipped, its sibling binding served, and the admin API says so.
    assert_eq!(books.send("GET", "/v1/broken/x", &[], "").await.status, 404);
    let r = books.send("GET", "/v1/broken-but-served/x", &[], "").await;
    assert_eq!((r.status, received_of(&r)["name"].clone()), (200, json!("x")));
    let routes = crate::http_client::get(books.admin, "/routes").await.json();
    let skipped = routes["skipped_bindings"].as_array().cloned().unwrap_or_default();
    assert_eq!(skipped.len(), 1, "{routes}");
    assert!(skipped[0].as_str().is_some_and(|s| s.contains("bookstore.v1.Bookstore.Broken") && s.contains("no_such_field")), "{skipped:?}");
    books.stop().await;
}

/// Query parameters fill well-known types (by their proto3 JSON text), bytes (base64 of
/// either alphabet), enums by name or number, repeated and nested fields; a sibling of a
/// path-bound nested field is accepted; an unknown parameter or a bad value is a 400 that
/// names it and reaches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_parameters_fill_well_known_types_bytes_enums_and_nested_fields() {
    let books = BookStack::start("").await;
    let q = "/v1/books:find?publishedAfter=2024-01-02T03:04:05Z&max_read_time=90s&minPages=120&inPrint=true&publisher=Acme+Press\
             &readMask=title,author.name&coverHash=AQID&genres=GENRE_FICTION&genres=2&ids=1&ids=9007199254740993\
             &editions=2020-01-01T00:00:00Z&editions=2021-06-01T12:00:00.5Z&filter.title=War%20%26%20Peace";
    let r = books.send("GET", q, &[], "").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        received_of(&r),
        json!({
            "filter": {"title": "War & Peace"},
            "publishedAfter": "2024-01-02T03:04:05Z",
            "maxReadTime": "90s",
            "minPages": 120,
            "inPrint": true,
            "publisher": "Acme Press",
            "readMask": "title,author.name",
            "coverHash": "AQID",
            "genres": ["GENRE_FICTION", "GENRE_HISTORY"],
            "ids": ["1", "9007199254740993"],
            "editions": ["2020-01-01T00:00:00Z", "2021-06-01T12:00:00.500Z"],
        })
    );
    // URL-safe base64 without padding.
    let r = books.send("GET", "/v1/books:find?coverHash=-_8", &[], "").await;
    assert_eq!(received_of(&r)["coverHash"], json!("+/8="), "{}", String::from_utf8_lossy(&r.body));

    // A sibling of the path-bound `filter.shelf` from the query.
    let r = books.send("GET", "/v1/shelves/top/books?filter.genre=GENRE_HISTORY", &[], "").await;
    assert_eq!(received_of(&r), json!({"filter": {"shelf": "top", "genre": "GENRE_HISTORY"}}), "{}", String::from_utf8_lossy(&r.body));

    let before = books.calls();
    for (query, names) in [
        ("/v1/shelves/top/books?filter.shelf=other", "filter.shelf"),
        ("/v1/shelves/top/books?filter=x", "filter"),
        ("/v1/books:find?publishedAfter=yesterday", "publishedAfter"),
        ("/v1/books:find?maxReadTime=ninety", "maxReadTime"),
        ("/v1/books:find?minPages=many", "minPages"),
        ("/v1/books:find?coverHash=%%%", "coverHash"),
        ("/v1/books:find?coverHash=***", "coverHash"),
        ("/v1/books:find?genres=genre_fiction", "genres"),
        ("/v1/books:find?shelfLife=3", "shelfLife"),
    ] {
        let r = books.send("GET", query, &[], "").await;
        assert_eq!(r.status, 400, "{query}: {}", String::from_utf8_lossy(&r.body));
        let msg = r.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(msg.contains(names), "{query}: {msg}");
    }
    assert_eq!(books.calls(), before, "a refused query reached the server");
    books.stop().await;
}

/// Envoy's options, as config: unknown query parameters ignored, enums in any case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_query_parameters_and_enum_case_follow_the_config() {
    let books = BookStack::start("ignore_unknown_query_parameters = true\ncase_insensitive_enums = true").await;
    let r = books.send("GET", "/v1/books:find?shelfLife=3&genres=genre_fiction&utm_source=x", &[], "").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(received_of(&r), json!({"genres": ["GENRE_FICTION"]}));
    books.stop().await;
}

/// Server streaming over REST: a JSON array by default (Envoy), NDJSON when the client's
/// Accept asks (grpc-gateway streams newline-delimited, though it wraps each message in
/// `{"result": ...}`; the edge does not); an empty stream is `[]`; an error before the
/// first message is an ordinary error status, after it the stream's last element.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streams_arrive_as_a_json_array_or_ndjson() {
    let books = BookStack::start("").await;
    let r = books.send("GET", "/v1/shelves/top/books:stream?count=3", &[], "").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.headers["content-type"], "application/json");
    let names: Vec<_> = r.json().as_array().expect("an array").iter().map(|b| b["name"].clone()).collect();
    assert_eq!(names, [json!("top/b0"), json!("top/b1"), json!("top/b2")]);

    let r = books.send("GET", "/v1/shelves/top/books:stream?count=2", &[("accept", "application/x-ndjson")], "").await;
    assert_eq!(r.headers["content-type"], "application/x-ndjson");
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&r.body).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.iter().map(|b| b["name"].clone()).collect::<Vec<_>>(), [json!("top/b0"), json!("top/b1")]);

    let r = books.send("GET", "/v1/shelves/top/books:stream?count=0", &[], "").await;
    assert_eq!((r.status, r.json()), (200, json!([])), "an empty stream");

    let r = books.send("GET", "/v1/shelves/top/books:stream?count=3&failAfter=0&failCode=5", &[], "").await;
    assert_eq!((r.status, r.json()["code"].clone()), (404, json!(5)), "{}", String::from_utf8_lossy(&r.body));

    let r = books.send("GET", "/v1/shelves/top/books:stream?count=3&failAfter=2&failCode=14", &[], "").await;
    assert_eq!(r.status, 200);
    let all = r.json();
    let all = all.as_array().expect("an array");
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(all[2]["error"]["code"], json!(14));
    assert!(all[2]["error"]["message"].as_str().is_some_and(|m| m.contains("broke after 2 books")), "{all:?}");

    let r =
        books.send("GET", "/v1/shelves/top/books:stream?count=3&failAfter=1&failCode=14", &[("accept", "application/x-ndjson")], "").await;
    let last = String::from_utf8_lossy(&r.body).lines().last().map(str::to_owned).unwrap_or_default();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&last).expect("JSON")["error"]["code"], json!(14), "{last}");

    // An upstream announcing a message larger than the edge renders ends the stream with an
    // error, rather than leaving the edge buffering it (or dropping it silently).
    let r = books.send("GET", "/v1/shelves/top/books:stream?count=3&oversized=true", &[], "").await;
    let all = r.json();
    let all = all.as_array().expect("an array");
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1]["error"]["code"], json!(14), "{all:?}");
    assert!(all[1]["error"]["message"].as_str().is_some_and(|m| m.contains("larger than")), "{all:?}");
    books.stop().await;
}

/// A stream's messages reach the client as they are sent: the first one arrives while the
/// server holds the rest, over HTTP/1.1 and HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_not_buffered_at_the_edge() {
    use http_body_util::BodyExt;
    let books = BookStack::start("").await;
    for http2 in [false, true] {
        let mut builder = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
        builder.http2_only(http2);
        let client = builder.build_http::<http_body_util::Empty<bytes::Bytes>>();
        let uri = format!("http://{}/v1/shelves/held/books:stream?count=2&holdAfterFirst=true", books.edge);
        let resp = client.get(uri.parse().expect("uri")).await.expect("response head");
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut got = Vec::new();
        // Everything up to the first book's closing brace, while the server holds the second.
        while !String::from_utf8_lossy(&got).contains("held/b0") || !got.ends_with(b"}") {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(20), body.frame())
                .await
                .unwrap_or_else(|_| panic!("the first book never arrived (http2 {http2}): {}", String::from_utf8_lossy(&got)))
                .expect("a frame")
                .expect("body");
            if let Ok(data) = frame.into_data() {
                got.extend_from_slice(&data);
            }
        }
        assert!(!String::from_utf8_lossy(&got).contains("held/b1"), "the second book came before it was released");
        books.release();
        let rest = body.collect().await.expect("the rest").to_bytes();
        got.extend_from_slice(&rest);
        let all: serde_json::Value = serde_json::from_slice(&got).expect("a JSON array");
        assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");
    }
    books.stop().await;
}

/// google.api.HttpBody: a download is its raw bytes with its content type (streamed ones
/// back to back); an upload takes any content type and reaches the service as data and
/// content type, next to the path's fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bodies_travel_raw_in_both_directions() {
    let books = BookStack::start("").await;
    let r = books.send("GET", "/v1/shelves/s/books/b:download", &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(&r.body[..], b"the text of shelves/s/books/b");

    let r = books.send("GET", "/v1/shelves/s/books/b:chunks?chunks=3", &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/x-chunks");
    assert_eq!(&r.body[..], b"chunk-0;chunk-1;chunk-2;");

    let png = [("content-type", "image/png")];
    let r = books.send("PUT", "/v1/shelves/s/books/b/cover", &png, "\u{89}PNG raw bytes").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD.encode("\u{89}PNG raw bytes".as_bytes());
    assert_eq!(received_of(&r), json!({"name": "shelves/s/books/b", "cover": {"contentType": "image/png", "data": data}}));
    books.stop().await;
}

/// Request headers reach the service by the allowlist (`Grpc-Metadata-*` without its
/// prefix, `authorization`, `x-request-id`), nothing else of the client's; the answer's
/// metadata comes back as `Grpc-Metadata-*` headers and its trailers as `Grpc-Trailer-*`
/// (grpc-gateway's names); an error's google.rpc details are rendered by type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_trailers_and_error_details_cross_the_rest_boundary() {
    let books = BookStack::start("").await;
    let headers = [
        ("content-type", "application/json"),
        ("authorization", "Bearer opaque-to-the-edge"),
        ("x-request-id", "req-42"),
        ("grpc-metadata-tenant", "acme"),
        ("grpc-metadata-grpc-status", "0"),
        ("cookie", "session=secret"),
        ("x-forwarded-for", "10.0.0.9"),
    ];
    let r = books.send("POST", "/v1/echo", &headers, "{}").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let got = r.json()["metadata"].clone();
    assert_eq!(got["authorization"], json!("Bearer opaque-to-the-edge"));
    assert_eq!(got["x-request-id"], json!("req-42"));
    assert_eq!(got["tenant"], json!("acme"));
    for absent in ["cookie", "x-forwarded-for", "grpc-metadata-tenant"] {
        assert!(got.get(absent).is_none(), "{absent} reached the service: {got}");
    }
    assert!(got.get("grpc-status").is_none(), "a client posed as the protocol: {got}");
    assert_eq!(r.headers["grpc-metadata-x-book-etag"], "\"v1\"");
    assert_eq!(r.headers["grpc-trailer-x-cost"], "7");

    let r = books.send("POST", "/v1/echo", &JSON, r#"{"code":9,"message":"shelf full"}"#).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json(),
        json!({
            "code": 9,
            "message": "shelf full",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SHELF_FULL", "domain": "bookstore.example"},
                {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "code", "description": "asked to fail"}]},
            ]
        })
    );
    books.stop().await;
}

/// Validates an OpenAPI document with the `openapi-spec-validator` Python package (against
/// the OpenAPI 3.1 schema; `cargo xtask test` installs it).
fn assert_valid_openapi(doc: &serde_json::Value, what: &str) {
    let file = std::env::temp_dir().join(format!("paymesh-openapi-{}-{what}.json", std::process::id()));
    std::fs::write(&file, doc.to_string()).expect("write");
    let script = "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))\nprint('valid')";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&file)
        .output()
        .expect("python3 runs (cargo xtask test installs it with openapi-spec-validator)");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("valid"),
        "{what}: the OpenAPI document does not validate (pip install openapi-spec-validator if it is missing):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GET /openapi.json` on the admin listener describes every binding the edge serves, from
/// its descriptors, and is a valid OpenAPI 3.1 document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_openapi_document_describes_every_binding_and_validates() {
    let books = BookStack::start("").await;
    let r = crate::http_client::get(books.admin, "/openapi.json").await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_valid_openapi(&doc, "bookstore");
    assert_eq!(doc["openapi"], json!("3.1.0"));
    let paths = doc["paths"].as_object().expect("paths");
    // One operation per served binding (the skipped one is absent).
    let routes = crate::http_client::get(books.admin, "/routes").await.json();
    let served = routes["rest"].as_array().map(Vec::len).unwrap_or_default();
    let operations: usize = paths.values().map(|p| p.as_object().map_or(0, serde_json::Map::len)).sum();
    assert_eq!(operations, served, "{}", serde_json::to_string_pretty(&doc["paths"]).unwrap_or_default());
    assert!(paths.keys().all(|p| !p.contains("broken/")), "the skipped binding is documented");

    let update = &paths["/v1/{book.name}"]["patch"];
    assert_eq!(update["requestBody"]["content"]["application/json"]["schema"]["$ref"], json!("#/components/schemas/bookstore.v1.Book"));
    assert!(update["parameters"][0]["description"].as_str().is_some_and(|d| d.contains("shelves/*/books/*")), "{update}");
    assert!(paths.contains_key("/v1/{name}:archive:now"), "{:?}", paths.keys().collect::<Vec<_>>());
    let find = &paths["/v1/books:find"]["get"]["parameters"];
    let param = |name: &str| find.as_array().and_then(|ps| ps.iter().find(|p| p["name"] == name).cloned());
    assert_eq!(param("publishedAfter").map(|p| p["schema"]["format"].clone()), Some(json!("date-time")));
    assert_eq!(param("filter.title").map(|p| p["in"].clone()), Some(json!("query")));
    assert_eq!(param("genres").map(|p| p["schema"]["type"].clone()), Some(json!("array")));
    let shelf_books = &paths["/v1/shelves/{filter.shelf}/books"]["get"]["parameters"];
    let in_query: Vec<_> =
        shelf_books.as_array().expect("params").iter().filter(|p| p["in"] == "query").map(|p| p["name"].clone()).collect();
    assert!(in_query.contains(&json!("filter.genre")) && !in_query.contains(&json!("filter.shelf")), "{in_query:?}");
    let stream = &paths["/v1/shelves/{shelf}/books:stream"]["get"]["responses"]["200"]["content"];
    assert!(stream.get("application/x-ndjson").is_some() && stream["application/json"]["schema"]["type"] == json!("array"), "{stream}");
    assert!(paths["/v1/{name}:download"]["get"]["responses"]["200"]["content"].get("*/*").is_some());
    assert!(paths["/v1/{name}/cover"]["put"]["requestBody"]["content"].get("*/*").is_some());
    books.stop().await;
}

/// The shipped configuration's document (Paymesh's own services, authenticated) validates
/// too, and says which operations need a credential.
#[test]
fn the_shipped_configs_openapi_document_validates() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh-config/paymesh.toml");
    let text = std::fs::read_to_string(&path).expect("the shipped config");
    let cfg = paymesh_core::config::MeshConfig::parse(&path, &text, &|_| Some("x".into())).expect("config");
    let edge = cfg.edge.expect("edge");
    let clusters = edge
        .clusters
        .iter()
        .map(|c| (c.name.clone(), std::sync::Arc::new(paymesh_edge::cluster::Cluster::new(c, &edge.outlier))))
        .collect();
    let catalog = paymesh_edge::catalog::Catalog::build(&edge, &clusters).expect("catalog");
    let doc = paymesh_edge::openapi::document(&catalog, edge.auth.is_some());
    assert_valid_openapi(&doc, "shipped");
    let authorize = &doc["paths"]["/api/payments/authorize"]["post"];
    assert_eq!(authorize["security"], json!([{"bearer": []}, {"apiKey": []}]), "{authorize}");
    assert!(doc["components"]["schemas"]["payments.v1.AuthorizeRequest"].is_object());
}
