//! docs/semantics.md#rule-memory: at every sync point of a CPU (after a disable of its
//! section, at a pause), memory equals the oracle's for every PTE that CPU changed; at the
//! end of the program, all of memory. docs/semantics.md#rule-marker: a divergence where
//! the target holds the "nothing pending" marker is a marker leak.

use std::collections::BTreeSet;
use std::iter::Peekable;
use std::slice::Iter;

use super::{norm, Checker, Class, StepCx};
use lazymmu_lang::program::PteRef;
use lazymmu_lang::pte::PTRS_PER_PTE;
use lazymmu_model::exec::{SyncPoint, Trace};
use lazymmu_model::machine::Snapshot;
use lazymmu_model::render::pte_value;

impl Checker<'_> {
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

    /// The sync points of this step: the syncing CPU's changes are in memory.
    pub(super) fn at_step(
        &mut self,
        ck: &mut Checker,
        cx: &StepCx,
        dirty: &mut [BTreeSet<PteRef>],
    ) {
        let i = cx.i;
        while let Some(ts) = self.target.next_if(|s| s.step == i) {
            let Some(os) = self.oracle.next_if(|s| s.step == i) else {
                continue;
            };
            let sc = ts.cpu as usize;
            if ts.snapshot.memory == os.snapshot.memory {
                dirty[sc].clear();
                continue;
            }
            let others: BTreeSet<PteRef> = (0..dirty.len())
                .filter(|&d| d != sc)
                .flat_map(|d| dirty[d].iter().copied())
                .collect();
            let mine: Vec<PteRef> = dirty[sc]
                .iter()
                .filter(|p| !others.contains(p))
                .copied()
                .collect();
            let when = format!("after cpu{sc}'s {}", cx.step.op.name());
            ck.compare_memory(i, &mut mine.into_iter(), &ts.snapshot, &os.snapshot, &when);
            dirty[sc].clear();
        }
        while self.oracle.next_if(|s| s.step == i).is_some() {}
    }
}

/// The end of the program: all of memory.
pub(super) fn at_end(ck: &mut Checker, oracle: &Trace) {
    let n = ck.program.steps.len();
    let target = ck.target;
    let all = target.layout.iter().enumerate().flat_map(|(m, &t)| {
        (0..t).flat_map(move |t| (0..PTRS_PER_PTE as u16).map(move |i| PteRef::new(m as u8, t, i)))
    });
    ck.compare_memory(
        n,
        &mut all.into_iter(),
        &target.end,
        &oracle.end,
        "at the end of the program",
    );
}
