//! Guarded memory against a hostile implementation: page tables between poison and guard
//! pages, kzalloc'd objects against a guard page. A plain store past a table or past an
//! object faults at the instruction (and the fault address is named); a plain store
//! before a table is reported as a poison event at the step that made it.

mod common;

use common::*;
use lazymmu_lang::text::parse;
use lazymmu_lang::{Op, Program};
use lazymmu_model::exec::Kernel;
use lazymmu_model::guarded::{explain_address, explain_offset, FaultTrap};
use lazymmu_model::isolate::run_in_child;
use lazymmu_model::machine::{Event, EventRecord, Machine};
use lazymmu_target::{CKernel, Source};

/// The run loop reduced to what these programs use, with the poison checked after every
/// op, on a machine the caller can look at.
fn drive(k: &mut CKernel, m: &mut Machine, p: &Program) -> Vec<EventRecord> {
    k.start(m);
    for (i, s) in p.steps.iter().enumerate() {
        m.begin_step(i, s.cpu);
        match s.op {
            Op::LockPtl { mm, table } => m.lock_ptl(s.cpu, mm, table),
            Op::UnlockPtl { mm, table } => m.unlock_ptl(s.cpu, mm, table),
            Op::Access { pte, write } => {
                m.access(s.cpu, pte, write);
            }
            Op::IrqEnter | Op::IrqExit => panic!("not used here"),
            _ => {
                k.op(m, s.cpu, &s.op);
            }
        }
        m.check_poison();
        m.end_step();
    }
    k.finish(m);
    m.take_events()
}

fn program(text: &str) -> Program {
    let p = parse(text).unwrap();
    p.validate().unwrap();
    p
}

/// A section over a whole PMD (mm0 t0) with updates, then the disable (step 5) and the
/// caller's flush.
const FULL_PMD: &str = "lazymmu-ops v1 cpus=2 facility13=on tlb_lc=on mode=realistic\n\
    mm0 user attach=0,1 tables=2\n\
    init mm0 t0[3] = 0x1a03d\n\
    cpu0 lock_ptl mm0 t0\n\
    cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..256]\n\
    cpu0 set_pte mm0 t0[5] = 0x2b03d\n\
    cpu0 ptep_get_and_clear mm0 t0[3]\n\
    cpu0 set_pte mm0 t0[255] = 0x3c03d\n\
    cpu0 lazy_mmu_mode_disable\n\
    cpu0 unlock_ptl mm0 t0\n\
    cpu0 flush_tlb_range mm0 t0[0..256]\n";

/// A section from entry 0 of mm0 t1 (the second table: its poison lies between t0's
/// guard page and t1), disabled at step 4.
const FROM_ENTRY_0: &str = "lazymmu-ops v1 cpus=2 facility13=on tlb_lc=on mode=realistic\n\
    mm0 user attach=0,1 tables=2\n\
    init mm0 t1[1] = 0x1a03d\n\
    cpu0 lock_ptl mm0 t1\n\
    cpu0 lazy_mmu_mode_enable_with_ptes mm0 t1[0..8]\n\
    cpu0 set_pte mm0 t1[0] = 0x2b03d\n\
    cpu0 ptep_get_and_clear mm0 t1[1]\n\
    cpu0 lazy_mmu_mode_disable\n\
    cpu0 unlock_ptl mm0 t1\n\
    cpu0 flush_tlb_range mm0 t1[0..8]\n";

#[test]
fn the_programs_run_clean_on_the_reference() {
    let mut k = load(Source::Reference);
    for text in [FULL_PMD, FROM_ENTRY_0] {
        let p = program(text);
        let mut m = Machine::new(&p.config);
        assert_eq!(drive(&mut k, &mut m, &p), vec![], "{text}");
        let o = lazymmu_oracle::run(&p);
        assert_eq!(m.snapshot().memory, o.end.memory, "{text}");
    }
}

#[test]
fn a_plain_store_past_the_table_faults_and_is_named() {
    let mut k = load(Source::Mutant(fixture("past-end.patch")));
    let p = program(FULL_PMD);
    let trap = FaultTrap::new();
    let crash = run_in_child(|| {
        let mut m = Machine::new(&p.config);
        trap.set_bases(&m.table_bases());
        trap.arm();
        drive(&mut k, &mut m, &p)
    })
    .unwrap_err();
    assert_eq!(crash.signal, Some(11), "{crash}");
    let addr = trap.fault_address().expect("the child recorded no fault");
    assert_eq!(
        explain_address(addr, &trap.bases()),
        "mm0 t0 + 0x800 (1 entry past the end)"
    );
}

#[test]
fn a_plain_store_before_the_table_is_reported_at_its_step() {
    let mut k = load(Source::Mutant(fixture("poison-store.patch")));
    let p = program(FROM_ENTRY_0);
    let mut m = Machine::new(&p.config);
    let events = drive(&mut k, &mut m, &p);
    assert_eq!(
        events,
        vec![EventRecord {
            step: 4,
            cpu: 0,
            event: Event::PoisonOverwritten {
                mm: 0,
                table: 1,
                offset: -8
            },
        }]
    );
    assert_eq!(
        explain_offset(0, 1, -8),
        "mm0 t1 - 0x8 (1 entry before the start)"
    );
    // The poison was restored and the tables hold what the reference leaves.
    m.check_poison();
    assert!(m.take_events().is_empty());
    assert_eq!(m.snapshot().memory, lazymmu_oracle::run(&p).end.memory);
}

#[test]
fn machine_tables_are_aligned_guarded_and_reused() {
    let p = program(
        "lazymmu-ops v1 cpus=1 facility13=on tlb_lc=on mode=realistic\n\
         mm0 user attach=0 tables=2\n\
         mm1 init_mm attach=0 tables=1\n",
    );
    let m = Machine::new(&p.config);
    let bases = m.table_bases();
    assert_eq!(
        bases.iter().map(|&(mm, t, _)| (mm, t)).collect::<Vec<_>>(),
        vec![(0, 0), (0, 1), (1, 0)]
    );
    for &(mm, t, base) in &bases {
        assert_eq!(base % 2048, 0, "mm{mm} t{t}");
        let trap = FaultTrap::new();
        let crash = run_in_child(|| {
            trap.arm();
            // SAFETY: deliberately one entry past the end of the table.
            unsafe { ((base + 2048) as *const u64).read_volatile() }
        })
        .unwrap_err();
        assert_eq!(crash.signal, Some(11), "mm{mm} t{t}: {crash}");
        assert_eq!(
            explain_address(trap.fault_address().unwrap(), &bases),
            format!("mm{mm} t{t} + 0x800 (1 entry past the end)")
        );
    }
    drop(m);
    // The next machine of the same layout gets the same (reset) arena.
    let m = Machine::new(&p.config);
    assert_eq!(m.table_bases(), bases);
}

#[test]
fn a_store_past_a_kzalloc_object_faults_at_the_guard_page() {
    let mut k = load(Source::Mutant(fixture("past-alloc.patch")));
    let p = program(FROM_ENTRY_0);
    let trap = FaultTrap::new();
    let crash = run_in_child(|| {
        let mut m = Machine::new(&p.config);
        trap.set_bases(&m.table_bases());
        trap.arm();
        // Bringing the CPUs online (start) allocates the per-CPU structure.
        drive(&mut k, &mut m, &p)
    })
    .unwrap_err();
    assert_eq!(crash.signal, Some(11), "{crash}");
    let addr = trap.fault_address().expect("the child recorded no fault");
    // Right at the start of the guard page: the object ends against it.
    assert_eq!(addr % 4096, 0, "{addr:#x}");
    assert!(
        explain_address(addr, &trap.bases()).ends_with("(not near any page table)"),
        "{}",
        explain_address(addr, &trap.bases())
    );
}
