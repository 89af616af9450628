//! The host side of running PostgreSQL: where Debian put the binaries, whether we are root
//! (PostgreSQL refuses to run as root, so then it runs as the `postgres` system user), and
//! running a short command for its result.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::PgError;

/// The directory with `initdb` and `postgres`: `$PAYMESH_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<major>/bin`.
pub fn find_bindir() -> Result<PathBuf, PgError> {
    if let Some(dir) = std::env::var_os("PAYMESH_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").exists() { Ok(dir) } else { Err(PgError::NotInstalled) };
    }
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for e in entries.flatten() {
            let Some(major) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let bin = e.path().join("bin");
            if bin.join("initdb").exists() && bin.join("postgres").exists() && best.as_ref().is_none_or(|(m, _)| major > *m) {
                best = Some((major, bin));
            }
        }
    }
    best.map(|(_, b)| b).ok_or(PgError::NotInstalled)
}

pub(crate) fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false))
}

pub(crate) fn user_exists(name: &str) -> bool {
    Command::new("id").arg(name).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// `program` run as the `postgres` user when we are root.
pub(crate) fn as_user(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub(crate) fn run(cmd: &mut Command, what: &str) -> Result<(), PgError> {
    let out = cmd.output().map_err(super::io(format!("running {what}")))?;
    if out.status.success() {
        Ok(())
    } else {
        let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if detail.is_empty() {
            detail = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        Err(PgError::Command { what: what.to_owned(), detail })
    }
}

/// Sends `signal` (a name such as `INT`) to `pid`; false if it could not be delivered.
pub(crate) fn kill(signal: &str, pid: u32) -> bool {
    Command::new("kill").args(["-s", signal, &pid.to_string()]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}
