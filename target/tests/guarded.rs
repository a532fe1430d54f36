//! Guarded memory against a hostile implementation: page tables between poison and guard
//! pages, kzalloc'd objects against a guard page. A plain store past a table or past an
//! object faults at the instruction (and the fault address is named); a plain store
//! before a table is reported as a poison event at the step that made it.

mod common;

use common::*;
use lazymmu_engine::executor::{ExecOptions, Executor, Outcome};
use lazymmu_harness::Differ;
use lazymmu_lang::text::parse;
use lazymmu_lang::Program;
use lazymmu_model::exec::Stepper;
use lazymmu_model::guarded::explain_offset;
use lazymmu_model::isolate::run_in_child;
use lazymmu_model::machine::{Event, EventRecord};
use lazymmu_target::{CKernel, Source};

/// Runs `p` on `k` step by step (the run loop's own stepping); the machine stays the
/// caller's to look at. The poison is checked after every call into the C code.
fn drive<'a>(k: &'a mut CKernel, p: &Program) -> Stepper<&'a mut CKernel> {
    let mut s = Stepper::new(&p.config, k);
    for (i, step) in p.steps.iter().enumerate() {
        s.step(i, step);
    }
    s
}

/// How `p` ends on `source` in the rig's crash-proof executor: its crash report's
/// explained fault address.
fn fault_on(source: Source, p: &Program) -> String {
    let d = Differ::new(load(source));
    let mut e = Executor::new(d, ExecOptions::default()).unwrap();
    match e.run_one(p, false) {
        Outcome::Died(r, _) => {
            assert!(r.render().starts_with("SIGSEGV"), "{}", r.render());
            r.fault_explained.unwrap_or_default()
        }
        Outcome::Ran(_) => panic!("no crash"),
    }
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
        let mut s = drive(&mut k, &p);
        assert_eq!(s.machine.take_events(), vec![], "{text}");
        let o = lazymmu_oracle::run(&p);
        assert_eq!(s.machine.snapshot().memory, o.end.memory, "{text}");
    }
}

#[test]
fn a_plain_store_past_the_table_faults_and_is_named() {
    let p = program(FULL_PMD);
    assert_eq!(
        fault_on(Source::Mutant(fixture("past-end.patch")), &p),
        "mm0 t0 + 0x800 (1 entry past the end)"
    );
}

#[test]
fn a_plain_store_before_the_table_is_reported_at_its_step() {
    let mut k = load(Source::Mutant(fixture("poison-store.patch")));
    let p = program(FROM_ENTRY_0);
    let mut s = drive(&mut k, &p);
    let m = &mut s.machine;
    let events = m.take_events();
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
    let m = lazymmu_model::Machine::new(&p.config);
    let bases = m.table_bases();
    assert_eq!(
        bases.iter().map(|&(mm, t, _)| (mm, t)).collect::<Vec<_>>(),
        vec![(0, 0), (0, 1), (1, 0)]
    );
    for &(mm, t, base) in &bases {
        assert_eq!(base % 2048, 0, "mm{mm} t{t}");
        let crash = run_in_child(|| {
            // SAFETY: deliberately one entry past the end of the table.
            unsafe { ((base + 2048) as *const u64).read_volatile() }
        })
        .unwrap_err();
        assert_eq!(crash.signal, Some(11), "mm{mm} t{t}: {crash}");
    }
    drop(m);
    // The next machine of the same layout gets the same (reset) arena.
    let m = lazymmu_model::Machine::new(&p.config);
    assert_eq!(m.table_bases(), bases);
}

#[test]
fn a_store_past_a_kzalloc_object_faults_at_the_guard_page() {
    // Bringing the CPUs online (start) allocates the per-CPU structure and writes past it.
    let p = program(FROM_ENTRY_0);
    let why = fault_on(Source::Mutant(fixture("past-alloc.patch")), &p);
    assert!(
        why.ends_with("past the end of a 2128-byte kzalloc() object"),
        "{why}"
    );
}
