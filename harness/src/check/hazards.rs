//! docs/semantics.md#rule-hazards: other CPUs, interrupts and hardware translations may
//! see pre-batch values during a section. Such reads are hazards, listed apart from bugs,
//! with the lock context that makes them harmful (the reader holds the page-table lock
//! and acts on what it read) or harmless (a lockless walker, which rechecks).

use super::{ret_text, Hazard};
use crate::contract::ContractState;
use lazymmu_lang::program::{MmKind, Program, PteRef};
use lazymmu_model::exec::Ret;
use lazymmu_model::machine::AccessResult;

pub(super) fn holds_lock(st: &ContractState, cpu: usize, pte: Option<PteRef>) -> bool {
    pte.is_some_and(|p| st.cpus[cpu].holds(p.mm, p.table))
}

pub(super) fn lock_context(
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

/// A read that another context made during a section and that saw something the
/// eager code would not show.
pub(super) struct Read<'a> {
    pub step: usize,
    /// The CPUs whose sections hide updates from it.
    pub others: &'a [usize],
    pub target: &'a Ret,
    pub oracle: &'a Ret,
    /// The step's own hardware translation (an access).
    pub own_hw_view: bool,
    /// An interrupt on a CPU whose task has an active section.
    pub from_irq: bool,
}

/// The hazard of a read, with the lock context that makes it harmful or harmless.
pub(super) fn hazard(program: &Program, st: &ContractState, r: Read) -> Hazard {
    let s = &program.steps[r.step];
    let cpu = s.cpu as usize;
    let pte = s.op.pte();
    let (context, harmful) =
        if r.own_hw_view && r.others.is_empty() && st.cpus[cpu].enable_count == 0 {
            (
                format!(
                    "cpu{cpu}'s translation before the caller's TLB flush: the batch deferred a \
                 purge (flush owed) that the eager code did at once; allowed until the flush"
                ),
                false,
            )
        } else if r.own_hw_view {
            (
                format!(
                    "a hardware translation on cpu{cpu} during a section sees memory, not the \
                 pending updates: harmful if the section's own caller touches the mapping \
                 (e.g. vmalloc/KASAN shadow populated in a section)"
                ),
                r.others.is_empty()
                    && matches!(r.target, Ret::Access(AccessResult::TranslationFault { .. })),
            )
        } else if r.from_irq {
            (
                format!(
                    "an interrupt on cpu{cpu} reads while the interrupted task's section is active"
                ),
                false,
            )
        } else {
            (
                lock_context(program, st, cpu, pte, r.others),
                holds_lock(st, cpu, pte),
            )
        };
    Hazard {
        step: r.step,
        cpu: s.cpu,
        op: s.op.name().into(),
        pte,
        target: ret_text(r.target),
        oracle: ret_text(r.oracle),
        context,
        harmful,
    }
}
