//! `paymesh-bench`: drives Authorize load and prints a JSON summary.
//!
//! ```text
//! paymesh-bench --mode grpc-direct --shard-addr 0=127.0.0.1:25061 --shard-addr 1=127.0.0.1:25063 -c 32 -z 10s
//! paymesh-bench --mode grpc-edge --addr 127.0.0.1:8080 -c 32 -z 10s
//! paymesh-bench --mode rest-edge --addr 127.0.0.1:8080 -c 32 -z 10s
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use paymesh_bench::load::{Plan, run};
use paymesh_bench::target;

const USAGE: &str = "usage (ghz-compatible):
  paymesh-bench --call package.Service/Method -d JSON [-n N | -z DUR] [-c C] [--rps R] [--connections K]
                [--protoset FILE] [-m NAME=VALUE ...] [--warmup DUR] [--skipFirst N] HOST:PORT
  paymesh-bench --config bench/ghz/authorize.json [flags that override it] [HOST:PORT]
  paymesh-bench --rest METHOD:/path -d JSON [same flags] HOST:PORT
  -d is templated per request: {{.RequestNumber}} {{.WorkerID}} {{.UUID}} {{newUUID}} {{.TimestampUnix}}
  {{randomInt A B}} {{mod .RequestNumber N}}. Prints ghz's JSON report; a progress line on stderr.
side-by-side modes (used by cargo xtask bench):
  paymesh-bench --mode grpc-direct|grpc-edge|grpc-nginx|rest-edge|flow-rest-edge|reads-edge
    (reads-edge: GetPayment through the edge over 256 payments it creates first)
    (grpc-nginx: sends x-paymesh-shard for a proxy that is not shard-aware; --shards N, default 2)
    (flow-rest-edge: authorize -> capture -> refund over REST as one unit, the seeds' full flow)
    [--addr HOST:PORT] (edge modes)   [--shard-addr N=HOST:PORT ...] (grpc-direct)
    [-c CONCURRENCY=32] [-z DURATION=10s] [--warmup 2s] [--rps N] [--connections 4] [--merchants 1000]
    [--header NAME=VALUE ...] [--run-id ID]";

struct Args {
    mode: String,
    addr: Option<SocketAddr>,
    shard_addrs: Vec<(u32, SocketAddr)>,
    plan: Plan,
    connections: usize,
    merchants: u64,
    /// Shard count, for modes where the client names the shard (`grpc-nginx`).
    shards: u32,
    run_id: String,
    headers: Vec<(String, String)>,
    call: Option<String>,
    rest: Option<String>,
    data: String,
    protosets: Vec<String>,
    target: Option<String>,
    /// `-z` was given (with `-n` alone the run lasts until the calls are done).
    duration_set: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        mode: String::new(),
        addr: None,
        shard_addrs: Vec::new(),
        plan: Plan {
            concurrency: 32,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(10),
            rps: None,
            total: None,
            skip_first: 0,
            progress: false,
        },
        connections: 4,
        merchants: 1_000,
        shards: 2,
        headers: Vec::new(),
        call: None,
        rest: None,
        data: String::from("{}"),
        protosets: Vec::new(),
        target: None,
        duration_set: false,
        run_id: format!("bench-{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)),
    };
    let cli: Vec<String> = std::env::args().skip(1).collect();
    let mut args = Vec::new();
    let mut rest = cli.iter();
    while let Some(f) = rest.next() {
        if let Some(path) =
            f.strip_prefix("--config=").map(str::to_owned).or_else(|| (f == "--config").then(|| rest.next().cloned()).flatten())
        {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("--config {path}: {e}"))?;
            args.splice(0..0, paymesh_bench::ghz_config::to_flags(&text).map_err(|e| format!("--config {path}: {e}"))?);
        } else if f == "--config" {
            return Err("--config needs a file".into());
        } else {
            args.push(f.clone());
        }
    }
    let mut duration_set = false;
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let dur = |v: String| paymesh_core::duration::parse(&v);
        match flag.as_str() {
            "--mode" => a.mode = value()?,
            "--addr" => a.addr = Some(value()?.parse().map_err(|_| "--addr wants HOST:PORT")?),
            "--shard-addr" => {
                let v = value()?;
                let (s, addr) = v.split_once('=').ok_or("--shard-addr wants N=HOST:PORT")?;
                a.shard_addrs.push((s.parse().map_err(|_| "bad shard")?, addr.parse().map_err(|_| "bad address")?));
            }
            "-c" | "--concurrency" => a.plan.concurrency = value()?.parse().map_err(|_| "-c wants a number")?,
            "-z" | "--duration" => {
                a.plan.duration = dur(value()?)?;
                duration_set = true;
            }
            "--skipFirst" => a.plan.skip_first = value()?.parse().map_err(|_| "--skipFirst wants a number")?,
            "--warmup" => a.plan.warmup = dur(value()?)?,
            "--connections" => a.connections = value()?.parse().map_err(|_| "--connections wants a number")?,
            "--merchants" => a.merchants = value()?.parse().map_err(|_| "--merchants wants a number")?,
            "--run-id" => a.run_id = value()?,
            "--shards" => a.shards = value()?.parse().ok().filter(|n| *n > 0).ok_or("--shards wants a positive number")?,
            "--rps" => a.plan.rps = Some(value()?.parse::<f64>().ok().filter(|r| *r > 0.0).ok_or("--rps wants a positive number")?),
            "--header" => {
                let v = value()?;
                let (k, val) = v.split_once('=').ok_or("--header wants NAME=VALUE")?;
                a.headers.push((k.to_ascii_lowercase(), val.to_owned()));
            }
            "--call" => a.call = Some(value()?),
            "--rest" => a.rest = Some(value()?),
            "-d" | "--data" => a.data = value()?,
            "-n" | "--total" => a.plan.total = Some(value()?.parse().map_err(|_| "-n wants a number")?),
            "--protoset" => a.protosets.push(value()?),
            "-m" | "--metadata" => {
                let v = value()?;
                let (k, val) = v.split_once('=').ok_or("-m wants NAME=VALUE")?;
                a.headers.push((k.to_ascii_lowercase(), val.to_owned()));
            }
            "--insecure" | "--plaintext" => {}
            "-O" | "--format" => {
                let f = value()?;
                if f != "json" {
                    return Err(format!("-O {f}: only json is supported"));
                }
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other if !other.starts_with('-') => a.target = Some(other.to_owned()),
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    a.duration_set = duration_set;
    Ok(a)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match bench(args).await {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("paymesh-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// ghz's mode: any method, templated bodies, ghz's report.
async fn ghz(mut a: Args) -> Result<serde_json::Value, String> {
    let addr: SocketAddr = a.target.clone().ok_or("give the target as HOST:PORT")?.parse().map_err(|_| "the target must be HOST:PORT")?;
    if a.plan.total.is_some() && !a.duration_set {
        // -n without -z: run until the calls are done.
        a.plan.duration = Duration::from_secs(24 * 3_600);
        a.plan.warmup = Duration::ZERO;
    }
    a.plan.progress = true;
    let target = match (&a.call, &a.rest) {
        (Some(call), None) => {
            let pool = paymesh_bench::call::pool(&a.protosets)?;
            let (path, input) = paymesh_bench::call::method(&pool, call)?;
            paymesh_bench::call::Target::Grpc { channels: target::channels(addr, a.connections).await?, path, input }
        }
        (None, Some(rest)) => {
            let (method, path) = rest.split_once(':').ok_or("--rest wants METHOD:/path")?;
            let method = method.parse().map_err(|_| format!("--rest: '{method}' is not an HTTP method"))?;
            paymesh_bench::call::Target::Rest {
                client: Box::new(target::http_client()),
                base: format!("http://{addr}"),
                method,
                path: path.to_owned(),
            }
        }
        _ => return Err("give exactly one of --call and --rest".into()),
    };
    let options = serde_json::json!({
        "call": a.call, "rest": a.rest, "host": addr.to_string(), "concurrency": a.plan.concurrency,
        "total": a.plan.total, "duration": a.plan.duration.as_secs_f64(), "rps": a.plan.rps, "connections": a.connections, "data": a.data,
    });
    let (data, headers, concurrency) =
        (std::sync::Arc::new(a.data.clone()), std::sync::Arc::new(a.headers.clone()), a.plan.concurrency.max(1));
    let t = std::sync::Arc::new(target);
    let (_, rec, took) = paymesh_bench::load::run_recording(a.plan, move |seq| {
        let (t, data, headers) = (t.clone(), data.clone(), headers.clone());
        async move { paymesh_bench::call::call(&t, &data, &headers, seq, (seq as usize) % concurrency).await }
    })
    .await;
    let (mut lat, statuses, errors) = rec.into_parts();
    Ok(paymesh_bench::report::ghz(&mut lat, &statuses, &errors, took, options))
}

async fn bench(a: Args) -> Result<serde_json::Value, String> {
    if a.call.is_some() || a.rest.is_some() {
        return ghz(a).await;
    }
    let (run_id, merchants) = (a.run_id.clone(), a.merchants);
    let headers: target::Headers = std::sync::Arc::new(a.headers.clone());
    let summary = match a.mode.as_str() {
        "grpc-direct" => {
            let shards = a.shard_addrs.iter().map(|(s, _)| s + 1).max().ok_or("--shard-addr is required for grpc-direct")?;
            let mut by_shard = vec![Vec::new(); shards as usize];
            for (s, addr) in &a.shard_addrs {
                by_shard[*s as usize].extend(target::channels(*addr, a.connections).await?);
            }
            if by_shard.iter().any(Vec::is_empty) {
                return Err("every shard needs at least one --shard-addr".into());
            }
            run(a.plan, move |seq| {
                let req = target::authorize_request(&run_id, seq, merchants);
                let ch = target::direct_channel(&by_shard, &req.merchant_id, seq).clone();
                let headers = headers.clone();
                async move { target::grpc_authorize(ch, req, &headers).await }
            })
            .await
        }
        "grpc-edge" => {
            let channels = target::channels(a.addr.ok_or("--addr is required")?, a.connections).await?;
            run(a.plan, move |seq| {
                let req = target::authorize_request(&run_id, seq, merchants);
                let (ch, headers) = (channels[(seq as usize) % channels.len()].clone(), headers.clone());
                async move { target::grpc_authorize(ch, req, &headers).await }
            })
            .await
        }
        "reads-edge" => {
            // GetPayment through the edge over 256 payments created first (not timed).
            let channels = target::channels(a.addr.ok_or("--addr is required")?, a.connections).await?;
            let ids = std::sync::Arc::new(target::seed_payments(&channels[0], &run_id, 256, merchants, &headers).await?);
            run(a.plan, move |seq| {
                let id = ids[(seq as usize) % ids.len()].clone();
                let (ch, headers) = (channels[(seq as usize) % channels.len()].clone(), headers.clone());
                async move { target::grpc_get(ch, id, &headers).await }
            })
            .await
        }
        "grpc-nginx" => {
            // A proxy that is not shard-aware: the client names the shard in a header
            // (`x-paymesh-shard`) and the proxy maps it to that shard's upstream group.
            let channels = target::channels(a.addr.ok_or("--addr is required")?, a.connections).await?;
            let shards = a.shards;
            run(a.plan, move |seq| {
                let req = target::authorize_request(&run_id, seq, merchants);
                let shard = paymesh_core::shard::shard_for_merchant(&req.merchant_id, shards).0;
                let mut h = headers.as_ref().clone();
                h.push(("x-paymesh-shard".into(), shard.to_string()));
                let ch = channels[(seq as usize) % channels.len()].clone();
                async move { target::grpc_authorize(ch, req, &std::sync::Arc::new(h)).await }
            })
            .await
        }
        "rest-edge" => {
            let edge = a.addr.ok_or("--addr is required")?;
            let client = target::http_client();
            run(a.plan, move |seq| {
                let (client, headers, req) = (client.clone(), headers.clone(), target::authorize_request(&run_id, seq, merchants));
                async move { target::rest_authorize(client, edge, req, &headers).await }
            })
            .await
        }
        "flow-rest-edge" => {
            let edge = a.addr.ok_or("--addr is required")?;
            let client = target::http_client();
            run(a.plan, move |seq| {
                let (client, headers, req) = (client.clone(), headers.clone(), target::authorize_request(&run_id, seq, merchants));
                async move { target::rest_flow(client, edge, req, &headers).await }
            })
            .await
        }
        other => return Err(format!("unknown mode '{other}'\n{USAGE}")),
    };
    let mut json = summary.to_json();
    json["mode"] = serde_json::json!(a.mode);
    json["requests_per_call"] = serde_json::json!(if a.mode.starts_with("flow-") { 3 } else { 1 });
    json["concurrency"] = serde_json::json!(a.plan.concurrency);
    json["duration_s"] = serde_json::json!(a.plan.duration.as_secs_f64());
    json["rps_target"] = serde_json::json!(a.plan.rps);
    Ok(json)
}
