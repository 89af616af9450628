//! Live reload (`POST /config/reload`): under load, a rate limit, an added and a removed
//! instance and a breaker change take effect without failing a call; state survives for
//! routes that did not change; a bad file changes nothing and says where.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;
use crate::http_client;
use crate::inventory::Inventory;

/// Calls inventory over REST through the edge until stopped; counts answers by outcome.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(stack: &Stack, callers: usize) -> Self {
        let (stop, ok, failed) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(std::sync::Mutex::new(Vec::new())));
        let tasks = (0..callers)
            .map(|c| {
                let (stop, ok, failed, edge) = (stop.clone(), ok.clone(), failed.clone(), stack.edge);
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let r = http_client::send(
                            edge,
                            http_client::Version::Http1,
                            "GET",
                            &format!("/v1/shelves/s{c}/items/i-{i}"),
                            &[],
                            bytes::Bytes::new(),
                        )
                        .await;
                        if r.status == 200 {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.lock().expect("lock").push(format!("{} {}", r.status, String::from_utf8_lossy(&r.body)));
                        }
                    }
                })
            })
            .collect();
        Self { stop, ok, failed, tasks }
    }

    /// Waits until `more` further calls succeeded (the load is really running).
    async fn wait_more(&self, more: usize) {
        let target = self.ok.load(Ordering::Relaxed) + more;
        let start = Instant::now();
        while self.ok.load(Ordering::Relaxed) < target {
            assert!(start.elapsed() < DEADLINE, "the load stalled at {} calls", self.ok.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load task");
        }
        let failed = self.failed.lock().expect("lock").clone();
        (self.ok.load(Ordering::Relaxed), failed)
    }
}

async fn reload(stack: &Stack) -> http_client::Reply {
    http_client::send(stack.admin, http_client::Version::Http1, "POST", "/config/reload", &[], bytes::Bytes::new()).await
}

/// Rewrites the stack's config file with `edit` applied to its current text.
fn edit(stack: &Stack, edit: impl FnOnce(String) -> String) {
    let path = stack.config_path();
    let text = std::fs::read_to_string(&path).expect("read config");
    let new = edit(text.clone());
    assert_ne!(new, text, "the edit changed nothing");
    std::fs::write(&path, new).expect("write config");
}

fn route<'a>(routes: &'a Value, service: &str) -> &'a Value {
    routes["grpc"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["service"] == service))
        .unwrap_or_else(|| panic!("no route {service} in {routes}"))
}

fn inventory_endpoints(clusters: &Value) -> Vec<String> {
    let c = clusters["clusters"].as_array().and_then(|c| c.iter().find(|c| c["name"] == "inventory")).expect("inventory cluster");
    c["endpoints"].as_array().expect("endpoints").iter().map(|e| e["name"].as_str().unwrap_or_default().to_owned()).collect()
}

/// A second inventory instance on a free port, healthy.
async fn second_inventory() -> (std::net::SocketAddr, Inventory, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let inventory = Inventory::new();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = inventory.clone();
    tokio::spawn(async move {
        let _keep = reporter;
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(served)
            .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async move {
                let _ = rx.await;
            })
            .await
    });
    (addr, inventory, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_changes_limits_instances_and_breakers_without_failing_a_call() {
    let stack = Stack::start().await;
    let load = Load::start(&stack, 4);
    load.wait_more(50).await;

    // 1. A per-key rate limit on the inventory route: in effect at once for callers with a key.
    edit(&stack, |t| {
        t.replace(
            "cluster = \"inventory\"\ntimeout = \"2s\"\n",
            "cluster = \"inventory\"\ntimeout = \"2s\"\nrate_limit = { per_key = { rate = 0.01, burst = 2, header = \"x-api-key\", by_merchant = false } }\n",
        )
    });
    let r = reload(&stack).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["generation"], json!(1));
    assert_eq!(r.json()["applied"], json!(["edge.routes[inventory.v1.Inventory]"]), "{}", r.json());
    assert_eq!(r.json()["restart_required"], json!([]));
    let limited = route(&http_client::get(stack.admin, "/routes").await.json(), "inventory.v1.Inventory")["rate_limit"].clone();
    assert_eq!(limited["per_key"]["burst"], json!(2), "{limited}");
    let keyed = |i: usize| {
        let edge = stack.edge;
        async move {
            http_client::send(
                edge,
                http_client::Version::Http1,
                "GET",
                &format!("/v1/shelves/k/items/{i}"),
                &[("x-api-key", "alice")],
                bytes::Bytes::new(),
            )
            .await
            .status
        }
    };
    assert_eq!((keyed(1).await, keyed(2).await, keyed(3).await), (200, 200, 429), "the new limit is in effect");
    load.wait_more(50).await;

    // 2. A second instance added to the inventory cluster: checked, then sent calls.
    let (addr2, inventory2, stop2) = second_inventory().await;
    let first = format!("{{ name = \"inventory-1\", address = \"{}\" }}", stack.inventory_addr);
    let second = format!("{{ name = \"inventory-2\", address = \"{addr2}\" }}");
    edit(&stack, |t| t.replace(&format!("endpoints = [{first}]"), &format!("endpoints = [{first}, {second}]")));
    let r = reload(&stack).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["applied"], json!(["edge.clusters[inventory]"]), "{}", r.json());
    assert_eq!(inventory_endpoints(&http_client::get(stack.admin, "/clusters").await.json()), ["inventory-1", "inventory-2"]);
    let start = Instant::now();
    while inventory2.calls.load(Ordering::Relaxed) == 0 {
        assert!(start.elapsed() < DEADLINE, "the added instance never got a call");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The rate limiter was carried over: alice's bucket is still empty.
    assert_eq!(keyed(4).await, 429, "an unchanged route keeps its limiter's state");

    // 3. The first instance removed: no call goes there any more, and none fails.
    edit(&stack, |t| t.replace(&format!("endpoints = [{first}, {second}]"), &format!("endpoints = [{second}]")));
    let r = reload(&stack).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(inventory_endpoints(&http_client::get(stack.admin, "/clusters").await.json()), ["inventory-2"]);
    // Calls that started before the reload may still finish on it; then it gets none.
    load.wait_more(20).await;
    let settled = stack.inventory.calls.load(Ordering::Relaxed);
    load.wait_more(100).await;
    assert_eq!(stack.inventory.calls.load(Ordering::Relaxed), settled, "a removed instance gets no new calls");

    // 4. A breaker setting of the payments route: the route's guards are rebuilt with it.
    edit(&stack, |t| {
        t.replace(
            "  { field = \"payment_id\", kind = \"sharded_id\" },\n]\n",
            "  { field = \"payment_id\", kind = \"sharded_id\" },\n]\nbreaker = { failure_rate_threshold = 30 }\n",
        )
    });
    let r = reload(&stack).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["applied"], json!(["edge.routes[payments.v1.Payments]"]), "{}", r.json());
    let payments = route(&http_client::get(stack.admin, "/routes").await.json(), "payments.v1.Payments")["breaker"].clone();
    assert_eq!(payments["failure_rate_threshold"], json!(30.0), "{payments}");

    load.wait_more(50).await;
    let (ok, failed) = load.finish().await;
    assert!(
        failed.is_empty(),
        "{} of {} calls failed during the reloads: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    let _ = stop2.send(());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_forced_open_stays_open_across_a_reload_that_does_not_change_its_route() {
    let stack = Stack::start().await;
    let forced = http_client::send(
        stack.admin,
        http_client::Version::Http1,
        "POST",
        "/breakers/inventory.v1.Inventory?state=open",
        &[],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(forced.status, 200, "{}", String::from_utf8_lossy(&forced.body));
    let state = |stack: &Stack| {
        let admin = stack.admin;
        async move {
            let b = http_client::get(admin, "/breakers").await.json();
            b["breakers"]
                .as_array()
                .and_then(|l| l.iter().find(|b| b["name"] == "inventory.v1.Inventory"))
                .map(|b| b["state"].clone())
                .expect("breaker")
        }
    };
    assert_eq!(state(&stack).await, json!("forced_open"));
    // Another route changes; inventory's does not.
    edit(&stack, |t| {
        t.replace(
            "service = \"grpc.reflection.v1.ServerReflection\"\ncluster = \"payments\"\n",
            "service = \"grpc.reflection.v1.ServerReflection\"\ncluster = \"payments\"\ntimeout = \"3s\"\n",
        )
    });
    let r = reload(&stack).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["applied"], json!(["edge.routes[grpc.reflection.v1.ServerReflection]"]), "{}", r.json());
    assert_eq!(state(&stack).await, json!("forced_open"), "the unchanged route kept its breaker");
    let refused = http_client::get(stack.edge, "/v1/shelves/s/items/i").await;
    assert_eq!(refused.status, 503, "calls still fail fast: {}", String::from_utf8_lossy(&refused.body));

    // A change to the route itself gives it a new breaker, closed.
    edit(&stack, |t| t.replace("cluster = \"inventory\"\ntimeout = \"2s\"\n", "cluster = \"inventory\"\ntimeout = \"2500ms\"\n"));
    assert_eq!(reload(&stack).await.status, 200);
    assert_eq!(state(&stack).await, json!("closed"));
    assert_eq!(http_client::get(stack.edge, "/v1/shelves/s/items/i").await.status, 200);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_changes_nothing_and_says_where() {
    let stack = Stack::start().await;
    let path = stack.config_path();
    let good = std::fs::read_to_string(&path).expect("read");
    let routes_before = http_client::get(stack.admin, "/routes").await.json();
    let line_of = |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).expect("needle") + 1;

    // A syntax error, an unknown key, a route to a cluster that does not exist.
    let syntax = good.replace("threads = 2\n", "threads = = 2\n");
    let unknown = good.replace("timeout = \"2s\"\n", "timeout = \"2s\"\ntimeuot = \"3s\"\n");
    let missing = good.replace("cluster = \"inventory\"\ntimeout", "cluster = \"warehouse\"\ntimeout");
    for (bad, needle, says) in
        [(syntax, "threads = = 2", "threads"), (unknown, "timeuot", "timeuot"), (missing, "cluster = \"warehouse\"", "warehouse")]
    {
        std::fs::write(&path, &bad).expect("write");
        let r = reload(&stack).await;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
        let j = r.json();
        let message = j["message"].as_str().expect("message");
        let place = format!("{}:{}", path.display(), line_of(&bad, needle));
        assert!(message.contains(&place), "the problem is placed at {place}: {message}");
        assert!(message.contains(says), "{message}");
        assert!(message.contains("unchanged"), "{message}");
        assert_eq!(http_client::get(stack.admin, "/routes").await.json(), routes_before, "a refused reload changed nothing");
        assert_eq!(http_client::get(stack.edge, "/v1/shelves/s/items/i").await.status, 200, "calls still served");
    }
    let metrics = String::from_utf8_lossy(&http_client::get(stack.admin, "/metrics").await.body).into_owned();
    assert!(metrics.contains("paymesh_edge_config_reloads_total{outcome=\"error\"} 3"), "{metrics}");
    assert!(metrics.contains("paymesh_edge_config_generation 0"), "{metrics}");

    // The good file again: it applies (nothing changed, so nothing is listed).
    std::fs::write(&path, &good).expect("write");
    let r = reload(&stack).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["applied"], json!([]));
    // A key that needs a restart is reported, and the running value kept.
    std::fs::write(&path, good.replace("threads = 2\n", "threads = 3\n")).expect("write");
    let r = reload(&stack).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["restart_required"], json!(["edge.threads"]));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_reload_on_change_a_changed_file_is_applied_without_asking() {
    let stack = Stack::start().await;
    let metric = |name: &'static str| {
        let admin = stack.admin;
        async move {
            let m = String::from_utf8_lossy(&http_client::get(admin, "/metrics").await.body).into_owned();
            m.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned())).unwrap_or_default()
        }
    };
    let timeout_ms = || {
        let admin = stack.admin;
        async move { route(&http_client::get(admin, "/routes").await.json(), "inventory.v1.Inventory")["timeout_ms"].clone() }
    };
    edit(&stack, |t| t.replace("threads = 2\n", "threads = 2\nreload_on_change = true\n"));
    let r = reload(&stack).await;
    assert_eq!(r.json()["applied"], json!(["edge.reload_on_change"]), "{}", r.json());

    // A changed file is picked up by the watch: no POST, no signal.
    edit(&stack, |t| t.replace("cluster = \"inventory\"\ntimeout = \"2s\"\n", "cluster = \"inventory\"\ntimeout = \"4s\"\n"));
    let start = Instant::now();
    while timeout_ms().await != json!(4000) {
        assert!(start.elapsed() < DEADLINE, "the changed file was never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric("paymesh_edge_config_generation").await, "2");

    // A bad file is refused once, not on every look; the next good one applies.
    edit(&stack, |t| t.replace("timeout = \"4s\"", "timeout = \"later\""));
    let start = Instant::now();
    while metric("paymesh_edge_config_reloads_total{outcome=\"error\"}").await != "1" {
        assert!(start.elapsed() < DEADLINE, "the bad file was never looked at");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    edit(&stack, |t| t.replace("timeout = \"later\"", "timeout = \"5s\""));
    let start = Instant::now();
    while timeout_ms().await != json!(5000) {
        assert!(start.elapsed() < DEADLINE, "the fixed file was never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric("paymesh_edge_config_reloads_total{outcome=\"error\"}").await, "1", "the bad content was tried once");
    stack.stop().await;
}
