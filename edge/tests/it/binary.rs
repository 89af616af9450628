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
