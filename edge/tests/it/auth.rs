//! Authentication at the edge (issue 12), through the real edge against real upstreams:
//! JWTs from a JWKS (RS256, ES256, EdDSA) and API keys. Every bad credential is refused
//! with 401 / UNAUTHENTICATED and reaches no upstream; a good one reaches it as the identity
//! the edge verified, never as what the client claimed.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use paymesh_proto::codec::BytesCodec;
use prost::Message;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::json;
use tonic::Code;

use crate::flaky::FlakyStack;
use crate::http_client::{self, Version};

pub(crate) const ISSUER: &str = "https://issuer.test/";
pub(crate) const AUDIENCE: &str = "paymesh";
const ALL: [&str; 4] = ["f0a", "f0b", "f1a", "f1b"];

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

/// A signing key and its public JWK.
pub(crate) struct Key {
    kid: String,
    alg: Algorithm,
    signing: EncodingKey,
    jwk: serde_json::Value,
    /// The public key's bytes (for the "HMAC with the public key" attack).
    public: Vec<u8>,
}

impl Key {
    pub(crate) fn ed25519(kid: &str) -> Self {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("keygen");
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("key");
        let public = pair.public_key().as_ref().to_vec();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "x": b64(&public)});
        Self { kid: kid.into(), alg: Algorithm::EdDSA, signing: EncodingKey::from_ed_der(doc.as_ref()), jwk, public }
    }

    fn p256(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("keygen");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng).expect("key");
        let public = pair.public_key().as_ref().to_vec();
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&public[1..33]), "y": b64(&public[33..65])});
        Self { kid: kid.into(), alg: Algorithm::ES256, signing: EncodingKey::from_ec_der(doc.as_ref()), jwk, public }
    }

    /// RSA keys come from the openssl command (ring cannot make them).
    fn rsa(kid: &str, dir: &Path) -> Self {
        let pem = dir.join(format!("{kid}.pem"));
        let der = dir.join(format!("{kid}.der"));
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl").args(args).output().expect("run openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            out.stdout
        };
        run(&["genrsa", "-traditional", "-out", pem.to_str().expect("path"), "2048"]);
        run(&["rsa", "-in", pem.to_str().expect("path"), "-traditional", "-outform", "DER", "-out", der.to_str().expect("path")]);
        let modulus = String::from_utf8(run(&["rsa", "-in", pem.to_str().expect("path"), "-noout", "-modulus"])).expect("text");
        let hex = modulus.trim().trim_start_matches("Modulus=");
        let n: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
        let jwk = json!({"kty": "RSA", "kid": kid, "alg": "RS256", "n": b64(&n), "e": "AQAB"});
        let private = std::fs::read(&der).expect("der");
        Self { kid: kid.into(), alg: Algorithm::RS256, signing: EncodingKey::from_rsa_der(&private), jwk, public: n }
    }

    pub(crate) fn sign(&self, claims: &serde_json::Value) -> String {
        self.sign_as(self.alg, Some(&self.kid), claims)
    }

    fn sign_as(&self, alg: Algorithm, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&h, claims, &self.signing).expect("sign")
    }
}

pub(crate) fn claims(sub: &str, merchant: &str) -> serde_json::Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "merchant_id": merchant, "scope": "payments:write payments:read", "exp": now() + 600})
}

/// A token from raw header and claims JSON, with the given signature bytes.
fn raw_token(header: &serde_json::Value, claims: &serde_json::Value, sig: &[u8]) -> String {
    format!("{}.{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()), b64(sig))
}

fn api_key_sha(key: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, key.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

const GOOD_KEY: &str = "pmk_batch-1_4f1c9a7e2b6d8c3f0e5a1b9d7c2e4f6a";
const REVOKED_KEY: &str = "pmk_old-1_0a1b2c3d4e5f60718293a4b5c6d7e8f9";

struct Keys {
    rsa: Key,
    rsa2: Key,
    ec: Key,
    ed: Key,
    dir: PathBuf,
}

fn keys() -> Keys {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "paymesh-auth-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    Keys { rsa: Key::rsa("rsa-1", &dir), rsa2: Key::rsa("rsa-2", &dir), ec: Key::p256("ec-1"), ed: Key::ed25519("ed-1"), dir }
}

pub(crate) fn write_jwks(path: &Path, keys: &[&Key]) {
    let doc = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    std::fs::write(path, doc.to_string()).expect("write jwks");
}

/// `[edge.auth]` with one issuer (the JWKS file) and two API keys, one revoked.
fn auth_config(jwks: &Path, extra_issuer: &str) -> String {
    format!(
        r#"
[edge.auth]
leeway = "30s"
[[edge.auth.issuers]]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}", "other"]
jwks_file = "{jwks}"
min_refresh = "10ms"
{extra_issuer}
[[edge.auth.api_keys]]
id = "batch-1"
sha256 = "{good}"
subject = "settlement-batch"
merchant = "m-batch"
scopes = ["payments:read"]
[[edge.auth.api_keys]]
id = "old-1"
sha256 = "{revoked}"
subject = "retired"
revoked = true
"#,
        jwks = jwks.display(),
        good = api_key_sha(GOOD_KEY),
        revoked = api_key_sha(REVOKED_KEY),
    )
}

fn write_request(account: &str) -> Bytes {
    #[derive(Clone, PartialEq, prost::Message)]
    struct WriteRequest {
        #[prost(string, tag = "1")]
        account: String,
    }
    Bytes::from(WriteRequest { account: account.into() }.encode_to_vec())
}

/// A gRPC Write through the edge with `metadata` (values appended, so a name may repeat).
async fn grpc_write(stack: &FlakyStack, account: &str, metadata: &[(&'static str, String)]) -> Result<Bytes, tonic::Status> {
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", stack.edge)).expect("uri").connect().await.expect("connect");
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(write_request(account));
    for (k, v) in metadata {
        req.metadata_mut().append(*k, v.parse().expect("ascii"));
    }
    grpc.unary(req, http::uri::PathAndQuery::from_static("/flaky.v1.Flaky/Write"), BytesCodec).await.map(tonic::Response::into_inner)
}

async fn rest_write(stack: &FlakyStack, account: &str, headers: &[(&'static str, String)]) -> http_client::Reply {
    let mut h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    h.push(("content-type", "application/json"));
    http_client::send(stack.edge, Version::Http1, "POST", &format!("/v1/flaky/{account}"), &h, Bytes::from_static(b"{\"note\":\"x\"}"))
        .await
}

/// Every way a credential can be wrong, each with the `error` RFC 6750 says it gets
/// (`None`: no credential, so no error code).
/// A case: its name, the request's credential headers, and the RFC 6750 error it gets.
type Case = (&'static str, Vec<(&'static str, String)>, Option<&'static str>);

fn bad_credentials(k: &Keys) -> Vec<Case> {
    let auth = |t: String| vec![("authorization", format!("Bearer {t}"))];
    let good = claims("user-1", "m-1");
    let with = |f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut c = good.as_object().expect("object").clone();
        f(&mut c);
        serde_json::Value::Object(c)
    };
    let valid = k.rsa.sign(&good);
    let parts: Vec<&str> = valid.split('.').collect();
    let hmac_with = |secret: &[u8], alg: Algorithm| {
        let mut h = Header::new(alg);
        h.kid = Some("rsa-1".into());
        jsonwebtoken::encode(&h, &good, &EncodingKey::from_secret(secret)).expect("hmac")
    };
    let other_rsa = Key::rsa("rsa-1", &k.dir.join("other").tap_create());
    let other_ec = Key::p256("ec-1");
    let other_ed = Key::ed25519("ed-1");
    let invalid = Some("invalid_token");
    let request = Some("invalid_request");
    vec![
        ("no credentials", vec![], None),
        ("Basic scheme", vec![("authorization", "Basic dXNlcjpwYXNz".into())], request),
        ("scheme only", vec![("authorization", "Bearer".into())], request),
        ("empty bearer token", vec![("authorization", "Bearer    ".into())], request),
        ("Token scheme", vec![("authorization", format!("Token {valid}"))], request),
        (
            "two Authorization headers",
            vec![("authorization", format!("Bearer {valid}")), ("authorization", format!("Bearer {valid}"))],
            request,
        ),
        ("a token and an API key", vec![("authorization", format!("Bearer {valid}")), ("x-api-key", GOOD_KEY.into())], request),
        ("oversize token", auth("a".repeat(9000)), request),
        ("not a JWT", auth("abc".into()), invalid),
        ("two segments", auth("abc.def".into()), invalid),
        ("three garbage segments", auth("a.b.c".into()), invalid),
        ("alg none, no signature", auth(raw_token(&json!({"alg": "none", "typ": "JWT"}), &good, b"")), invalid),
        ("alg none with a signature", auth(raw_token(&json!({"alg": "none", "kid": "rsa-1"}), &good, b"sig")), invalid),
        ("alg None capitalised", auth(raw_token(&json!({"alg": "None"}), &good, b"")), invalid),
        ("HS256 keyed with the RSA public key", auth(hmac_with(&k.rsa.public, Algorithm::HS256)), invalid),
        ("HS256 keyed with the JWK's n", auth(hmac_with(k.rsa.jwk["n"].as_str().expect("n").as_bytes(), Algorithm::HS256)), invalid),
        ("HS512 keyed with the Ed25519 public key", auth(hmac_with(&k.ed.public, Algorithm::HS512)), invalid),
        ("RS256 from another key, same kid", auth(other_rsa.sign(&good)), invalid),
        ("ES256 from another key, same kid", auth(other_ec.sign(&good)), invalid),
        ("EdDSA from another key, same kid", auth(other_ed.sign(&good)), invalid),
        ("ES256 signature under an RSA kid", auth(k.ec.sign_as(Algorithm::ES256, Some("rsa-1"), &good)), invalid),
        ("RS256 header on the EC key's kid", auth(k.rsa.sign_as(Algorithm::RS256, Some("ec-1"), &good)), invalid),
        ("EdDSA signature under an RSA kid", auth(k.ed.sign_as(Algorithm::EdDSA, Some("rsa-1"), &good)), invalid),
        ("PS256 with the right RSA key", auth(k.rsa.sign_as(Algorithm::PS256, Some("rsa-1"), &good)), invalid),
        ("RS384 with the right RSA key", auth(k.rsa.sign_as(Algorithm::RS384, Some("rsa-1"), &good)), invalid),
        ("RS512 with the right RSA key", auth(k.rsa.sign_as(Algorithm::RS512, Some("rsa-1"), &good)), invalid),
        ("ES384 header", auth(raw_token(&json!({"alg": "ES384", "kid": "ec-1"}), &good, &[7; 96])), invalid),
        ("expired beyond the leeway", auth(k.rsa.sign(&with(&|c| drop(c.insert("exp".into(), json!(now() - 120)))))), invalid),
        ("not valid yet", auth(k.ec.sign(&with(&|c| drop(c.insert("nbf".into(), json!(now() + 600)))))), invalid),
        ("no exp", auth(k.ed.sign(&with(&|c| drop(c.remove("exp"))))), invalid),
        ("no sub", auth(k.rsa.sign(&with(&|c| drop(c.remove("sub"))))), invalid),
        ("no iss", auth(k.rsa.sign(&with(&|c| drop(c.remove("iss"))))), invalid),
        ("no aud", auth(k.rsa.sign(&with(&|c| drop(c.remove("aud"))))), invalid),
        ("untrusted issuer", auth(k.rsa.sign(&with(&|c| drop(c.insert("iss".into(), json!("https://evil.test/")))))), invalid),
        ("wrong audience", auth(k.ec.sign(&with(&|c| drop(c.insert("aud".into(), json!("billing")))))), invalid),
        ("audience list without ours", auth(k.ed.sign(&with(&|c| drop(c.insert("aud".into(), json!(["a", "b"])))))), invalid),
        ("unknown kid", auth(k.rsa.sign_as(Algorithm::RS256, Some("nope"), &good)), invalid),
        ("no kid, several RSA keys", auth(k.rsa.sign_as(Algorithm::RS256, None, &good)), invalid),
        ("sub is a number", auth(k.rsa.sign(&with(&|c| drop(c.insert("sub".into(), json!(42)))))), invalid),
        ("sub with a space", auth(k.rsa.sign(&with(&|c| drop(c.insert("sub".into(), json!("a b")))))), invalid),
        ("merchant is a list", auth(k.rsa.sign(&with(&|c| drop(c.insert("merchant_id".into(), json!(["m-1", "m-2"])))))), invalid),
        ("scope is a number", auth(k.rsa.sign(&with(&|c| drop(c.insert("scope".into(), json!(7)))))), invalid),
        (
            "payload swapped",
            auth(format!(
                "{}.{}.{}",
                parts[0],
                b64(with(&|c| drop(c.insert("merchant_id".into(), json!("m-2")))).to_string().as_bytes()),
                parts[2]
            )),
            invalid,
        ),
        (
            "kid swapped to another key",
            auth(format!("{}.{}.{}", b64(json!({"alg": "RS256", "kid": "rsa-2"}).to_string().as_bytes()), parts[1], parts[2])),
            invalid,
        ),
        ("signature stripped", auth(format!("{}.{}.", parts[0], parts[1])), invalid),
        ("signature truncated", auth(valid[..valid.len() - 8].to_owned()), invalid),
        ("token with a trailing word", auth(format!("{valid} extra")), invalid),
        ("API key, wrong secret", vec![("x-api-key", "pmk_batch-1_0000000000000000".into())], invalid),
        ("API key, unknown id", vec![("x-api-key", "pmk_nobody_4f1c9a7e2b6d8c3f0e5a1b9d7c2e4f6a".into())], invalid),
        ("API key, revoked", vec![("x-api-key", REVOKED_KEY.into())], invalid),
        ("API key without its prefix", vec![("x-api-key", GOOD_KEY.trim_start_matches("pmk_").into())], invalid),
        ("a JWT as an API key", vec![("x-api-key", valid.clone())], invalid),
        ("oversize API key", vec![("x-api-key", format!("pmk_batch-1_{}", "a".repeat(9000)))], request),
    ]
}

trait TapCreate {
    fn tap_create(self) -> Self;
}

impl TapCreate for PathBuf {
    fn tap_create(self) -> Self {
        std::fs::create_dir_all(&self).expect("dir");
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_credential_is_refused_and_reaches_no_upstream() {
    let k = keys();
    let jwks = k.dir.join("jwks.json");
    write_jwks(&jwks, &[&k.rsa, &k.rsa2, &k.ec, &k.ed]);
    let stack = FlakyStack::start("", "", &auth_config(&jwks, "")).await;
    let account = stack.account_on(0, 0);
    let cases = bad_credentials(&k);
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for (name, headers, error) in &cases {
        let r = rest_write(&stack, &account, headers).await;
        assert_eq!(r.status, 401, "{name}: REST answered {} {}", r.status, String::from_utf8_lossy(&r.body));
        let www = r.headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(www.starts_with("Bearer realm=\"paymesh\""), "{name}: WWW-Authenticate {www:?}");
        match error {
            Some(e) => assert!(www.contains(&format!("error=\"{e}\"")), "{name}: {www:?} lacks error={e}"),
            None => assert!(!www.contains("error="), "{name}: {www:?} names an error for a request with no credential"),
        }
        assert_eq!(r.json()["code"], 16, "{name}: {}", String::from_utf8_lossy(&r.body));
        if headers.iter().all(|(_, v)| v.len() < 4000) {
            let status = grpc_write(&stack, &account, headers).await.expect_err(&format!("{name}: gRPC call accepted"));
            assert_eq!(status.code(), Code::Unauthenticated, "{name}: gRPC {status:?}");
        }
    }
    assert_eq!(stack.calls(&ALL), 0, "a refused call reached an upstream");
    // The same stack serves good credentials: the refusals above were about the credentials.
    let ok = rest_write(&stack, &account, &[("authorization", format!("Bearer {}", k.rsa.sign(&claims("user-1", "m-1"))))]).await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_credentials_reach_the_upstream_as_the_identity_the_edge_verified() {
    let k = keys();
    let jwks = k.dir.join("jwks.json");
    write_jwks(&jwks, &[&k.rsa, &k.rsa2, &k.ec, &k.ed]);
    let stack = FlakyStack::start("", "", &auth_config(&jwks, "")).await;
    let account = stack.account_on(1, 0);
    let spoofed =
        [("x-paymesh-merchant", "m-evil".to_owned()), ("x-paymesh-subject", "root".to_owned()), ("x-paymesh-scopes", "admin".to_owned())];
    let expired_within_leeway = {
        let mut c = claims("user-4", "m-4");
        c["exp"] = json!(now() - 5);
        c
    };
    type Good<'a> = (&'a str, (&'static str, String), Vec<(&'a str, &'a str)>);
    let credentials: Vec<Good> = vec![
        (
            "RS256",
            ("authorization", format!("Bearer {}", k.rsa.sign(&claims("user-1", "m-1")))),
            vec![
                ("x-paymesh-authenticated-by", "jwt https://issuer.test/"),
                ("x-paymesh-merchant", "m-1"),
                ("x-paymesh-scopes", "payments:write payments:read"),
                ("x-paymesh-subject", "user-1"),
            ],
        ),
        (
            "ES256, lower-case scheme",
            ("authorization", format!("bearer {}", k.ec.sign(&claims("user-2", "m-2")))),
            vec![
                ("x-paymesh-authenticated-by", "jwt https://issuer.test/"),
                ("x-paymesh-merchant", "m-2"),
                ("x-paymesh-scopes", "payments:write payments:read"),
                ("x-paymesh-subject", "user-2"),
            ],
        ),
        (
            "EdDSA, no kid (its only key)",
            ("authorization", format!("Bearer {}", k.ed.sign_as(Algorithm::EdDSA, None, &claims("user-3", "m-3")))),
            vec![
                ("x-paymesh-authenticated-by", "jwt https://issuer.test/"),
                ("x-paymesh-merchant", "m-3"),
                ("x-paymesh-scopes", "payments:write payments:read"),
                ("x-paymesh-subject", "user-3"),
            ],
        ),
        (
            "expired within the leeway",
            ("authorization", format!("Bearer {}", k.rsa2.sign(&expired_within_leeway))),
            vec![
                ("x-paymesh-authenticated-by", "jwt https://issuer.test/"),
                ("x-paymesh-merchant", "m-4"),
                ("x-paymesh-scopes", "payments:write payments:read"),
                ("x-paymesh-subject", "user-4"),
            ],
        ),
        (
            "API key",
            ("x-api-key", GOOD_KEY.to_owned()),
            vec![
                ("x-paymesh-authenticated-by", "api-key batch-1"),
                ("x-paymesh-merchant", "m-batch"),
                ("x-paymesh-scopes", "payments:read"),
                ("x-paymesh-subject", "settlement-batch"),
            ],
        ),
    ];
    for (name, credential, expected) in &credentials {
        let mut headers = vec![credential.clone()];
        headers.extend(spoofed.iter().cloned());
        let expected: Vec<(String, String)> = expected.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
        let r = rest_write(&stack, &account, &headers).await;
        assert_eq!(r.status, 200, "{name}: {}", String::from_utf8_lossy(&r.body));
        let served_by = r.json()["servedBy"].as_str().expect("servedBy").to_owned();
        assert_eq!(stack.instance(&served_by).control.take_last_identity(), expected, "{name} over REST");
        grpc_write(&stack, &account, &headers).await.unwrap_or_else(|s| panic!("{name}: gRPC {s:?}"));
        let seen: Vec<Vec<(String, String)>> = ["f1a", "f1b"].iter().map(|n| stack.instance(n).control.take_last_identity()).collect();
        assert!(seen.contains(&expected), "{name} over gRPC: the upstream saw {seen:?}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_route_needs_no_credential_and_still_drops_spoofed_identity() {
    let k = keys();
    let jwks = k.dir.join("jwks.json");
    write_jwks(&jwks, &[&k.ed]);
    let stack = FlakyStack::start("auth = \"public\"", "", &auth_config(&jwks, "")).await;
    let account = stack.account_on(0, 1);
    let r = rest_write(&stack, &account, &[("x-paymesh-subject", "root".into()), ("x-paymesh-merchant", "m-evil".into())]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let served_by = r.json()["servedBy"].as_str().expect("servedBy").to_owned();
    assert_eq!(stack.instance(&served_by).control.take_last_identity(), Vec::<(String, String)>::new());
    stack.stop().await;
}

/// A key rotated into the JWKS file is used as soon as a token names it (the file is read
/// again on an unknown `kid`), without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_into_the_jwks_file_is_picked_up_on_the_first_token_that_names_it() {
    let k = keys();
    let jwks = k.dir.join("jwks.json");
    write_jwks(&jwks, &[&k.ed]);
    let stack = FlakyStack::start("", "", &auth_config(&jwks, "")).await;
    let account = stack.account_on(0, 2);
    let token = format!("Bearer {}", k.ec.sign(&claims("user-9", "m-9")));
    assert_eq!(rest_write(&stack, &account, &[("authorization", token.clone())]).await.status, 401, "a key not yet published");
    // Rewrite the file with the new key (and a different mtime).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let before = std::fs::metadata(&jwks).and_then(|m| m.modified()).expect("mtime");
    loop {
        write_jwks(&jwks, &[&k.ed, &k.ec]);
        if std::fs::metadata(&jwks).and_then(|m| m.modified()).expect("mtime") != before {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the file's mtime never changed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        let r = rest_write(&stack, &account, &[("authorization", token.clone())]).await;
        if r.status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the rotated key was never used: {} {}", r.status, String::from_utf8_lossy(&r.body));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stack.stop().await;
}

/// Keys from a JWKS URL: fetched, and fetched again when a token names a new `kid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_come_from_a_jwks_url_and_a_new_kid_fetches_it_again() {
    let k = keys();
    let doc = std::sync::Arc::new(std::sync::Mutex::new(json!({"keys": [k.ed.jwk.clone()]}).to_string()));
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
    {
        let (doc, fetches) = (doc.clone(), fetches.clone());
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut c, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let _ = c.read(&mut buf).await;
                fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = doc.lock().expect("lock").clone();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = c.write_all(resp.as_bytes()).await;
            }
        });
    }
    let unused = k.dir.join("unused.json");
    write_jwks(&unused, &[]);
    let url_issuer = format!(
        "[[edge.auth.issuers]]\nissuer = \"https://url.test/\"\naudiences = [\"{AUDIENCE}\"]\njwks_url = \"{url}\"\nmin_refresh = \"10ms\"\n"
    );
    let stack = FlakyStack::start("", "", &auth_config(&unused, &url_issuer)).await;
    let account = stack.account_on(1, 1);
    let token = |key: &Key| {
        let mut c = claims("svc", "m-1");
        c["iss"] = json!("https://url.test/");
        format!("Bearer {}", key.sign(&c))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = rest_write(&stack, &account, &[("authorization", token(&k.ed))]).await;
        if r.status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the JWKS URL's key was never used: {}", String::from_utf8_lossy(&r.body));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    *doc.lock().expect("lock") = json!({"keys": [k.ed.jwk.clone(), k.rsa.jwk.clone()]}).to_string();
    let before = fetches.load(std::sync::atomic::Ordering::SeqCst);
    loop {
        let r = rest_write(&stack, &account, &[("authorization", token(&k.rsa))]).await;
        if r.status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the new key was never fetched: {}", String::from_utf8_lossy(&r.body));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fetches.load(std::sync::atomic::Ordering::SeqCst) > before, "no fetch for the new kid");
    stack.stop().await;
}

/// Per-caller limits count an authenticated caller as who it is: a client that rotates the
/// limit's header gains nothing, and two callers do not share a bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_limits_key_on_the_authenticated_caller_not_a_header() {
    let k = keys();
    let jwks = k.dir.join("jwks.json");
    write_jwks(&jwks, &[&k.ed]);
    let limit = "[edge.routes.rate_limit.per_key]\nrate = 0.001\nburst = 2\nheader = \"x-client\"\n";
    let stack = FlakyStack::start(limit, "", &auth_config(&jwks, "")).await;
    let account = stack.account_on(0, 3);
    let alice = format!("Bearer {}", k.ed.sign(&claims("alice", "m-1")));
    let bob = format!("Bearer {}", k.ed.sign(&claims("bob", "m-1")));
    let mut statuses = Vec::new();
    for i in 0..4 {
        let r = rest_write(&stack, &account, &[("authorization", alice.clone()), ("x-client", format!("rotated-{i}"))]).await;
        statuses.push(r.status);
    }
    assert_eq!(statuses, [200, 200, 429, 429], "alice rotating x-client");
    assert_eq!(rest_write(&stack, &account, &[("authorization", bob.clone())]).await.status, 200, "bob has his own bucket");
    stack.stop().await;
}

/// A CA and a certificate for `localhost` / 127.0.0.1 signed by it (PEM files in `dir`).
fn test_ca_and_server_cert(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    run(&[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=paymesh test CA"]].concat());
    run(&[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]].concat());
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

/// Keys from an `https://` JWKS URL served under a private CA: fetched when the issuer names
/// that CA (`jwks_ca`), refused when it trusts only the system's roots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_come_from_an_https_jwks_url_checked_against_the_configured_ca() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let k = keys();
    let (ca, cert, key) = test_ca_and_server_cert(&k.dir);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert).expect("cert").map(|c| c.expect("pem")).collect();
    let private = PrivateKeyDer::from_pem_file(&key).expect("key");
    let server = tokio_rustls::rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, private).expect("config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("https://localhost:{}/jwks.json", listener.local_addr().expect("addr").port());
    let doc = json!({"keys": [k.ed.jwk.clone()]}).to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, doc) = (acceptor.clone(), doc.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut buf = vec![0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{doc}",
                    doc.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let unused = k.dir.join("unused.json");
    write_jwks(&unused, &[]);
    let issuers = format!(
        "[[edge.auth.issuers]]\nissuer = \"https://tls.test/\"\naudiences = [\"{AUDIENCE}\"]\njwks_url = \"{url}\"\njwks_ca = \"{}\"\nmin_refresh = \"10ms\"\n\
         [[edge.auth.issuers]]\nissuer = \"https://untrusted.test/\"\naudiences = [\"{AUDIENCE}\"]\njwks_url = \"{url}\"\nmin_refresh = \"10ms\"\n",
        ca.display()
    );
    let stack = FlakyStack::start("", "", &auth_config(&unused, &issuers)).await;
    let account = stack.account_on(0, 4);
    let token = |iss: &str| {
        let mut c = claims("svc", "m-1");
        c["iss"] = json!(iss);
        format!("Bearer {}", k.ed.sign(&c))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = rest_write(&stack, &account, &[("authorization", token("https://tls.test/"))]).await;
        if r.status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the https JWKS was never used: {}", String::from_utf8_lossy(&r.body));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The same document, but the issuer does not trust the private CA: no keys, no entry.
    let r = rest_write(&stack, &account, &[("authorization", token("https://untrusted.test/"))]).await;
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    stack.stop().await;
}
