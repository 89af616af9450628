//! The short pass `cargo xtask test` runs: every target over its committed corpus and a few
//! thousand mutations of it, with a fixed seed: no panic, no hang, no broken property.
//! `cargo xtask fuzz` runs the long campaign (docs/FUZZING.md).

use std::time::Duration;

use paymesh_fuzz::engine::{Settings, load_corpus, run};

#[test]
fn every_target_survives_a_short_pass() {
    let crash_dir = std::env::temp_dir().join(format!("paymesh-fuzz-short-{}", std::process::id()));
    let targets = paymesh_fuzz::targets::all().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(targets.len(), 6);
    let mut failures = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        let corpus = load_corpus(&paymesh_fuzz::corpus_dir(), target.name()).unwrap_or_else(|e| panic!("{e}"));
        let settings =
            Settings { inputs: 20_000, seed: 0x5eed + i as u64, hang_after: Duration::from_secs(30), crash_dir: crash_dir.clone() };
        let report = run(target.as_ref(), &corpus, &settings);
        assert_eq!(report.inputs, 20_000 + corpus.len() as u64);
        for (file, msg) in &report.crashes {
            failures.push(format!("{}: {msg} (input {})", target.name(), file.display()));
        }
    }
    assert!(failures.is_empty(), "the fuzz targets panicked:\n{}", failures.join("\n"));
    let _ = std::fs::remove_dir_all(crash_dir);
}
