//! The supervisor on real processes, through `xtask supervise NAME -- PROGRAM`: a child killed
//! with SIGKILL is restarted (new pid, alive) and the restart reported on stdout; a child
//! outlives neither a graceful stop nor a SIGKILL of xtask itself.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use paymesh_testkit::process::{command_name, is_running};

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");
const DEADLINE: Duration = Duration::from_secs(30);

/// `xtask supervise sleeper -- sleep 1000`, its stdout lines on a channel.
fn supervise_a_sleeper() -> (Child, Receiver<String>) {
    supervise(&["sleeper", "--", "sleep", "1000"])
}

/// `xtask supervise ARGS`, its stdout lines on a channel.
fn supervise(args: &[&str]) -> (Child, Receiver<String>) {
    let mut xtask =
        Command::new(XTASK).arg("supervise").args(args).stdin(Stdio::null()).stdout(Stdio::piped()).spawn().expect("start xtask supervise");
    let stdout = xtask.stdout.take().expect("stdout");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (xtask, rx)
}

/// Waits for the next line containing `needle` (others are skipped), within the deadline.
fn line_with(lines: &Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line with {needle:?} from xtask supervise: {e}"),
        }
    }
}

/// The number after `pid ` in a report line.
fn pid_in(line: &str) -> u32 {
    let after = line.split("pid ").nth(1).unwrap_or_else(|| panic!("no pid in {line:?}"));
    after.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no pid in {line:?}"))
}

fn wait_gone(pid: u32, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    while is_running(pid) {
        assert!(Instant::now() < deadline, "{what} (pid {pid}) still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill").args(["-s", signal, &pid.to_string()]).status().expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

#[test]
fn a_killed_child_is_restarted_and_reported() {
    let (mut xtask, lines) = supervise_a_sleeper();
    let first = pid_in(&line_with(&lines, "sleeper started"));
    assert!(is_running(first));

    signal(first, "KILL");
    let exited = line_with(&lines, "exited unexpectedly");
    assert!(exited.contains(&format!("sleeper (pid {first})")) && exited.contains("SIGKILL"), "{exited}");
    assert!(exited.contains("restarting in"), "{exited}");
    let restarted = line_with(&lines, "sleeper restarted");
    let second = pid_in(&restarted);
    assert_ne!(second, first, "{restarted}");
    assert!(is_running(second), "the restarted child {second} is not running");
    assert!(restarted.contains("restart 1"), "{restarted}");

    // A graceful stop takes the child with it, and is not a restart.
    signal(xtask.id(), "TERM");
    let status = xtask.wait().expect("wait for xtask");
    assert!(status.success(), "xtask supervise exited with {status}");
    wait_gone(second, "the child after xtask stopped");
}

#[test]
fn a_child_dies_with_its_supervisor_even_on_sigkill() {
    let (mut xtask, lines) = supervise_a_sleeper();
    let child = pid_in(&line_with(&lines, "sleeper started"));
    // The child asks for its parent-death signal (setpriv's prctl) just before it becomes
    // `sleep`; a parent killed before that moment leaves nothing to deliver it. Kill xtask
    // once the child runs `sleep` (seen failing on a loaded machine without this wait).
    let deadline = Instant::now() + DEADLINE;
    while command_name(child).as_deref() != Some("sleep") {
        assert!(is_running(child) && Instant::now() < deadline, "the child never became sleep: {:?}", command_name(child));
        std::thread::sleep(Duration::from_millis(10));
    }

    signal(xtask.id(), "KILL");
    xtask.wait().expect("reap xtask");
    // Nobody stops the child: only the parent-death signal can.
    wait_gone(child, "the child of a SIGKILLed xtask");
}

/// A process that fails at start says why in the supervisor's report, not only in its log
/// (a CI run showed only "exited unexpectedly (exit status: 1)", eight times).
#[test]
fn a_crash_is_reported_with_the_last_line_of_its_log() {
    let log = std::env::temp_dir().join(format!("paymesh-supervise-crasher-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let script = "echo starting; echo 'cannot listen on 127.0.0.1:9: Address already in use'; exit 1";
    let (mut xtask, lines) = supervise(&["--log", log.to_str().expect("utf-8 path"), "crasher", "--", "sh", "-c", script]);
    let exited = line_with(&lines, "exited unexpectedly");
    assert!(exited.contains("exit status: 1"), "{exited}");
    assert!(exited.contains("its last words: cannot listen on 127.0.0.1:9: Address already in use"), "{exited}");
    signal(xtask.id(), "TERM");
    let status = xtask.wait().expect("wait for xtask");
    assert!(status.success(), "xtask supervise exited with {status}");
    let _ = std::fs::remove_file(&log);
}
