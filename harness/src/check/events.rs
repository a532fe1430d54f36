//! Machine rule events the target caused and the eager code did not:
//! docs/semantics.md#rule-store-valid (a valid PTE changed without IPTE),
//! docs/semantics.md#rule-contained (wild accesses, IPTE-range past a table),
//! docs/semantics.md#rule-uv (UV call on a valid PTE), docs/semantics.md#rule-routing (the
//! eager path touched a slot of the CPU's own active range) and
//! docs/semantics.md#rule-assertions. Another context touching a batched slot is a hazard.

use super::hazards::{holds_lock, lock_context};
use super::{Checker, Class, Hazard, StepCx};
use crate::contract::ContractState;
use lazymmu_lang::program::{Op, PteRef};
use lazymmu_model::exec::Trace;
use lazymmu_model::machine::{Event, EventRecord};
use lazymmu_model::render::event_text;

pub(super) fn step(ck: &mut Checker, cx: &StepCx, st: &ContractState, oracle: &Trace) {
    let i = cx.i;
    // Events are in step order: the slices of this step are found by bisection.
    let at = |events: &[EventRecord]| -> (usize, usize) {
        (
            events.partition_point(|e| e.step < i),
            events.partition_point(|e| e.step <= i),
        )
    };
    let target = ck.target;
    let (tl, th) = at(&target.events);
    let (ol, oh) = at(&oracle.events);
    let (te, oe) = (&target.events[tl..th], &oracle.events[ol..oh]);
    let op = cx.step.op.name();
    for e in te {
        if oe.iter().any(|o| o.event == e.event) {
            continue;
        }
        let (class, p) = match &e.event {
            Event::StoreToValidPte { pte, .. } | Event::LazyInvalidateWithoutOwedFlush { pte } => {
                (Class::StoreValid, Some(*pte))
            }
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
                        op: op.into(),
                        pte: Some(*pte),
                        target: event_text(&e.event, Some(op)),
                        oracle: "no access to a batched slot".into(),
                        context: lock_context(ck.program, st, e.cpu as usize, Some(*pte), &others),
                        harmful: holds_lock(st, e.cpu as usize, Some(*pte)),
                    });
                    continue;
                }
            }
        };
        ck.finding(
            class,
            i,
            p,
            event_text(&e.event, Some(op)),
            "no such event".into(),
            "machine rule broken".into(),
        );
        // The caller's own plain store over a valid PTE (which the contract forbids) is the
        // base code doing what it was told, not the implementation changing a valid PTE.
        if class == Class::StoreValid && p.is_some_and(|p| caller_stores(&cx.step.op, p)) {
            *ck.dangerous.last_mut().expect("just pushed") = false;
        }
    }
}

/// Whether `op` is a plain store the caller makes to `p`.
fn caller_stores(op: &Op, p: PteRef) -> bool {
    match *op {
        Op::SetPtes { pte, n, .. } => {
            p.mm == pte.mm && p.table == pte.table && (pte.index..pte.index + n).contains(&p.index)
        }
        Op::SetPte { pte, .. }
        | Op::PteClear { pte }
        | Op::ModifyProtCommit { pte, .. }
        | Op::PtepGetAndClearFull { pte, full: true } => pte == p,
        _ => false,
    }
}
