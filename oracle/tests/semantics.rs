//! Hand-worked examples of every row of docs/semantics.md#eager (the eager oracle), with
//! the invalidation policies of docs/semantics.md#policies: the direct policy (local IPTE iff TLB-LC and
//! `mm_cpumask == {this cpu}`, else global) and the lazy policy (no IPTE and `flush_mm`
//! owed iff `cpu_attach_mask == {this cpu}`, else a global IPTE, never local). Neither
//! policy issues anything when the old value is already invalid.
//!
//! Values used (pfn 0x1a): RW `0x1a03d` (valid), RO `0x1a215` (valid, P), OLD `0x1a631`
//! (present, old, clean: hardware-invalid), none `0x400`, swap `0x1a600`.

mod common;

use common::*;
use lazymmu_harness::contract;
use lazymmu_model::machine::{Event, EventRecord, HwEvent, UvKind};
use lazymmu_model::Ret;

/// One configuration of an IPTE-issuing row and what the oracle must do in it.
struct Case {
    /// The `attach=` of mm0 on a 2-CPU machine: "0" (single) or "0,1" (multi).
    attach: &'static str,
    tlb_lc: bool,
    old: u64,
    ret: Ret,
    /// t0[5] after the op (or, for rows with extra steps, at the end).
    mem: u64,
    /// None: no IPTE; Some(LOCAL) / Some(GLOBAL): exactly one IPTE of that scope.
    ipte: Option<bool>,
    flush_mm: bool,
}

const fn case(
    attach: &'static str,
    tlb_lc: bool,
    old: u64,
    ret: Ret,
    mem: u64,
    ipte: Option<bool>,
    flush_mm: bool,
) -> Case {
    Case {
        attach,
        tlb_lc,
        old,
        ret,
        mem,
        ipte,
        flush_mm,
    }
}

/// Runs `cpu0 <op>` (step 1, `op` names mm0 t0[5]) under the page-table lock, followed
/// by `extra` step lines, for every case; checks the op's return, its IPTEs, the final
/// memory and `flush_mm`. Returns the traces for row-specific checks.
fn check_row(op: &str, extra: &str, cases: &[Case]) -> Vec<lazymmu_model::Trace> {
    cases
        .iter()
        .map(|c| {
            let src = format!(
                "{}mm0 user attach={} tables=1\n\
                 init mm0 t0[5] = {:#x}\n\
                 cpu0 lock_ptl mm0 t0\n\
                 cpu0 {op}\n\
                 {extra}\
                 cpu0 unlock_ptl mm0 t0\n",
                header(2, c.tlb_lc, "realistic"),
                c.attach,
                c.old
            );
            let t = run_clean(&src);
            let what = format!(
                "{op}: attach={} tlb_lc={} old={:#x}",
                c.attach, c.tlb_lc, c.old
            );
            assert_eq!(t.steps[1].ret, c.ret, "{what}: return");
            let want: Vec<HwEvent> = c.ipte.map(|l| ipte(0, 0, 5, l)).into_iter().collect();
            assert_eq!(t.steps[1].hw, want, "{what}: instructions");
            assert_eq!(all_hw(&t), want, "{what}: instructions of the program");
            assert_eq!(mem(&t, 0, 0, 5), c.mem, "{what}: memory");
            assert_eq!(t.end.mms[0].flush_mm, c.flush_mm, "{what}: flush_mm");
            assert_eq!(t.end.mms[0].flush_count, 0, "{what}: flush_count");
            let cnt = t.end.counters;
            assert_eq!(
                (cnt.ipte_local, cnt.ipte_global),
                match c.ipte {
                    None => (0, 0),
                    Some(LOCAL) => (1, 0),
                    Some(GLOBAL) => (0, 1),
                },
                "{what}: counters"
            );
            assert_eq!(cnt.idte + cnt.uv_calls + cnt.ipte_range_global, 0, "{what}");
            t
        })
        .collect()
}

// ---- set_pte / set_pte_at / set_ptes ----

#[test]
fn set_pte_stores_the_value_with_no_ipte() {
    let t = run_clean(&format!(
        "{}mm0 user attach=0,1 tables=1\n\
         init mm0 t0[3] = 0x1a600\n\
         init mm0 t0[4] = 0x1a631\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 set_pte mm0 t0[2] = 0x2b03d\n\
         cpu0 set_pte mm0 t0[3] = 0x3c215\n\
         cpu0 set_pte mm0 t0[4] = 0x1a03d\n\
         cpu0 set_pte mm0 t0[6] = 0x4d600\n\
         cpu0 unlock_ptl mm0 t0\n",
        header(2, true, "realistic")
    ));
    for i in 1..=4 {
        assert_eq!(t.steps[i].ret, Ret::None);
        assert_eq!(t.steps[i].hw, vec![]);
    }
    assert_eq!(mem(&t, 0, 0, 2), 0x2b03d); // over none
    assert_eq!(mem(&t, 0, 0, 3), 0x3c215); // over a swap entry
    assert_eq!(mem(&t, 0, 0, 4), 0x1a03d); // over an old (invalid) present PTE
    assert_eq!(mem(&t, 0, 0, 6), 0x4d600); // a swap entry over none
    assert_eq!(t.end.counters, Default::default());
    assert!(!t.end.mms[0].flush_mm);
}

#[test]
fn set_ptes_stores_n_entries_advancing_the_pfn() {
    let t = run_clean(&format!(
        "{}mm0 user attach=0 tables=1\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 set_ptes mm0 t0[10] n=4 = 0x1a03d\n\
         cpu0 set_ptes mm0 t0[255] n=1 = 0x2b215\n\
         cpu0 unlock_ptl mm0 t0\n",
        header(2, true, "realistic")
    ));
    assert_eq!(t.steps[1].ret, Ret::None);
    assert_eq!(t.steps[1].hw, vec![]);
    assert_eq!(mem(&t, 0, 0, 9), NONE);
    assert_eq!(mem(&t, 0, 0, 10), 0x1a03d);
    assert_eq!(mem(&t, 0, 0, 11), 0x1b03d);
    assert_eq!(mem(&t, 0, 0, 12), 0x1c03d);
    assert_eq!(mem(&t, 0, 0, 13), 0x1d03d);
    assert_eq!(mem(&t, 0, 0, 14), NONE);
    assert_eq!(mem(&t, 0, 0, 255), 0x2b215);
    assert_eq!(t.end.counters, Default::default());
}

#[test]
fn set_pte_strips_the_unused_bit_from_present_values_only() {
    // 0x80 is not a value a kernel stores, so these programs are adversarial; the
    // oracle still stores what the newer __set_pte() stores.
    let t = run_no_events(&format!(
        "{}mm0 user attach=0,1 tables=1\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 set_pte mm0 t0[1] = 0x1a0bd\n\
         cpu0 set_pte mm0 t0[2] = 0x1a680\n\
         cpu0 set_ptes mm0 t0[3] n=2 = 0x2b295\n\
         cpu0 ptep_get mm0 t0[1]\n\
         cpu0 unlock_ptl mm0 t0\n",
        header(2, true, "adversarial")
    ));
    assert_eq!(mem(&t, 0, 0, 1), 0x1a03d); // present: 0x80 stripped
    assert_eq!(mem(&t, 0, 0, 2), 0x1a680); // not present (swap): kept
    assert_eq!(mem(&t, 0, 0, 3), 0x2b215);
    assert_eq!(mem(&t, 0, 0, 4), 0x2c215);
    assert_eq!(t.steps[4].ret, Ret::Pte(0x1a03d));
    assert_eq!(all_hw(&t), vec![]);
}

// ---- ptep_get / ptep_get_lockless ----

#[test]
fn ptep_get_returns_memory_and_issues_nothing() {
    let t = run_clean(&format!(
        "{}mm0 user attach=0,1 tables=1\n\
         init mm0 t0[1] = 0x1a03d\n\
         init mm0 t0[2] = 0x1a631\n\
         init mm0 t0[3] = 0x1a600\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 ptep_get mm0 t0[1]\n\
         cpu0 ptep_get mm0 t0[2]\n\
         cpu0 ptep_get mm0 t0[3]\n\
         cpu0 ptep_get mm0 t0[4]\n\
         cpu0 set_pte mm0 t0[4] = 0x2b215\n\
         cpu0 unlock_ptl mm0 t0\n\
         cpu1 lock_ptl mm0 t0\n\
         cpu1 ptep_get mm0 t0[4]\n\
         cpu1 unlock_ptl mm0 t0\n",
        header(2, true, "realistic")
    ));
    assert_eq!(t.steps[1].ret, Ret::Pte(0x1a03d));
    assert_eq!(t.steps[2].ret, Ret::Pte(0x1a631));
    assert_eq!(t.steps[3].ret, Ret::Pte(0x1a600));
    assert_eq!(t.steps[4].ret, Ret::Pte(NONE));
    // Eager visibility: the other CPU sees the store at once.
    assert_eq!(t.steps[8].ret, Ret::Pte(0x2b215));
    assert_eq!(all_hw(&t), vec![]);
    assert_eq!(mem(&t, 0, 0, 1), 0x1a03d);
}

#[test]
fn ptep_get_lockless_returns_memory_from_any_cpu_without_lock() {
    let t = run_clean(&format!(
        "{}mm0 user attach=0 tables=1\n\
         init mm0 t0[5] = 0x1a03d\n\
         cpu1 ptep_get_lockless mm0 t0[5]\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 ptep_get_and_clear mm0 t0[5]\n\
         cpu1 ptep_get_lockless mm0 t0[5]\n\
         cpu0 set_pte mm0 t0[5] = 0x2b215\n\
         cpu1 ptep_get_lockless mm0 t0[5]\n\
         cpu0 unlock_ptl mm0 t0\n\
         cpu0 ptep_get_lockless mm0 t0[6]\n",
        header(2, true, "realistic")
    ));
    assert_eq!(t.steps[0].ret, Ret::Pte(0x1a03d));
    assert_eq!(t.steps[3].ret, Ret::Pte(NONE));
    assert_eq!(t.steps[5].ret, Ret::Pte(0x2b215));
    assert_eq!(t.steps[7].ret, Ret::Pte(NONE));
    for i in [0, 3, 5, 7] {
        assert_eq!(t.steps[i].hw, vec![]);
    }
}

// ---- pte_clear ----

#[test]
fn pte_clear_stores_none_with_no_ipte() {
    let t = run_clean(&format!(
        "{}mm0 user attach=0,1 tables=1\n\
         init mm0 t0[1] = 0x1a600\n\
         init mm0 t0[2] = 0x1a631\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 pte_clear mm0 t0[1]\n\
         cpu0 pte_clear mm0 t0[2]\n\
         cpu0 pte_clear mm0 t0[3]\n\
         cpu0 unlock_ptl mm0 t0\n",
        header(2, true, "realistic")
    ));
    for i in 1..=3 {
        assert_eq!(t.steps[i].ret, Ret::None);
        assert_eq!(mem(&t, 0, 0, i as u16), NONE);
    }
    assert_eq!(all_hw(&t), vec![]);
    assert!(!t.end.mms[0].flush_mm);
}

// ---- ptep_test_and_clear_young: direct policy ----

#[test]
fn ptep_test_and_clear_young_direct_policy() {
    let young = Ret::Bool(true);
    let not_young = Ret::Bool(false);
    let mkold_rw = 0x1a439; // (0x1a03d & !YOUNG) | I
    check_row(
        "ptep_test_and_clear_young mm0 t0[5]",
        "",
        &[
            case("0", true, RW, young, mkold_rw, Some(LOCAL), false),
            case("0", false, RW, young, mkold_rw, Some(GLOBAL), false),
            case("0,1", true, RW, young, mkold_rw, Some(GLOBAL), false),
            case("0,1", false, RW, young, mkold_rw, Some(GLOBAL), false),
            case("0", true, RO, young, 0x1a611, Some(LOCAL), false),
            case("0,1", true, RO, young, 0x1a611, Some(GLOBAL), false),
            // Old value invalid: nothing to purge.
            case("0", true, OLD, not_young, OLD, None, false),
            case("0", false, OLD, not_young, OLD, None, false),
            case("0,1", true, OLD, not_young, OLD, None, false),
            case("0,1", false, OLD, not_young, OLD, None, false),
        ],
    );
}

// ---- ptep_get_and_clear and ptep_get_and_clear_full(full=0): lazy policy ----

fn get_and_clear_cases() -> Vec<Case> {
    let ret = Ret::Pte;
    vec![
        // Single-attached: no IPTE, old|I stored, purge owed.
        case("0", true, RW, ret(RW), NONE, None, true),
        case("0", false, RW, ret(RW), NONE, None, true),
        // Multi-attached: global IPTE, even with TLB-LC.
        case("0,1", true, RW, ret(RW), NONE, Some(GLOBAL), false),
        case("0,1", false, RW, ret(RW), NONE, Some(GLOBAL), false),
        case("0,1", true, RO, ret(RO), NONE, Some(GLOBAL), false),
        // Old value invalid: no IPTE, nothing owed.
        case("0", true, OLD, ret(OLD), NONE, None, false),
        case("0", false, OLD, ret(OLD), NONE, None, false),
        case("0,1", true, OLD, ret(OLD), NONE, None, false),
        case("0,1", false, OLD, ret(OLD), NONE, None, false),
        case("0,1", true, SWAP, ret(SWAP), NONE, None, false),
        case("0", true, NONE, ret(NONE), NONE, None, false),
    ]
}

#[test]
fn ptep_get_and_clear_lazy_policy() {
    check_row("ptep_get_and_clear mm0 t0[5]", "", &get_and_clear_cases());
}

#[test]
fn ptep_get_and_clear_full_0_is_ptep_get_and_clear() {
    check_row(
        "ptep_get_and_clear_full mm0 t0[5] full=0",
        "",
        &get_and_clear_cases(),
    );
}

#[test]
fn ptep_get_and_clear_full_1_never_issues_an_ipte() {
    // exit_mmap: no CPU runs the mm any more (attach=none); plain read and store.
    for tlb_lc in [true, false] {
        for old in [RW, RO, OLD, SWAP, NONE] {
            let t = run_clean(&format!(
                "{}mm0 user attach=none tables=1\n\
                 init mm0 t0[5] = {old:#x}\n\
                 cpu0 lock_ptl mm0 t0\n\
                 cpu0 ptep_get_and_clear_full mm0 t0[5] full=1\n\
                 cpu0 unlock_ptl mm0 t0\n\
                 cpu0 flush_tlb_mm mm0\n",
                header(2, tlb_lc, "realistic")
            ));
            let what = format!("tlb_lc={tlb_lc} old={old:#x}");
            assert_eq!(t.steps[1].ret, Ret::Pte(old), "{what}");
            assert_eq!(t.steps[1].hw, vec![], "{what}");
            assert_eq!(mem(&t, 0, 0, 5), NONE, "{what}");
            assert!(!t.end.mms[0].flush_mm, "{what}");
            assert_eq!(t.end.counters, Default::default(), "{what}");
        }
    }
}

// ---- ptep_modify_prot_start / commit ----

#[test]
fn ptep_modify_prot_start_lazy_policy_leaves_old_with_i() {
    // Between start and commit another CPU's lockless read sees what start left in
    // memory: old | I (still present, pfn kept). The commit then stores the new value.
    let commit = |new: u64| {
        format!(
            "cpu1 ptep_get_lockless mm0 t0[5]\ncpu0 ptep_modify_prot_commit mm0 t0[5] = {new:#x}\n"
        )
    };
    let ret = Ret::Pte;
    // RW -> wrprotected 0x1a21d; OLD -> 0x1a611.
    let valid = [
        case("0", true, RW, ret(RW), 0x1a21d, None, true),
        case("0", false, RW, ret(RW), 0x1a21d, None, true),
        case("0,1", true, RW, ret(RW), 0x1a21d, Some(GLOBAL), false),
        case("0,1", false, RW, ret(RW), 0x1a21d, Some(GLOBAL), false),
    ];
    for t in check_row("ptep_modify_prot_start mm0 t0[5]", &commit(0x1a21d), &valid) {
        assert_eq!(t.steps[2].ret, Ret::Pte(0x1a43d)); // RW | I
        assert_eq!(t.steps[3].ret, Ret::None);
        assert_eq!(t.steps[3].hw, vec![]);
    }
    let invalid = [
        case("0", true, OLD, ret(OLD), 0x1a611, None, false),
        case("0", false, OLD, ret(OLD), 0x1a611, None, false),
        case("0,1", true, OLD, ret(OLD), 0x1a611, None, false),
        case("0,1", false, OLD, ret(OLD), 0x1a611, None, false),
    ];
    for t in check_row(
        "ptep_modify_prot_start mm0 t0[5]",
        &commit(0x1a611),
        &invalid,
    ) {
        assert_eq!(t.steps[2].ret, Ret::Pte(OLD)); // already invalid: unchanged
    }
}

#[test]
fn ptep_modify_prot_commit_stores_new_with_no_ipte() {
    let t = run_clean(&format!(
        "{}mm0 user attach=0,1 tables=1\n\
         init mm0 t0[5] = 0x1a21d\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 ptep_modify_prot_start mm0 t0[5]\n\
         cpu0 ptep_modify_prot_commit mm0 t0[5] = 0x1a03d\n\
         cpu0 ptep_get mm0 t0[5]\n\
         cpu0 unlock_ptl mm0 t0\n",
        header(2, true, "realistic")
    ));
    assert_eq!(t.steps[1].ret, Ret::Pte(0x1a21d));
    assert_eq!(t.steps[1].hw, vec![ipte(0, 0, 5, GLOBAL)]);
    assert_eq!(t.steps[2].ret, Ret::None);
    assert_eq!(t.steps[2].hw, vec![]);
    assert_eq!(t.steps[3].ret, Ret::Pte(0x1a03d));
    assert_eq!(mem(&t, 0, 0, 5), 0x1a03d);
    assert_eq!(t.end.counters.ipte_global, 1);
}

// ---- ptep_set_wrprotect: lazy policy, only if writable ----

#[test]
fn ptep_set_wrprotect_writable_lazy_policy() {
    let n = Ret::None;
    check_row(
        "ptep_set_wrprotect mm0 t0[5]",
        "",
        &[
            // 0x1a03d: WRITE cleared, P set.
            case("0", true, RW, n, 0x1a21d, None, true),
            case("0", false, RW, n, 0x1a21d, None, true),
            case("0,1", true, RW, n, 0x1a21d, Some(GLOBAL), false),
            case("0,1", false, RW, n, 0x1a21d, Some(GLOBAL), false),
            // Writable but old (invalid): wrprotected, no IPTE.
            case("0", true, OLD, n, 0x1a611, None, false),
            case("0", false, OLD, n, 0x1a611, None, false),
            case("0,1", true, OLD, n, 0x1a611, None, false),
            case("0,1", false, OLD, n, 0x1a611, None, false),
        ],
    );
}

#[test]
fn ptep_set_wrprotect_not_writable_does_nothing() {
    let n = Ret::None;
    check_row(
        "ptep_set_wrprotect mm0 t0[5]",
        "",
        &[
            case("0", true, RO, n, RO, None, false),
            case("0", false, RO, n, RO, None, false),
            case("0,1", true, RO, n, RO, None, false),
            case("0,1", false, RO, n, RO, None, false),
            case("0,1", true, 0x1a611, n, 0x1a611, None, false),
            case("0,1", true, SWAP, n, SWAP, None, false),
            case("0", true, NONE, n, NONE, None, false),
        ],
    );
}

// ---- ptep_clear_flush: direct policy ----

#[test]
fn ptep_clear_flush_direct_policy() {
    let ret = Ret::Pte;
    check_row(
        "ptep_clear_flush mm0 t0[5]",
        "",
        &[
            case("0", true, RW, ret(RW), NONE, Some(LOCAL), false),
            case("0", false, RW, ret(RW), NONE, Some(GLOBAL), false),
            case("0,1", true, RW, ret(RW), NONE, Some(GLOBAL), false),
            case("0,1", false, RW, ret(RW), NONE, Some(GLOBAL), false),
            case("0", true, OLD, ret(OLD), NONE, None, false),
            case("0", false, OLD, ret(OLD), NONE, None, false),
            case("0,1", true, OLD, ret(OLD), NONE, None, false),
            case("0,1", false, OLD, ret(OLD), NONE, None, false),
        ],
    );
}

// ---- the direct policy reads mm_cpumask, the lazy one cpu_attach_mask ----

#[test]
fn direct_policy_goes_global_once_another_cpu_filled_its_tlb() {
    // init_mm is translated by every CPU; cpu1's access adds it to mm_cpumask.
    let t = run_clean(&format!(
        "{}mm0 init_mm attach=0 tables=1\n\
         init mm0 t0[5] = 0x1a03d\n\
         init mm0 t0[6] = 0x2b03d\n\
         cpu0 ptep_test_and_clear_young mm0 t0[5]\n\
         cpu1 access mm0 t0[6] read\n\
         cpu0 ptep_test_and_clear_young mm0 t0[6]\n",
        header(2, true, "realistic")
    ));
    assert_eq!(t.steps[0].ret, Ret::Bool(true));
    assert_eq!(t.steps[0].hw, vec![ipte(0, 0, 5, LOCAL)]);
    assert_eq!(t.steps[2].ret, Ret::Bool(true));
    assert_eq!(t.steps[2].hw, vec![ipte(0, 0, 6, GLOBAL)]);
    assert_eq!(t.end.mms[0].cpumask, 0b11);
    assert_eq!(t.end.mms[0].attach_mask, 0b01);
    assert_eq!(mem(&t, 0, 0, 6), 0x2b439);
}

#[test]
fn direct_policy_uses_mm_cpumask_and_lazy_policy_the_attach_mask() {
    // cpu1 leaves the mm: attach {0} but mm_cpumask {0,1} until a full flush.
    let t = run_clean(&format!(
        "{}mm0 user attach=0,1 tables=1\n\
         init mm0 t0[5] = 0x1a03d\n\
         init mm0 t0[6] = 0x2b03d\n\
         init mm0 t0[7] = 0x3c03d\n\
         cpu1 switch_mm none\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 ptep_clear_flush mm0 t0[5]\n\
         cpu0 ptep_get_and_clear mm0 t0[6]\n\
         cpu0 unlock_ptl mm0 t0\n\
         cpu0 flush_tlb_mm mm0\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 ptep_clear_flush mm0 t0[7]\n\
         cpu0 unlock_ptl mm0 t0\n",
        header(2, true, "realistic")
    ));
    assert_eq!(t.steps[2].ret, Ret::Pte(0x1a03d));
    assert_eq!(t.steps[2].hw, vec![ipte(0, 0, 5, GLOBAL)]);
    assert_eq!(t.steps[3].ret, Ret::Pte(0x2b03d));
    assert_eq!(t.steps[3].hw, vec![]);
    // The owed flush: IDTE, and mm_cpumask shrinks back to the attached CPUs.
    assert_eq!(t.steps[5].hw, vec![HwEvent::Idte { mm: 0 }]);
    assert_eq!(t.steps[7].ret, Ret::Pte(0x3c03d));
    assert_eq!(t.steps[7].hw, vec![ipte(0, 0, 7, LOCAL)]);
    assert_eq!(t.end.mms[0].cpumask, 0b01);
    assert!(!t.end.mms[0].flush_mm);
    for i in 5..=7 {
        assert_eq!(mem(&t, 0, 0, i), NONE);
    }
}

#[test]
fn facility13_does_not_change_the_eager_kernel() {
    let body = "mm0 user attach=0,1 tables=1\n\
                init mm0 t0[5] = 0x1a03d\n\
                cpu0 lock_ptl mm0 t0\n\
                cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..16]\n\
                cpu0 ptep_get_and_clear mm0 t0[5]\n\
                cpu0 lazy_mmu_mode_disable\n\
                cpu0 unlock_ptl mm0 t0\n";
    let on = run_clean(&format!("{}{body}", header(2, true, "realistic")));
    let off = run_clean(&format!(
        "lazymmu-ops v1 cpus=2 facility13=off tlb_lc=on mode=realistic\n{body}"
    ));
    assert_eq!(on.steps, off.steps);
    assert_eq!(on.end, off.end);
    assert_eq!(on.steps[2].hw, vec![ipte(0, 0, 5, GLOBAL)]);
}

// ---- protected (secure-execution) mm: ultravisor calls ----

fn protected(attach: &str, old: u64, op: &str) -> lazymmu_model::Trace {
    // A full=1 clear begins the mm's teardown, which its flush_tlb_mm ends.
    let teardown = if op.contains("full=1") {
        "cpu0 flush_tlb_mm mm0\n"
    } else {
        ""
    };
    run_clean(&format!(
        "{}mm0 user attach={attach} tables=1 protected\n\
         init mm0 t0[5] = {old:#x}\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 {op}\n\
         cpu0 unlock_ptl mm0 t0\n{teardown}",
        header(2, true, "realistic")
    ))
}

#[test]
fn protected_get_and_clear_converts_after_the_pte_is_invalid() {
    let convert = uv(0, 0, 5, UvKind::ConvertFromSecure);
    // Multi-attached: global IPTE, then the UV call (no UvCallOnValidPte event).
    let t = protected("0,1", RW, "ptep_get_and_clear mm0 t0[5]");
    assert_eq!(t.steps[1].ret, Ret::Pte(RW));
    assert_eq!(t.steps[1].hw, vec![ipte(0, 0, 5, GLOBAL), convert]);
    assert_eq!(mem(&t, 0, 0, 5), NONE);
    assert_eq!(t.end.counters.uv_calls, 1);
    // Single-attached: no IPTE, but the UV call.
    let t = protected("0", RW, "ptep_get_and_clear mm0 t0[5]");
    assert_eq!(t.steps[1].hw, vec![convert]);
    assert!(t.end.mms[0].flush_mm);
    // Present but old: no IPTE, still converted.
    let t = protected("0,1", OLD, "ptep_get_and_clear mm0 t0[5]");
    assert_eq!(t.steps[1].ret, Ret::Pte(OLD));
    assert_eq!(t.steps[1].hw, vec![convert]);
    // full=0 is the same.
    let t = protected("0,1", RW, "ptep_get_and_clear_full mm0 t0[5] full=0");
    assert_eq!(t.steps[1].hw, vec![ipte(0, 0, 5, GLOBAL), convert]);
}

#[test]
fn protected_full_1_destroys() {
    let t = protected("none", RW, "ptep_get_and_clear_full mm0 t0[5] full=1");
    assert_eq!(t.steps[1].ret, Ret::Pte(RW));
    assert_eq!(t.steps[1].hw, vec![uv(0, 0, 5, UvKind::Destroy)]);
    assert_eq!(mem(&t, 0, 0, 5), NONE);
    let t = protected("none", OLD, "ptep_get_and_clear_full mm0 t0[5] full=1");
    assert_eq!(t.steps[1].hw, vec![uv(0, 0, 5, UvKind::Destroy)]);
}

#[test]
fn protected_non_present_old_makes_no_uv_call() {
    for (attach, old, op) in [
        ("0,1", NONE, "ptep_get_and_clear mm0 t0[5]"),
        ("0,1", SWAP, "ptep_get_and_clear mm0 t0[5]"),
        ("0", SWAP, "ptep_get_and_clear_full mm0 t0[5] full=0"),
        ("none", SWAP, "ptep_get_and_clear_full mm0 t0[5] full=1"),
        ("none", NONE, "ptep_get_and_clear_full mm0 t0[5] full=1"),
    ] {
        let t = protected(attach, old, op);
        assert_eq!(t.steps[1].ret, Ret::Pte(old), "{op} {old:#x}");
        assert_eq!(t.steps[1].hw, vec![], "{op} {old:#x}");
        assert_eq!(t.end.counters.uv_calls, 0);
        assert_eq!(mem(&t, 0, 0, 5), NONE);
    }
}

// ---- programs that break a machine rule ----

#[test]
fn set_pte_over_a_valid_pte_on_a_multi_attached_mm_is_a_store_to_valid_pte() {
    let (p, t) = run(&format!(
        "{}mm0 user attach=0,1 tables=1\n\
         init mm0 t0[5] = 0x1a03d\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 set_pte mm0 t0[5] = 0x2b03d\n\
         cpu0 unlock_ptl mm0 t0\n",
        header(2, true, "adversarial")
    ));
    assert_eq!(contract::violations(&p).len(), 1);
    assert_eq!(
        t.events,
        vec![EventRecord {
            step: 1,
            cpu: 0,
            event: Event::StoreToValidPte {
                pte: pte(0, 0, 5),
                old: 0x1a03d,
                new: 0x2b03d
            }
        }]
    );
    assert_eq!(t.steps[1].hw, vec![]);
    assert_eq!(mem(&t, 0, 0, 5), 0x2b03d);
}

#[test]
fn full_1_on_a_running_multi_cpu_mm_is_a_store_to_valid_pte() {
    let (p, t) = run(&format!(
        "{}mm0 user attach=0,1 tables=1\n\
         init mm0 t0[5] = 0x1a03d\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 ptep_get_and_clear_full mm0 t0[5] full=1\n\
         cpu0 unlock_ptl mm0 t0\n\
         cpu0 flush_tlb_mm mm0\n",
        header(2, true, "adversarial")
    ));
    assert_eq!(contract::violations(&p).len(), 1);
    assert_eq!(t.steps[1].ret, Ret::Pte(0x1a03d));
    assert_eq!(t.steps[1].hw, vec![]);
    assert_eq!(
        t.events,
        vec![EventRecord {
            step: 1,
            cpu: 0,
            event: Event::StoreToValidPte {
                pte: pte(0, 0, 5),
                old: 0x1a03d,
                new: NONE
            }
        }]
    );
}

#[test]
fn setting_i_by_store_without_owed_flush_is_reported() {
    // What the lazy policy does, minus `flush_mm = 1`.
    let (_, t) = run(&format!(
        "{}mm0 user attach=0 tables=1\n\
         init mm0 t0[5] = 0x1a03d\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 set_pte mm0 t0[5] = 0x1a43d\n\
         cpu0 unlock_ptl mm0 t0\n",
        header(2, true, "adversarial")
    ));
    assert_eq!(
        t.events,
        vec![EventRecord {
            step: 1,
            cpu: 0,
            event: Event::LazyInvalidateWithoutOwedFlush { pte: pte(0, 0, 5) }
        }]
    );
    assert!(!t.end.mms[0].flush_mm);
}
