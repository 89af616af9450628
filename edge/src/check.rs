//! `edge --check`: the whole mesh config checked offline, as a reload would check it, plus
//! what only the edge knows (descriptors, shard keys, `google.api.http` bindings).

use std::path::Path;

use paymesh_core::config::MeshConfig;

/// Every problem of the file (`file:line: key: problem`), or a one-line summary of what it
/// would run.
pub fn file(path: &Path) -> Result<String, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{}: cannot read the file: {e}", path.display())])?;
    let env = |name: &str| std::env::var(name).ok();
    let config =
        MeshConfig::parse_all(path, &text, &env).map_err(|problems| problems.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    if config.edge.is_none() {
        return Ok(format!("{}: ok (no [edge] section: nothing for the edge to run)", path.display()));
    }
    let live = crate::prepare(&config).map_err(|e| vec![e.to_string()])?;
    let state = live.load();
    let skipped = state.catalog.skipped.len();
    Ok(format!(
        "{}: ok ({} clusters, {} routes, {} REST bindings{})",
        path.display(),
        state.config.clusters.len(),
        state.config.routes.len(),
        state.catalog.rest.len(),
        if skipped > 0 { format!(", {skipped} skipped: see GET /routes") } else { String::new() }
    ))
}
