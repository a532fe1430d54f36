//! A fuzzing campaign over worker processes (`lazymmu fuzz`).
//!
//! Each job is a worker process: the rig's own executable started with the hidden
//! `fuzz-worker` command (`WorkerArgs`), running the built-in loop (`fuzz::Fuzzer`) on one
//! implementation and printing its statistics as JSON lines. A worker never runs the
//! implementation itself: it supervises disposable executors (`executor`), so a crash or
//! hang of the C code costs an executor, not the worker. A worker that dies anyway is a
//! rig bug: said so, counted as `lazymmu-rig-bug-worker`, and restarted. Workers die with
//! the campaign process, even when it is killed with SIGKILL.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lazymmu_target::Source;

use crate::executor::{ExecOptions, Executor};
use crate::fuzz::{Config, Fuzzer, Minimizer, ModeSel, Stats};
use crate::out::OutDir;
use crate::progress::Progress;

/// The hidden command of the rig's executable that runs one worker.
pub const WORKER_COMMAND: &str = "fuzz-worker";

/// One worker's job: what `lazymmu fuzz-worker` is given.
#[derive(Clone, Debug)]
pub struct WorkerArgs {
    pub source: Source,
    pub worker: usize,
    pub seed: u64,
    pub mode: ModeSel,
    pub out: PathBuf,
    pub seeds: PathBuf,
    pub runs: Option<u64>,
    pub time: Option<Duration>,
    /// Stop at the first finding the reference does not show (mutant killing).
    pub kill: bool,
    pub timeout: Duration,
    /// The implementation's own coverage guides the search (its c-coverage build);
    /// `--no-c-coverage` turns it off.
    pub c_coverage: bool,
}

impl WorkerArgs {
    /// The worker's command line (after the executable): the one place it is written.
    pub fn command_line(&self) -> Vec<String> {
        let mut v: Vec<String> = vec![
            WORKER_COMMAND.into(),
            "--worker".into(),
            self.worker.to_string(),
            "--seed".into(),
            self.seed.to_string(),
            "--mode".into(),
            self.mode.name().into(),
            "--timeout".into(),
            self.timeout.as_millis().to_string(),
            "--out".into(),
            self.out.display().to_string(),
            "--seeds".into(),
            self.seeds.display().to_string(),
        ];
        v.extend(self.source.cli_args());
        if let Some(r) = self.runs {
            v.extend(["--runs".into(), r.to_string()]);
        }
        if let Some(t) = self.time {
            v.extend(["--time".into(), format!("{:.3}", t.as_secs_f64())]);
        }
        if self.kill {
            v.push("--kill".into());
        }
        if !self.c_coverage {
            v.push("--no-c-coverage".into());
        }
        v
    }

    /// Starts `exe` as this worker, its stdout piped, dying with this process.
    pub fn spawn(&self, exe: &Path) -> Result<Child, String> {
        let mut cmd = Command::new(exe);
        cmd.args(self.command_line())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        die_with_parent(&mut cmd);
        cmd.spawn()
            .map_err(|e| format!("cannot start a worker ({}): {e}", exe.display()))
    }
}

/// A child process dies with the process that started it (even one killed with SIGKILL).
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

/// Loads `source` into a crash-proof executor with the given per-program timeout.
pub fn executor(source: &Source, timeout: Duration) -> Result<Executor, String> {
    executor_with(source, timeout, false)
}

/// The same, its results carrying the implementation's coverage when `c_coverage` is set
/// (the c-coverage build of it).
pub fn executor_with(
    source: &Source,
    timeout: Duration,
    c_coverage: bool,
) -> Result<Executor, String> {
    let kernel = lazymmu_target::load_with(source, c_coverage).map_err(|e| e.to_string())?;
    let opts = ExecOptions {
        timeout,
        ..ExecOptions::default()
    };
    Executor::new(lazymmu_harness::Differ::new(kernel), opts)
        .map_err(|e| format!("cannot set up executors: {e}"))
}

/// Runs one worker in this process: fuzzes, printing its statistics as JSON lines to
/// stdout about every 400 ms.
pub fn run_worker(a: &WorkerArgs, minimizer: Option<Minimizer>) -> Result<Stats, String> {
    let exec = executor_with(&a.source, a.timeout, a.c_coverage)?;
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
        seeds: crate::corpus::seed_programs(&a.seeds, a.mode),
        out: Some(out),
        worker: a.worker,
        kill_against,
        minimizer,
    };
    let mut f = Fuzzer::new(exec, cfg);
    let stdout = std::io::stdout();
    Ok(f.run(Duration::from_millis(400), |s| {
        let mut lock = stdout.lock();
        let _ = writeln!(lock, "{}", serde_json::to_string(s).unwrap_or_default());
        let _ = lock.flush();
    }))
}

/// A campaign: implementations, budget, jobs.
pub struct Plan {
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
    /// The rig's executable, started as the workers.
    pub worker_exe: PathBuf,
    /// The implementations' own coverage guides the workers (`WorkerArgs::c_coverage`).
    pub c_coverage: bool,
}

/// What a campaign found, per implementation.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub runs: u64,
    pub elapsed: Duration,
    /// Per implementation name: its output directory, signatures with counts, the
    /// signatures that are bugs, hazards with counts.
    pub implementations: Vec<ImplSummary>,
    /// Workers that died (the rig's failures) and were restarted.
    pub worker_deaths: u64,
}

#[derive(Clone, Debug, Default)]
pub struct ImplSummary {
    pub name: String,
    pub dir: PathBuf,
    pub findings: BTreeMap<String, u64>,
    pub bugs: BTreeSet<String>,
    pub hazards: BTreeMap<String, u64>,
    /// Resident size of its workers at the end, in KiB.
    pub rss_kib: Vec<u64>,
    /// With C feedback: the most edges of the implementation and dictionary values one
    /// of its workers reached (None: C feedback was off).
    pub c_feedback: Option<(u64, u64)>,
}

impl Summary {
    /// Bug and performance signatures (what makes `fuzz` exit 1).
    pub fn bad(&self) -> usize {
        self.implementations
            .iter()
            .map(|i| {
                i.findings
                    .keys()
                    .filter(|s| i.bugs.contains(*s) || s.contains("-perf-"))
                    .count()
            })
            .sum()
    }

    /// The final report: programs, then per implementation its signatures (bugs first),
    /// each with the report to read, and its hazards.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{} programs in {:.1}s\n",
            self.runs,
            self.elapsed.as_secs_f64()
        );
        for i in &self.implementations {
            let (bugs, other): (Vec<_>, Vec<_>) = i
                .findings
                .iter()
                .partition(|(sig, _)| i.bugs.contains(*sig));
            s.push_str(&format!(
                "\n{}: {} bug signature(s), {} performance/hardening signature(s)\n",
                i.name,
                bugs.len(),
                other.len()
            ));
            match i.c_feedback {
                Some((edges, values)) => s.push_str(&format!(
                    "  C feedback on: {edges} edges of the implementation reached, \
                     {values} comparison values learnt\n"
                )),
                None => s.push_str("  C feedback off (model features only)\n"),
            }
            for (sig, n) in bugs.iter().chain(other.iter()) {
                s.push_str(&format!(
                    "  {sig:<48} x{n:<6} {}\n",
                    i.dir
                        .join("findings")
                        .join(sig)
                        .join("report.txt")
                        .display()
                ));
            }
            if !i.hazards.is_empty() {
                s.push_str(&format!(
                    "  visibility hazards (listed apart; see {}):\n",
                    i.dir.join("hazards").display()
                ));
                for (k, n) in &i.hazards {
                    s.push_str(&format!("    {k:<46} x{n}\n"));
                }
            }
            if !i.rss_kib.is_empty() {
                s.push_str(&format!(
                    "  resident size per worker: {}\n",
                    i.rss_kib
                        .iter()
                        .map(|k| format!("{:.1} MiB", *k as f64 / 1024.0))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if self.worker_deaths > 0 {
            s.push_str(&format!(
                "\nrig bug: {} worker(s) died and were restarted (see stderr)\n",
                self.worker_deaths
            ));
        }
        s
    }
}

struct Worker {
    child: Child,
    /// Forwards its stdout lines; done once it exited and its last line is sent.
    reader: JoinHandle<()>,
    source: usize,
    runs_before: u64,
}

/// Sends each line `child` prints, tagged with `id`, until it closes its stdout.
pub(crate) fn forward_lines(
    child: &mut Child,
    id: usize,
    tx: mpsc::Sender<(usize, String)>,
) -> JoinHandle<()> {
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((id, line)).is_err() {
                break;
            }
        }
    })
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Runs a campaign to its budget; progress on stderr.
pub fn run(plan: &Plan) -> Result<Summary, String> {
    if plan.sources.is_empty() {
        return Err("no implementation to fuzz".into());
    }
    // Compile everything first: errors are reported before any worker starts.
    let mut names = vec![];
    for s in &plan.sources {
        let spec = s.resolve().map_err(|e| e.to_string())?;
        let built = lazymmu_target::loader::build_with(&spec, plan.c_coverage)
            .map_err(|e| e.to_string())?;
        eprintln!(
            "lazymmu: fuzzing {} (generation {}), output in {}",
            built.name,
            built.generation.name(),
            plan.out.join(s.dir_name()).display()
        );
        names.push(built.name);
    }
    let start = Instant::now();
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    let jobs = plan.jobs.max(1).max(plan.sources.len());
    let runs_each = plan.runs.map(|r| r.div_ceil(jobs as u64));
    let args_for = |source: usize, id: usize, restarts: u64, runs, time| WorkerArgs {
        source: plan.sources[source].clone(),
        worker: id,
        seed: plan
            .seed
            .wrapping_add(id as u64)
            .wrapping_add(restarts * 1_000_003),
        mode: plan.mode,
        out: plan.out.join(plan.sources[source].dir_name()),
        seeds: plan.seeds.clone(),
        runs,
        time,
        kill: false,
        timeout: plan.timeout,
        c_coverage: plan.c_coverage,
    };
    let spawn = |a: &WorkerArgs, id: usize| -> Result<(Child, JoinHandle<()>), String> {
        let mut child = a.spawn(&plan.worker_exe)?;
        let reader = forward_lines(&mut child, id, tx.clone());
        Ok((child, reader))
    };
    let mut workers: BTreeMap<usize, Worker> = BTreeMap::new();
    for id in 0..jobs {
        let source = id % plan.sources.len();
        let a = args_for(source, id, 0, runs_each, plan.time);
        let (child, reader) = spawn(&a, id)?;
        workers.insert(
            id,
            Worker {
                child,
                reader,
                source,
                runs_before: 0,
            },
        );
    }
    let mut live: BTreeMap<usize, Stats> = BTreeMap::new();
    let mut finished: Vec<(usize, Stats)> = vec![];
    let mut rss: BTreeMap<usize, u64> = BTreeMap::new();
    let mut deaths = 0u64;
    let mut progress = Progress::new();
    while !workers.is_empty() {
        if let Ok((id, line)) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Ok(s) = serde_json::from_str::<Stats>(&line) {
                live.insert(id, s);
            }
        }
        for (id, w) in &workers {
            if let Some(k) = rss_kib(w.child.id()) {
                rss.insert(*id, k);
            }
        }
        // Reap workers that are done or died.
        let ids: Vec<usize> = workers.keys().copied().collect();
        for id in ids {
            let Ok(Some(status)) = workers.get_mut(&id).unwrap().child.try_wait() else {
                continue;
            };
            let w = workers.remove(&id).unwrap();
            // What it printed last: all of it is sent once its reader is done.
            let _ = w.reader.join();
            while let Ok((i, line)) = rx.try_recv() {
                if let Ok(s) = serde_json::from_str::<Stats>(&line) {
                    live.insert(i, s);
                }
            }
            let mut s = live.remove(&id).unwrap_or_default();
            s.runs += w.runs_before;
            finished.push((w.source, s.clone()));
            if status.success() {
                continue;
            }
            // The implementation runs in the worker's executors, never in the worker:
            // a dead worker is the rig's own failure.
            let name = &names[w.source];
            progress.message(&format!(
                "lazymmu: rig bug: the worker for {name} died ({status}); restarting it"
            ));
            deaths += 1;
            let left_time = plan.time.map(|t| t.saturating_sub(start.elapsed()));
            let left_runs = runs_each.map(|r| r.saturating_sub(s.runs));
            let more = left_time.is_none_or(|t| t > Duration::from_millis(100))
                && left_runs.is_none_or(|r| r > 0);
            if more && deaths < 1000 {
                let a = args_for(w.source, id, deaths, left_runs, left_time);
                let (child, reader) = spawn(&a, id)?;
                workers.insert(
                    id,
                    Worker {
                        child,
                        reader,
                        source: w.source,
                        runs_before: 0,
                    },
                );
            }
        }
        let all: Vec<&Stats> = live
            .values()
            .chain(finished.iter().map(|(_, s)| s))
            .collect();
        progress.update(&status_line(start.elapsed(), &all));
    }
    progress.finish();
    let mut summary = Summary {
        elapsed: start.elapsed(),
        worker_deaths: deaths,
        ..Summary::default()
    };
    for (i, name) in names.iter().enumerate() {
        let mut im = ImplSummary {
            name: name.clone(),
            dir: plan.out.join(plan.sources[i].dir_name()),
            ..ImplSummary::default()
        };
        for (_, s) in finished.iter().filter(|(src, _)| *src == i) {
            summary.runs += s.runs;
            for (sig, n) in &s.findings {
                *im.findings.entry(sig.clone()).or_default() += n;
            }
            im.bugs.extend(s.bugs.iter().cloned());
            for (h, n) in &s.hazards {
                *im.hazards.entry(h.clone()).or_default() += n;
            }
            if s.c_feedback {
                let (e, d) = im.c_feedback.unwrap_or_default();
                im.c_feedback = Some((e.max(s.c_edges), d.max(s.dict_values)));
            }
        }
        if deaths > 0 {
            *im.findings
                .entry("lazymmu-rig-bug-worker".into())
                .or_default() += deaths;
        }
        im.rss_kib = (0..jobs)
            .filter(|id| id % plan.sources.len() == i)
            .filter_map(|id| rss.get(&id).copied())
            .collect();
        summary.implementations.push(im);
    }
    Ok(summary)
}

/// One line of progress over all workers.
fn status_line(elapsed: Duration, stats: &[&Stats]) -> String {
    let runs: u64 = stats.iter().map(|s| s.runs).sum();
    let features: u64 = stats.iter().map(|s| s.features).max().unwrap_or(0);
    let corpus: u64 = stats.iter().map(|s| s.corpus).sum();
    let sigs: BTreeSet<&String> = stats.iter().flat_map(|s| s.findings.keys()).collect();
    let hazards: BTreeSet<&String> = stats.iter().flat_map(|s| s.hazards.keys()).collect();
    let deaths: u64 = stats.iter().map(|s| s.deaths).sum();
    let secs = elapsed.as_secs_f64().max(0.001);
    format!(
        "[{secs:>6.1}s] runs {runs} ({:.0}/s)  features {features}  corpus {corpus}  findings {}  hazards {}  executor deaths {deaths}",
        runs as f64 / secs,
        sigs.len(),
        hazards.len()
    )
}
