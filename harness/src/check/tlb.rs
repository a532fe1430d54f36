//! docs/semantics.md#rule-stale-tlb: after the caller's flush, no CPU's TLB holds a
//! translation of the flushed mm that differs from memory, unless the eager code leaves
//! the same entry stale too.

use std::iter::Peekable;
use std::slice::Iter;

use super::{Checker, Class, StepCx};
use crate::contract::ContractState;
use lazymmu_lang::program::{Op, PteRef};
use lazymmu_model::exec::{SyncPoint, Trace};
use lazymmu_model::machine::Snapshot;
use lazymmu_model::render::pte_value;

impl Checker<'_> {
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

/// The snapshots right after each caller's flush, consumed step by step.
pub(super) struct Flushes<'a> {
    target: Peekable<Iter<'a, SyncPoint>>,
    oracle: Peekable<Iter<'a, SyncPoint>>,
}

impl<'a> Flushes<'a> {
    pub(super) fn new(target: &'a Trace, oracle: &'a Trace) -> Self {
        Flushes {
            target: target.flushes.iter().peekable(),
            oracle: oracle.flushes.iter().peekable(),
        }
    }

    /// The caller's flush of this step, if it is one; `st` is the state after the step.
    pub(super) fn at_step(&mut self, ck: &mut Checker, cx: &StepCx, st: &ContractState) {
        let i = cx.i;
        while let Some(tf) = self.target.next_if(|s| s.step == i) {
            let Some(of) = self.oracle.next_if(|s| s.step == i) else {
                continue;
            };
            let mm = match cx.step.op {
                Op::FlushTlbRange { range } => range.mm,
                Op::FlushTlbMm { mm } => mm,
                _ => continue,
            };
            // Sections still open on other CPUs keep their own window.
            let ncpus = ck.program.config.cpus as usize;
            if !st.cpus.iter().take(ncpus).any(|c| c.enable_count > 0) {
                ck.stale_tlb(tf, of, mm);
            }
        }
    }
}
