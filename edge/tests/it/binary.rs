//! The `edge` binary: refuses a bad config at start, naming the file and the key.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_edge");

fn run_with(config: &str) -> (Option<i32>, String) {
    let path = std::env::temp_dir().join(format!("paymesh-edge-bin-{}-{}.toml", std::process::id(), config.len()));
    std::fs::write(&path, config).expect("write");
    let out = Command::new(BIN).arg("--config").arg(&path).output().expect("run edge");
    let _ = std::fs::remove_file(&path);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

const BASE: &str = "[[shards]]\nid = 0\ndatabase_url = \"postgres://p@127.0.0.1:1/db\"\n[[payments.instances]]\nname = \"p0\"\nshard = 0\nlisten = \"127.0.0.1:1\"\n";

#[test]
fn bad_configs_fail_at_start_with_the_key() {
    let (code, err) = run_with(BASE);
    assert_eq!(code, Some(2));
    assert!(err.contains("has no [edge] section"), "{err}");

    let (code, err) = run_with(&format!(
        "{BASE}[edge]\n[[edge.clusters]]\nname = \"c\"\npayments_instances = true\n[[edge.routes]]\nservice = \"payments.v1.Payments\"\ncluster = \"d\"\n"
    ));
    assert_eq!(code, Some(2));
    assert!(err.contains("edge.routes[0].cluster: no cluster is named 'd'"), "{err}");

    let (code, err) = run_with(&format!("{BASE}[edge]\ndescriptor_sets = [\"missing.binpb\"]\n"));
    assert_eq!(code, Some(2));
    assert!(err.contains("edge.descriptor_sets: cannot read"), "{err}");
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("paymesh-edge-bin-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write");
    path
}

const EDGE: &str = "[edge]\nlisten = \"LISTEN\"\nadmin_listen = \"ADMIN\"\n[[edge.clusters]]\nname = \"c\"\npayments_instances = true\n[[edge.routes]]\nservice = \"payments.v1.Payments\"\ncluster = \"c\"\nshard_keys = [{ field = \"merchant_id\", kind = \"merchant\" }, { field = \"payment_id\", kind = \"sharded_id\" }]\ntimeout = \"2s\"\n";

#[test]
fn check_prints_every_problem_with_its_line_and_exits_1() {
    let (listen, admin) = (crate::harness::free_addr(), crate::harness::free_addr());
    let good = format!("{BASE}{EDGE}").replace("LISTEN", &listen.to_string()).replace("ADMIN", &admin.to_string());
    let path = write_config("check-good", &good);
    let out = Command::new(BIN).arg("--check").arg("--config").arg(&path).output().expect("run edge");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(": ok (1 clusters, 1 routes, "), "{said}");

    // Two problems in two sections: both reported, each at its line.
    let bad = good.replace("cluster = \"c\"\nshard_keys", "cluster = \"d\"\nshard_keys")
        + "[kafka]\nbootstrap = \"127.0.0.1:9092\"\n[relay]\nbatch_size = 0\n";
    let path = write_config("check-bad", &bad);
    let out = Command::new(BIN).arg("--check").arg("--config").arg(&path).output().expect("run edge");
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = |needle: &str| bad.lines().position(|l| l.contains(needle)).expect("needle") + 1;
    let (cluster, batch) = (line("cluster = \"d\""), line("batch_size = 0"));
    assert!(err.contains(&format!("{}:{cluster}: edge.routes[0].cluster: no cluster is named 'd'", path.display())), "{err}");
    assert!(err.contains(&format!("{}:{batch}: relay.batch_size: 0 is out of range", path.display())), "{err}");
}

/// Kills the child when dropped, so a failed assertion leaves no process behind.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_good_file_and_refuses_a_bad_one() {
    let (listen, admin) = (crate::harness::free_addr(), crate::harness::free_addr());
    let text = format!("{BASE}{EDGE}").replace("LISTEN", &listen.to_string()).replace("ADMIN", &admin.to_string());
    let path = write_config("sighup", &text);
    let mut edge = Running(
        Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start edge"),
    );
    let timeout_of = |admin| async move {
        let r = crate::http_client::try_send(admin, crate::http_client::Version::Http1, "GET", "/routes", &[], bytes::Bytes::new())
            .await
            .ok()?;
        r.json()["grpc"][0]["timeout_ms"].as_u64()
    };
    let wait_for = |want: u64| async move {
        let start = std::time::Instant::now();
        loop {
            if timeout_of(admin).await == Some(want) {
                return;
            }
            assert!(start.elapsed() < crate::harness::DEADLINE, "the route's timeout never became {want} ms");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    wait_for(2000).await;
    let hangup = |pid: u32| {
        let status = Command::new("kill").args(["-HUP", &pid.to_string()]).status().expect("run kill");
        assert!(status.success());
    };

    std::fs::write(&path, text.replace("timeout = \"2s\"", "timeout = \"3s\"")).expect("write");
    hangup(edge.0.id());
    wait_for(3000).await;

    // A bad file: the edge keeps running on what it had, and counts the refusal.
    std::fs::write(&path, text.replace("timeout = \"2s\"", "timeout = \"soon\"")).expect("write");
    hangup(edge.0.id());
    let start = std::time::Instant::now();
    loop {
        let m = crate::http_client::get(admin, "/metrics").await;
        if String::from_utf8_lossy(&m.body).contains("paymesh_edge_config_reloads_total{outcome=\"error\"} 1") {
            break;
        }
        assert!(start.elapsed() < crate::harness::DEADLINE, "the refused reload was never counted");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(timeout_of(admin).await, Some(3000), "a refused reload changed nothing");
    assert!(edge.0.try_wait().expect("wait").is_none(), "SIGHUP must not end the edge");
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_hands_the_listening_socket_over_and_refuses_no_connection() {
    let (listen, admin) = (crate::harness::free_addr(), crate::harness::free_addr());
    let text = format!("{BASE}{EDGE}").replace("LISTEN", &listen.to_string()).replace("ADMIN", &admin.to_string());
    let path = write_config("upgrade", &text);
    let quiet = || std::process::Stdio::null();
    let mut old = Running(Command::new(BIN).arg("--config").arg(&path).stdout(quiet()).stderr(quiet()).spawn().expect("start edge"));
    let start = std::time::Instant::now();
    while crate::http_client::try_send(admin, crate::http_client::Version::Http1, "GET", "/routes", &[], bytes::Bytes::new()).await.is_err()
    {
        assert!(start.elapsed() < crate::harness::DEADLINE, "the edge never answered");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Clients opening a new connection for every request, all the time. Any HTTP answer is
    // an answer (there is no upstream: the edge answers itself); a refused or reset
    // connection is a failure.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (stop, answered, failures) = (stop.clone(), answered.clone(), failures.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = crate::http_client::try_send(
                        listen,
                        crate::http_client::Version::Http1,
                        "GET",
                        "/v1/payments/pay_0_x",
                        &[("connection", "close")],
                        bytes::Bytes::new(),
                    )
                    .await;
                    match r {
                        Ok(_) => {
                            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(e) => failures.lock().expect("lock").push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    let more = |n: usize| {
        let answered = answered.clone();
        async move {
            let target = answered.load(std::sync::atomic::Ordering::Relaxed) + n;
            let start = std::time::Instant::now();
            while answered.load(std::sync::atomic::Ordering::Relaxed) < target {
                assert!(start.elapsed() < crate::harness::DEADLINE, "requests stopped being answered");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    };
    more(50).await;

    // The new edge waits for the socket; SIGQUIT makes the old one hand it over and drain.
    let mut new = Running(
        Command::new(BIN).arg("--upgrade").arg("--config").arg(&path).stdout(quiet()).stderr(quiet()).spawn().expect("start the new edge"),
    );
    let status = Command::new("kill").args(["-QUIT", &old.0.id().to_string()]).status().expect("run kill");
    assert!(status.success());
    let start = std::time::Instant::now();
    let exit = loop {
        if let Some(s) = old.0.try_wait().expect("wait") {
            break s;
        }
        assert!(start.elapsed() < crate::harness::DEADLINE, "the old edge never finished its drain");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "the old edge exits cleanly after the handover: {exit}");
    more(50).await;
    assert!(new.0.try_wait().expect("wait").is_none(), "the new edge runs on");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    let failures = failures.lock().expect("lock").clone();
    assert!(failures.is_empty(), "{} connections failed across the upgrade: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    let _ = std::fs::remove_file(&path);
}
