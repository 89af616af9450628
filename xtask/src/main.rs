//! `cargo xtask <command>`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! - `up [--config FILE] [--release]`: installs what is missing, starts the local stack
//!   (a PostgreSQL server per shard, the payments instances, the edge), prints the
//!   endpoints, restarts any process that dies, and stops everything on Ctrl-C.
//! - `test`: installs what is missing and runs every test: the workspace's tests, then a smoke
//!   run of the stack `up` starts (on free ports) driven by grpcurl, then `chaos --quick`.
//! - `chaos [--quick]`: the stack under a full-flow load while faults hit it, then the money
//!   invariants (see `chaos`).
//! - `reload [--config FILE]`: every process of the running stack reloads the mesh config.
//! - `rollout [--quick]`: every process of the stack restarted one at a time, the edge
//!   upgraded and its config changed live, under a full-flow load that must see no non-OK
//!   answer (see `rollout`); `test` runs the quick one.
//! - `fuzz [OPTIONS]`: the fuzz campaign over the edge's parsers (`paymesh-fuzz`, release
//!   build); `test` runs a short pass of it.
//! - `supervise NAME -- PROGRAM [ARGS]`: one process under `up`'s supervisor (restarted when
//!   it exits, killed if xtask dies), until Ctrl-C; for trying the supervisor, and its tests.

mod bench;
mod bench_edge;
mod bench_profile;
mod certs;
mod chaos;
mod compose_check;
mod install;
mod k8s_check;
mod local_auth;
mod observe;
mod ops_check;
mod probe;
mod reload;
mod rollout;
mod secret;
mod smoke;
mod stack;
mod supervise;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <command>
  up [--config FILE] [--release] [--observe]
                                   start the local stack (Ctrl-C stops it); --observe adds an
                                   OTLP receiver (rotel) and Prometheus scraping everything
  test [--smoke|--ops]             install prerequisites and run every test (--smoke: only the
                                   smoke run of the stack, faults included; --ops: only the
                                   dashboard, MCP server and load-test checks)
  bench [--quick] [--edge|--db]    side-by-side benchmark: direct vs gRPC and REST through the edge,
                                   group commit on vs off (--edge: only the edge-only section, no
                                   database; --db: all but it)
  chaos [--quick]                  faults under a full-flow load, then the money invariants
                                   (--quick: a few minutes, part of `test`)
  reload [--config FILE]           ask every process of the running stack to reload the mesh
                                   config (checked first; a table of what each applied)
  rollout [--quick]                restart every process one at a time, upgrade the edge and
                                   change its config live, under a full-flow load: a table per
                                   step, failing on any non-OK answer (--quick: part of `test`)
  fuzz [--inputs N] [--seed S] [--target NAME]
                                   fuzz the edge's parsers of untrusted input (N mutated
                                   inputs per target, default 1000000; docs/FUZZING.md)
  redrive [--list] [--config FILE] re-drive (or only list) dead-lettered events of the running
                                   stack: dead outbox rows and worker DLQ messages
  token --merchant M [--scope S]... [--ttl 1h] [--subject S]
                                   print a token from the local stack's issuer (for curl,
                                   grpcurl and ghz: authorization: Bearer <token>)
  certs [--config FILE] [--rotate NAME]...
                                   the mesh CA and each process's certificate for [mesh_tls]
                                   (made by up when missing; --rotate re-issues NAME's)
  secret keygen|encrypt|decrypt    a config key, or a {cipher} value for the config (the value
                                   on standard input, the key in PAYMESH_CONFIG_KEY)
  supervise [--log FILE] NAME -- PROGRAM [ARGS]
                                   run one process under up's supervisor until Ctrl-C
                                   (its output appended to FILE if given)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("up") => up(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("chaos") => chaos(&args[1..]),
        Some("rollout") => rollout(&args[1..]),
        Some("reload") => reload(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("redrive") => redrive(&args[1..]),
        Some("token") => local_auth::token_command(&root(), &args[1..]),
        Some("secret") => secret::command(&args[1..]),
        Some("certs") => certs::command(&root(), &args[1..]),
        Some("supervise") => supervise(&args[1..]),
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(format!("unknown command '{other}'\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask's manifest is one level down).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// Where `cargo xtask up` serves paymesh-mcp (MCP over HTTP and load tests on demand).
const OPS_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 9902);

fn up(args: &[String]) -> Result<(), String> {
    let mut config = root().join("mesh-config/paymesh.toml");
    let mut release = false;
    let mut observe = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => config = PathBuf::from(it.next().ok_or("--config needs a file")?),
            "--release" => release = true,
            "--observe" => observe = true,
            other => return Err(format!("unknown option '{other}' for up\n{USAGE}")),
        }
    }
    install::postgres()?;
    install::build_tools()?;
    // The shipped config's edge trusts the local issuer: its key and JWKS must exist first.
    let issuer = local_auth::LocalIssuer::ensure(&root().join(".paymesh/auth"))?;
    let repair_credential = repair_credential(&config, &issuer)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start a runtime: {e}"))?;
    let dir = root().join(".paymesh/up");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let (receiver, mut env) = if observe {
            let r = observe::start_receiver(&install::rotel()?, &dir).await?;
            let env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), r.endpoint.clone())];
            (Some(r), env)
        } else {
            (None, Vec::new())
        };
        env.extend(repair_credential);
        let mut stack = stack::Stack::start_with_env(&config, &dir, release, env).await?;
        if stack.config.edge.is_some() {
            let auth = stack.config.edge.as_ref().is_some_and(|e| e.auth.is_some()).then(|| root().join(".paymesh/auth"));
            if let Err(e) = stack.add_ops(OPS_LISTEN.into(), auth.as_deref()).await {
                let _ = stack.stop().await;
                return Err(e);
            }
        }
        let prometheus = if observe { Some(observe::start_prometheus(&install::prometheus()?, &stack.config, &dir).await?) } else { None };
        stack.print_endpoints();
        if let Some(edge) = &stack.config.edge {
            println!("\nOperate it:");
            println!("  dashboard: http://{}/   (forcing a breaker needs a token with --scope mesh:admin)", edge.admin_listen);
            let (ip, port) = OPS_LISTEN;
            println!("  MCP:       http://{}:{port}/mcp (streamable HTTP), or stdio: see the README", std::net::Ipv4Addr::from(ip));
            println!("  load tests: curl -X POST http://{}:{port}/loadtests -d '{{\"method\":\"authorize\",\"rate\":100,\"duration_s\":10,\"concurrency\":8}}'", std::net::Ipv4Addr::from(ip));
        }
        if stack.config.edge.as_ref().is_some_and(|e| e.auth.is_some()) {
            println!("\nCallers need a token (the edge's [edge.auth]); each acts only for its merchant:");
            println!("  export TOKEN=$(cargo xtask token --merchant merchant-0)");
            println!("  curl -H \"authorization: Bearer $TOKEN\" ...    grpcurl -H \"authorization: Bearer $TOKEN\" ...");
            println!("  (--scope payments:admin reads across merchants; reflection and health need no token)");
        }
        if let (Some(r), Some(p)) = (&receiver, &prometheus) {
            println!("\nObservability:");
            println!("  traces (OTLP at {}): one JSON line per span in {}", r.endpoint, r.spans.display());
            println!(
                "  Prometheus scraping {} targets: http://{}/graph  (e.g. sum by (route, code) (rate(paymesh_edge_requests_total[1m])))",
                p.targets, p.addr
            );
        }
        println!("\nThe stack is up; a process that exits is restarted. Press Ctrl-C to stop it.");
        supervise::stop_requested().await;
        stack.stop().await
    })
}

/// The environment variable `[repair] credential_env` names, set to a token from the local
/// issuer acting for the repair centre's merchant (what the desk presents to the edge).
fn repair_credential(config: &Path, issuer: &local_auth::LocalIssuer) -> Result<Option<(String, String)>, String> {
    let mesh = paymesh_core::config::MeshConfig::load(config).map_err(|e| e.to_string())?;
    let Some(repair) = mesh.repair.as_ref() else { return Ok(None) };
    let (Some(var), Some(_)) = (&repair.credential_env, mesh.edge.as_ref().and_then(|e| e.auth.as_ref())) else { return Ok(None) };
    let token = issuer.mint(
        "repair-desk",
        Some(&repair.merchant_id),
        &["payments:write".into()],
        std::time::Duration::from_secs(30 * 24 * 3600),
    )?;
    Ok(Some((var.clone(), format!("Bearer {token}"))))
}

fn test(args: &[String]) -> Result<(), String> {
    let (smoke_only, ops_only) = match args {
        [] => (false, false),
        [s] if s == "--smoke" => (true, false),
        [s] if s == "--ops" => (false, true),
        [a, ..] => return Err(format!("unknown option '{a}' for test\n{USAGE}")),
    };
    if ops_only {
        install::postgres()?;
        install::build_tools()?;
        let chromium = install::chromium()?;
        install::ops_check_packages()?;
        let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start a runtime: {e}"))?;
        println!("==> ops: the admin API's scope, load tests on demand, the MCP server, the dashboard in Chromium");
        return runtime.block_on(ops_check::run(&chromium));
    }
    install::postgres()?;
    install::build_tools()?;
    install::openssl()?;
    install::openapi_validator()?;
    install::kubernetes_validate()?;
    let grpcurl = install::grpcurl()?;
    let rotel = install::rotel()?;
    let prometheus = install::prometheus()?;
    if !smoke_only {
        println!("==> cargo test --workspace");
        run(Command::new(env!("CARGO")).args(["test", "--workspace", "--locked"]).env("PAYMESH_GRPCURL", &grpcurl).current_dir(root()))?;
    }
    let chromium = install::chromium()?;
    install::ops_check_packages()?;
    println!("==> smoke: the local stack, driven by grpcurl");
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(smoke::run(&grpcurl, &rotel, &prometheus))?;
    println!("==> ops: the admin API's scope, load tests on demand, the MCP server, the dashboard in Chromium");
    runtime.block_on(ops_check::run(&chromium))?;
    if !smoke_only {
        println!("==> chaos --quick: faults under load, then the money invariants");
        runtime.block_on(chaos::run(true))?;
        println!("==> rollout --quick: every process restarted under load, no call may fail");
        runtime.block_on(rollout::run(true))?;
    }
    println!("==> all tests passed");
    Ok(())
}

/// Builds the fuzzer in release and runs it with `args` (failing inputs land in
/// `fuzz/crashes/<target>/`).
fn fuzz(args: &[String]) -> Result<(), String> {
    install::build_tools()?;
    println!("==> cargo build --release -p paymesh-fuzz");
    run(Command::new(env!("CARGO")).args(["build", "--release", "--locked", "-p", "paymesh-fuzz"]).current_dir(root()))?;
    println!("==> paymesh-fuzz {}", args.join(" "));
    run(Command::new(env!("CARGO")).args(["run", "--release", "--locked", "-q", "-p", "paymesh-fuzz", "--"]).args(args).current_dir(root()))
}

fn chaos(args: &[String]) -> Result<(), String> {
    let quick = quick_flag(args, "chaos")?;
    install::postgres()?;
    install::build_tools()?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(chaos::run(quick))
}

/// `[--quick]`, the only option of `command`.
fn quick_flag(args: &[String], command: &str) -> Result<bool, String> {
    match args {
        [] => Ok(false),
        [q] if q == "--quick" => Ok(true),
        _ => Err(format!("unknown options {args:?} for {command}\n{USAGE}")),
    }
}

fn reload(args: &[String]) -> Result<(), String> {
    let config = match args {
        [] => root().join("mesh-config/paymesh.toml"),
        [flag, file] if flag == "--config" => PathBuf::from(file),
        _ => return Err(format!("unknown options {args:?} for reload\n{USAGE}")),
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(reload::run(&config))
}

fn rollout(args: &[String]) -> Result<(), String> {
    let quick = quick_flag(args, "rollout")?;
    install::postgres()?;
    install::build_tools()?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(rollout::run(quick))
}

fn redrive(args: &[String]) -> Result<(), String> {
    let mut config = root().join("mesh-config/paymesh.toml");
    let mut only_list = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--list" => only_list = true,
            "--config" => config = PathBuf::from(it.next().ok_or("--config needs a file")?),
            other => return Err(format!("unknown option '{other}' for redrive\n{USAGE}")),
        }
    }
    let config = paymesh_core::config::MeshConfig::load(&config).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start a runtime: {e}"))?;
    let report = runtime.block_on(async {
        if only_list { paymesh_relay::redrive::list(&config).await } else { paymesh_relay::redrive::redrive(&config).await }
    })?;
    print!("{}{report}", if only_list { "dead-lettered, not re-driven:\n" } else { "re-driven:\n" });
    Ok(())
}

fn bench(args: &[String]) -> Result<(), String> {
    let (mut quick, mut edge_only, mut db_only) = (false, false, false);
    for a in args {
        match a.as_str() {
            "--quick" => quick = true,
            "--edge" => edge_only = true,
            "--db" => db_only = true,
            _ => return Err(format!("unknown option {a} for bench\n{USAGE}")),
        }
    }
    install::build_tools()?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start a runtime: {e}"))?;
    // The edge-only section needs no database: it runs first, and alone with --edge; --db
    // skips it.
    let edge = if db_only { String::new() } else { runtime.block_on(bench_edge::run(quick))? };
    println!("\n{edge}");
    if edge_only {
        return bench::write_result("edge", &edge).map(drop);
    }
    install::postgres()?;
    runtime.block_on(bench::run(quick, &edge))
}

fn supervise(args: &[String]) -> Result<(), String> {
    let (log, args) = match args {
        [flag, file, rest @ ..] if flag == "--log" => (Some(PathBuf::from(file)), rest),
        _ => (None, args),
    };
    let [name, dashes, program, rest @ ..] = args else { return Err(format!("supervise needs NAME -- PROGRAM [ARGS]\n{USAGE}")) };
    if dashes != "--" {
        return Err(format!("supervise needs NAME -- PROGRAM [ARGS]\n{USAGE}"));
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async {
        let mut program = supervise::Program::new(program, rest);
        program.log = log;
        let proc = supervise::Supervised::start(name, Box::new(move || Ok(program.clone())), supervise::to_stdout()).await?;
        println!("==> {name} started (pid {})", proc.pid().unwrap_or(0));
        supervise::stop_requested().await;
        match proc.stop(supervise::DEFAULT_GRACE).await {
            supervise::Stopped::Exited(s) => println!("==> {name} stopped ({s})"),
            other => println!("==> {name} stopped: {other:?}"),
        }
        Ok(())
    })
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd.status().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{cmd:?} failed with {status}")) }
}
