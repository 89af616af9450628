//! Paymesh's claim that a new service needs only its protos and config: the edge routes,
//! transcodes, balances, health-checks and guards the whole repair centre (the other tests
//! of this crate drive it through a real edge), and its code did not change for it.

/// The last commit before the repair centre's work began.
const BEFORE_THE_REPAIR_CENTRE: &str = "addd7fdb5548d90befeeaee809ad82fcc22ebe37";

#[test]
fn the_edge_has_no_code_for_the_repair_centre() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new("git")
        .args(["diff", "--stat", BEFORE_THE_REPAIR_CENTRE, "--", "edge/"])
        .current_dir(&root)
        .output()
        .expect("git runs (the check reads the repository's history)");
    assert!(
        out.status.success(),
        "git diff failed: {} (a shallow clone lacks {BEFORE_THE_REPAIR_CENTRE}; fetch the history)",
        String::from_utf8_lossy(&out.stderr)
    );
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(diff.trim().is_empty(), "edge/ changed since the repair centre's work began:\n{diff}");
}
