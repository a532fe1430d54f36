//! The model features of a step, for the engines' coverage feedback: the op against the
//! CPU's lazy-MMU state (active, depth, paused, in an interrupt), the PTE's place (in the
//! CPU's range, pending, valid in memory), the mm's attach count, other CPUs' sections,
//! and the instructions the target issued.

use std::collections::BTreeSet;

use super::{feature, op_kind, Checker, StepCx};
use crate::contract::ContractState;
use lazymmu_lang::program::PteRef;
use lazymmu_lang::pte;
use lazymmu_model::exec::StepRecord;
use lazymmu_model::machine::HwEvent;

pub(super) fn step(
    ck: &mut Checker,
    cx: &StepCx,
    st: &ContractState,
    dirty: &[BTreeSet<PteRef>],
    tr: &StepRecord,
) {
    let me = &st.cpus[cx.cpu];
    let pte = cx.pte;
    let in_own_range = pte.is_some_and(|p| me.active_range().is_some_and(|r| r.contains(p)));
    let valid_before = pte
        .filter(|p| ck.program.config.has_pte(*p))
        .map(|p| pte::valid(st.value(p)));
    let attach = pte
        .map(|p| st.attach[p.mm as usize].count_ones().min(2) as u64)
        .unwrap_or(3);
    let kind = op_kind(&cx.step.op);
    ck.features.push(feature(&[
        1,
        kind,
        cx.own_active as u64,
        me.enable_count.min(3) as u64,
        (me.pause_count > 0) as u64,
        cx.in_irq as u64,
        in_own_range as u64,
        pte.is_some_and(|p| dirty[cx.cpu].contains(&p)) as u64,
        valid_before.map_or(2, |v| v as u64),
        attach,
        (cx.sectioned.iter().any(|&d| d != cx.cpu)) as u64,
    ]));
    let ranges = tr
        .hw
        .iter()
        .filter(|h| matches!(h, HwEvent::IpteRange { .. }))
        .count();
    let globals = tr.hw.iter().filter(|h| h.is_global()).count();
    ck.features.push(feature(&[
        2,
        kind,
        ranges.min(3) as u64,
        globals.min(3) as u64,
        cx.own_active as u64,
    ]));
}
