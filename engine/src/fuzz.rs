//! The built-in coverage-guided loop: pick a corpus program, mutate it structurally, run
//! it through target and oracle, keep it if it reached new model features, save every new
//! finding signature. Deterministic from the seed for a given run budget.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lazymmu_harness::check::{Finding, Verdict, FEATURES};
use lazymmu_harness::gen::from_bytes;
use lazymmu_harness::text::to_text;
use lazymmu_harness::{Mode, Program};
use serde::{Deserialize, Serialize};

use crate::mutate::mutate;
use crate::out::{Inflight, OutDir};
use crate::rng::Rng;
use crate::Differ;

/// Which programs to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModeSel {
    Realistic,
    Adversarial,
    /// Both: realistic seeds and programs, and adversarial ones.
    Mixed,
}

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
    pub kill_against: Option<Differ>,
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
    /// Distinct hazard kinds, with how often each was seen.
    pub hazards: BTreeMap<String, u64>,
    pub elapsed_ms: u64,
    /// Set in kill mode when a finding the reference does not show was found.
    pub killed: Option<Kill>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Kill {
    pub signature: String,
    pub runs: u64,
    pub elapsed_ms: u64,
    pub program: String,
}

impl Stats {
    pub fn bugs(&self) -> usize {
        self.findings
            .keys()
            .filter(|s| !s.contains("-perf-") && !s.contains("-hardening-"))
            .count()
    }
}

pub struct Fuzzer {
    differ: Differ,
    cfg: Config,
    rng: Rng,
    corpus: Vec<Program>,
    seen: Vec<u64>,
    stats: Stats,
    inflight: Option<Inflight>,
    start: Instant,
    /// (tries, tries that reached new features) for fresh programs [0] and mutants [1].
    arms: [(u64, u64); 2],
}

impl Fuzzer {
    pub fn new(differ: Differ, mut cfg: Config) -> Fuzzer {
        let inflight = cfg
            .out
            .as_ref()
            .and_then(|o| Inflight::create(&o.inflight_path(cfg.worker)).ok());
        let seeds = std::mem::take(&mut cfg.seeds);
        let mut f = Fuzzer {
            differ,
            rng: Rng::new(cfg.seed),
            stats: Stats {
                worker: cfg.worker,
                ..Stats::default()
            },
            cfg,
            corpus: vec![],
            seen: vec![0; (FEATURES / 64) as usize],
            inflight,
            start: Instant::now(),
            arms: [(0, 0); 2],
        };
        let mut initial = seeds;
        if let Some(o) = &f.cfg.out {
            initial.extend(o.load_corpus().into_iter().map(|(_, p)| p));
        }
        for p in initial {
            f.execute(p, true);
        }
        f
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn budget_left(&self) -> bool {
        self.cfg.runs.is_none_or(|r| self.stats.runs < r)
            && self.cfg.time.is_none_or(|t| self.start.elapsed() < t)
            && self.stats.killed.is_none()
    }

    /// Runs until the budget is spent, calling `progress` about every `every`.
    pub fn run(&mut self, every: Duration, mut progress: impl FnMut(&Stats)) -> Stats {
        let mut last = Instant::now();
        while self.budget_left() {
            self.one();
            if last.elapsed() >= every {
                last = Instant::now();
                self.stats.elapsed_ms = self.start.elapsed().as_millis() as u64;
                progress(&self.stats);
            }
        }
        self.stats.elapsed_ms = self.start.elapsed().as_millis() as u64;
        progress(&self.stats);
        self.stats.clone()
    }

    fn mode_for_new(&mut self) -> Mode {
        match self.cfg.mode {
            ModeSel::Realistic => Mode::Realistic,
            ModeSel::Adversarial => Mode::Adversarial,
            ModeSel::Mixed => {
                if self.rng.chance(1, 2) {
                    Mode::Realistic
                } else {
                    Mode::Adversarial
                }
            }
        }
    }

    /// One iteration: a fresh program now and then, else a mutant of a corpus program.
    pub fn one(&mut self) {
        // Fresh programs or mutants, in proportion to how often each reached new model
        // features lately (a two-armed bandit, kept between 10% and 90% either way).
        let rate = |(tries, wins): (u64, u64)| (wins as f64 + 1.0) / (tries as f64 + 2.0);
        let (f, m) = (rate(self.arms[0]), rate(self.arms[1]));
        let p_fresh = (f / (f + m)).clamp(0.1, 0.9);
        let fresh = self.corpus.is_empty() || (self.rng.below(1000) as f64) < p_fresh * 1000.0;
        let p = if fresh {
            let n = 64 + self.rng.below(1024);
            let bytes = self.rng.bytes(n);
            let mode = self.mode_for_new();
            from_bytes(&bytes, mode)
        } else {
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
            match mutate(&parent, Some(&other), &mut self.rng) {
                Some(p) => p,
                None => return,
            }
        };
        let new = self.execute(p, false);
        let arm = &mut self.arms[!fresh as usize];
        // Recent behaviour counts: halve the history now and then.
        if arm.0 >= 512 {
            *arm = (arm.0 / 2, arm.1 / 2);
        }
        arm.0 += 1;
        arm.1 += (new > 0) as u64;
    }

    /// Runs one program and learns from it; returns how many new features it reached.
    fn execute(&mut self, p: Program, initial: bool) -> u64 {
        if p.validate().is_err() {
            return 0;
        }
        if let Some(f) = &mut self.inflight {
            f.set(&to_text(&p));
        }
        let (target, _oracle, verdict) = self.differ.run(&p);
        if let Some(f) = &mut self.inflight {
            f.clear();
        }
        self.stats.runs += 1;
        let mut new = 0;
        for &x in &verdict.features {
            let (w, b) = ((x / 64) as usize, x % 64);
            if self.seen[w] & (1 << b) == 0 {
                self.seen[w] |= 1 << b;
                new += 1;
            }
        }
        self.stats.features += new;
        if new > 0 || (initial && self.corpus.is_empty()) {
            if let (Some(o), false) = (&self.cfg.out, initial) {
                let _ = o.save_corpus(&p);
            }
            self.corpus.push(p.clone());
            self.stats.corpus = self.corpus.len() as u64;
        }
        self.learn(&p, &verdict, &target);
        new
    }

    fn learn(&mut self, p: &Program, v: &Verdict, target: &lazymmu_harness::Trace) {
        let mut first_seen: Vec<&Finding> = vec![];
        for f in &v.findings {
            let sig = f.signature();
            let count = self.stats.findings.entry(sig).or_insert(0);
            *count += 1;
            if *count == 1 {
                first_seen.push(f);
            }
        }
        for f in first_seen {
            if let Some(o) = &self.cfg.out {
                let _ = o.save_finding(&self.differ.name(), p, f, v, Some(target));
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
        if let Some(reference) = &mut self.cfg.kill_against {
            if let Some(f) = v.findings.first() {
                // Killed only by a program the reference gets right.
                if reference.verdict(p).findings.is_empty() {
                    self.stats.killed = Some(Kill {
                        signature: f.signature(),
                        runs: self.stats.runs,
                        elapsed_ms: self.start.elapsed().as_millis() as u64,
                        program: to_text(p),
                    });
                }
            }
        }
    }
}
