//! The generic lazy-MMU layer (docs/semantics.md#generic-layer, include/linux/pgtable.h), checked
//! the way the kernel's KUnit test for lazy_mmu_mode checks it: `is_lazy_mmu_mode_active()`
//! after every transition, nesting, pause/resume, calls while paused and calls from
//! interrupt context. Also the sync points the run loop records for each transition.

mod common;

use common::*;
use lazymmu_model::exec::SyncKind;
use lazymmu_model::machine::LazyState;
use lazymmu_model::{Ret, Trace};

fn lazy(enable_count: u8, pause_count: u8) -> LazyState {
    LazyState {
        enable_count,
        pause_count,
    }
}

/// Runs cpu0 steps (one kernel call per line, `cpu0 ` prepended) on a 2-CPU machine
/// with a user mm run by both CPUs and an init_mm.
fn run_steps(steps: &[&str]) -> Trace {
    let mut src = format!(
        "{}mm0 user attach=0,1 tables=1\nmm1 init_mm attach=0,1 tables=1\n",
        header(2, true, "realistic")
    );
    for s in steps {
        if s.starts_with("cpu") {
            src.push_str(s);
        } else {
            src.push_str("cpu0 ");
            src.push_str(s);
        }
        src.push('\n');
    }
    run_clean(&src)
}

const ACTIVE: &str = "is_lazy_mmu_mode_active";

fn active(t: &Trace, step: usize) -> bool {
    match t.steps[step].ret {
        Ret::Bool(b) => b,
        r => panic!("step {step} returned {r:?}, not a bool"),
    }
}

#[test]
fn inactive_at_start_and_enable_makes_active() {
    let t = run_steps(&[
        ACTIVE,
        "lazy_mmu_mode_enable",
        ACTIVE,
        "lazy_mmu_mode_disable",
        ACTIVE,
    ]);
    assert!(!active(&t, 0));
    assert_eq!(t.steps[0].lazy, lazy(0, 0));
    assert_eq!(t.steps[1].lazy, lazy(1, 0));
    assert!(active(&t, 2));
    assert_eq!(t.steps[3].lazy, lazy(0, 0));
    assert!(!active(&t, 4));
    assert_eq!(syncs(&t), vec![(3, 0, SyncKind::Disable)]);
    // The eager arch hooks are empty: no instruction at all.
    assert_eq!(all_hw(&t), vec![]);
}

#[test]
fn nested_enable_disable_stays_active_until_the_final_disable() {
    let t = run_steps(&[
        "lazy_mmu_mode_enable",
        "lazy_mmu_mode_enable",
        ACTIVE,
        "lazy_mmu_mode_enable",
        "lazy_mmu_mode_disable",
        ACTIVE,
        "lazy_mmu_mode_disable",
        ACTIVE,
        "lazy_mmu_mode_disable",
        ACTIVE,
    ]);
    assert_eq!(t.steps[1].lazy, lazy(2, 0));
    assert!(active(&t, 2));
    assert_eq!(t.steps[3].lazy, lazy(3, 0));
    assert_eq!(t.steps[4].lazy, lazy(2, 0));
    assert!(active(&t, 5));
    assert_eq!(t.steps[6].lazy, lazy(1, 0));
    assert!(active(&t, 7));
    assert_eq!(t.steps[8].lazy, lazy(0, 0));
    assert!(!active(&t, 9));
    assert_eq!(
        syncs(&t),
        vec![
            (4, 0, SyncKind::NestedDisable),
            (6, 0, SyncKind::NestedDisable),
            (8, 0, SyncKind::Disable)
        ]
    );
}

#[test]
fn enable_with_ptes_counts_like_enable_and_nested_ranges_are_ignored() {
    let t = run_steps(&[
        "lock_ptl mm0 t0",
        "lazy_mmu_mode_enable_with_ptes mm0 t0[0..16]",
        ACTIVE,
        "lazy_mmu_mode_enable_with_ptes mm0 t0[32..48]",
        "lazy_mmu_mode_disable",
        ACTIVE,
        "lazy_mmu_mode_disable",
        ACTIVE,
        "unlock_ptl mm0 t0",
    ]);
    assert_eq!(t.steps[1].lazy, lazy(1, 0));
    assert!(active(&t, 2));
    assert_eq!(t.steps[3].lazy, lazy(2, 0));
    assert!(active(&t, 5));
    assert!(!active(&t, 7));
    assert_eq!(
        syncs(&t),
        vec![(4, 0, SyncKind::NestedDisable), (6, 0, SyncKind::Disable)]
    );
}

#[test]
fn pause_deactivates_and_resume_reactivates() {
    let t = run_steps(&[
        "lazy_mmu_mode_enable",
        "lazy_mmu_mode_pause",
        ACTIVE,
        "lazy_mmu_mode_resume",
        ACTIVE,
        "lazy_mmu_mode_disable",
        ACTIVE,
    ]);
    assert_eq!(t.steps[1].lazy, lazy(1, 1));
    assert!(!active(&t, 2));
    assert_eq!(t.steps[3].lazy, lazy(1, 0));
    assert!(active(&t, 4));
    assert!(!active(&t, 6));
    assert_eq!(
        syncs(&t),
        vec![(1, 0, SyncKind::Pause), (5, 0, SyncKind::Disable)]
    );
}

#[test]
fn pause_inside_a_nested_section() {
    let t = run_steps(&[
        "lazy_mmu_mode_enable",
        "lazy_mmu_mode_enable",
        "lazy_mmu_mode_pause",
        ACTIVE,
        "lazy_mmu_mode_resume",
        ACTIVE,
        "lazy_mmu_mode_disable",
        ACTIVE,
        "lazy_mmu_mode_disable",
    ]);
    assert_eq!(t.steps[2].lazy, lazy(2, 1));
    assert!(!active(&t, 3));
    assert_eq!(t.steps[4].lazy, lazy(2, 0));
    assert!(active(&t, 5));
    assert!(active(&t, 7));
    assert_eq!(
        syncs(&t),
        vec![
            (2, 0, SyncKind::Pause),
            (6, 0, SyncKind::NestedDisable),
            (8, 0, SyncKind::Disable)
        ]
    );
}

#[test]
fn calls_while_paused() {
    // enable and disable are no-ops while paused; nested pause/resume count.
    let t = run_steps(&[
        "lazy_mmu_mode_enable",  // 0
        "lazy_mmu_mode_pause",   // 1
        "lazy_mmu_mode_enable",  // 2: no-op
        ACTIVE,                  // 3
        "lazy_mmu_mode_disable", // 4: no-op
        ACTIVE,                  // 5
        "lazy_mmu_mode_pause",   // 6: nested
        ACTIVE,                  // 7
        "lazy_mmu_mode_resume",  // 8
        ACTIVE,                  // 9: still paused
        "lazy_mmu_mode_resume",  // 10
        ACTIVE,                  // 11
        "lazy_mmu_mode_disable", // 12
        ACTIVE,                  // 13
    ]);
    assert_eq!(t.steps[1].lazy, lazy(1, 1));
    assert_eq!(t.steps[2].lazy, lazy(1, 1));
    assert!(!active(&t, 3));
    assert_eq!(t.steps[4].lazy, lazy(1, 1));
    assert!(!active(&t, 5));
    assert_eq!(t.steps[6].lazy, lazy(1, 2));
    assert!(!active(&t, 7));
    assert_eq!(t.steps[8].lazy, lazy(1, 1));
    assert!(!active(&t, 9));
    assert_eq!(t.steps[10].lazy, lazy(1, 0));
    assert!(active(&t, 11));
    assert_eq!(t.steps[12].lazy, lazy(0, 0));
    assert!(!active(&t, 13));
    // Only the first pause and the real disable are sync points: not the no-op
    // disable at 4, not the nested pause at 6.
    assert_eq!(
        syncs(&t),
        vec![(1, 0, SyncKind::Pause), (12, 0, SyncKind::Disable)]
    );
}

#[test]
fn pause_with_no_section_is_no_sync_point() {
    let t = run_steps(&[
        "lazy_mmu_mode_pause",   // 0
        ACTIVE,                  // 1
        "lazy_mmu_mode_enable",  // 2: no-op while paused
        ACTIVE,                  // 3
        "lazy_mmu_mode_disable", // 4: no-op
        "lazy_mmu_mode_resume",  // 5
        ACTIVE,                  // 6
    ]);
    assert_eq!(t.steps[0].lazy, lazy(0, 1));
    assert!(!active(&t, 1));
    assert_eq!(t.steps[2].lazy, lazy(0, 1));
    assert!(!active(&t, 3));
    assert_eq!(t.steps[4].lazy, lazy(0, 1));
    assert_eq!(t.steps[5].lazy, lazy(0, 0));
    assert!(!active(&t, 6));
    assert_eq!(syncs(&t), vec![]);
}

#[test]
fn interrupt_context_sees_no_section_and_changes_nothing() {
    let t = run_steps(&[
        "lazy_mmu_mode_enable",  // 0
        ACTIVE,                  // 1
        "irq_enter",             // 2
        ACTIVE,                  // 3: false although the task's section is active
        "lazy_mmu_mode_enable",  // 4: no-op
        ACTIVE,                  // 5
        "lazy_mmu_mode_pause",   // 6: no-op
        ACTIVE,                  // 7
        "lazy_mmu_mode_resume",  // 8: no-op
        "lazy_mmu_mode_disable", // 9: no-op
        ACTIVE,                  // 10
        "irq_exit",              // 11
        ACTIVE,                  // 12: the task's section again
        "lazy_mmu_mode_disable", // 13
        ACTIVE,                  // 14
    ]);
    assert!(active(&t, 1));
    for i in [3, 5, 7, 10] {
        assert!(!active(&t, i), "step {i}");
    }
    for i in 2..=11 {
        assert_eq!(t.steps[i].lazy, lazy(1, 0), "step {i}");
    }
    assert!(active(&t, 12));
    assert_eq!(t.steps[13].lazy, lazy(0, 0));
    assert!(!active(&t, 14));
    // The interrupt's exit, with the task's section active, is where what the interrupt
    // changed must be in memory.
    assert_eq!(
        syncs(&t),
        vec![(11, 0, SyncKind::IrqExit), (13, 0, SyncKind::Disable)]
    );
}

#[test]
fn interrupt_while_the_task_is_paused_or_outside_a_section() {
    let t = run_steps(&[
        "irq_enter",             // 0
        "lazy_mmu_mode_enable",  // 1: no-op
        ACTIVE,                  // 2
        "lazy_mmu_mode_disable", // 3: no-op
        "irq_exit",              // 4
        ACTIVE,                  // 5
        "lazy_mmu_mode_enable",  // 6
        "lazy_mmu_mode_pause",   // 7
        "irq_enter",             // 8
        "lazy_mmu_mode_pause",   // 9: no-op
        "lazy_mmu_mode_resume",  // 10: no-op (does not end the task's pause)
        ACTIVE,                  // 11
        "irq_exit",              // 12
        ACTIVE,                  // 13: still paused
        "lazy_mmu_mode_resume",  // 14
        ACTIVE,                  // 15
        "lazy_mmu_mode_disable", // 16
    ]);
    assert_eq!(t.steps[1].lazy, lazy(0, 0));
    assert!(!active(&t, 2));
    assert_eq!(t.steps[3].lazy, lazy(0, 0));
    assert!(!active(&t, 5));
    assert_eq!(t.steps[7].lazy, lazy(1, 1));
    for i in 8..=12 {
        assert_eq!(t.steps[i].lazy, lazy(1, 1), "step {i}");
    }
    assert!(!active(&t, 11));
    assert!(!active(&t, 13));
    assert_eq!(t.steps[14].lazy, lazy(1, 0));
    assert!(active(&t, 15));
    assert_eq!(
        syncs(&t),
        vec![(7, 0, SyncKind::Pause), (16, 0, SyncKind::Disable)]
    );
}

#[test]
fn each_cpu_runs_its_own_task_state() {
    let t = run_steps(&[
        "cpu0 lazy_mmu_mode_enable",
        "cpu1 is_lazy_mmu_mode_active",
        "cpu1 lazy_mmu_mode_enable",
        "cpu1 lazy_mmu_mode_pause",
        "cpu0 is_lazy_mmu_mode_active",
        "cpu1 lazy_mmu_mode_resume",
        "cpu0 lazy_mmu_mode_disable",
        "cpu1 is_lazy_mmu_mode_active",
        "cpu1 lazy_mmu_mode_disable",
    ]);
    assert!(!active(&t, 1));
    assert_eq!(t.steps[1].lazy, lazy(0, 0));
    assert_eq!(t.steps[3].lazy, lazy(1, 1));
    assert!(active(&t, 4));
    assert_eq!(t.steps[4].lazy, lazy(1, 0));
    assert!(active(&t, 7));
    assert_eq!(
        syncs(&t),
        vec![
            (3, 1, SyncKind::Pause),
            (6, 0, SyncKind::Disable),
            (8, 1, SyncKind::Disable)
        ]
    );
}

#[test]
fn sync_snapshots_show_the_eager_memory() {
    let t = run_clean(&format!(
        "{}mm0 user attach=0,1 tables=1\n\
         init mm0 t0[5] = 0x1a03d\n\
         init mm0 t0[6] = 0x2b03d\n\
         cpu0 lock_ptl mm0 t0\n\
         cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..16]\n\
         cpu0 lazy_mmu_mode_enable\n\
         cpu0 ptep_get_and_clear mm0 t0[5]\n\
         cpu0 lazy_mmu_mode_disable\n\
         cpu0 ptep_set_wrprotect mm0 t0[6]\n\
         cpu0 lazy_mmu_mode_pause\n\
         cpu0 lazy_mmu_mode_resume\n\
         cpu0 set_pte mm0 t0[5] = 0x3c215\n\
         cpu0 lazy_mmu_mode_disable\n\
         cpu0 unlock_ptl mm0 t0\n",
        header(2, true, "realistic")
    ));
    assert_eq!(
        syncs(&t),
        vec![
            (4, 0, SyncKind::NestedDisable),
            (6, 0, SyncKind::Pause),
            (9, 0, SyncKind::Disable)
        ]
    );
    let at = |i: usize, idx: u16| t.syncs[i].snapshot.pte(&t.layout, pte(0, 0, idx));
    assert_eq!((at(0, 5), at(0, 6)), (NONE, 0x2b03d));
    assert_eq!((at(1, 5), at(1, 6)), (NONE, 0x2b21d));
    assert_eq!((at(2, 5), at(2, 6)), (0x3c215, 0x2b21d));
    // Counters at each sync point: the two global IPTEs happened at once.
    assert_eq!(t.syncs[0].snapshot.counters.ipte_global, 1);
    assert_eq!(t.syncs[1].snapshot.counters.ipte_global, 2);
    assert_eq!(t.end.counters.ipte_global, 2);
    assert_eq!(t.steps[3].hw, vec![ipte(0, 0, 5, GLOBAL)]);
    assert_eq!(t.steps[5].hw, vec![ipte(0, 0, 6, GLOBAL)]);
}
