//! docs/semantics.md#rule-returns: every call returns what the eager code returns,
//! except reads inside a `ptep_modify_prot_start/commit` transaction; a read another
//! context makes during a section is a hazard, not a bug; the marker returned to a caller
//! is a marker leak (docs/semantics.md#rule-marker).

use super::hazards::{hazard, Read};
use super::{feature, op_kind, ret_text, ret_value, same_ret, Checker, Class, StepCx};
use crate::contract::ContractState;
use lazymmu_lang::program::Op;
use lazymmu_model::exec::StepRecord;

pub(super) fn step(
    ck: &mut Checker,
    cx: &StepCx,
    st: &ContractState,
    tr: &StepRecord,
    or: &StepRecord,
) {
    let pte = cx.pte;
    let in_transaction =
        pte.is_some_and(|p| st.cpus.iter().any(|s| s.prot.is_some_and(|(q, _)| q == p)));
    let read_only = matches!(
        cx.step.op,
        Op::PtepGet { .. } | Op::PtepGetLockless { .. } | Op::Access { .. }
    );
    if (in_transaction && read_only) || same_ret(&tr.ret, &or.ret) {
        return;
    }
    let me = &st.cpus[cx.cpu];
    let others = cx.others();
    // A hardware translation sees memory and the TLB: during a section it misses the
    // batch, and until the caller's flush a deferred purge may leave it a stale entry
    // (docs/semantics.md#rule-stale-tlb judges the TLB after the flush).
    let own_hw_view = matches!(cx.step.op, Op::Access { .. });
    let task_seen_from_irq = cx.in_irq && me.lazy().is_active();
    if read_only && (!others.is_empty() || own_hw_view || task_seen_from_irq) {
        ck.hazards.push(hazard(
            ck.program,
            st,
            Read {
                step: cx.i,
                others: &others,
                target: &tr.ret,
                oracle: &or.ret,
                own_hw_view,
                from_irq: task_seen_from_irq,
            },
        ));
        ck.features.push(feature(&[
            3,
            op_kind(&cx.step.op),
            others.len().min(2) as u64,
        ]));
        return;
    }
    let t = ret_value(&tr.ret);
    let (class, detail) = if t == Some(ck.marker) && ret_value(&or.ret) != Some(ck.marker) {
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
        cx.i,
        pte,
        ret_text(&tr.ret),
        ret_text(&or.ret),
        detail.into(),
    );
}
