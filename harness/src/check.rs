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

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::contract::{self, ContractState, Violation};
use crate::exec::{Ret, SyncPoint, Trace};
use crate::isolate::Crash;
use crate::machine::{AccessResult, Event, Snapshot};
use crate::program::{MmKind, Op, Program, PteRef};
use crate::pte::{self, PAGE_UNUSED, PTRS_PER_PTE};
use crate::render::{event_text, pte_value};

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
    crate::report::ret_text(r).unwrap_or_else(|| "nothing".into())
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

    /// A memory divergence, or a marker leak if the target holds the marker.
    fn memory(&mut self, step: usize, p: PteRef, t: u64, o: u64, when: &str) {
        let (class, what) = if t == self.marker && o != self.marker {
            (Class::Marker, "the nothing-pending marker reached memory")
        } else {
            (Class::Memory, "page-table memory differs from eager")
        };
        self.finding(
            class,
            step,
            Some(p),
            pte_value(t),
            pte_value(o),
            format!("{what} {when}"),
        );
    }

    fn compare_memory(
        &mut self,
        step: usize,
        ptes: &mut dyn Iterator<Item = PteRef>,
        t: &Snapshot,
        o: &Snapshot,
        when: &str,
    ) {
        // Most sync points agree byte for byte.
        if t.memory == o.memory {
            return;
        }
        let layout = &self.target.layout;
        if let Some((p, tv, ov)) = ptes
            .map(|p| (p, t.pte(layout, p), o.pte(layout, p)))
            .find(|(_, a, b)| norm(*a) != norm(*b))
        {
            self.memory(step, p, tv, ov, when);
        }
    }

    /// docs/semantics.md#rule-stale-tlb: after the caller's flush, every TLB entry of the
    /// flushed mm matches memory, unless the eager code leaves the same entry stale too.
    fn stale_tlb(&mut self, t: &SyncPoint, o: &SyncPoint, mm: u8) {
        if t.snapshot.tlbs == o.snapshot.tlbs && t.snapshot.memory == o.snapshot.memory {
            return; // whatever the eager code leaves stale, the target does too
        }
        let layout = &self.target.layout;
        let stale = |s: &Snapshot, c: usize| -> Vec<(PteRef, u64)> {
            s.tlbs[c]
                .iter()
                .filter(|(p, v)| p.mm == mm && *v != s.pte(layout, *p))
                .copied()
                .collect()
        };
        for c in 0..t.snapshot.tlbs.len() {
            let eager_stale = stale(&o.snapshot, c);
            if let Some((p, v)) = stale(&t.snapshot, c)
                .into_iter()
                .find(|(p, _)| !eager_stale.iter().any(|(q, _)| q == p))
            {
                let mem = t.snapshot.pte(layout, p);
                self.finding(
                    Class::StaleTlb,
                    t.step,
                    Some(p),
                    format!(
                        "cpu{c} TLB holds {}, memory {}",
                        pte_value(v),
                        pte_value(mem)
                    ),
                    "no stale entry".into(),
                    format!(
                        "after the caller's flush, cpu{c} still translates {p} with a stale entry"
                    ),
                );
                return;
            }
        }
    }
}

/// Compares a target trace with the oracle's trace of the same program. `marker` is the
/// implementation generation's "nothing pending" value.
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
        hazards: vec![],
        features: Vec::with_capacity(program.steps.len() * 2 + 8),
    };
    let ncpus = program.config.cpus as usize;
    let mut st = ContractState::new(&program.config);
    // PTEs each CPU changed since its last sync point.
    let mut dirty: Vec<BTreeSet<PteRef>> = vec![BTreeSet::new(); ncpus];
    let mut contract: Vec<Violation> = vec![];
    let mut tsyncs = target.syncs.iter().peekable();
    let mut osyncs = oracle.syncs.iter().peekable();
    let mut tflush = target.flushes.iter().peekable();
    let mut oflush = oracle.flushes.iter().peekable();

    for (i, step) in program.steps.iter().enumerate() {
        let c = step.cpu as usize;
        let me = &st.cpus[c];
        let in_irq = me.in_irq();
        let own_active = me.enable_count > 0 && me.pause_count == 0 && !in_irq;
        let sectioned: Vec<usize> = (0..ncpus)
            .filter(|&d| st.cpus[d].enable_count > 0 && st.cpus[d].pause_count == 0)
            .collect();
        let pte = step.op.pte();
        let in_own_range = pte.is_some_and(|p| me.active_range().is_some_and(|r| r.contains(p)));
        let valid_before = pte
            .filter(|p| program.config.has_pte(*p))
            .map(|p| pte::valid(st.value(p)));
        let attach = pte
            .map(|p| st.attach[p.mm as usize].count_ones().min(2) as u64)
            .unwrap_or(3);
        ck.features.push(feature(&[
            1,
            op_kind(&step.op),
            own_active as u64,
            me.enable_count.min(3) as u64,
            (me.pause_count > 0) as u64,
            in_irq as u64,
            in_own_range as u64,
            pte.is_some_and(|p| dirty[c].contains(&p)) as u64,
            valid_before.map_or(2, |v| v as u64),
            attach,
            (sectioned.iter().any(|&d| d != c)) as u64,
        ]));
        let (tr, or) = (&target.steps[i], &oracle.steps[i]);
        let ranges = tr
            .hw
            .iter()
            .filter(|h| matches!(h, crate::machine::HwEvent::IpteRange { .. }))
            .count();
        let globals = tr.hw.iter().filter(|h| h.is_global()).count();
        ck.features.push(feature(&[
            2,
            op_kind(&step.op),
            ranges.min(3) as u64,
            globals.min(3) as u64,
            own_active as u64,
        ]));

        // Returns.
        let in_transaction =
            pte.is_some_and(|p| st.cpus.iter().any(|s| s.prot.is_some_and(|(q, _)| q == p)));
        let read_only = matches!(
            step.op,
            Op::PtepGet { .. } | Op::PtepGetLockless { .. } | Op::Access { .. }
        );
        let excused = in_transaction && read_only;
        if !excused && !same_ret(&tr.ret, &or.ret) {
            let others: Vec<usize> = sectioned.iter().copied().filter(|&d| d != c).collect();
            // A hardware translation sees memory and the TLB: during a section it misses
            // the batch, and until the caller's flush a deferred purge may leave it a
            // stale entry (docs/semantics.md#rule-stale-tlb judges the TLB after the flush).
            let own_hw_view = matches!(step.op, Op::Access { .. });
            let task_seen_from_irq = in_irq && me.enable_count > 0 && me.pause_count == 0;
            if read_only && (!others.is_empty() || own_hw_view || task_seen_from_irq) {
                ck.hazards.push(hazard(
                    program,
                    &st,
                    i,
                    &others,
                    &tr.ret,
                    &or.ret,
                    own_hw_view,
                    task_seen_from_irq,
                ));
                ck.features
                    .push(feature(&[3, op_kind(&step.op), others.len().min(2) as u64]));
            } else {
                let t = ret_value(&tr.ret);
                let (class, detail) = if t == Some(marker) && ret_value(&or.ret) != Some(marker) {
                    (
                        Class::Marker,
                        "the nothing-pending marker was returned to the caller",
                    )
                } else {
                    (
                        Class::Return,
                        "returned something other than the eager code",
                    )
                };
                ck.finding(
                    class,
                    i,
                    pte,
                    ret_text(&tr.ret),
                    ret_text(&or.ret),
                    detail.into(),
                );
            }
        }

        // Machine rule events of this step that the eager code did not cause.
        // (Events are in step order: the slices of this step are found by bisection.)
        let at = |events: &'a [crate::machine::EventRecord]| {
            let lo = events.partition_point(|e| e.step < i);
            let hi = events.partition_point(|e| e.step <= i);
            &events[lo..hi]
        };
        let (te, oe) = (at(&target.events), at(&oracle.events));
        for e in te {
            if oe.iter().any(|o| o.event == e.event) {
                continue;
            }
            let (class, p) = match &e.event {
                Event::StoreToValidPte { pte, .. }
                | Event::LazyInvalidateWithoutOwedFlush { pte } => (Class::StoreValid, Some(*pte)),
                Event::WildAccess { .. }
                | Event::PoisonOverwritten { .. }
                | Event::IpteRangeCrossesTable { .. } => (Class::Wild, None),
                Event::UvCallOnValidPte { pte, .. } => (Class::UvValid, Some(*pte)),
                Event::Assertion { .. } => (Class::Assertion, None),
                Event::ShadowAccess {
                    pte, owner, in_irq, ..
                } => {
                    if *owner as usize == e.cpu as usize && !*in_irq {
                        (Class::Unrouted, Some(*pte))
                    } else {
                        let others = vec![*owner as usize];
                        ck.hazards.push(Hazard {
                            step: i,
                            cpu: e.cpu,
                            op: step.op.name().into(),
                            pte: Some(*pte),
                            target: event_text(&e.event, Some(step.op.name())),
                            oracle: "no access to a batched slot".into(),
                            context: lock_context(
                                program,
                                &st,
                                e.cpu as usize,
                                Some(*pte),
                                &others,
                            ),
                            harmful: holds_lock(&st, e.cpu as usize, Some(*pte)),
                        });
                        continue;
                    }
                }
            };
            ck.finding(
                class,
                i,
                p,
                event_text(&e.event, Some(step.op.name())),
                "no such event".into(),
                "machine rule broken".into(),
            );
        }

        if let Err(rule) = st.check(step) {
            contract.push(Violation {
                step: i,
                cpu: step.cpu,
                rule,
            });
        }
        st.apply(step);
        if tr.ret != Ret::CpuOffline {
            match step.op {
                Op::SetPtes { pte, n, .. } => dirty[c].extend((0..n).map(|k| pte.offset(k))),
                ref op if op.is_pte_update() => dirty[c].extend(op.pte()),
                _ => {}
            }
        }

        // Sync points: the CPU's changes are in memory (docs/semantics.md#rule-memory).
        while let Some(ts) = tsyncs.next_if(|s| s.step == i) {
            let Some(os) = osyncs.next_if(|s| s.step == i) else {
                continue;
            };
            let sc = ts.cpu as usize;
            if ts.snapshot.memory == os.snapshot.memory {
                dirty[sc].clear();
                continue;
            }
            let others: BTreeSet<PteRef> = (0..ncpus)
                .filter(|&d| d != sc)
                .flat_map(|d| dirty[d].iter().copied())
                .collect();
            let mine: Vec<PteRef> = dirty[sc]
                .iter()
                .filter(|p| !others.contains(p))
                .copied()
                .collect();
            let when = format!("after cpu{sc}'s {}", step.op.name());
            ck.compare_memory(i, &mut mine.into_iter(), &ts.snapshot, &os.snapshot, &when);
            dirty[sc].clear();
        }
        while osyncs.next_if(|s| s.step == i).is_some() {}

        // The caller's flush (docs/semantics.md#rule-stale-tlb).
        while let Some(tf) = tflush.next_if(|s| s.step == i) {
            let Some(of) = oflush.next_if(|s| s.step == i) else {
                continue;
            };
            let mm = match step.op {
                Op::FlushTlbRange { range } => range.mm,
                Op::FlushTlbMm { mm } => mm,
                _ => continue,
            };
            // Sections still open on other CPUs keep their own window.
            if !(0..ncpus).any(|d| st.cpus[d].enable_count > 0) {
                ck.stale_tlb(tf, of, mm);
            }
        }
    }

    // End of program: all of memory (docs/semantics.md#rule-memory), and the global IPTE
    // count (docs/semantics.md#rule-global-ipte).
    let n = program.steps.len();
    let layout = target.layout.clone();
    let all = layout.iter().enumerate().flat_map(|(m, &t)| {
        (0..t).flat_map(move |t| (0..PTRS_PER_PTE as u16).map(move |i| PteRef::new(m as u8, t, i)))
    });
    ck.compare_memory(
        n,
        &mut all.into_iter(),
        &target.end,
        &oracle.end,
        "at the end of the program",
    );
    // Quiesce events: a batch may pay with a global IPTE-range what eager paid with an
    // IDTE (an owed flush at switch-in), so all machine-wide invalidations count.
    let (tc, oc) = (&target.end.counters, &oracle.end.counters);
    if tc.quiesce_events() > oc.quiesce_events() {
        ck.finding(
            Class::PerfGlobalIpte,
            n,
            None,
            format!(
                "{} quiesce events ({} global IPTE, {} IDTE)",
                tc.quiesce_events(),
                tc.global_iptes(),
                tc.idte
            ),
            format!(
                "{} quiesce events ({} global IPTE, {} IDTE)",
                oc.quiesce_events(),
                oc.global_iptes(),
                oc.idte
            ),
            "more machine-wide invalidations (global IPTE, IDTE) than the eager code".into(),
        );
    }
    for (cpu, rule) in st.check_end() {
        contract.push(Violation { step: n, cpu, rule });
    }
    let mut findings = ck.findings;
    for f in &mut findings {
        f.hardening = !contract.is_empty();
    }
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

fn holds_lock(st: &ContractState, cpu: usize, pte: Option<PteRef>) -> bool {
    pte.is_some_and(|p| st.cpus[cpu].holds(p.mm, p.table))
}

fn lock_context(
    program: &Program,
    st: &ContractState,
    cpu: usize,
    pte: Option<PteRef>,
    others: &[usize],
) -> String {
    let who: Vec<String> = others
        .iter()
        .map(|&d| match st.cpus[d].active_range() {
            Some(r) => format!(
                "cpu{d} has a section over mm{} t{}[{}..{})",
                r.mm, r.table, r.start, r.end
            ),
            None => format!("cpu{d} has a section (no range)"),
        })
        .collect();
    let lock = match pte {
        Some(p) if st.cpus[cpu].holds(p.mm, p.table) => {
            let kind = if program.config.mms[p.mm as usize].kind == MmKind::Init {
                "init_mm "
            } else {
                ""
            };
            format!(
                "cpu{cpu} holds the {kind}page-table lock of mm{} t{}, which does not order it against \
                 the batch: harmful (it acts on what it reads)",
                p.mm, p.table
            )
        }
        _ => format!(
            "cpu{cpu} holds no page-table lock: a lockless walker, which must recheck \
             (pte_same / seqcount) and is excused by the generic contract"
        ),
    };
    format!("{}; {lock}", who.join(", "))
}

#[allow(clippy::too_many_arguments)]
fn hazard(
    program: &Program,
    st: &ContractState,
    step: usize,
    others: &[usize],
    t: &Ret,
    o: &Ret,
    own_hw_view: bool,
    from_irq: bool,
) -> Hazard {
    let s = &program.steps[step];
    let cpu = s.cpu as usize;
    let pte = s.op.pte();
    let (context, harmful) = if own_hw_view && others.is_empty() && st.cpus[cpu].enable_count == 0 {
        (
            format!(
                "cpu{cpu}'s translation before the caller's TLB flush: the batch deferred a \
                 purge (flush owed) that the eager code did at once; allowed until the flush"
            ),
            false,
        )
    } else if own_hw_view {
        (
            format!(
                "a hardware translation on cpu{cpu} during a section sees memory, not the \
                 pending updates: harmful if the section's own caller touches the mapping \
                 (e.g. vmalloc/KASAN shadow populated in a section)"
            ),
            others.is_empty() && matches!(t, Ret::Access(AccessResult::TranslationFault { .. })),
        )
    } else if from_irq {
        (
            format!(
                "an interrupt on cpu{cpu} reads while the interrupted task's section is active"
            ),
            false,
        )
    } else {
        (
            lock_context(program, st, cpu, pte, others),
            holds_lock(st, cpu, pte),
        )
    };
    Hazard {
        step,
        cpu: s.cpu,
        op: s.op.name().into(),
        pte,
        target: ret_text(t),
        oracle: ret_text(o),
        context,
        harmful,
    }
}

/// The verdict for a program on which the C code crashed.
pub fn crash_verdict(program: &Program, crash: &Crash) -> Verdict {
    let contract = contract::violations(program);
    Verdict {
        findings: vec![Finding {
            class: Class::Crash,
            hardening: !contract.is_empty(),
            step: program.steps.len(),
            cpu: 0,
            op: "run".into(),
            pte: None,
            target: crash.to_string(),
            oracle: "no crash".into(),
            detail: "the implementation crashed".into(),
        }],
        hazards: vec![],
        features: vec![feature(&[8])],
        contract,
    }
}
