//! Clients that misbehave, through the real edge against real upstreams (issue 11): their
//! own deadlines, stalled and trickled bodies, oversized bodies, floods of distinct paths
//! and keys, disconnects. None of it may count against a healthy instance, hold the edge,
//! grow its memory, or lose an answer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use paymesh_proto::codec::BytesCodec;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

use crate::flaky::{FlakyStack, Mode, QUICK_BREAKER, Raw};
use crate::harness::DEADLINE;

const OUTLIER: &str =
    "[edge.outlier]\nconsecutive_failures = 3\nbase_ejection_time = \"30s\"\nmax_ejection_time = \"30s\"\nmax_ejection_percent = 50\n";

/// `flaky.v1.WriteRequest { account, note }` encoded.
fn write_request(account: &str, note: &str) -> Bytes {
    #[derive(Clone, PartialEq, prost::Message)]
    struct WriteRequest {
        #[prost(string, tag = "1")]
        account: String,
        #[prost(string, tag = "3")]
        note: String,
    }
    Bytes::from(WriteRequest { account: account.into(), note: note.into() }.encode_to_vec())
}

async fn grpc_client(stack: &FlakyStack) -> tonic::client::Grpc<tonic::transport::Channel> {
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", stack.edge)).expect("uri").connect().await.expect("connect");
    tonic::client::Grpc::new(ch)
}

async fn unary(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    path: &str,
    body: Bytes,
    metadata: &[(&'static str, &str)],
) -> Result<Bytes, tonic::Status> {
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(body);
    for (k, v) in metadata {
        req.metadata_mut().insert(*k, v.parse().expect("ascii"));
    }
    let path = http::uri::PathAndQuery::try_from(path.to_owned()).expect("path");
    grpc.unary(req, path, BytesCodec).await.map(tonic::Response::into_inner)
}

async fn endpoints(stack: &FlakyStack) -> Vec<serde_json::Value> {
    stack.admin_get("/clusters").await.json()["clusters"][0]["endpoints"].as_array().cloned().unwrap_or_default()
}

/// Regression: 300 calls carrying `grpc-timeout: 1u` ejected a healthy instance and filled
/// its shard's breaker window with failures. The client's own deadline is not the
/// instance's failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_own_deadline_counts_against_no_instance_or_breaker() {
    let stack = FlakyStack::start(QUICK_BREAKER, "", OUTLIER).await;
    let a = stack.account_on(0, 0);
    let mut grpc = grpc_client(&stack).await;
    let mut expired = 0;
    for _ in 0..60 {
        match unary(&mut grpc, "/flaky.v1.Flaky/Write", write_request(&a, ""), &[("grpc-timeout", "1u")]).await {
            Err(s) if matches!(s.code(), Code::DeadlineExceeded | Code::Cancelled) => expired += 1,
            Ok(_) => {}
            Err(s) => panic!("a call with a 1 µs deadline answered {s:?}"),
        }
    }
    assert!(expired > 0, "no call ran out of its 1 µs deadline");
    for e in endpoints(&stack).await {
        assert_eq!(e["ejections"], 0, "an instance was ejected for the client's deadline: {e}");
    }
    let b = stack.breaker(0).await;
    assert_eq!((b["state"].as_str(), b["failed_calls"].as_u64()), (Some("closed"), Some(0)), "{b}");
    assert_eq!(stack.read(&a).await.status, 200, "the shard still serves");
    stack.stop().await;
}

/// Regression: the slow-call clock started when the edge began reading the client's body, so
/// five clients trickling their REST bodies opened a healthy shard's breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_slow_upload_is_not_a_slow_call() {
    // The breaker calls anything over 200 ms slow and opens at 50 % slow calls of 5.
    let stack = FlakyStack::start(QUICK_BREAKER, "", "").await;
    let a = stack.account_on(0, 0);
    let body = br#"{"note":"trickled"}"#;
    let uploads = (0..5).map(|_| {
        let (edge, path) = (stack.edge, format!("/v1/flaky/{a}"));
        tokio::spawn(async move {
            let mut conn = TcpStream::connect(edge).await.expect("connect");
            let head = format!(
                "POST {path} HTTP/1.1\r\nhost: edge\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes()).await.expect("head");
            // The client takes 300 ms to send its body: its own slowness, not the upstream's.
            for chunk in body.chunks(body.len().div_ceil(3)) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                conn.write_all(chunk).await.expect("body");
            }
            let mut answer = Vec::new();
            conn.read_to_end(&mut answer).await.expect("answer");
            String::from_utf8_lossy(&answer).into_owned()
        })
    });
    for u in uploads.collect::<Vec<_>>() {
        let answer = u.await.expect("join");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let b = stack.breaker(0).await;
    assert_eq!((b["state"].as_str(), b["slow_calls"].as_u64()), (Some("closed"), Some(0)), "{b}");
    stack.stop().await;
}

/// Regression: the route's bucket was charged before the client's own, so one client's
/// refused flood emptied the route's bucket for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_refused_flood_does_not_drain_the_route() {
    let limits = r#"
[edge.routes.rate_limit]
route = { rate = 0.01, burst = 20 }
per_key = { rate = 0.01, burst = 2, header = "x-api-key", max_keys = 100 }
"#;
    let stack = FlakyStack::start(limits, "", "").await;
    let path = format!("/v1/flaky/{}", stack.account_on(1, 0));
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(stack.send("GET", &path, &[("x-api-key", "greedy")]).await.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 2, "{statuses:?}");
    for i in 0..10 {
        let r = stack.send("GET", &path, &[("x-api-key", &format!("polite-{i}"))]).await;
        assert_eq!(r.status, 200, "polite client {i} was refused: {}", String::from_utf8_lossy(&r.body));
    }
    stack.stop().await;
}

/// Regression: every client-chosen method path became a metrics series for ever (600 paths
/// grew `/metrics` by 1.2 MB), and an upstream's early trailers-only answer could be lost
/// (calls hung until the client gave up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_always_get_their_answer_and_share_one_series() {
    // A passthrough route (no descriptors): the instances do not implement it at all.
    let passthrough = "\n[[edge.routes]]\nservice = \"flaky.v1.Unknown\"\ncluster = \"flaky\"\n";
    let stack = FlakyStack::start(passthrough, "", "").await;
    let before = stack.admin_get("/metrics").await.body.len();
    // A body of some size, so the upstream answers while the edge may still be sending.
    let note = "x".repeat(48 * 1024);
    let calls = (0..8).map(|worker| {
        let (edge, note) = (stack.edge, note.clone());
        tokio::spawn(async move {
            let ch = tonic::transport::Channel::from_shared(format!("http://{edge}")).expect("uri").connect().await.expect("connect");
            let mut grpc = tonic::client::Grpc::new(ch);
            let mut answers = Vec::new();
            for i in 0..25 {
                let path = format!("/flaky.v1.Unknown/Method{worker}x{i}");
                let mut req = tonic::Request::new(write_request("acct", &note));
                // A lost answer shows as this deadline passing, not as a hung test.
                req.set_timeout(Duration::from_secs(10));
                grpc.ready().await.expect("ready");
                let path = http::uri::PathAndQuery::try_from(path).expect("path");
                answers.push(grpc.unary(req, path, BytesCodec).await.map(|_| ()).map_err(|s| (s.code(), s.message().to_owned())));
            }
            answers
        })
    });
    for c in calls.collect::<Vec<_>>() {
        for answer in c.await.expect("join") {
            let (code, message) = answer.expect_err("nothing implements flaky.v1.Unknown");
            assert_eq!(code, Code::Unimplemented, "{message}");
        }
    }
    let metrics = String::from_utf8_lossy(&stack.admin_get("/metrics").await.body).into_owned();
    assert!(!metrics.contains("Method0x"), "a client-chosen path became a series");
    assert!(metrics.contains("route=\"/flaky.v1.Unknown/<unknown>\""), "{metrics}");
    let grown = metrics.len().saturating_sub(before);
    assert!(grown < 16 * 1024, "200 distinct unknown paths grew /metrics by {grown} bytes");
    stack.stop().await;
}

async fn raw_request(edge: SocketAddr, head: &str) -> TcpStream {
    let mut conn = TcpStream::connect(edge).await.expect("connect");
    conn.write_all(head.as_bytes()).await.expect("head");
    conn
}

/// Regression: a 413 closed the connection under a client still sending its body, which
/// then saw a broken pipe instead of the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_too_much_reads_its_413() {
    let stack = FlakyStack::start("", "", "max_body_bytes = 65536").await;
    let path = format!("/v1/flaky/{}", stack.account_on(0, 0));
    let body = vec![b' '; 4 * 1024 * 1024];
    let head = format!("POST {path} HTTP/1.1\r\nhost: edge\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len());
    let mut conn = raw_request(stack.edge, &head).await;
    // As most clients do: send the whole body, then read the answer.
    conn.write_all(&body).await.expect("the edge kept reading the body it refuses");
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("larger than the limit of 65536 bytes"), "{answer}");
    stack.stop().await;
}

/// Regression: connections that sent headers and stalled mid-body were held for a minute
/// (99 of 200 still open after 40 s). The edge closes them after its read deadlines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_trickling_clients_cannot_hold_the_edge() {
    let stack = FlakyStack::start("", "", "client_read_timeout = \"1s\"\nbody_read_deadline = \"3s\"").await;
    let path = format!("/v1/flaky/{}", stack.account_on(0, 0));
    let head = format!("POST {path} HTTP/1.1\r\nhost: edge\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"note\":");
    let mut stalled = Vec::new();
    for _ in 0..50 {
        stalled.push(raw_request(stack.edge, &head).await);
    }
    // One that sends a byte every 100 ms: never idle for the 1 s read timeout, but slower
    // than the 3 s deadline for the whole body (100 bytes would take 10 s).
    let trickler = {
        let (edge, head) = (stack.edge, head.clone());
        tokio::spawn(async move {
            let (mut read, mut write) = raw_request(edge, &head).await.into_split();
            let writer = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if write.write_all(b" ").await.is_err() {
                        return;
                    }
                }
            });
            let mut answer = Vec::new();
            let read = tokio::time::timeout(DEADLINE, read.read_to_end(&mut answer)).await;
            writer.abort();
            assert!(read.is_ok(), "the trickling client was never cut off");
            String::from_utf8_lossy(&answer).into_owned()
        })
    };
    // Also an idle connection that never sends a byte, and one that sends the first byte of
    // the HTTP/2 preface (and of POST) and stalls.
    stalled.push(TcpStream::connect(stack.edge).await.expect("connect"));
    stalled.push(raw_request(stack.edge, "P").await);
    let start = Instant::now();
    for (i, conn) in stalled.iter_mut().enumerate() {
        let mut buf = [0u8; 1024];
        loop {
            let remaining = DEADLINE.saturating_sub(start.elapsed());
            assert!(!remaining.is_zero(), "stalled connection {i} is still open");
            match tokio::time::timeout(remaining, conn.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => continue, // an error answer first, then the close
                Err(_) => panic!("stalled connection {i} is still open"),
            }
        }
    }
    let answer = trickler.await.expect("join");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(stack.calls(&["f0a", "f0b"]), 0, "a stalled request reached an upstream");
    stack.stop().await;
}

/// Regression: a client that went away left its call (and its retries) running upstream
/// until the route's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_its_upstream_call() {
    let stack = FlakyStack::start("timeout = \"60s\"", "", "").await;
    let a = stack.account_on(0, 0);
    stack.set(&["f0a", "f0b"], Mode::Hold);
    let in_flight = |eps: Vec<serde_json::Value>| eps.iter().map(|e| e["in_flight"].as_u64().unwrap_or(0)).sum::<u64>();
    // Both the edge's count of calls in flight and the upstream's count of calls it holds:
    // the upstream stream must really be reset, not only forgotten by the edge.
    let held = || ["f0a", "f0b"].iter().map(|n| stack.instance(n).control.held()).sum::<usize>();
    let wait_in_flight = |n: u64| {
        let stack = &stack;
        async move {
            let start = Instant::now();
            loop {
                let eps = endpoints(stack).await;
                if in_flight(eps.clone()) == n && held() == n as usize {
                    return;
                }
                assert!(start.elapsed() < DEADLINE, "never {n} calls in flight upstream (held there: {}): {eps:?}", held());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // REST over HTTP/1.1: the client closes its connection while the call is held.
    let conn = raw_request(stack.edge, &format!("GET /v1/flaky/{a} HTTP/1.1\r\nhost: edge\r\n\r\n")).await;
    wait_in_flight(1).await;
    drop(conn);
    wait_in_flight(0).await;

    // gRPC: the client cancels its call.
    let mut grpc = grpc_client(&stack).await;
    let call = tokio::spawn(async move { unary(&mut grpc, "/flaky.v1.Flaky/Write", write_request(&a, ""), &[]).await });
    wait_in_flight(1).await;
    call.abort();
    wait_in_flight(0).await;
    stack.stop().await;
}

/// Regression: reflection and health streams took slots of the data plane's cluster limit,
/// so a few long-lived control-plane streams could starve payments calls. A route may have
/// its own limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_streams_cannot_take_the_clusters_slots() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let health_route = "\n[[edge.routes]]\nservice = \"grpc.health.v1.Health\"\ncluster = \"flaky\"\nconcurrency = { max_requests = 2, max_pending = 0 }\n";
    let stack = FlakyStack::start(health_route, "max_requests = 2\nmax_pending = 0", "").await;
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", stack.edge)).expect("uri").connect().await.expect("connect");
    let mut watches = Vec::new();
    for _ in 0..2 {
        let mut stream =
            HealthClient::new(ch.clone()).watch(HealthCheckRequest { service: String::new() }).await.expect("watch").into_inner();
        stream.message().await.expect("first status").expect("a status");
        watches.push(stream);
    }
    let third = HealthClient::new(ch.clone()).watch(HealthCheckRequest { service: String::new() }).await;
    let refused = match third {
        Err(s) => s,
        Ok(r) => r.into_inner().message().await.expect_err("the route's limit is 2"),
    };
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("route 'grpc.health.v1.Health' is at its limit"), "{}", refused.message());
    // The cluster's two slots are all there for the data plane, two calls at a time.
    let a = stack.account_on(0, 0);
    for _ in 0..5 {
        let (r1, r2) = tokio::join!(stack.read(&a), stack.read(&a));
        assert_eq!((r1.status, r2.status), (200, 200), "{}", String::from_utf8_lossy(&r2.body));
    }
    drop(watches);
    stack.stop().await;
}

/// Regression: an upstream that refused a stream (RST_STREAM with REFUSED_STREAM: nothing was
/// processed, RFC 9113 section 8.7) failed the call, even though another instance could have
/// taken it. Such a call is retried on another instance of the shard whatever its method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_is_retried_on_another_instance() {
    let stack = FlakyStack::start_with_raw("", "", "", &[("f0a", Raw::Refuse)]).await;
    let a = stack.account_on(0, 0);
    // Writes without an idempotency key: never repeated after anything was processed.
    for i in 0..30 {
        let r = stack.write(&a, None).await;
        assert_eq!(r.status, 200, "write {i}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["servedBy"], "f0b", "write {i}");
    }
    assert!(stack.calls(&["f0a"]) > 0, "no call was sent to the refusing instance, so nothing was tested");
    assert_eq!(stack.calls(&["f0b"]), 30, "each write ran exactly once");
    stack.stop().await;
}

/// Regression: a client sending `Expect: 100-continue` (curl does for bodies over 1 KiB) never
/// heard "100 Continue" and waited (curl: a second) before sending its body; one whose body is
/// too large should be refused before sending it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_expect_100_continue_hear_it_or_a_413_first() {
    let stack = FlakyStack::start("", "", "max_body_bytes = 65536").await;
    let path = format!("/v1/flaky/{}", stack.account_on(0, 0));
    let body = format!(r#"{{"note":"{}"}}"#, "x".repeat(2_000));
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: edge\r\ncontent-type: application/json\r\nexpect: 100-continue\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut conn = raw_request(stack.edge, &head).await;
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(DEADLINE, conn.read(&mut buf)).await.expect("no 100 Continue before the body").expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 100 Continue"), "{}", String::from_utf8_lossy(&seen));
    conn.write_all(body.as_bytes()).await.expect("body");
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.expect("answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("HTTP/1.1 200"), "{answer}");

    // Too large: the 413 comes at once, without a 100 Continue, and nothing is sent.
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: edge\r\ncontent-type: application/json\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        10 * 1024 * 1024
    );
    let mut conn = raw_request(stack.edge, &head).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, conn.read_to_end(&mut answer)).await.expect("the 413 came, and the connection closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    stack.stop().await;
}

/// The other side of the refused-stream retry: a write whose connection died after the
/// instance received it (killed mid-call, maybe after committing) may have been processed,
/// and is never sent to another instance. (pingora marks such an error on a reused
/// connection as retryable; the edge retries it only for calls that are safe to repeat.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lost_with_its_connection_is_not_sent_again() {
    let no_ejection = "[edge.outlier]\nconsecutive_failures = 1000\n";
    let stack = FlakyStack::start_with_raw("", "", no_ejection, &[("f0a", Raw::DieOnSecondCall)]).await;
    let a = stack.account_on(0, 0);
    // f0b answers slowly, so the balancer (peak-EWMA) keeps choosing f0a, which answers the
    // first call of a connection and dies on the second.
    stack.set(&["f0b"], Mode::Slow(Duration::from_millis(30)));
    let (mut sent, mut failed) = (0, 0);
    while stack.instance("f0a").control.crashes() == 0 {
        assert!(
            sent < 300,
            "the balancer never sent f0a a second call on one connection: f0a {} calls, f0b {}, {failed} failed",
            stack.calls(&["f0a"]),
            stack.calls(&["f0b"])
        );
        let r = stack.write(&a, None).await;
        sent += 1;
        if r.status != 200 {
            assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
            failed += 1;
        }
    }
    assert_eq!(failed, stack.instance("f0a").control.crashes(), "each lost write is reported, not retried");
    assert_eq!(stack.calls(&["f0a", "f0b"]), sent, "a write ran twice: {sent} sent");
    stack.stop().await;
}

/// Regression: a client's `grpc-timeout` longer than the route's timeout was forwarded
/// unchanged, so the upstream kept working after the edge had given up on the call. The
/// upstream gets what is left of the call's deadline: the client's, capped by the route's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_get_what_is_left_of_the_deadline() {
    let stack = FlakyStack::start("timeout = \"2s\"", "", "").await;
    let a = stack.account_on(0, 0);
    let mut grpc = grpc_client(&stack).await;
    let millis = |t: Option<String>| -> u64 {
        let t = t.expect("the upstream got a grpc-timeout");
        let (n, unit) = t.split_at(t.len() - 1);
        let n: u64 = n.parse().expect("digits");
        match unit {
            "m" => n,
            "S" => n * 1_000,
            "u" => n / 1_000,
            "n" => n / 1_000_000,
            "M" => n * 60_000,
            "H" => n * 3_600_000,
            other => panic!("unit {other}"),
        }
    };
    for (asked, at_most) in [("30S", 2_000), ("500m", 500), ("1H", 2_000)] {
        unary(&mut grpc, "/flaky.v1.Flaky/Write", write_request(&a, ""), &[("grpc-timeout", asked)]).await.expect("write");
        let got = ["f0a", "f0b"].iter().filter_map(|n| stack.instance(n).control.take_last_timeout()).map(|t| millis(Some(t))).max();
        let got = got.expect("a call reached shard 0");
        assert!(got <= at_most, "asked {asked}: the upstream got {got} ms, more than {at_most}");
    }
    stack.stop().await;
}
