//! docs/semantics.md#rule-memory: at every sync point of a CPU (after a disable of its
//! section, at a pause), memory equals the oracle's for every PTE that CPU changed; at the
//! end of the program, all of memory. docs/semantics.md#rule-marker: a divergence where
//! the target holds the "nothing pending" marker is a marker leak.

use std::collections::BTreeSet;
use std::iter::Peekable;
use std::slice::Iter;

use super::{norm, Checker, Class, StepCx};
use lazymmu_lang::program::{Op, PteRef};
use lazymmu_lang::pte::PTRS_PER_PTE;
use lazymmu_model::exec::{SyncKind, SyncPoint, Trace};
use lazymmu_model::machine::Snapshot;
use lazymmu_model::render::pte_value;

impl Checker<'_> {
    /// A memory divergence, or a marker leak if the target holds the marker.
    fn memory(&mut self, step: usize, p: PteRef, t: u64, o: u64, when: &str) {
        let unnamed = self.named.as_ref().is_some_and(|n| !n.contains(&p));
        let (class, what) = if t == self.marker && o != self.marker {
            (Class::Marker, "the nothing-pending marker reached memory")
        } else if unnamed {
            (
                Class::Memory,
                "page-table memory differs from eager, at a PTE the caller never named",
            )
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
        // Dangerous whatever the contract: the marker in memory, a store nobody asked for,
        // a translation the kernel does not know about (a valid PTE eager does not have).
        // Only where the implementation owed memory the caller's updates: at a sync point,
        // or at the end when no section is left open.
        let owed = step < self.program.steps.len() || !self.sections_open_at_end;
        let unknown_mapping = owed
            && lazymmu_lang::pte::valid(t)
            && norm(t) != norm(o)
            && self.handed.get(&p) == Some(&true);
        let leaked = class == Class::Marker && !self.caller_gave(p, self.marker);
        if leaked || unnamed || unknown_mapping {
            *self.dangerous.last_mut().expect("just pushed") = true;
        }
    }

    /// Whether the program itself put `value` into `p` (an initial value, a store): then
    /// the value in memory is the caller's, not a leak of the implementation's.
    fn caller_gave(&self, p: PteRef, value: u64) -> bool {
        let c = &self.program.config;
        c.init.iter().any(|i| i.pte == p && i.value == value)
            || self.program.steps.iter().any(|s| match s.op {
                Op::SetPte { value: v, .. }
                | Op::ModifyProtCommit { value: v, .. }
                | Op::SetPtes { value: v, .. } => v == value && s.op.writes(p),
                _ => false,
            })
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
}

/// The target's and the oracle's sync points, consumed step by step.
pub(super) struct SyncPoints<'a> {
    target: Peekable<Iter<'a, SyncPoint>>,
    oracle: Peekable<Iter<'a, SyncPoint>>,
}

impl<'a> SyncPoints<'a> {
    pub(super) fn new(target: &'a Trace, oracle: &'a Trace) -> Self {
        SyncPoints {
            target: target.syncs.iter().peekable(),
            oracle: oracle.syncs.iter().peekable(),
        }
    }

    /// The sync points of this step: the syncing CPU's changes are in memory (at an
    /// interrupt's exit, the changes made in the interrupt).
    pub(super) fn at_step(&mut self, ck: &mut Checker, cx: &StepCx, dirty: &mut Dirty) {
        let i = cx.i;
        while let Some(ts) = self.target.next_if(|s| s.step == i) {
            let Some(os) = self.oracle.next_if(|s| s.step == i) else {
                continue;
            };
            let sc = ts.cpu as usize;
            let irq = ts.kind == SyncKind::IrqExit;
            fn set(d: &mut Dirty, irq: bool) -> &mut Vec<BTreeSet<PteRef>> {
                if irq {
                    &mut d.irq
                } else {
                    &mut d.task
                }
            }
            if ts.snapshot.memory == os.snapshot.memory {
                set(dirty, irq)[sc].clear();
                continue;
            }
            let others: BTreeSet<PteRef> = (0..dirty.task.len())
                .filter(|&d| d != sc)
                .flat_map(|d| dirty.task[d].iter().copied())
                .collect();
            let mine: Vec<PteRef> = set(dirty, irq)[sc]
                .iter()
                .filter(|p| !others.contains(p))
                .copied()
                .collect();
            let when = format!("after cpu{sc}'s {}", cx.step.op.name());
            ck.compare_memory(i, &mut mine.into_iter(), &ts.snapshot, &os.snapshot, &when);
            set(dirty, irq)[sc].clear();
        }
        while self.oracle.next_if(|s| s.step == i).is_some() {}
    }
}

/// PTEs each CPU changed since its last sync point: in any context (`task`), and in
/// interrupt context since the interrupt's exit was last checked (`irq`).
pub(super) struct Dirty {
    pub(super) task: Vec<BTreeSet<PteRef>>,
    pub(super) irq: Vec<BTreeSet<PteRef>>,
}

impl Dirty {
    pub(super) fn new(ncpus: usize) -> Self {
        Dirty {
            task: vec![BTreeSet::new(); ncpus],
            irq: vec![BTreeSet::new(); ncpus],
        }
    }

    /// Records what `step` wrote; `in_irq` is the step's context.
    pub(super) fn add(&mut self, c: usize, op: &Op, in_irq: bool) {
        for p in op.written_ptes() {
            self.task[c].insert(p);
            if in_irq {
                self.irq[c].insert(p);
            }
        }
    }
}

/// The end of the program: all of memory. Under a broken contract, a divergence at a PTE
/// the caller never named is looked for first: it is the dangerous one.
pub(super) fn at_end(ck: &mut Checker, oracle: &Trace) {
    let n = ck.program.steps.len();
    let target = ck.target;
    let all = target.layout.iter().enumerate().flat_map(|(m, &t)| {
        (0..t).flat_map(move |t| (0..PTRS_PER_PTE as u16).map(move |i| PteRef::new(m as u8, t, i)))
    });
    let when = "at the end of the program";
    let (t, o) = (&target.end, &oracle.end);
    if let Some(named) = ck.named.clone() {
        let before = ck.findings.len();
        let mut unnamed = all.clone().filter(|p| !named.contains(p));
        ck.compare_memory(n, &mut unnamed, t, o, when);
        if ck.findings.len() > before {
            return;
        }
    }
    ck.compare_memory(n, &mut all.into_iter(), t, o, when);
}
