//! `paymesh-fuzz [--inputs N] [--seed S] [--target NAME] [--hang-after SECS] [--crashes DIR]`:
//! runs every target (or one) for N mutated inputs each after its corpus, prints a line per
//! target, and exits 1 if any input panicked (a hang aborts the process after saving it).

use std::process::ExitCode;
use std::time::Duration;

use paymesh_fuzz::engine::{Settings, load_corpus, run};

fn main() -> ExitCode {
    match main_inner() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("paymesh-fuzz: {e}");
            ExitCode::from(2)
        }
    }
}

fn main_inner() -> Result<bool, String> {
    let mut settings = Settings {
        inputs: 1_000_000,
        seed: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64),
        hang_after: Duration::from_secs(5),
        crash_dir: paymesh_fuzz::corpus_dir().join("../crashes"),
    };
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--inputs" => settings.inputs = value()?.parse().map_err(|e| format!("--inputs: {e}"))?,
            "--seed" => settings.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--target" => only = Some(value()?),
            "--hang-after" => settings.hang_after = Duration::from_secs(value()?.parse().map_err(|e| format!("--hang-after: {e}"))?),
            "--crashes" => settings.crash_dir = value()?.into(),
            other => return Err(format!("unknown option {other}")),
        }
    }
    let targets = paymesh_fuzz::targets::all()?;
    if let Some(name) = &only
        && !targets.iter().any(|t| t.name() == name)
    {
        let names: Vec<&str> = targets.iter().map(|t| t.name()).collect();
        return Err(format!("no target {name}; targets: {names:?}"));
    }
    println!("seed {} (rerun with --seed {} to reproduce)", settings.seed, settings.seed);
    let mut clean = true;
    let mut total = 0;
    for (i, target) in targets.iter().filter(|t| only.as_deref().is_none_or(|n| n == t.name())).enumerate() {
        let corpus = load_corpus(&paymesh_fuzz::corpus_dir(), target.name())?;
        let per_target = Settings { seed: settings.seed.wrapping_add(i as u64), ..settings.clone() };
        let r = run(target.as_ref(), &corpus, &per_target);
        total += r.inputs;
        println!(
            "{:<11} {:>12} inputs  {:>5.1} % past the first check  {:>8.1} s  {:>9.0} inputs/s  slowest {:>8.3} ms  panics {}",
            r.target,
            r.inputs,
            100.0 * r.accepted as f64 / r.inputs.max(1) as f64,
            r.elapsed.as_secs_f64(),
            r.inputs as f64 / r.elapsed.as_secs_f64().max(1e-9),
            r.slowest.as_secs_f64() * 1000.0,
            r.panics
        );
        for (file, msg) in &r.crashes {
            println!("  panic: {msg}\n    input saved as {}", file.display());
        }
        clean &= r.panics == 0;
    }
    println!("total {total} inputs, {}", if clean { "0 panics, 0 hangs" } else { "PANICS FOUND" });
    Ok(clean)
}
