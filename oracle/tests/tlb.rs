//! The TLB model under the eager oracle: stale entries while a purge is owed (lazy policy
//! on a single-attached mm), purges by IPTE, the owed full flush honoured by
//! flush_tlb_range, flush_tlb_mm and switch-in, init_mm's unconditional kernel-range
//! flush, and the faults an access can take.

mod common;

use common::*;
use lazymmu_model::machine::{AccessResult, HwEvent};
use lazymmu_model::Ret;

fn acc(r: AccessResult) -> Ret {
    Ret::Access(r)
}
fn hit(value: u64) -> Ret {
    acc(AccessResult::TlbHit { value })
}
fn walked(value: u64) -> Ret {
    acc(AccessResult::Walked { value })
}
fn tfault(value: u64) -> Ret {
    acc(AccessResult::TranslationFault { value })
}
fn pfault(value: u64) -> Ret {
    acc(AccessResult::ProtectionFault { value })
}

#[test]
fn lazy_policy_on_single_attached_mm_leaves_a_stale_entry_until_flush_tlb_range() {
    let t = run_clean(&format!(
        "{}mm0 user attach=0 tables=1\n\
         init mm0 t0[5] = 0x1a03d\n\
         cpu0 access mm0 t0[5] read\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 ptep_get_and_clear mm0 t0[5]\n\
         cpu0 access mm0 t0[5] write\n\
         cpu0 flush_tlb_range mm0 t0[0..16]\n\
         cpu0 access mm0 t0[5] read\n\
         cpu0 unlock_ptl mm0 t0\n",
        header(2, true, "realistic")
    ));
    assert_eq!(t.steps[0].ret, walked(0x1a03d));
    assert_eq!(t.steps[2].ret, Ret::Pte(0x1a03d));
    assert_eq!(t.steps[2].hw, vec![]);
    // The purge is owed: the TLB still translates with the old value.
    assert_eq!(t.steps[3].ret, hit(0x1a03d));
    assert_eq!(t.steps[4].hw, vec![HwEvent::Idte { mm: 0 }]);
    assert_eq!(t.steps[5].ret, tfault(NONE));
    assert!(!t.end.mms[0].flush_mm);
    assert_eq!(t.end.tlbs, vec![vec![], vec![]]);
    assert_eq!(t.end.counters.idte, 1);
    assert_eq!(t.end.counters.global_iptes(), 0);
}

#[test]
fn global_ipte_purges_every_cpu_then_access_faults_or_refills() {
    let t = run_clean(&format!(
        "{}mm0 user attach=0,1 tables=1\n\
         init mm0 t0[5] = 0x1a03d\n\
         cpu0 access mm0 t0[5] read\n\
         cpu1 access mm0 t0[5] write\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 ptep_get_and_clear mm0 t0[5]\n\
         cpu1 access mm0 t0[5] read\n\
         cpu0 access mm0 t0[5] read\n\
         cpu0 set_pte mm0 t0[5] = 0x2b03d\n\
         cpu0 unlock_ptl mm0 t0\n\
         cpu1 access mm0 t0[5] write\n\
         cpu1 access mm0 t0[5] read\n\
         cpu0 flush_tlb_range mm0 t0[0..16]\n",
        header(2, true, "realistic")
    ));
    assert_eq!(t.steps[0].ret, walked(0x1a03d));
    assert_eq!(t.steps[1].ret, walked(0x1a03d));
    assert_eq!(t.steps[3].hw, vec![ipte(0, 0, 5, GLOBAL)]);
    assert_eq!(t.steps[4].ret, tfault(NONE));
    assert_eq!(t.steps[5].ret, tfault(NONE));
    assert_eq!(t.steps[8].ret, walked(0x2b03d));
    assert_eq!(t.steps[9].ret, hit(0x2b03d));
    // Nothing owed: flush_tlb_range issues nothing and the new entry stays.
    assert_eq!(t.steps[10].hw, vec![]);
    assert_eq!(t.end.tlbs[1], vec![(pte(0, 0, 5), 0x2b03d)]);
    assert_eq!(t.end.tlbs[0], vec![]);
}

#[test]
fn owed_flush_is_honoured_by_flush_tlb_mm() {
    let t = run_clean(&format!(
        "{}mm0 user attach=0 tables=1\n\
         init mm0 t0[5] = 0x1a03d\n\
         init mm0 t0[6] = 0x2b03d\n\
         cpu0 access mm0 t0[5] read\n\
         cpu0 access mm0 t0[6] read\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 ptep_modify_prot_start mm0 t0[5]\n\
         cpu0 ptep_modify_prot_commit mm0 t0[5] = 0x1a21d\n\
         cpu0 unlock_ptl mm0 t0\n\
         cpu0 access mm0 t0[5] write\n\
         cpu0 flush_tlb_mm mm0\n\
         cpu0 access mm0 t0[5] write\n\
         cpu0 access mm0 t0[6] read\n\
         cpu0 flush_tlb_mm mm0\n",
        header(2, true, "realistic")
    ));
    assert_eq!(t.steps[3].ret, Ret::Pte(0x1a03d));
    assert_eq!(t.steps[3].hw, vec![]);
    assert_eq!(t.steps[4].hw, vec![]);
    // Stale writable entry until the owed flush.
    assert_eq!(t.steps[6].ret, hit(0x1a03d));
    assert_eq!(t.steps[7].hw, vec![HwEvent::Idte { mm: 0 }]);
    // The new read-only value is walked: a store faults.
    assert_eq!(t.steps[8].ret, pfault(0x1a21d));
    // IDTE dropped the untouched entry too: it is walked again.
    assert_eq!(t.steps[9].ret, walked(0x2b03d));
    // Nothing owed any more.
    assert_eq!(t.steps[10].hw, vec![]);
    assert!(!t.end.mms[0].flush_mm);
    assert_eq!(
        t.end.tlbs[0],
        vec![(pte(0, 0, 5), 0x1a21d), (pte(0, 0, 6), 0x2b03d)]
    );
}

#[test]
fn owed_flush_is_honoured_by_switch_mm_into_the_mm() {
    // cpu1 ran the mm and left it; its TLB keeps entries for it. cpu0 alone runs the
    // mm, so the lazy policy owes the purge, which cpu1's switch-in pays.
    let t = run_clean(&format!(
        "{}mm0 user attach=0,1 tables=1\n\
         init mm0 t0[5] = 0x1a03d\n\
         cpu1 access mm0 t0[5] read\n\
         cpu1 switch_mm none\n\
         cpu0 access mm0 t0[5] read\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 ptep_get_and_clear mm0 t0[5]\n\
         cpu0 unlock_ptl mm0 t0\n\
         cpu1 access mm0 t0[5] read\n\
         cpu0 access mm0 t0[5] read\n\
         cpu1 switch_mm mm0\n\
         cpu0 access mm0 t0[5] read\n\
         cpu1 access mm0 t0[5] read\n",
        header(2, true, "realistic")
    ));
    assert_eq!(t.steps[0].ret, walked(0x1a03d));
    assert_eq!(t.steps[1].hw, vec![]);
    assert_eq!(t.steps[4].ret, Ret::Pte(0x1a03d));
    assert_eq!(t.steps[4].hw, vec![]);
    // cpu1 is not running the mm: no translation for it.
    assert_eq!(t.steps[6].ret, acc(AccessResult::NotAttached));
    assert_eq!(t.steps[7].ret, hit(0x1a03d));
    // Both CPUs' stale entries go with the IDTE of the switch-in.
    assert_eq!(t.steps[8].hw, vec![HwEvent::Idte { mm: 0 }]);
    assert_eq!(t.steps[9].ret, tfault(NONE));
    assert_eq!(t.steps[10].ret, tfault(NONE));
    assert_eq!(t.end.tlbs, vec![vec![], vec![]]);
    assert!(!t.end.mms[0].flush_mm);
    assert_eq!(t.end.mms[0].attach_mask, 0b11);
    assert_eq!(t.end.mms[0].cpumask, 0b11);
}

#[test]
fn switch_mm_with_nothing_owed_issues_nothing() {
    let t = run_clean(&format!(
        "{}mm0 user attach=0 tables=1\n\
         mm1 user attach=1 tables=1\n\
         init mm1 t0[5] = 0x1a03d\n\
         cpu1 access mm1 t0[5] read\n\
         cpu1 switch_mm mm0\n\
         cpu1 access mm1 t0[5] read\n\
         cpu1 switch_mm mm1\n\
         cpu1 access mm1 t0[5] read\n",
        header(2, true, "realistic")
    ));
    assert_eq!(t.steps[0].ret, walked(0x1a03d));
    assert_eq!(t.steps[1].hw, vec![]);
    assert_eq!(t.steps[2].ret, acc(AccessResult::NotAttached));
    assert_eq!(t.steps[3].hw, vec![]);
    assert_eq!(t.steps[4].ret, hit(0x1a03d));
    assert_eq!(t.end.mms[0].attach_mask, 0b01);
    assert_eq!(t.end.mms[0].cpumask, 0b11);
    assert_eq!(t.end.mms[1].attach_mask, 0b10);
}

#[test]
fn flush_tlb_range_and_flush_tlb_mm_with_nothing_owed_issue_nothing_on_a_user_mm() {
    let t = run_clean(&format!(
        "{}mm0 user attach=0,1 tables=2\n\
         init mm0 t0[5] = 0x1a03d\n\
         cpu0 access mm0 t0[5] read\n\
         cpu0 flush_tlb_range mm0 t0[0..256]\n\
         cpu0 flush_tlb_range mm0 t1[3..4]\n\
         cpu1 flush_tlb_mm mm0\n\
         cpu0 access mm0 t0[5] read\n",
        header(2, true, "realistic")
    ));
    for i in 1..=3 {
        assert_eq!(t.steps[i].hw, vec![], "step {i}");
    }
    assert_eq!(t.steps[4].ret, hit(0x1a03d));
    assert_eq!(t.end.counters, Default::default());
}

#[test]
fn flush_tlb_range_on_init_mm_always_issues_an_idte() {
    let t = run_clean(&format!(
        "{}mm0 user attach=0,1 tables=1\n\
         mm1 init_mm attach=0,1 tables=1\n\
         init mm0 t0[5] = 0x1a03d\n\
         init mm1 t0[7] = 0x2b03d\n\
         cpu0 access mm1 t0[7] read\n\
         cpu1 access mm1 t0[7] read\n\
         cpu0 access mm0 t0[5] read\n\
         cpu0 flush_tlb_range mm1 t0[0..16]\n\
         cpu1 access mm1 t0[7] read\n\
         cpu0 access mm0 t0[5] read\n\
         cpu1 flush_tlb_range mm1 t0[100..101]\n",
        header(2, true, "realistic")
    ));
    assert_eq!(t.steps[0].ret, walked(0x2b03d));
    assert_eq!(t.steps[1].ret, walked(0x2b03d));
    assert_eq!(t.steps[3].hw, vec![HwEvent::Idte { mm: 1 }]);
    // Every CPU dropped its init_mm entries, but not the user mm's.
    assert_eq!(t.steps[4].ret, walked(0x2b03d));
    assert_eq!(t.steps[5].ret, hit(0x1a03d));
    assert_eq!(t.steps[6].hw, vec![HwEvent::Idte { mm: 1 }]);
    assert_eq!(t.end.counters.idte, 2);
    assert!(!t.end.mms[1].flush_mm);
}

#[test]
fn access_by_a_cpu_not_running_the_user_mm_is_not_attached() {
    let t = run_clean(&format!(
        "{}mm0 user attach=0 tables=1\n\
         mm1 init_mm attach=0 tables=1\n\
         init mm0 t0[5] = 0x1a03d\n\
         init mm1 t0[5] = 0x2b03d\n\
         cpu1 access mm0 t0[5] read\n\
         cpu1 access mm0 t0[6] write\n\
         cpu1 access mm1 t0[5] read\n\
         cpu0 access mm0 t0[5] read\n",
        header(2, true, "realistic")
    ));
    assert_eq!(t.steps[0].ret, acc(AccessResult::NotAttached));
    assert_eq!(t.steps[1].ret, acc(AccessResult::NotAttached));
    // init_mm is the kernel's: every CPU translates it.
    assert_eq!(t.steps[2].ret, walked(0x2b03d));
    assert_eq!(t.steps[3].ret, walked(0x1a03d));
    assert_eq!(t.end.tlbs[1], vec![(pte(1, 0, 5), 0x2b03d)]);
    assert_eq!(t.end.mms[0].cpumask, 0b01);
}

#[test]
fn write_to_a_protected_pte_faults() {
    let t = run_clean(&format!(
        "{}mm0 user attach=0,1 tables=1\n\
         init mm0 t0[5] = 0x1a215\n\
         init mm0 t0[6] = 0x2b215\n\
         init mm0 t0[7] = 0x3c631\n\
         cpu0 access mm0 t0[5] write\n\
         cpu0 access mm0 t0[5] read\n\
         cpu1 access mm0 t0[6] read\n\
         cpu1 access mm0 t0[6] write\n\
         cpu1 access mm0 t0[7] read\n\
         cpu1 access mm0 t0[8] write\n",
        header(2, true, "realistic")
    ));
    // From a fresh walk (which still fills the TLB) ...
    assert_eq!(t.steps[0].ret, pfault(0x1a215));
    assert_eq!(t.steps[1].ret, hit(0x1a215));
    // ... and from the TLB.
    assert_eq!(t.steps[2].ret, walked(0x2b215));
    assert_eq!(t.steps[3].ret, pfault(0x2b215));
    // Old (I set) and none: translation faults, not protection faults.
    assert_eq!(t.steps[4].ret, tfault(0x3c631));
    assert_eq!(t.steps[5].ret, tfault(NONE));
    assert_eq!(
        t.end.tlbs,
        vec![vec![(pte(0, 0, 5), 0x1a215)], vec![(pte(0, 0, 6), 0x2b215)]]
    );
}

#[test]
fn wrprotect_with_the_purge_owed_keeps_a_writable_entry_until_the_flush() {
    let t = run_clean(&format!(
        "{}mm0 user attach=0 tables=1\n\
         init mm0 t0[5] = 0x1a03d\n\
         cpu0 access mm0 t0[5] write\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 ptep_set_wrprotect mm0 t0[5]\n\
         cpu0 unlock_ptl mm0 t0\n\
         cpu0 access mm0 t0[5] write\n\
         cpu0 flush_tlb_range mm0 t0[5..6]\n\
         cpu0 access mm0 t0[5] write\n",
        header(2, true, "realistic")
    ));
    assert_eq!(t.steps[0].ret, walked(0x1a03d));
    assert_eq!(t.steps[2].hw, vec![]);
    assert_eq!(t.steps[4].ret, hit(0x1a03d));
    assert_eq!(t.steps[5].hw, vec![HwEvent::Idte { mm: 0 }]);
    assert_eq!(t.steps[6].ret, pfault(0x1a21d));
    assert_eq!(mem(&t, 0, 0, 5), 0x1a21d);
}

#[test]
fn local_ipte_purges_this_cpus_entry() {
    let t = run_clean(&format!(
        "{}mm0 user attach=0 tables=1\n\
         init mm0 t0[5] = 0x1a03d\n\
         init mm0 t0[6] = 0x2b03d\n\
         cpu0 access mm0 t0[5] read\n\
         cpu0 access mm0 t0[6] read\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 ptep_clear_flush mm0 t0[5]\n\
         cpu0 ptep_test_and_clear_young mm0 t0[6]\n\
         cpu0 unlock_ptl mm0 t0\n\
         cpu0 access mm0 t0[5] read\n\
         cpu0 access mm0 t0[6] read\n",
        header(2, true, "realistic")
    ));
    assert_eq!(t.steps[3].hw, vec![ipte(0, 0, 5, LOCAL)]);
    assert_eq!(t.steps[4].hw, vec![ipte(0, 0, 6, LOCAL)]);
    assert_eq!(t.steps[4].ret, Ret::Bool(true));
    assert_eq!(t.steps[6].ret, tfault(NONE));
    // mkold set I: the next access faults (and would make it young again).
    assert_eq!(t.steps[7].ret, tfault(0x2b439));
    assert_eq!(t.end.tlbs, vec![vec![], vec![]]);
    assert_eq!(t.end.counters.ipte_local, 2);
    assert_eq!(t.end.counters.ipte_global, 0);
}

#[test]
fn direct_global_ipte_purges_the_other_cpus_entry() {
    let t = run_clean(&format!(
        "{}mm0 user attach=0,1 tables=1\n\
         init mm0 t0[5] = 0x1a03d\n\
         init mm0 t0[6] = 0x2b03d\n\
         cpu1 access mm0 t0[5] read\n\
         cpu1 access mm0 t0[6] read\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 ptep_test_and_clear_young mm0 t0[5]\n\
         cpu0 unlock_ptl mm0 t0\n\
         cpu1 access mm0 t0[5] read\n\
         cpu1 access mm0 t0[6] read\n",
        header(2, true, "realistic")
    ));
    assert_eq!(t.steps[3].hw, vec![ipte(0, 0, 5, GLOBAL)]);
    assert_eq!(t.steps[5].ret, tfault(0x1a439));
    assert_eq!(t.steps[6].ret, hit(0x2b03d));
    assert_eq!(t.end.tlbs[1], vec![(pte(0, 0, 6), 0x2b03d)]);
}

#[test]
fn idte_of_one_mm_leaves_other_mms_entries() {
    let t = run_clean(&format!(
        "{}mm0 user attach=0 tables=1\n\
         mm1 user attach=1 tables=1\n\
         init mm0 t0[5] = 0x1a03d\n\
         init mm1 t0[5] = 0x2b03d\n\
         cpu0 access mm0 t0[5] read\n\
         cpu1 access mm1 t0[5] read\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 ptep_get_and_clear mm0 t0[5]\n\
         cpu0 unlock_ptl mm0 t0\n\
         cpu0 flush_tlb_mm mm0\n\
         cpu1 access mm1 t0[5] read\n",
        header(2, true, "realistic")
    ));
    assert_eq!(t.steps[5].hw, vec![HwEvent::Idte { mm: 0 }]);
    assert_eq!(t.steps[6].ret, hit(0x2b03d));
    assert_eq!(t.end.tlbs, vec![vec![], vec![(pte(1, 0, 5), 0x2b03d)]]);
}
