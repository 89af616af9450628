//! The `payments` binary: starts from a config file, stops cleanly on SIGTERM, and rejects a
//! bad config naming the file and the key.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::*;

const BIN: &str = env!("CARGO_BIN_EXE_payments");

fn temp_config(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("paymesh-test-{}-{}.toml", std::process::id(), uuid::Uuid::now_v7().simple()));
    std::fs::write(&path, text).expect("write config");
    path
}

#[tokio::test]
async fn runs_from_a_config_file_and_exits_cleanly_on_sigterm() {
    let pg = pg();
    let url = pg.url(&pg.fresh_database("bin").expect("createdb"));
    let port = paymesh_testkit::port::free_port_below_ephemeral().expect("port");
    let text = config_text(&[url]).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let path = temp_config(&text);
    let mut child = Command::new(BIN)
        .args(["--instance", "payments-0", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn payments");

    let start = Instant::now();
    loop {
        let serving = async {
            let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}")).ok()?.connect().await.ok()?;
            let r = HealthClient::new(ch).check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.ok()?;
            Some(r.into_inner().status() == ServingStatus::Serving)
        };
        if serving.await == Some(true) {
            break;
        }
        assert!(child.try_wait().expect("wait").is_none(), "payments exited early");
        assert!(start.elapsed() < DEADLINE, "payments binary never became SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(kill.success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(start.elapsed() < DEADLINE, "payments did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_bad_config_fails_at_start_naming_file_and_key() {
    let path = temp_config("[[shards]]\nid = 0\ndatabase_url = \"postgres://x@127.0.0.1:1/db\"\npool_size = 0\n");
    let out = Command::new(BIN).args(["--instance", "payments-0", "--config"]).arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("shards[0].pool_size: 0 is out of range"), "{err}");
    let _ = std::fs::remove_file(path);

    let out = Command::new(BIN).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--instance is required"));
}
