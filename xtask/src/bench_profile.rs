//! Where the machine's CPU goes while Authorize runs through the edge: `perf record` of
//! every CPU during one run, summed per process (PostgreSQL, payments, edge, load
//! generator), with the hottest code overall and inside PostgreSQL.
//!
//! Needs `perf` (Debian's `linux-perf`, installed when run as root) and permission to record
//! the whole machine; without them the section says why it is missing.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;

/// Records the whole machine for `seconds` while `load` runs; returns a markdown section.
pub async fn during<T>(dir: &Path, seconds: u64, load: impl Future<Output = Result<T, String>>) -> Result<String, String> {
    let perf = match crate::install::perf() {
        Ok(p) => p,
        Err(e) => return Ok(format!("## Where the CPU goes\n\nNot measured: {e}\n")),
    };
    let data = dir.join("perf.data");
    let record = tokio::process::Command::new(&perf)
        .args(["record", "-a", "-F", "499", "-q", "-o"])
        .arg(&data)
        .args(["--", "sleep", &seconds.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output();
    // The load's warm-up passes while perf starts; the recording covers the timed part.
    let (recorded, loaded) = tokio::join!(record, load);
    loaded?;
    let recorded = recorded.map_err(|e| format!("cannot run {}: {e}", perf.display()))?;
    if !recorded.status.success() {
        let why = String::from_utf8_lossy(&recorded.stderr).trim().to_owned();
        return Ok(format!("## Where the CPU goes\n\nNot measured: perf record failed: {why}\n"));
    }
    let report = |args: &[&str]| -> Result<String, String> {
        let out = std::process::Command::new(&perf)
            .args(["report", "--stdio", "-q", "--no-children", "-i"])
            .arg(&data)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let by_process = per_process(&report(&["--sort", "pid", "--percent-limit", "0"])?);
    let hottest = top_lines(&report(&["--sort", "comm,dso,sym"])?, 20);
    let in_postgres = top_lines(&report(&["--comms", "postgres", "--sort", "sym"])?, 20);
    let _ = std::fs::remove_file(&data);

    // The kernel's own threads and other tiny shares say little: the table keeps 0.5 % and up.
    let by_process: Vec<(String, f64)> = by_process.into_iter().filter(|(_, share)| *share >= 0.5).collect();
    let mut out = format!(
        "## Where the CPU goes\n\n`perf record -a -F 499` for {seconds} s of Authorize through the edge (concurrency 32, group commit on); share of all samples on every CPU (idle excluded) by process:\n\n| process | share of samples |\n|---|---:|\n"
    );
    for (name, share) in &by_process {
        out += &format!("| {name} | {share:.1} % |\n");
    }
    out += &format!(
        "\nHottest code (process, object, symbol):\n\n```\n{hottest}```\n\nInside PostgreSQL (its share = 100 %):\n\n```\n{in_postgres}```\n"
    );
    Ok(out)
}

/// Sums `perf report --sort pid` lines ("  12.34%  4321:tokio-runtime-w") per process:
/// each thread's process (its thread-group leader's name) while the stack still runs.
fn per_process(text: &str) -> Vec<(String, f64)> {
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(share), Some(thread)) = (parts.next(), parts.next()) else { continue };
        let Ok(share) = share.trim_end_matches('%').parse::<f64>() else { continue };
        let Some((tid, comm)) = thread.split_once(':') else { continue };
        if tid == "0" {
            // The idle task (swapper) is not work.
            continue;
        }
        // A thread whose process has exited by now: the load generator's, mostly.
        let name = process_of(tid).unwrap_or_else(|| format!("{comm} (exited: the load generator)"));
        *sums.entry(name).or_default() += share;
    }
    let busy: f64 = sums.values().sum();
    let mut v: Vec<(String, f64)> = sums.into_iter().map(|(k, s)| (k, if busy > 0.0 { s * 100.0 / busy } else { 0.0 })).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

/// The name of the process a thread belongs to, from `/proc`.
fn process_of(tid: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let tgid = status.lines().find_map(|l| l.strip_prefix("Tgid:"))?.trim().to_owned();
    Some(std::fs::read_to_string(format!("/proc/{tgid}/comm")).ok()?.trim().to_owned())
}

/// The first `n` sample lines of a report.
fn top_lines(text: &str, n: usize) -> String {
    text.lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .take(n)
        .map(|l| format!("{}\n", l.trim_end()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_threads_per_process_and_leaves_out_idle() {
        // This process's own thread id maps to this process's name; an unknown thread keeps
        // its own name.
        let me = std::process::id();
        let name = std::fs::read_to_string(format!("/proc/{me}/comm")).expect("this process's /proc entry").trim().to_owned();
        let text = format!("    50.00%  0:swapper\n    30.00%  {me}:worker\n    10.00%  999999999:gone\n    10.00%  {me}:other\n");
        let v = per_process(&text);
        assert_eq!(v, vec![(name, 80.0), ("gone (exited: the load generator)".to_owned(), 20.0)]);
    }
}
