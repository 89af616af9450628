//! Whether a process is still running, read from `/proc` (Linux).

/// True while `pid` names a live process. A zombie (exited, not yet reaped by its parent)
/// counts as gone: it runs nothing and holds no port.
pub fn is_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // `pid (comm) state ...`; comm may hold spaces and parentheses, so split at the last ')'.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|state| state != "Z" && state != "X")
}

/// The command name of a running process (`/proc/PID/comm`), e.g. `postgres`.
pub fn command_name(pid: u32) -> Option<String> {
    if !is_running(pid) {
        return None;
    }
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_a_reaped_child_does_not() {
        assert!(is_running(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        assert!(!is_running(pid));
        assert_eq!(command_name(pid), None);
    }

    #[test]
    fn a_zombie_counts_as_gone() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        // Not reaped yet: poll until it has exited and is a zombie.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while is_running(pid) {
            assert!(std::time::Instant::now() < deadline, "`true` never exited");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "still a zombie until reaped");
        child.wait().expect("wait");
    }
}
