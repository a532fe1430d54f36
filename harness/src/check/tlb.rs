//! docs/semantics.md#rule-stale-tlb: after the caller's flush, no CPU's TLB holds a stale
//! translation that the flush covers and whose purge the eager code's own semantics owe.

use std::iter::Peekable;
use std::slice::Iter;

use super::{Checker, Class, StepCx};
use crate::contract::ContractState;
use lazymmu_lang::program::{Op, PteRef};
use lazymmu_model::exec::{SyncPoint, Trace};
use lazymmu_model::render::pte_value;

impl Checker<'_> {
    /// docs/semantics.md#rule-stale-tlb: every TLB entry the flush covers either matches
    /// memory or was left stale by a change that owed no purge (a `full=1` clear, a plain
    /// store). What the eager code purges by accident (an IDTE owed by another PTE, an
    /// IPTE owed by a later value) is not owed, so keeping it is no finding.
    fn stale_tlb(&mut self, t: &SyncPoint, covers: impl Fn(PteRef) -> bool, st: &ContractState) {
        let layout = &self.target.layout;
        for (c, tlb) in t.snapshot.tlbs.iter().enumerate() {
            let Some(&(p, v)) = tlb.iter().find(|&&(p, v)| {
                covers(p) && v != t.snapshot.pte(layout, p) && st.owes_purge(c as u8, p, v)
            }) else {
                continue;
            };
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
                    "after the caller's flush, cpu{c} still translates {p} with a stale entry \
                     whose purge the change to {} owed",
                    pte_value(mem)
                ),
            );
            return;
        }
    }
}

/// The target's snapshots right after each caller's flush (and switch-in), consumed step by
/// step.
pub(super) struct Flushes<'a> {
    target: Peekable<Iter<'a, SyncPoint>>,
}

impl<'a> Flushes<'a> {
    pub(super) fn new(target: &'a Trace) -> Self {
        Flushes {
            target: target.flushes.iter().peekable(),
        }
    }

    /// The caller's flush of this step, if it is one; `st` is the state after the step.
    pub(super) fn at_step(&mut self, ck: &mut Checker, cx: &StepCx, st: &ContractState) {
        let i = cx.i;
        while let Some(tf) = self.target.next_if(|s| s.step == i) {
            // Sections still open on other CPUs keep their own window.
            let ncpus = ck.program.config.cpus as usize;
            if st.cpus.iter().take(ncpus).any(|c| c.enable_count > 0) {
                continue;
            }
            match cx.step.op {
                Op::FlushTlbRange { range } => ck.stale_tlb(tf, |p| range.contains(p), st),
                Op::FlushTlbMm { mm } | Op::SwitchMm { mm: Some(mm) } => {
                    ck.stale_tlb(tf, |p| p.mm == mm, st)
                }
                _ => {}
            }
        }
    }
}
