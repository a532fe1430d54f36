//! The differential checkers: a target trace against the oracle's trace of the same
//! program, under the contract of docs/semantics.md#contract. Each finding has a class (the
//! table in docs/semantics.md#classes) and a stable signature `lazymmu-<class>-<op>`;
//! visibility hazards (docs/semantics.md#rule-hazards) are listed apart; the model features
//! of the run feed the engines' coverage.
//!
//! The windows the contract allows are normalised, not reported
//! (docs/semantics.md#normalised): reads of a PTE inside a
//! `ptep_modify_prot_start/commit` transaction, the UNUSED software bit, other CPUs' and
//! hardware views during a section (hazards), and TLB contents before the caller's flush.

mod events;
mod features;
mod hazards;
mod memory;
mod perf;
mod returns;
mod tlb;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::contract::{ContractState, Violation};
use lazymmu_lang::program::{Op, Program, PteRef, Step};
use lazymmu_lang::pte::{self, PAGE_UNUSED};
use lazymmu_model::exec::{Ret, Trace};

/// What kind of divergence a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Class {
    /// A call returned something other than the eager code returns
    /// (docs/semantics.md#rule-returns).
    Return,
    /// Page-table memory differs from the oracle's at a sync point or at the end
    /// (docs/semantics.md#rule-memory).
    Memory,
    /// The "nothing pending" marker reached memory or a caller (docs/semantics.md#rule-marker).
    Marker,
    /// A store changed a valid PTE without a covering IPTE (docs/semantics.md#rule-store-valid).
    StoreValid,
    /// A TLB entry that differs from memory after the caller's flush
    /// (docs/semantics.md#rule-stale-tlb).
    StaleTlb,
    /// More global IPTEs than eager (docs/semantics.md#rule-global-ipte): performance,
    /// reported apart from bugs.
    PerfGlobalIpte,
    /// An access outside the page tables, or an IPTE-range past a table's end
    /// (docs/semantics.md#rule-contained).
    Wild,
    /// The C code crashed (signal, abort, sanitizer report) (docs/semantics.md#rule-contained).
    Crash,
    /// The eager path touched a PTE inside this CPU's own active range (KASAN shadow).
    Unrouted,
    /// An ultravisor call while the PTE was valid in memory (docs/semantics.md#rule-uv).
    UvValid,
    /// A kernel assertion failed (lockdep, preemption balance).
    Assertion,
    /// The C code did not return within the per-program timeout (an endless loop).
    Hang,
    /// The rig itself failed (a panic in its own code): a defect of the rig, never the
    /// implementation's.
    RigBug,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Return => "return",
            Class::Memory => "memory",
            Class::Marker => "marker-leak",
            Class::StoreValid => "store-valid",
            Class::StaleTlb => "stale-tlb",
            Class::PerfGlobalIpte => "perf-global-ipte",
            Class::Wild => "wild-access",
            Class::Crash => "crash",
            Class::Unrouted => "unrouted",
            Class::UvValid => "uv-valid",
            Class::Assertion => "assertion",
            Class::Hang => "hang",
            Class::RigBug => "rig-bug",
        }
    }
    /// Performance findings are reported apart from bugs.
    pub fn is_bug(self) -> bool {
        !matches!(self, Class::PerfGlobalIpte | Class::RigBug)
    }
    /// Dangerous whatever the caller did (docs/semantics.md#hardening): reported on
    /// programs that break the contract too. A marker leak is, when it reached memory, and
    /// a memory divergence is, outside what the caller named (the checkers mark those).
    pub fn dangerous_anywhere(self) -> bool {
        matches!(
            self,
            Class::Wild | Class::Crash | Class::Hang | Class::StoreValid | Class::RigBug
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub class: Class,
    /// Found on a program that breaks the API contract: what the implementation does
    /// then is hardening, not a bug.
    pub hardening: bool,
    /// Step index (the number of steps for findings at the end of the program).
    pub step: usize,
    pub cpu: u8,
    /// The kernel function of the step (`end` after the last step).
    pub op: String,
    pub pte: Option<PteRef>,
    /// Both sides' values, rendered.
    pub target: String,
    pub oracle: String,
    pub detail: String,
}

impl Finding {
    /// `lazymmu-<class>-<op>`, or `lazymmu-hardening-<class>-<op>`.
    pub fn signature(&self) -> String {
        let h = if self.hardening { "hardening-" } else { "" };
        format!("lazymmu-{h}{}-{}", self.class.name(), self.op)
    }
}

/// Another context saw a value the oracle would not show, during a section
/// (docs/semantics.md#rule-hazards).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hazard {
    pub step: usize,
    pub cpu: u8,
    pub op: String,
    pub pte: Option<PteRef>,
    pub target: String,
    pub oracle: String,
    /// Who has the section, which locks the reader holds, and why that is (not) harmful.
    pub context: String,
    /// The reader holds the page-table lock it would need for a consistent value (or
    /// is the section's own CPU), so the generic contract does not excuse it.
    pub harmful: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// First divergence first.
    pub findings: Vec<Finding>,
    pub hazards: Vec<Hazard>,
    /// Model features of the run, for coverage feedback (indices below `FEATURES`).
    pub features: Vec<u32>,
    /// The contract rules the program breaks (empty for a realistic program).
    pub contract: Vec<Violation>,
}

impl Verdict {
    pub fn bugs(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.class.is_bug())
    }
    /// Signatures of all findings, deduplicated, in order of first appearance.
    pub fn signatures(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.findings
            .iter()
            .map(Finding::signature)
            .filter(|s| seen.insert(s.clone()))
            .collect()
    }
}

/// Size of the feature space (features are indices below this).
pub const FEATURES: u32 = 1 << 16;

pub fn feature(parts: &[u64]) -> u32 {
    // A fixed mix of the parts: stable across processes, machines and versions.
    let mut h: u64 = 0xcbf29ce484222325;
    for &p in parts {
        h = (h ^ p).wrapping_mul(0x9e3779b97f4a7c15);
        h ^= h >> 29;
    }
    (h % FEATURES as u64) as u32
}

fn norm(v: u64) -> u64 {
    if pte::pte_present(v) {
        v & !PAGE_UNUSED
    } else {
        v
    }
}

fn ret_text(r: &Ret) -> String {
    lazymmu_model::report::ret_text(r).unwrap_or_else(|| "nothing".into())
}

fn ret_value(r: &Ret) -> Option<u64> {
    match *r {
        Ret::Pte(v) => Some(v),
        _ => None,
    }
}

fn same_ret(a: &Ret, b: &Ret) -> bool {
    match (a, b) {
        (Ret::Pte(x), Ret::Pte(y)) => norm(*x) == norm(*y),
        _ => a == b,
    }
}

fn op_kind(op: &Op) -> u64 {
    // Stable small number per op kind, for features.
    op.name()
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
}

struct Checker<'a> {
    program: &'a Program,
    target: &'a Trace,
    marker: u64,
    findings: Vec<Finding>,
    /// Per finding: dangerous whatever the contract (docs/semantics.md#hardening).
    dangerous: Vec<bool>,
    /// PTEs the caller named or owns (docs/semantics.md#hardening), computed for programs
    /// that break the contract.
    named: Option<BTreeSet<PteRef>>,
    /// A CPU still has a section open after the last step (the contract is broken then).
    sections_open_at_end: bool,
    /// Per PTE: whether its last update was handed to the implementation inside the
    /// updating CPU's own section range, so that what memory ends up holding is the
    /// implementation's doing (docs/semantics.md#hardening).
    handed: BTreeMap<PteRef, bool>,
    hazards: Vec<Hazard>,
    features: Vec<u32>,
}

impl Checker<'_> {
    fn finding(
        &mut self,
        class: Class,
        step: usize,
        pte: Option<PteRef>,
        target: String,
        oracle: String,
        detail: String,
    ) {
        let (cpu, op) = match self.program.steps.get(step) {
            Some(s) => (s.cpu, s.op.name().to_string()),
            None => (0, "end".to_string()),
        };
        self.features
            .push(feature(&[9, class as u64, step.min(3) as u64]));
        self.dangerous.push(class.dangerous_anywhere());
        self.findings.push(Finding {
            class,
            hardening: false,
            step,
            cpu,
            op,
            pte,
            target,
            oracle,
            detail,
        });
    }
}

/// Compares a target trace with the oracle's trace of the same program. `marker` is the
/// implementation generation's "nothing pending" value. Each rule is a module: `returns`,
/// `events`, `memory` (and marker leaks), `tlb`, `perf`, `hazards`; `features` records
/// the run's model coverage; the contract replay says whether the program is realistic.
pub fn check<'a>(
    program: &'a Program,
    target: &'a Trace,
    oracle: &'a Trace,
    marker: u64,
) -> Verdict {
    let mut ck = Checker {
        program,
        target,
        marker,
        findings: vec![],
        dangerous: vec![],
        named: None,
        sections_open_at_end: false,
        handed: BTreeMap::new(),
        hazards: vec![],
        features: Vec::with_capacity(program.steps.len() * 2 + 8),
    };
    let ncpus = program.config.cpus as usize;
    let mut st = ContractState::new(&program.config);
    let mut dirty = memory::Dirty::new(ncpus);
    let mut contested: BTreeSet<PteRef> = BTreeSet::new();
    let mut contract: Vec<Violation> = vec![];
    let mut syncs = memory::SyncPoints::new(target, oracle);
    let mut flushes = tlb::Flushes::new(target);

    for (i, step) in program.steps.iter().enumerate() {
        let cx = StepCx::new(program, &st, i);
        let (tr, or) = (&target.steps[i], &oracle.steps[i]);
        features::step(&mut ck, &cx, &st, &dirty.task, tr);
        returns::step(&mut ck, &cx, &st, tr, or);
        events::step(&mut ck, &cx, &st, oracle);

        if let Err(rule) = st.check(step) {
            contract.push(Violation {
                step: i,
                cpu: step.cpu,
                rule,
            });
        }
        // The machine's interrupt context, not the caller's frames: they part ways when
        // an adversarial program exits an interrupt it did not enter.
        let in_irq = st.machine().cpus[cx.cpu].in_interrupt();
        if tr.ret != Ret::CpuOffline && step.op.is_pte_update() {
            // Handed to the implementation: routed (ptep_clear_flush never is) into this
            // CPU's own range. A PTE stays contested from an update that bypassed the
            // section claiming it (another CPU's, an unrouted one) while any section
            // still claims it: what memory holds then is the callers' race.
            // A range stays recorded while a broken pause count keeps its section
            // inactive: the batch may still hold the PTE then.
            let routed = !matches!(step.op, Op::PtepClearFlush { .. });
            let active =
                |c: usize, p: PteRef| st.cpus[c].active_range().is_some_and(|r| r.contains(p));
            let recorded = |c: usize, p: PteRef| st.cpus[c].range.is_some_and(|r| r.contains(p));
            for p in step.op.written_ptes() {
                let mine = active(cx.cpu, p);
                let others = (0..ncpus).any(|d| d != cx.cpu && recorded(d, p));
                let bypassed = recorded(cx.cpu, p) && !(mine && routed);
                if others || bypassed {
                    contested.insert(p);
                } else if !recorded(cx.cpu, p) {
                    contested.remove(&p);
                }
                ck.handed
                    .insert(p, routed && mine && !contested.contains(&p));
            }
        }
        if step.op == Op::IrqEnter && !in_irq {
            // An outermost interrupt starts afresh (after a CPU came back, say).
            dirty.irq[cx.cpu].clear();
        }
        st.apply(step);
        if tr.ret != Ret::CpuOffline {
            dirty.add(cx.cpu, &step.op, in_irq);
        }
        syncs.at_step(&mut ck, &cx, &mut dirty);
        if step.op == Op::IrqExit {
            // Checked at this exit if it was a sync point; a new interrupt starts afresh.
            dirty.irq[cx.cpu].clear();
        }
        flushes.at_step(&mut ck, &cx, &st);
    }

    let n = program.steps.len();
    for (cpu, rule) in st.check_end() {
        contract.push(Violation { step: n, cpu, rule });
    }
    if !contract.is_empty() {
        ck.named = Some(named_ptes(program));
    }
    ck.sections_open_at_end = st.machine().cpus.iter().any(|c| c.lazy.enable_count > 0);
    memory::at_end(&mut ck, oracle);
    perf::at_end(&mut ck, oracle);
    let adversarial = !contract.is_empty();
    // Under a broken contract a divergence from eager is expected: only what is dangerous
    // whatever the caller did is reported, as hardening.
    let mut findings: Vec<Finding> = ck
        .findings
        .into_iter()
        .zip(ck.dangerous)
        .filter(|(_, dangerous)| !adversarial || *dangerous)
        .map(|(mut f, _)| {
            f.hardening = adversarial;
            f
        })
        .collect();
    findings.sort_by_key(|f| f.step);
    let mut features = ck.features;
    features.sort_unstable();
    features.dedup();
    Verdict {
        findings,
        hazards: ck.hazards,
        features,
        contract,
    }
}

/// Every PTE the program names (an operation's PTEs, a section's range) or whose table a
/// CPU locks: what an implementation may store to, whatever else the caller got wrong.
fn named_ptes(program: &Program) -> BTreeSet<PteRef> {
    let mut out = BTreeSet::new();
    let table =
        |mm: u8, table: u8| (0..pte::PTRS_PER_PTE as u16).map(move |i| PteRef::new(mm, table, i));
    for s in &program.steps {
        match s.op {
            Op::EnableWithPtes { range, ptep } => {
                out.extend((range.start..range.end.min(256)).map(|i| PteRef {
                    index: i,
                    ..range.first()
                }));
                out.insert(ptep);
            }
            Op::SetPtes { pte, n, .. } => out.extend((0..n).map(|k| pte.offset(k))),
            Op::LockPtl { mm, table: t } => out.extend(table(mm, t)),
            ref op => out.extend(op.pte()),
        }
    }
    out
}

/// What every rule needs to know about the step being checked, taken from the contract
/// state before the step.
struct StepCx<'a> {
    i: usize,
    step: &'a Step,
    cpu: usize,
    in_irq: bool,
    /// This CPU's task has an active section (not paused, not in an interrupt).
    own_active: bool,
    /// CPUs with an active (unpaused) section.
    sectioned: Vec<usize>,
    pte: Option<PteRef>,
}

impl<'a> StepCx<'a> {
    fn new(program: &'a Program, st: &ContractState, i: usize) -> StepCx<'a> {
        let step = &program.steps[i];
        let c = step.cpu as usize;
        let me = &st.cpus[c];
        let in_irq = me.in_irq();
        StepCx {
            i,
            step,
            cpu: c,
            in_irq,
            own_active: me.lazy().is_active() && !in_irq,
            sectioned: (0..program.config.cpus as usize)
                .filter(|&d| st.cpus[d].lazy().is_active())
                .collect(),
            pte: step.op.pte(),
        }
    }

    /// The other CPUs with an active section.
    fn others(&self) -> Vec<usize> {
        self.sectioned
            .iter()
            .copied()
            .filter(|&d| d != self.cpu)
            .collect()
    }
}
