//! The fuzzing loop: inputs made by mutating the committed corpus (bit flips, interesting
//! bytes, insertions and deletions, splices of two corpus entries, the target's dictionary
//! of tokens), each run under `catch_unwind`, with a watchdog thread for hangs.
//!
//! This is a mutation fuzzer without coverage feedback: cargo-fuzz and AFL's instrumentation
//! need nightly Rust or an instrumented rebuild of every dependency (pingora included), which
//! this project's stable, 2-core build cannot afford. The targets make up for it by being
//! structure-aware (inputs split into the fields a request has) and by checking properties,
//! not only the absence of panics.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One fuzz target: something that must take any bytes without panicking or hanging, and
/// whose properties hold (a violated property panics).
pub trait Target: Send + Sync {
    fn name(&self) -> &'static str;
    /// Runs one input; `true` when it got past the first rejection into the deep part (a
    /// template that parsed, a request that was routed and built, ...), so a report can say
    /// how much of the run exercised more than the first check.
    fn run(&self, input: &[u8]) -> bool;
    /// Tokens worth inserting (delimiters, escapes, keywords, edge-case numbers).
    fn dictionary(&self) -> &'static [&'static str];
}

/// A small, fast, seeded generator (xorshift64*): a run is reproduced by its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, b'%', b'/', b'{', b'}', b'"', b'\\', b':', b'*', b'=', b'&', b'\n', b'.'];

/// Applies one to four random mutations to `base`.
pub fn mutate(rng: &mut Rng, base: &[u8], corpus: &[Vec<u8>], dictionary: &[&str]) -> Vec<u8> {
    let mut out = base.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(9) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let at = rng.below(out.len() + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                out.splice(at..at, bytes);
            }
            3 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(16)).min(out.len());
                out.drain(start..end);
            }
            4 if !out.is_empty() => {
                // Repeat a slice (deep nesting, long runs).
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(32)).min(out.len());
                let slice = out[start..end].to_vec();
                let most = if rng.below(16) == 0 { 2000 } else { 4 };
                let times = 1 + rng.below(most);
                let at = rng.below(out.len() + 1);
                out.splice(at..at, slice.iter().copied().cycle().take(slice.len() * times));
            }
            5 if !corpus.is_empty() => {
                // Splice: this input's head with another's tail.
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(out.len() + 1);
                let from = rng.below(other.len() + 1);
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            6 | 7 if !dictionary.is_empty() => {
                let token = dictionary[rng.below(dictionary.len())].as_bytes();
                let at = rng.below(out.len() + 1);
                out.splice(at..at, token.iter().copied());
            }
            _ if !out.is_empty() => {
                // Overwrite a byte with a printable one.
                let i = rng.below(out.len());
                out[i] = b' ' + rng.below(95) as u8;
            }
            _ => out.push(rng.next_u64() as u8),
        }
    }
    out.truncate(64 * 1024);
    out
}

/// The seed inputs of `target` (every file under `dir/<target>`), sorted by name.
pub fn load_corpus(dir: &Path, target: &str) -> Result<Vec<Vec<u8>>, String> {
    let at = dir.join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&at)
        .map_err(|e| format!("cannot read the corpus {}: {e}", at.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let corpus: Vec<Vec<u8>> = files.iter().filter_map(|p| std::fs::read(p).ok()).collect();
    if corpus.is_empty() {
        return Err(format!("the corpus {} is empty", at.display()));
    }
    Ok(corpus)
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub target: &'static str,
    pub inputs: u64,
    /// Inputs that got past the first rejection ([`Target::run`]).
    pub accepted: u64,
    pub panics: u64,
    /// The first panics: the input (saved under the crash directory) and the message.
    pub crashes: Vec<(PathBuf, String)>,
    pub elapsed: Duration,
    /// The slowest input's time.
    pub slowest: Duration,
}

/// How a run goes.
#[derive(Debug, Clone)]
pub struct Settings {
    pub inputs: u64,
    pub seed: u64,
    /// An input running longer is a hang: it is saved and the process aborts.
    pub hang_after: Duration,
    /// Where failing inputs are written.
    pub crash_dir: PathBuf,
}

/// Runs `target` on its corpus as is, then on `settings.inputs` mutated inputs.
pub fn run(target: &dyn Target, corpus: &[Vec<u8>], settings: &Settings) -> Report {
    let mut rng = Rng::new(settings.seed);
    let mut report = Report { target: target.name(), ..Report::default() };
    let watch = Watchdog::start(target.name(), settings.hang_after, settings.crash_dir.clone());
    let last_panic: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let previous_hook = std::panic::take_hook();
    {
        let last = last_panic.clone();
        std::panic::set_hook(Box::new(move |info| {
            let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if let Ok(mut l) = last.lock() {
                *l = Some(format!("{msg}{at}"));
            }
        }));
    }
    let started = Instant::now();
    let total = corpus.len() as u64 + settings.inputs;
    for n in 0..total {
        let input = match usize::try_from(n).ok().and_then(|i| corpus.get(i)) {
            Some(seed) => seed.clone(),
            None => {
                let base = rng.below(corpus.len());
                mutate(&mut rng, &corpus[base], corpus, target.dictionary())
            }
        };
        watch.begin(&input);
        let one = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| target.run(&input)));
        report.slowest = report.slowest.max(one.elapsed());
        watch.end();
        report.inputs += 1;
        report.accepted += u64::from(matches!(outcome, Ok(true)));
        if outcome.is_err() {
            report.panics += 1;
            if report.crashes.len() < 5 {
                let msg = last_panic.lock().ok().and_then(|mut l| l.take()).unwrap_or_default();
                let file = save(&settings.crash_dir, target.name(), "panic", &input);
                report.crashes.push((file, msg));
            }
        }
    }
    report.elapsed = started.elapsed();
    std::panic::set_hook(previous_hook);
    watch.stop();
    report
}

fn save(dir: &Path, target: &str, kind: &str, input: &[u8]) -> PathBuf {
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
    let at = dir.join(target);
    let _ = std::fs::create_dir_all(&at);
    let file = at.join(format!("{kind}-{hash:016x}"));
    let _ = std::fs::write(&file, input);
    file
}

/// A thread that aborts the process when one input runs past the hang limit, after saving it.
struct Watchdog {
    state: Arc<WatchState>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct WatchState {
    /// Incremented at each input's start and end: odd while one runs.
    tick: AtomicU64,
    input: Mutex<Vec<u8>>,
    done: AtomicBool,
}

impl Watchdog {
    fn start(target: &'static str, limit: Duration, crash_dir: PathBuf) -> Self {
        let state = Arc::new(WatchState { tick: AtomicU64::new(0), input: Mutex::new(Vec::new()), done: AtomicBool::new(false) });
        let s = state.clone();
        let thread = std::thread::spawn(move || {
            let (mut seen, mut since) = (0, Instant::now());
            while !s.done.load(Ordering::Relaxed) {
                std::thread::park_timeout(Duration::from_millis(50));
                let tick = s.tick.load(Ordering::Relaxed);
                if tick != seen {
                    (seen, since) = (tick, Instant::now());
                } else if tick % 2 == 1 && since.elapsed() > limit {
                    let input = s.input.lock().map(|i| i.clone()).unwrap_or_default();
                    let file = save(&crash_dir, target, "hang", &input);
                    eprintln!("paymesh-fuzz: {target}: an input ran for more than {limit:?} (a hang); saved as {}", file.display());
                    std::process::abort();
                }
            }
        });
        Self { state, thread: Some(thread) }
    }

    fn begin(&self, input: &[u8]) {
        if let Ok(mut i) = self.state.input.lock() {
            i.clear();
            i.extend_from_slice(input);
        }
        self.state.tick.fetch_add(1, Ordering::Relaxed);
    }

    fn end(&self) {
        self.state.tick.fetch_add(1, Ordering::Relaxed);
    }

    fn stop(mut self) {
        self.state.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Picky;

    impl Target for Picky {
        fn name(&self) -> &'static str {
            "picky"
        }
        fn run(&self, input: &[u8]) -> bool {
            assert!(!input.windows(2).any(|w| w == b"{}"), "an empty pair of braces");
            true
        }
        fn dictionary(&self) -> &'static [&'static str] {
            &["{", "}"]
        }
    }

    /// The loop finds a planted failure and saves its input; a fuzzer that cannot fail
    /// proves nothing.
    #[test]
    fn a_planted_panic_is_found_and_saved() {
        let dir = std::env::temp_dir().join(format!("paymesh-fuzz-engine-{}", std::process::id()));
        let settings = Settings { inputs: 20_000, seed: 7, hang_after: Duration::from_secs(10), crash_dir: dir.clone() };
        let report = run(&Picky, &[b"a{b}c".to_vec()], &settings);
        assert_eq!(report.inputs, 20_001);
        assert!(report.panics > 0, "the planted failure was not found");
        let (file, msg) = &report.crashes[0];
        assert!(msg.contains("an empty pair of braces"), "{msg}");
        let saved = std::fs::read(file).expect("the failing input is saved");
        assert!(saved.windows(2).any(|w| w == b"{}"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_same_seed_makes_the_same_inputs() {
        let corpus = vec![b"seed input".to_vec()];
        let make = |seed| {
            let mut rng = Rng::new(seed);
            (0..50).map(|_| mutate(&mut rng, &corpus[0], &corpus, &["tok"])).collect::<Vec<_>>()
        };
        assert_eq!(make(3), make(3));
        assert_ne!(make(3), make(4));
    }
}
