//! Transcoding behaviour REST clients rely on (issue 13), through the real edge against
//! real upstreams. Where Envoy's grpc_json_transcoder and grpc-gateway differ, the side the
//! edge takes is named in each test.

use bytes::Bytes;

use crate::flaky::{FlakyStack, Mode};
use crate::http_client::{self, Version};

const ALL: [&str; 4] = ["f0a", "f0b", "f1a", "f1b"];

/// Envoy and grpc-gateway both read a body sent without a content type as JSON (it used to
/// get 415). A body with another declared type is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_without_a_content_type_is_read_as_json() {
    let stack = FlakyStack::start("", "", "").await;
    let path = format!("/v1/flaky/{}", stack.account_on(0, 0));
    let r = http_client::send(stack.edge, Version::Http1, "POST", &path, &[], Bytes::from_static(b"{\"note\":\"no type\"}")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(stack.calls(&ALL), 1);
    let xml = [("content-type", "application/xml")];
    let r = http_client::send(stack.edge, Version::Http1, "POST", &path, &xml, Bytes::from_static(b"<note/>")).await;
    assert_eq!(r.status, 415, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(stack.calls(&ALL), 1, "a refused body reached an upstream");
    stack.stop().await;
}

/// A REST client's `grpc-timeout` is its deadline, as for a gRPC client (Envoy passes it on
/// too): the upstream is told what is left of it, not the route's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_clients_grpc_timeout_is_its_deadline() {
    let stack = FlakyStack::start("", "", "").await;
    stack.set(&ALL, Mode::Hold);
    let path = format!("/v1/flaky/{}", stack.account_on(1, 0));
    let headers = [("content-type", "application/json"), ("grpc-timeout", "200m")];
    let r = http_client::send(stack.edge, Version::Http1, "POST", &path, &headers, Bytes::from_static(b"{}")).await;
    assert_eq!(r.status, 504, "{}", String::from_utf8_lossy(&r.body));
    let told: Vec<String> = ["f1a", "f1b"].iter().filter_map(|n| stack.instance(n).control.take_last_timeout()).collect();
    let millis: Vec<u64> = told.iter().filter_map(|t| t.strip_suffix('m')?.parse().ok()).collect();
    assert!(!millis.is_empty() && millis.iter().all(|&m| m <= 200), "the upstream was told {told:?}, not the client's 200 ms");
    stack.set(&ALL, Mode::Normal);
    stack.stop().await;
}

/// A request's custom verb is split off before matching (Envoy and grpc-gateway agree):
/// `/v1/flaky/{account}:verb` matches no binding, rather than reaching Read with the account
/// `acct:verb`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_verb_is_not_part_of_the_last_variable() {
    let stack = FlakyStack::start("", "", "").await;
    let account = stack.account_on(0, 1);
    let r = http_client::send(stack.edge, Version::Http1, "GET", &format!("/v1/flaky/{account}:archive"), &[], Bytes::new()).await;
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(stack.calls(&ALL), 0, "a path with an unknown verb reached an upstream");
    // An encoded ':' is data.
    let r = http_client::send(stack.edge, Version::Http1, "GET", &format!("/v1/flaky/{account}%3Aarchive"), &[], Bytes::new()).await;
    assert_eq!(r.json()["account"], format!("{account}:archive"), "{}", String::from_utf8_lossy(&r.body));
    stack.stop().await;
}

/// Two bindings that match the same requests (same HTTP verb, same path shape) are refused
/// at start, naming both, instead of one of them serving by hash order.
#[test]
fn ambiguous_bindings_are_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("paymesh-ambiguous-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let fds = dir.join("ambiguous.binpb");
    std::fs::write(&fds, crate::inventory::fixture_descriptor_set("ambiguous.proto")).expect("write");
    let text = format!(
        "[[shards]]\nid = 0\ndatabase_url = \"postgres://unused@127.0.0.1:1/none\"\n[[payments.instances]]\nname = \"unused\"\nshard = 0\nlisten = \"127.0.0.1:1\"\n\
         [edge]\ndescriptor_sets = [\"{}\"]\n[[edge.clusters]]\nname = \"a\"\nendpoints = [{{ address = \"127.0.0.1:1\" }}]\n\
         [[edge.routes]]\nservice = \"ambiguous.v1.Ambiguous\"\ncluster = \"a\"\n",
        fds.display()
    );
    let path = dir.join("mesh.toml");
    std::fs::write(&path, text).expect("config");
    let config = paymesh_core::config::MeshConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let err = paymesh_edge::prepare(&config).expect_err("ambiguous bindings").to_string();
    for needle in ["/ambiguous.v1.Ambiguous/GetByName", "/ambiguous.v1.Ambiguous/GetById", "match the same requests"] {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
}

/// A body sent to a binding without `body` is ignored (grpc-gateway and Envoy agree); it used
/// to be a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_to_a_binding_without_body_is_ignored() {
    let stack = FlakyStack::start("", "", "").await;
    let account = stack.account_on(1, 1);
    let headers = [("content-type", "application/json")];
    let r =
        http_client::send(stack.edge, Version::Http1, "GET", &format!("/v1/flaky/{account}"), &headers, Bytes::from_static(b"{\"x\":1}"))
            .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["account"], account);
    stack.stop().await;
}
