//! The built-in coverage-guided loop: pick a corpus program, mutate it structurally, run
//! it through target and oracle, keep it if it reached new features, save every new
//! finding signature. Deterministic from the seed for a given run budget.
//!
//! Features are the model features of the verdict and, when the implementation is the
//! c-coverage flavour, its own edges (indices from `FEATURES` on); the operands of its
//! comparisons feed the value dictionary the mutations draw from (`dict`).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use lazymmu_harness::check::{Class, Finding, Verdict, FEATURES};
use lazymmu_harness::gen::{from_bytes, Checkpoints};
use lazymmu_lang::text::to_text;
use lazymmu_lang::{Mode, Program};
use serde::{Deserialize, Serialize};

use crate::dict::Dict;
use crate::executor::{CFeedback, CrashReport, Executor, Outcome};
use crate::mutate::mutate_with;
use crate::out::OutDir;
use crate::rng::Rng;

/// Which programs to generate: the one mode type of the rig's engines and command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum ModeSel {
    /// Programs that keep the API contract: findings are bugs.
    Realistic,
    /// Programs that may break it: findings are hardening.
    Adversarial,
    /// Both: realistic seeds and programs, and adversarial ones.
    Mixed,
}

impl ModeSel {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ModeSel::Realistic => "realistic",
            ModeSel::Adversarial => "adversarial",
            ModeSel::Mixed => "mixed",
        }
    }

    /// The mode of one new program (`Mixed`: either, by a coin of `rng`).
    pub fn pick(self, rng: &mut Rng) -> Mode {
        match self {
            ModeSel::Realistic => Mode::Realistic,
            ModeSel::Adversarial => Mode::Adversarial,
            ModeSel::Mixed if rng.chance(1, 2) => Mode::Realistic,
            ModeSel::Mixed => Mode::Adversarial,
        }
    }
}

/// Turns a finding's program into a 1-minimal reproducer that keeps the signature (the
/// triage minimizer, given by the caller: this crate sits below it). It must stop soon
/// after `deadline`.
pub type Minimizer = Box<dyn FnMut(&mut Executor, &Program, &str, Option<Instant>) -> Program>;

pub struct Config {
    pub seed: u64,
    pub mode: ModeSel,
    pub runs: Option<u64>,
    pub time: Option<Duration>,
    /// Programs to start from (the seed corpus); the output corpus is added to them.
    pub seeds: Vec<Program>,
    pub out: Option<OutDir>,
    pub worker: usize,
    /// Stop at the first finding the reference does not also show (mutant killing).
    pub kill_against: Option<Executor>,
    /// Minimizes crash and hang findings as they appear.
    pub minimizer: Option<Minimizer>,
}

/// What a run has done so far.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Stats {
    pub worker: usize,
    pub runs: u64,
    pub features: u64,
    pub corpus: u64,
    /// Distinct finding signatures, with how often each was seen.
    pub findings: BTreeMap<String, u64>,
    /// Those of them that are bugs (realistic programs, not performance): from the
    /// findings themselves, not from the signature text.
    pub bugs: std::collections::BTreeSet<String>,
    /// Distinct hazard kinds, with how often each was seen.
    pub hazards: BTreeMap<String, u64>,
    pub elapsed_ms: u64,
    /// Set in kill mode when a finding the reference does not show was found.
    pub killed: Option<Kill>,
    /// Programs that killed their executor (crash or hang).
    pub deaths: u64,
    /// Programs that overran the timeout once but not when run again alone with four
    /// times as long: a loaded machine, not a hang (no finding).
    pub slow_programs: u64,
    /// Executors started, and the time that took.
    pub executors: u64,
    pub spawn_ms: u64,
    /// Milliseconds from the start to the first program that killed its executor, and
    /// to its minimized, symbolized report on disk.
    pub first_crash_ms: Option<u64>,
    pub first_crash_report_ms: Option<u64>,
    /// The implementation's own coverage guides the run (the c-coverage flavour).
    #[serde(default)]
    pub c_feedback: bool,
    /// Distinct edges of the implementation reached.
    #[serde(default)]
    pub c_edges: u64,
    /// Values in its comparison dictionary.
    #[serde(default)]
    pub dict_values: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Kill {
    pub signature: String,
    pub runs: u64,
    pub elapsed_ms: u64,
    pub program: String,
}

pub struct Fuzzer {
    exec: Executor,
    cfg: Config,
    rng: Rng,
    corpus: Vec<Program>,
    /// Checkpoints of corpus programs, so that their mutants replay only around their
    /// change: built at a long program's second mutation, the oldest built dropped
    /// beyond `CHECKPOINT_BUDGET` bytes.
    checkpoints: Vec<Option<Checkpoints>>,
    mutated: Vec<bool>,
    built: VecDeque<usize>,
    checkpoint_bytes: usize,
    seen: Vec<u64>,
    stats: Stats,
    start: Instant,
    /// (tries, tries that reached new features) for fresh programs [0] and mutants [1].
    arms: [(u64, u64); 2],
    /// A crash or hang signature as first seen -> the signature of its minimized
    /// reproducer (which decides bug or hardening), so each site is minimized once.
    crash_sites: BTreeMap<String, String>,
    /// Learnt from the implementation's comparisons (empty without C coverage).
    dict: Dict,
    /// Edges of the implementation reached (a bit per map index).
    c_edges: Vec<u64>,
}

/// Feature indices of the implementation's edges, after the model's: map index * 8 +
/// hit-count bucket (`CFeedback::edges`).
pub const C_FEATURES: u32 = (lazymmu_target::ffi::COV_EDGES * 8) as u32;

/// Programs per round: generated from the corpus as it was at the round's start, run in
/// one request to the executor.
const ROUND: usize = 32;

/// Bytes of corpus checkpoints a worker keeps (a 400-step program takes about 50 KiB).
const CHECKPOINT_BUDGET: usize = 64 << 20;

/// Programs shorter than this are mutated without checkpoints: a mutant of one replays
/// little from step 0, and in a campaign the memory the checkpoints take costs about
/// what they save (measured on a 100k-run corpus of programs of 120 steps on average).
const CHECKPOINT_MIN_STEPS: usize = 128;

impl Fuzzer {
    pub fn new(exec: Executor, mut cfg: Config) -> Fuzzer {
        let seeds = std::mem::take(&mut cfg.seeds);
        let mut f = Fuzzer {
            rng: Rng::new(cfg.seed),
            stats: Stats {
                worker: cfg.worker,
                c_feedback: exec.c_coverage(),
                ..Stats::default()
            },
            exec,
            cfg,
            corpus: vec![],
            checkpoints: vec![],
            mutated: vec![],
            built: VecDeque::new(),
            checkpoint_bytes: 0,
            seen: vec![0; ((FEATURES + C_FEATURES) / 64) as usize],
            start: Instant::now(),
            arms: [(0, 0); 2],
            crash_sites: BTreeMap::new(),
            dict: Dict::new(),
            c_edges: vec![0; lazymmu_target::ffi::COV_EDGES / 64],
        };
        let mut initial = seeds;
        if let Some(o) = &f.cfg.out {
            initial.extend(o.load_corpus().into_iter().map(|(_, p)| p));
        }
        initial.retain(|p| p.validate().is_ok());
        for chunk in initial.chunks(ROUND) {
            let kinds = vec![None; chunk.len()];
            f.execute(chunk, &kinds, true);
        }
        f
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The value dictionary learnt so far (empty without C coverage).
    pub fn dict(&self) -> &Dict {
        &self.dict
    }

    fn deadline(&self) -> Option<Instant> {
        self.cfg.time.map(|t| self.start + t)
    }

    fn budget_left(&self) -> bool {
        self.cfg.runs.is_none_or(|r| self.stats.runs < r)
            && self.deadline().is_none_or(|d| Instant::now() < d)
            && self.stats.killed.is_none()
    }

    /// Runs until the budget is spent, calling `progress` about every `every`.
    pub fn run(&mut self, every: Duration, mut progress: impl FnMut(&Stats)) -> Stats {
        let mut last = Instant::now();
        while self.budget_left() {
            self.round();
            if last.elapsed() >= every {
                last = Instant::now();
                self.update_clock();
                progress(&self.stats);
            }
        }
        self.update_clock();
        progress(&self.stats);
        self.stats.clone()
    }

    fn update_clock(&mut self) {
        self.stats.elapsed_ms = self.start.elapsed().as_millis() as u64;
        self.stats.executors = self.exec.stats.executors_started;
        self.stats.spawn_ms = self.exec.stats.spawn_us / 1000;
    }

    /// One new program: a fresh one now and then, else a mutant of a corpus program.
    /// Returns it with the arm it came from (0 fresh, 1 mutant).
    fn propose(&mut self) -> Option<(Program, usize)> {
        // Fresh programs or mutants, in proportion to how often each reached new model
        // features lately (a two-armed bandit, kept between 10% and 90% either way).
        let rate = |(tries, wins): (u64, u64)| (wins as f64 + 1.0) / (tries as f64 + 2.0);
        let (f, m) = (rate(self.arms[0]), rate(self.arms[1]));
        let p_fresh = (f / (f + m)).clamp(0.1, 0.9);
        let fresh = self.corpus.is_empty() || (self.rng.below(1000) as f64) < p_fresh * 1000.0;
        if fresh {
            let n = 64 + self.rng.below(1024);
            let bytes = self.rng.bytes(n);
            let mode = self.cfg.mode.pick(&mut self.rng);
            return Some((from_bytes(&bytes, mode), 0));
        }
        // Favour recent discoveries half of the time.
        let n = self.corpus.len();
        let i = if self.rng.chance(1, 2) {
            n - 1 - self.rng.below(n.div_ceil(4))
        } else {
            self.rng.below(n)
        };
        let mut parent = self.corpus[i].clone();
        if self.cfg.mode != ModeSel::Realistic
            && parent.config.mode == Mode::Realistic
            && self.rng.chance(1, 8)
        {
            parent.config.mode = Mode::Adversarial;
        }
        let other = self.corpus[self.rng.below(n)].clone();
        // Checkpoints only for a long program mutated before (they cost a replay).
        let again = std::mem::replace(&mut self.mutated[i], true);
        if !again || self.corpus[i].steps.len() < CHECKPOINT_MIN_STEPS {
            return mutate_with(&parent, None, Some(&other), &mut self.rng, &self.dict)
                .map(|p| (p, 1));
        }
        self.build_checkpoints(i);
        let cp = self.checkpoints[i].as_ref().expect("just built");
        // The mode a parent is mutated in does not matter to its checkpoints.
        mutate_with(&parent, Some(cp), Some(&other), &mut self.rng, &self.dict).map(|p| (p, 1))
    }

    /// Makes sure corpus program `i` has its checkpoints, within the budget.
    fn build_checkpoints(&mut self, i: usize) {
        if self.checkpoints[i].is_some() {
            return;
        }
        let cp = Checkpoints::new(self.corpus[i].clone());
        self.checkpoint_bytes += cp.heap_bytes();
        self.checkpoints[i] = Some(cp);
        self.built.push_back(i);
        while self.checkpoint_bytes > CHECKPOINT_BUDGET && self.built.len() > 1 {
            let old = self.built.pop_front().expect("not empty");
            if let Some(cp) = self.checkpoints[old].take() {
                self.checkpoint_bytes -= cp.heap_bytes();
            }
        }
    }

    /// One round: up to `ROUND` new programs, run in the executor, learnt from in order.
    pub fn round(&mut self) {
        let want = self.cfg.runs.map_or(ROUND, |r| {
            (r - self.stats.runs.min(r)).min(ROUND as u64) as usize
        });
        let mut batch = Vec::with_capacity(want);
        let mut arms = Vec::with_capacity(want);
        // Bounded: a corpus whose mutations keep failing must not spin here.
        for _ in 0..want * 4 {
            if batch.len() == want {
                break;
            }
            if let Some((p, arm)) = self.propose() {
                if p.validate().is_ok() {
                    batch.push(p);
                    arms.push(Some(arm));
                }
            }
        }
        self.execute(&batch, &arms, false);
    }

    /// Runs programs and learns from them, in order.
    fn execute(&mut self, programs: &[Program], arms: &[Option<usize>], initial: bool) {
        let deadline = self.deadline();
        let outcomes = self.exec.run_batch(programs, false, deadline);
        for ((p, arm), outcome) in programs.iter().zip(arms).zip(outcomes) {
            self.stats.runs += 1;
            let verdict = match &outcome {
                Outcome::Ran(r) => &r.verdict,
                Outcome::Died(..) => {
                    self.stats.deaths += 1;
                    &outcome.verdict(p)
                }
            };
            let c = match &outcome {
                Outcome::Ran(r) => r.c.as_ref(),
                Outcome::Died(..) => None,
            };
            let new = self.features(verdict) + c.map_or(0, |c| self.c_features(c));
            if new > 0 || (initial && self.corpus.is_empty()) {
                if let (Some(o), false) = (&self.cfg.out, initial) {
                    let _ = o.save_corpus(p);
                }
                self.corpus.push(p.clone());
                self.checkpoints.push(None);
                self.mutated.push(false);
                self.stats.corpus = self.corpus.len() as u64;
            }
            if let Some(arm) = *arm {
                let a = &mut self.arms[arm];
                // Recent behaviour counts: halve the history now and then.
                if a.0 >= 512 {
                    *a = (a.0 / 2, a.1 / 2);
                }
                a.0 += 1;
                a.1 += (new > 0) as u64;
            }
            match outcome {
                Outcome::Ran(r) => self.learn(p, &r.verdict),
                Outcome::Died(report, history) => self.learn_death(p, &report, history),
            }
            if self.stats.killed.is_some() {
                break;
            }
        }
    }

    /// Marks the verdict's features seen; returns how many were new.
    fn features(&mut self, verdict: &Verdict) -> u64 {
        let mut new = 0;
        for &x in &verdict.features {
            let (w, b) = ((x / 64) as usize, x % 64);
            if self.seen[w] & (1 << b) == 0 {
                self.seen[w] |= 1 << b;
                new += 1;
            }
        }
        self.stats.features += new;
        new
    }

    /// The implementation's edges as features (returns how many were new), and its
    /// comparison operands into the dictionary.
    fn c_features(&mut self, c: &CFeedback) -> u64 {
        let mut new = 0;
        for &e in &c.edges {
            let x = (FEATURES + e.min(C_FEATURES - 1)) as usize;
            if self.seen[x / 64] & (1 << (x % 64)) == 0 {
                self.seen[x / 64] |= 1 << (x % 64);
                new += 1;
            }
            let edge = (e / 8) as usize;
            if self.c_edges[edge / 64] & (1 << (edge % 64)) == 0 {
                self.c_edges[edge / 64] |= 1 << (edge % 64);
                self.stats.c_edges += 1;
            }
        }
        self.stats.features += new;
        self.dict.learn(c);
        self.stats.dict_values = self.dict.len() as u64;
        new
    }

    fn learn(&mut self, p: &Program, v: &Verdict) {
        let mut first_seen: Vec<&Finding> = vec![];
        for f in &v.findings {
            let sig = f.signature();
            if f.class.is_bug() && !f.hardening {
                self.stats.bugs.insert(sig.clone());
            }
            let count = self.stats.findings.entry(sig).or_insert(0);
            *count += 1;
            if *count == 1 {
                first_seen.push(f);
            }
        }
        if !first_seen.is_empty() && self.cfg.out.is_some() {
            // The report shows the target's trace: run it again for that (deterministic).
            let trace = match self.exec.run_one(p, true) {
                Outcome::Ran(r) => r.target.map(|t| lazymmu_model::report::trace_text(p, &t)),
                Outcome::Died(..) => None,
            };
            let name = self.exec.name();
            for f in first_seen {
                if let Some(o) = &self.cfg.out {
                    let _ = o.save_finding(&name, p, f, v, trace.as_deref());
                }
            }
        }
        for h in &v.hazards {
            let key = format!("{}-{}", h.op, if h.harmful { "harmful" } else { "excused" });
            let count = self.stats.hazards.entry(key.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                if let Some(o) = &self.cfg.out {
                    let _ = o.save_hazard(&key, p, h);
                }
            }
        }
        if let Some(f) = v.findings.first() {
            self.check_kill(p, f.signature());
        }
    }

    /// In kill mode: killed only by a program the reference gets right.
    fn check_kill(&mut self, p: &Program, signature: String) {
        if let Some(reference) = &mut self.cfg.kill_against {
            if reference.verdict(p).findings.is_empty() {
                self.stats.killed = Some(Kill {
                    signature,
                    runs: self.stats.runs,
                    elapsed_ms: self.start.elapsed().as_millis() as u64,
                    program: to_text(p),
                });
            }
        }
    }

    /// A program killed its executor. The first time a site is seen: reproduce it alone
    /// in a fresh executor (or report leaked state), minimize it, save the report.
    fn learn_death(&mut self, p: &Program, report: &CrashReport, history: Vec<Program>) {
        if self.stats.first_crash_ms.is_none() {
            self.stats.first_crash_ms = Some(self.start.elapsed().as_millis() as u64);
        }
        let v = report.verdict(p);
        let raw = v.findings[0].signature();
        if let Some(sig) = self.crash_sites.get(&raw) {
            *self.stats.findings.entry(sig.clone()).or_insert(0) += 1;
            return;
        }
        let mut alone = self.exec.run_alone(p, false);
        if report.class() == Class::Hang && matches!(alone, Outcome::Ran(_)) {
            // A program that overran its timeout once but ran alone may just have met a
            // loaded machine: give it four times the time before calling it anything.
            let timeout = self.exec.options().timeout;
            self.exec.set_timeout(timeout * 4);
            let again = self.exec.run_alone(p, false);
            self.exec.set_timeout(timeout);
            if matches!(again, Outcome::Ran(_)) {
                self.stats.slow_programs += 1;
                return;
            }
            alone = again;
        }
        let reproduced = match &alone {
            Outcome::Died(r, _) => {
                r.class() == report.class() && r.site_name() == report.site_name()
            }
            Outcome::Ran(_) => false,
        };
        if !reproduced {
            let sig = format!("lazymmu-rig-state-leak-{}", report.site_name());
            self.crash_sites.insert(raw, sig.clone());
            *self.stats.findings.entry(sig.clone()).or_insert(0) += 1;
            if let Some(o) = &self.cfg.out {
                let _ = o.save_state_leak(&sig, &self.exec.name(), p, report, &alone, &history);
            }
            return;
        }
        let name = self.exec.name();
        // Save at once (nothing lost if interrupted), then again minimized.
        if let Some(o) = &self.cfg.out {
            let _ = o.save_finding(&name, p, &v.findings[0], &v, None);
        }
        let mut sig = raw.clone();
        let mut bug = v.findings[0].class.is_bug() && !v.findings[0].hardening;
        if let Some(min) = &mut self.cfg.minimizer {
            let deadline = self.cfg.time.map(|t| self.start + t);
            // A hang costs a whole timeout per candidate that still hangs: minimize
            // with a tighter one (still far above any program's real run time).
            let timeout = self.exec.options().timeout;
            if report.class() == Class::Hang {
                self.exec
                    .set_timeout((timeout / 10).max(Duration::from_millis(50)));
            }
            let small = min(&mut self.exec, p, &raw, deadline);
            self.exec.set_timeout(timeout);
            if let Outcome::Died(r, _) = self.exec.run_alone(&small, false) {
                let sv = r.verdict(&small);
                let f = &sv.findings[0];
                if r.site_name() == report.site_name() && f.class == report.class() {
                    sig = f.signature();
                    bug = f.class.is_bug() && !f.hardening;
                    if let Some(o) = &self.cfg.out {
                        if sig != raw {
                            // Bug or hardening is decided on the minimized program.
                            let _ = std::fs::remove_dir_all(o.finding_dir(&raw));
                        }
                        let _ = o.save_finding(&name, &small, f, &sv, None);
                        let _ = o.save_original(&sig, p);
                    }
                }
            }
        }
        if self.stats.first_crash_report_ms.is_none() && self.cfg.out.is_some() {
            self.stats.first_crash_report_ms = Some(self.start.elapsed().as_millis() as u64);
        }
        if bug {
            self.stats.bugs.insert(sig.clone());
        }
        self.crash_sites.insert(raw, sig.clone());
        *self.stats.findings.entry(sig.clone()).or_insert(0) += 1;
        self.check_kill(p, sig);
    }
}
