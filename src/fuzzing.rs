//! `lazymmu fuzz`, `lazymmu mutants` and `lazymmu bench`.
//!
//! `fuzz` starts one worker process (`lazymmu fuzz-worker`) per job, each running the
//! built-in loop on one implementation and reporting its statistics as JSON lines. A
//! worker never runs the implementation itself: it is the supervisor of disposable
//! executors (lazymmu_engine::executor), so a crash or hang in the C code costs an
//! executor, not the worker. A worker that dies anyway is a rig bug: said so, restarted.
//! Workers and executors die with their parent.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lazymmu_engine::executor::{ExecOptions, Executor, Outcome};
use lazymmu_engine::fuzz::{Config, Fuzzer, Minimizer, ModeSel, Stats};
use lazymmu_engine::out::{load_dir, OutDir};
use lazymmu_engine::Differ;
use lazymmu_harness::{gen, Mode};
use lazymmu_target::Source;

use crate::ImplArgs;

/// A directory name for an implementation's output.
pub fn dir_name(source: &Source) -> String {
    let raw = match source {
        Source::Reference => "reference".to_string(),
        Source::Mutant(p) => format!(
            "mutant-{}",
            p.file_stem().unwrap_or_default().to_string_lossy()
        ),
        Source::KernelTree(p) | Source::File(p) => p.display().to_string(),
    };
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_matches('_')
        .to_string()
}

pub struct FuzzPlan {
    pub sources: Vec<Source>,
    pub out: PathBuf,
    pub seeds: PathBuf,
    pub seed: u64,
    pub jobs: usize,
    pub mode: ModeSel,
    pub time: Option<Duration>,
    pub runs: Option<u64>,
    /// Per-program timeout: a program that runs longer is a hang.
    pub timeout: Duration,
}

/// Loads `source` into a crash-proof executor.
pub fn executor(source: &Source, timeout: Duration) -> Result<Executor, String> {
    let kernel = lazymmu_target::load(source).map_err(|e| e.to_string())?;
    let opts = ExecOptions {
        timeout,
        ..ExecOptions::default()
    };
    Executor::new(Differ::new(kernel), opts).map_err(|e| format!("cannot set up executors: {e}"))
}

/// The triage minimizer, for crashes found while fuzzing.
pub fn crash_minimizer() -> Minimizer {
    Box::new(|exec, p, sig, deadline| {
        lazymmu_triage::minimize::minimize_against(exec, p, sig, None, deadline)
            .map(|m| m.program)
            .unwrap_or_else(|_| p.clone())
    })
}

/// A worker dies with the process that started it (even one killed with SIGKILL).
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

fn mode_arg(m: ModeSel) -> &'static str {
    match m {
        ModeSel::Realistic => "realistic",
        ModeSel::Adversarial => "adversarial",
        ModeSel::Mixed => "mixed",
    }
}

struct Worker {
    child: Child,
    source: usize,
    runs_before: u64,
}

fn spawn_worker(
    plan: &FuzzPlan,
    source: usize,
    id: usize,
    restarts: u64,
    runs: Option<u64>,
    time: Option<Duration>,
    tx: &mpsc::Sender<(usize, String)>,
) -> Result<Worker, String> {
    let out = plan.out.join(dir_name(&plan.sources[source]));
    let mut cmd = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    cmd.arg("fuzz-worker")
        .args(["--worker", &id.to_string()])
        .args([
            "--seed",
            &(plan
                .seed
                .wrapping_add(id as u64)
                .wrapping_add(restarts * 1_000_003))
            .to_string(),
        ])
        .args(["--mode", mode_arg(plan.mode)])
        .args(["--timeout", &plan.timeout.as_millis().to_string()])
        .arg("--out")
        .arg(&out)
        .arg("--seeds")
        .arg(&plan.seeds)
        .args(ImplArgs::args_for(&plan.sources[source]));
    if let Some(r) = runs {
        cmd.args(["--runs", &r.to_string()]);
    }
    if let Some(t) = time {
        cmd.args(["--time", &format!("{:.3}", t.as_secs_f64())]);
    }
    die_with_parent(&mut cmd);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start a worker: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((id, line)).is_err() {
                break;
            }
        }
    });
    Ok(Worker {
        child,
        source,
        runs_before: 0,
    })
}

fn progress_line(elapsed: Duration, stats: &BTreeMap<usize, Stats>, base_runs: u64) -> String {
    let runs: u64 = stats.values().map(|s| s.runs).sum::<u64>() + base_runs;
    let features: u64 = stats.values().map(|s| s.features).max().unwrap_or(0);
    let corpus: u64 = stats.values().map(|s| s.corpus).sum();
    let mut sigs: BTreeMap<&String, u64> = BTreeMap::new();
    let mut hazards = 0;
    for s in stats.values() {
        for (k, n) in &s.findings {
            *sigs.entry(k).or_default() += n;
        }
        hazards += s.hazards.len();
    }
    let secs = elapsed.as_secs_f64().max(0.001);
    format!(
        "[{:>6.1}s] runs {runs} ({:.0}/s)  features {features}  corpus {corpus}  findings {}  hazards {hazards}",
        secs,
        runs as f64 / secs,
        sigs.len()
    )
}

/// Runs the supervisor; returns the distinct finding signatures per implementation.
pub fn fuzz(plan: &FuzzPlan) -> Result<BTreeMap<String, BTreeMap<String, u64>>, String> {
    if plan.sources.is_empty() {
        return Err("no implementation to fuzz".into());
    }
    // Compile everything first: errors are reported before any worker starts.
    let mut names = vec![];
    for s in &plan.sources {
        let built = lazymmu_target::loader::build(&s.resolve().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        names.push(built.name.clone());
        eprintln!(
            "lazymmu: fuzzing {} (generation {}), output in {}",
            built.name,
            built.generation.name(),
            plan.out.join(dir_name(s)).display()
        );
    }
    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    let jobs = plan.jobs.max(1);
    let runs_each = plan.runs.map(|r| r.div_ceil(jobs as u64));
    let mut workers: BTreeMap<usize, Worker> = BTreeMap::new();
    for id in 0..jobs.max(plan.sources.len()) {
        workers.insert(
            id,
            spawn_worker(
                plan,
                id % plan.sources.len(),
                id,
                0,
                runs_each,
                plan.time,
                &tx,
            )?,
        );
    }
    let mut stats: BTreeMap<usize, Stats> = BTreeMap::new();
    let mut finished: BTreeMap<usize, Stats> = BTreeMap::new();
    let mut crashes: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut restarts = 0u64;
    let tty = std::io::stderr().is_terminal();
    let mut last_print = Instant::now();
    while !workers.is_empty() {
        while let Ok((id, line)) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Ok(s) = serde_json::from_str::<Stats>(&line) {
                stats.insert(id, s);
            }
            if last_print.elapsed() > Duration::from_millis(500) {
                break;
            }
        }
        // Reap workers that are done or died.
        let ids: Vec<usize> = workers.keys().copied().collect();
        for id in ids {
            let w = workers.get_mut(&id).unwrap();
            let Ok(Some(status)) = w.child.try_wait() else {
                continue;
            };
            let w = workers.remove(&id).unwrap();
            // Drain what it printed last.
            while let Ok((i, line)) = rx.try_recv() {
                if let Ok(s) = serde_json::from_str::<Stats>(&line) {
                    stats.insert(i, s);
                }
            }
            let mut s = stats.remove(&id).unwrap_or_default();
            s.runs += w.runs_before;
            if status.success() {
                finished.insert(id * 1000 + restarts as usize, s);
                continue;
            }
            let name = &names[w.source];
            // The implementation runs in the worker's executors, never in the worker:
            // a dead worker is the rig's own failure.
            eprintln!("\nlazymmu: rig bug: the worker for {name} died ({status}); restarting it");
            *crashes
                .entry(name.clone())
                .or_default()
                .entry("lazymmu-rig-bug-worker".into())
                .or_default() += 1;
            finished.insert(id * 1000 + restarts as usize, s.clone());
            restarts += 1;
            let left_time = plan.time.map(|t| t.saturating_sub(start.elapsed()));
            let left_runs = runs_each.map(|r| r.saturating_sub(s.runs));
            let more = left_time.is_none_or(|t| t > Duration::from_millis(100))
                && left_runs.is_none_or(|r| r > 0);
            if more && restarts < 1000 {
                let nw = spawn_worker(plan, w.source, id, restarts, left_runs, left_time, &tx)?;
                workers.insert(id, nw);
            }
        }
        if last_print.elapsed() >= Duration::from_millis(500) || workers.is_empty() {
            last_print = Instant::now();
            let all: BTreeMap<usize, Stats> = stats
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .chain(finished.iter().map(|(k, v)| (k + 1_000_000, v.clone())))
                .collect();
            let line = progress_line(start.elapsed(), &all, 0);
            if tty {
                eprint!("\r{line}\x1b[K");
            } else {
                eprintln!("{line}");
            }
            let _ = std::io::stderr().flush();
        }
    }
    if tty {
        eprintln!();
    }
    // Per implementation: every signature seen, with counts.
    let mut result: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut hazards: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut total_runs = 0;
    for (k, s) in &finished {
        let src = (k % 1000) % plan.sources.len();
        let name = names[src].clone();
        total_runs += s.runs;
        for (sig, n) in &s.findings {
            *result
                .entry(name.clone())
                .or_default()
                .entry(sig.clone())
                .or_default() += n;
        }
        for (h, n) in &s.hazards {
            *hazards
                .entry(name.clone())
                .or_default()
                .entry(h.clone())
                .or_default() += n;
        }
    }
    for (name, sigs) in crashes {
        for (sig, n) in sigs {
            *result
                .entry(name.clone())
                .or_default()
                .entry(sig)
                .or_default() += n;
        }
    }
    println!(
        "{} programs in {:.1}s",
        total_runs,
        start.elapsed().as_secs_f64()
    );
    for (i, name) in names.iter().enumerate() {
        let dir = plan.out.join(dir_name(&plan.sources[i]));
        let sigs = result.get(name).cloned().unwrap_or_default();
        let (bugs, other): (Vec<_>, Vec<_>) = sigs
            .iter()
            .partition(|(s, _)| !s.contains("-perf-") && !s.contains("-hardening-"));
        println!(
            "\n{name}: {} bug signature(s), {} performance/hardening signature(s)",
            bugs.len(),
            other.len()
        );
        for (sig, n) in bugs.iter().chain(other.iter()) {
            println!(
                "  {sig:<48} x{n:<6} {}",
                dir.join("findings").join(sig).join("report.txt").display()
            );
        }
        if let Some(h) = hazards.get(name) {
            println!(
                "  visibility hazards (rule 9, listed apart; see {}):",
                dir.join("hazards").display()
            );
            for (k, n) in h {
                println!("    {k:<46} x{n}");
            }
        }
    }
    Ok(result)
}

pub struct WorkerArgs {
    pub timeout: Duration,
    pub worker: usize,
    pub seed: u64,
    pub mode: ModeSel,
    pub out: PathBuf,
    pub seeds: PathBuf,
    pub runs: Option<u64>,
    pub time: Option<Duration>,
    pub kill: bool,
}

fn seed_programs(dir: &Path, mode: ModeSel) -> Vec<lazymmu_harness::Program> {
    load_dir(dir)
        .into_iter()
        .map(|(_, mut p)| {
            if mode == ModeSel::Adversarial {
                p.config.mode = Mode::Adversarial;
            }
            p
        })
        .collect()
}

/// One worker: fuzzes one implementation, prints its statistics as JSON lines.
pub fn worker(source: &Source, a: &WorkerArgs) -> Result<Stats, String> {
    let exec = executor(source, a.timeout)?;
    let out = OutDir::new(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let kill_against = if a.kill {
        Some(executor(&Source::Reference, a.timeout)?)
    } else {
        None
    };
    let cfg = Config {
        seed: a.seed,
        mode: a.mode,
        runs: a.runs,
        time: a.time,
        seeds: seed_programs(&a.seeds, a.mode),
        out: Some(out),
        worker: a.worker,
        kill_against,
        minimizer: Some(crash_minimizer()),
    };
    let mut f = Fuzzer::new(exec, cfg);
    let stdout = std::io::stdout();
    let stats = f.run(Duration::from_millis(400), |s| {
        let mut lock = stdout.lock();
        let _ = writeln!(lock, "{}", serde_json::to_string(s).unwrap_or_default());
        let _ = lock.flush();
    });
    Ok(stats)
}

pub struct MutantRow {
    pub name: String,
    pub class: String,
    pub killed: Option<(f64, u64, String)>,
}

/// Fuzzes every mutant against the reference with a time budget each.
pub fn mutants(
    only: &[String],
    budget: Duration,
    jobs: usize,
    seed: u64,
    seeds: &Path,
    out: &Path,
) -> Result<Vec<MutantRow>, String> {
    let paths = lazymmu_target::sources::mutants_matching(only);
    // Compile all first (and the reference), so the budgets are spent fuzzing.
    let mut classes = vec![];
    for p in &paths {
        let b = lazymmu_target::loader::build(
            &Source::Mutant(p.clone())
                .resolve()
                .map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        classes.push(b.bug_class.unwrap_or_default());
    }
    lazymmu_target::loader::build(&Source::Reference.resolve().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let mut rows: Vec<Option<MutantRow>> = (0..paths.len()).map(|_| None).collect();
    let mut next = 0;
    let mut running: Vec<(usize, Child, Instant, mpsc::Receiver<String>)> = vec![];
    while next < paths.len() || !running.is_empty() {
        while running.len() < jobs.max(1) && next < paths.len() {
            let i = next;
            next += 1;
            let wout = out.join(dir_name(&Source::Mutant(paths[i].clone())));
            let _ = std::fs::remove_dir_all(&wout);
            let mut child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
                .arg("fuzz-worker")
                .args(["--kill", "--mode", "mixed", "--seed", &seed.to_string()])
                .args(["--time", &format!("{}", budget.as_secs_f64())])
                .arg("--out")
                .arg(&wout)
                .arg("--seeds")
                .arg(seeds)
                .arg("--mutant")
                .arg(&paths[i])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| e.to_string())?;
            let (tx, rx) = mpsc::channel();
            let stdout = child.stdout.take().expect("piped");
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            running.push((i, child, Instant::now(), rx));
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut k = 0;
        while k < running.len() {
            let done = running[k].1.try_wait().ok().flatten();
            let Some(status) = done else {
                k += 1;
                continue;
            };
            let (i, _, _, rx) = running.remove(k);
            let last: Option<Stats> = rx
                .try_iter()
                .filter_map(|l| serde_json::from_str(&l).ok())
                .last();
            let name = paths[i]
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let killed = if !status.success() {
                // Crashes are caught in executors: a dead worker is the rig's failure.
                eprintln!("lazymmu: rig bug: the worker for {name} died ({status})");
                None
            } else {
                last.and_then(|s| s.killed).map(|k| {
                    // The program that told the mutant from the reference.
                    let wout = out.join(dir_name(&Source::Mutant(paths[i].clone())));
                    let header = format!(
                        "# killed {name}: {}\n# implementation: mutant:{name}\n",
                        k.signature
                    );
                    let _ = lazymmu_engine::out::write_atomic(
                        &wout.join("kill.ops"),
                        format!("{header}{}", k.program).as_bytes(),
                    );
                    (k.elapsed_ms as f64 / 1000.0, k.runs, k.signature)
                })
            };
            eprintln!(
                "lazymmu: {name}: {}",
                match &killed {
                    Some((t, r, sig)) => format!("killed in {t:.2}s, {r} programs: {sig}"),
                    None => "survived".into(),
                }
            );
            rows[i] = Some(MutantRow {
                name,
                class: classes[i].clone(),
                killed,
            });
        }
    }
    Ok(rows.into_iter().flatten().collect())
}

/// Throughput on one core: the target alone, the oracle alone, and the full check.
pub fn bench(programs: usize, seed: u64) -> Result<(), String> {
    let mut bytes_rng = lazymmu_engine::rng::Rng::new(seed);
    let corpus: Vec<_> = (0..programs)
        .map(|_| {
            let n = 64 + bytes_rng.below(1024);
            gen::from_bytes(&bytes_rng.bytes(n), Mode::Realistic)
        })
        .collect();
    let steps: usize = corpus.iter().map(|p| p.steps.len()).sum();
    let mut kernel = lazymmu_target::load(&Source::Reference).map_err(|e| e.to_string())?;
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    // Warm up caches and the allocator.
    for p in corpus.iter().take(200) {
        lazymmu_harness::run(p, &mut kernel);
    }
    let t_target = time(&mut || {
        for p in &corpus {
            std::hint::black_box(lazymmu_harness::run(p, &mut kernel));
        }
    });
    let t_oracle = time(&mut || {
        for p in &corpus {
            std::hint::black_box(lazymmu_oracle::run(p));
        }
    });
    let mut differ = Differ::new(kernel);
    let mut findings = 0;
    let t_full = time(&mut || {
        for p in &corpus {
            findings += differ.verdict(p).bugs().count();
        }
    });
    // The checkers alone, on traces computed beforehand (a subset: traces are large).
    let sub = programs.min(2_000);
    let traces: Vec<_> = corpus[..sub]
        .iter()
        .map(|p| {
            (
                lazymmu_harness::run(p, &mut differ.kernel),
                lazymmu_oracle::run(p),
            )
        })
        .collect();
    let t_check = time(&mut || {
        for (p, (t, o)) in corpus[..sub].iter().zip(&traces) {
            std::hint::black_box(lazymmu_harness::check::check(p, t, o, differ.marker));
        }
    }) * programs as f64
        / sub as f64;
    let rate = |t: f64| programs as f64 / t;
    println!("{programs} realistic programs ({steps} steps, seed {seed}), one core:");
    println!(
        "  target alone (reference C + shim + machine): {:>9.0} programs/s",
        rate(t_target)
    );
    println!(
        "  oracle alone:                                {:>9.0} programs/s",
        rate(t_oracle)
    );
    println!(
        "  checkers alone (on precomputed traces):      {:>9.0} programs/s",
        rate(t_check)
    );
    println!(
        "  full check (target + oracle + checkers):     {:>9.0} programs/s",
        rate(t_full)
    );
    println!(
        "  full check costs {:.2}x the target alone ({findings} bug findings)",
        t_full / t_target
    );
    Ok(())
}

/// `corpus merge`: the union of corpora (any engine's), reduced to a set that keeps every
/// feature, written as `.ops` files into `out`. `corpus prune`: the same in place.
pub fn corpus(
    source: &Source,
    inputs: &[PathBuf],
    out: &Path,
    prune_in_place: bool,
) -> Result<(), String> {
    let mut d = executor(source, ExecOptions::default().timeout)?;
    let all = lazymmu_engine::corpus::read_inputs(inputs);
    let programs: Vec<_> = all.iter().map(|(_, p)| p.clone()).collect();
    let (kept, features) = lazymmu_engine::corpus::minimize_set(&mut d, &programs);
    let kept_paths: std::collections::BTreeSet<&PathBuf> =
        kept.iter().map(|&i| &all[i].0).collect();
    let dest = if prune_in_place {
        // In place: the inputs that add nothing go, the rest stay as they are.
        for (path, _) in &all {
            if !kept_paths.contains(path) {
                std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        out.to_path_buf()
    } else {
        let dir = OutDir::new(out).map_err(|e| format!("{}: {e}", out.display()))?;
        for &i in &kept {
            dir.save_corpus(&programs[i]).map_err(|e| e.to_string())?;
        }
        dir.corpus_dir()
    };
    println!(
        "{} input(s), {} distinct program(s), {} feature(s): kept {} in {}",
        inputs
            .iter()
            .map(|i| i.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
        all.len(),
        features,
        kept.len(),
        dest.display()
    );
    Ok(())
}

/// How long one engine took to kill one mutant.
fn kill_time(
    engine: &str,
    mutant: &Path,
    mode: ModeSel,
    budget: Duration,
    seed: u64,
) -> Result<Option<(f64, u64)>, String> {
    let timeout = ExecOptions::default().timeout;
    let mut target = executor(&Source::Mutant(mutant.to_path_buf()), timeout)?;
    let mut reference = executor(&Source::Reference, timeout)?;
    match engine {
        "builtin" => {
            let cfg = Config {
                seed,
                mode,
                runs: None,
                time: Some(budget),
                seeds: vec![],
                out: None,
                worker: 0,
                kill_against: Some(reference),
                minimizer: None,
            };
            let s = Fuzzer::new(target, cfg).run(Duration::from_secs(3600), |_| {});
            Ok(s.killed.map(|k| (k.elapsed_ms as f64 / 1000.0, k.runs)))
        }
        _ => {
            // Plain random generation: fresh programs from random bytes, no feedback.
            let mut rng = lazymmu_engine::rng::Rng::new(seed);
            let t0 = Instant::now();
            let deadline = t0 + budget;
            let mut runs = 0;
            while Instant::now() < deadline {
                let batch: Vec<_> = (0..32)
                    .map(|_| {
                        let m = match mode {
                            ModeSel::Realistic => Mode::Realistic,
                            ModeSel::Adversarial => Mode::Adversarial,
                            ModeSel::Mixed if rng.chance(1, 2) => Mode::Realistic,
                            ModeSel::Mixed => Mode::Adversarial,
                        };
                        let n = 64 + rng.below(1024);
                        gen::from_bytes(&rng.bytes(n), m)
                    })
                    .collect();
                let outcomes = target.run_batch(&batch, false, Some(deadline));
                for (p, o) in batch.iter().zip(outcomes) {
                    runs += 1;
                    if !o.verdict(p).findings.is_empty() && reference.verdict(p).findings.is_empty()
                    {
                        return Ok(Some((t0.elapsed().as_secs_f64(), runs)));
                    }
                }
            }
            Ok(None)
        }
    }
}

/// Time to kill each mutant with the built-in engine, plain random generation and (when
/// asked) libFuzzer, with the same budget, from no seeds.
pub fn bench_engines(
    budget: Duration,
    only: &[String],
    seed: u64,
    libfuzzer: bool,
) -> Result<(), String> {
    let paths = lazymmu_target::sources::mutants_matching(only);
    let mut engines = vec!["builtin", "random"];
    if libfuzzer {
        engines.push("libfuzzer");
    }
    println!(
        "time to kill from no seeds, budget {}s; '>' = survived (counted as the budget)",
        budget.as_secs_f64()
    );
    print!("{:<30}", "mutant");
    for e in &engines {
        print!(" {e:>16}");
    }
    println!();
    let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for p in &paths {
        let name = p
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let class = std::fs::read_to_string(p).unwrap_or_default();
        // Hardening mutants only show on contract-breaking programs.
        let hardening = class.contains("hardening")
            || ["11-", "14-", "15-", "18-"]
                .iter()
                .any(|k| name.starts_with(k));
        let mode = if hardening {
            ModeSel::Mixed
        } else {
            ModeSel::Realistic
        };
        print!("{name:<30}");
        for e in &engines {
            let r = if *e == "libfuzzer" {
                if hardening {
                    print!(" {:>16}", "n/a");
                    continue;
                }
                libfuzzer_kill(&name, budget)?
            } else {
                kill_time(e, p, mode, budget, seed)?
            };
            let t = r.map_or(budget.as_secs_f64(), |x| x.0);
            times.entry(e).or_default().push(t);
            match r {
                Some((t, runs)) => print!(
                    " {:>9.3}s {:>5}",
                    t,
                    if runs > 0 {
                        format!("{runs}")
                    } else {
                        "-".into()
                    }
                ),
                None => print!(" {:>16}", format!(">{:.0}s", budget.as_secs_f64())),
            }
            let _ = std::io::stdout().flush();
        }
        println!();
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let mb = median(times.get_mut("builtin").unwrap());
    let mr = median(times.get_mut("random").unwrap());
    print!("median time to kill: builtin {mb:.3}s, random {mr:.3}s");
    if let Some(l) = times.get_mut("libfuzzer") {
        let ml = median(l);
        print!(
            ", libfuzzer {ml:.3}s (builtin is {:.1}x faster than libfuzzer)",
            ml / mb.max(1e-3)
        );
    }
    println!("; builtin is {:.1}x faster than random", mr / mb.max(1e-3));
    Ok(())
}

/// libFuzzer's time to kill through fuzz/kill-mutant.sh (cargo fuzz, the mutant linked in).
fn libfuzzer_kill(mutant: &str, budget: Duration) -> Result<Option<(f64, u64)>, String> {
    let script = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/kill-mutant.sh"));
    let out = Command::new(&script)
        .args([mutant, "auto", &format!("{}", budget.as_secs())])
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let t = text
        .split("killed in ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|x| x.parse::<f64>().ok());
    Ok(t.map(|t| (t, 0)))
}

/// A crasher: the reference with a NULL store in its routing lookup (`range_of`, which
/// every routed call goes through) when a hash of the call's number in the program and
/// its PTE is 0 mod `one_in`: deterministic per program, and spread over many calls so
/// that the share of crashing programs follows `one_in` smoothly. Written to `dir`,
/// compiled like any `--impl FILE`.
fn crasher(dir: &Path, one_in: u64) -> Result<Source, String> {
    let anchor = "static struct ipte_range *range_of(pte_t *ptep, unsigned int *idx)\n{\n\tstruct ipte_range *range = this_cpu_read(ipte_range);\n";
    let src = lazymmu_target::sources::REFERENCE_C;
    if !src.contains(anchor) {
        return Err("bench crashes: the reference's range_of() changed shape".into());
    }
    let planted = format!(
        "{anchor}\tstatic unsigned long calls;\n\n\tif ((((++calls) * 2654435761UL) ^ (((unsigned long)ptep & 0x7ff) * 40503UL)) % {one_in}UL == 0)\n\t\t*(volatile int *)0 = 1;\n"
    );
    let path = dir.join(format!("crash-1-in-{one_in}/lazy_mmu.c"));
    std::fs::create_dir_all(path.parent().unwrap()).map_err(|e| e.to_string())?;
    std::fs::write(&path, src.replacen(anchor, &planted, 1)).map_err(|e| e.to_string())?;
    Ok(Source::File(path))
}

/// One campaign as `fuzz` runs it (seeds, realistic, executors, crash minimization), for
/// `secs`; its statistics.
fn campaign(
    source: &Source,
    secs: f64,
    seed: u64,
    seeds: &Path,
    out: Option<&Path>,
) -> Result<Stats, String> {
    let exec = executor(source, ExecOptions::default().timeout)?;
    let cfg = Config {
        seed,
        mode: ModeSel::Realistic,
        runs: None,
        time: Some(Duration::from_secs_f64(secs)),
        seeds: seed_programs(seeds, ModeSel::Realistic),
        out: out
            .map(|o| OutDir::new(o).map_err(|e| format!("{}: {e}", o.display())))
            .transpose()?,
        worker: 0,
        kill_against: None,
        minimizer: Some(crash_minimizer()),
    };
    Ok(Fuzzer::new(exec, cfg).run(Duration::from_secs(3600), |_| {}))
}

/// `bench crashes`: campaign throughput on implementations that crash on about 0.1 %,
/// 1 % and 10 % of realistic programs, as a ratio of the same campaign on the
/// reference; the time from the first crash to its minimized report on disk; and a
/// triage of 1,000 crash inputs.
pub fn bench_crashes(secs: f64, seed: u64, seeds: &Path) -> Result<(), String> {
    let work = std::env::temp_dir().join(format!("lazymmu-bench-crashes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    // Calibrate: the crash rate of each modulus on the same realistic programs.
    let sample: Vec<_> = {
        let mut rng = lazymmu_engine::rng::Rng::new(seed);
        (0..2000)
            .map(|_| {
                let n = 64 + rng.below(1024);
                gen::from_bytes(&rng.bytes(n), Mode::Realistic)
            })
            .collect()
    };
    let mut rates = vec![];
    for one_in in [4u64, 16, 64, 256, 1024, 4096, 16384, 65536] {
        let src = crasher(&work, one_in)?;
        let mut e = executor(&src, ExecOptions::default().timeout)?;
        let deaths = e
            .run_batch(&sample, false, None)
            .iter()
            .filter(|o| matches!(o, Outcome::Died(..)))
            .count();
        rates.push((one_in, deaths as f64 / sample.len() as f64, src));
    }
    let reference = campaign(&Source::Reference, secs, seed, seeds, None)?;
    let ref_rate = reference.runs as f64 / (reference.elapsed_ms as f64 / 1000.0);
    println!(
        "campaign throughput ({secs}s each, realistic, seed corpus, executors, crash minimization on):"
    );
    println!("  {:<34} {:>9.0} programs/s  (1.00)", "reference", ref_rate);
    let mut report_times = vec![];
    for target in [0.001, 0.01, 0.1] {
        let (mut one_in, _, _) = rates
            .iter()
            .min_by(|a, b| (a.1 - target).abs().total_cmp(&(b.1 - target).abs()))
            .expect("candidates");
        // Campaigns mutate their corpus, so their crash rate is not the generator's:
        // rescale the modulus once if the first campaign missed the target by far.
        for attempt in 0..3 {
            let src = crasher(&work, one_in)?;
            let out = work.join(format!("out-{one_in}"));
            let s = campaign(&src, secs, seed, seeds, Some(&out))?;
            let r = s.runs as f64 / (s.elapsed_ms as f64 / 1000.0);
            let crash_rate = s.deaths as f64 / s.runs.max(1) as f64;
            let off = crash_rate.max(1e-6) / target;
            if attempt < 2 && !(0.6..=1.6).contains(&off) {
                one_in = ((one_in as f64 * off).round() as u64).max(1);
                continue;
            }
            println!(
                "  {:<34} {:>9.0} programs/s  ({:.2})  {} deaths, {} executors",
                format!("crashes on {:.2}% (1 in {one_in})", crash_rate * 100.0),
                r,
                r / ref_rate,
                s.deaths,
                s.executors
            );
            if let (Some(a), Some(b)) = (s.first_crash_ms, s.first_crash_report_ms) {
                report_times.push((b - a) as f64 / 1000.0);
            }
            break;
        }
    }
    if !report_times.is_empty() {
        println!(
            "first crash to its minimized, symbolized report on disk: {}",
            report_times
                .iter()
                .map(|t| format!("{t:.2}s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // Triage of 1,000 crash inputs, as a libFuzzer or AFL++ crash directory holds them.
    let (_, _, src) = rates
        .iter()
        .min_by(|a, b| (a.1 - 0.1).abs().total_cmp(&(b.1 - 0.1).abs()))
        .expect("candidates");
    let mut e = executor(src, ExecOptions::default().timeout)?;
    let dir = work.join("crashes");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut rng = lazymmu_engine::rng::Rng::new(seed ^ 0xc4a5);
    let mut kept = 0;
    while kept < 1000 {
        let batch: Vec<_> = (0..256)
            .map(|_| {
                let n = 64 + rng.below(1024);
                gen::from_bytes(&rng.bytes(n), Mode::Realistic)
            })
            .collect();
        for (p, o) in batch.iter().zip(e.run_batch(&batch, false, None)) {
            if matches!(o, Outcome::Died(..)) && kept < 1000 {
                let text = lazymmu_harness::text::to_text(p);
                std::fs::write(dir.join(format!("crash-{kept:04}.ops")), text)
                    .map_err(|e| e.to_string())?;
                kept += 1;
            }
        }
    }
    let t0 = Instant::now();
    let summary = lazymmu_triage::dedup::triage(&dir, src)?;
    println!(
        "triage of {kept} crash inputs: {} bug(s), {} not reproduced, in {:.1}s",
        summary.bugs.len(),
        summary.not_reproduced.len(),
        t0.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
