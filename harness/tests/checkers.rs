//! Every checker fires on a hand-written program against a mutant or fixture that has
//! the bug, and stays quiet on the reference for the same program. (Crashes and hangs are
//! the executor's findings: engine/tests/executor.rs.)

use std::path::PathBuf;

use lazymmu_harness::check::{self, Class, Verdict};
use lazymmu_harness::contract;
use lazymmu_lang::Program;
use lazymmu_target::Source;
use lazymmu_testkit::{fixture, mutant, program, regression, TWO_CPUS};

/// The implementation's trace against the oracle's, checked: what the engine's Differ
/// does, without the engine.
fn verdict(source: Source, p: &Program) -> Verdict {
    let mut kernel = lazymmu_target::load(&source).unwrap_or_else(|e| panic!("{e}"));
    let marker = kernel.library().generation.marker();
    let target = lazymmu_model::run(p, &mut kernel);
    check::check(p, &target, &lazymmu_oracle::run(p), marker)
}

/// `class` fires against `bad`, and the reference is clean on the same program.
fn fires_and_quiet(class: Class, bad: Source, src: &str) -> Verdict {
    let p = program(src);
    let v = verdict(bad, &p);
    assert!(
        v.findings.iter().any(|f| f.class == class),
        "{class:?} did not fire; findings: {:#?}",
        v.findings
    );
    let r = verdict(Source::Reference, &p);
    assert!(
        r.findings.is_empty(),
        "reference not clean: {:#?}",
        r.findings
    );
    v
}

#[test]
fn return_divergence() {
    let v = fires_and_quiet(
        Class::Return,
        mutant("02"),
        &format!(
            "{TWO_CPUS}cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]
cpu0 ptep_get_and_clear mm0 t0[1]
cpu0 ptep_get mm0 t0[1]
cpu0 lazy_mmu_mode_disable
cpu0 unlock_ptl mm0 t0
"
        ),
    );
    let f = &v.findings[0];
    assert_eq!(
        (f.step, f.signature().as_str()),
        (3, "lazymmu-return-ptep_get")
    );
    assert!(
        f.target.starts_with("0x1a03d") && f.oracle.starts_with("0x400"),
        "{f:?}"
    );
}

#[test]
fn marker_returned_to_a_caller() {
    let v = fires_and_quiet(
        Class::Marker,
        mutant("06"),
        &format!(
            "{TWO_CPUS}cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]
cpu0 ptep_get mm0 t0[3]
cpu0 lazy_mmu_mode_disable
cpu0 unlock_ptl mm0 t0
"
        ),
    );
    assert_eq!(v.findings[0].signature(), "lazymmu-marker-leak-ptep_get");
    assert!(v.findings[0].target.starts_with("0x800"));
}

#[test]
fn marker_leaked_to_memory() {
    fires_and_quiet(
        Class::Marker,
        mutant("05"),
        &format!(
            "{TWO_CPUS}cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]
cpu0 set_pte mm0 t0[0] = 0x4d03d
cpu0 set_pte mm0 t0[3] = 0x4d215
cpu0 lazy_mmu_mode_disable
cpu0 unlock_ptl mm0 t0
"
        ),
    );
}

#[test]
fn memory_divergence_at_a_sync_point() {
    let v = fires_and_quiet(
        Class::Memory,
        mutant("09"),
        &format!(
            "{TWO_CPUS}cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]
cpu0 lazy_mmu_mode_enable
cpu0 ptep_get_and_clear mm0 t0[1]
cpu0 lazy_mmu_mode_disable
cpu0 lazy_mmu_mode_disable
cpu0 unlock_ptl mm0 t0
"
        ),
    );
    let f = &v.findings[0];
    assert_eq!(f.signature(), "lazymmu-memory-lazy_mmu_mode_disable");
    assert_eq!(f.step, 4, "the nested disable is the sync point");
}

#[test]
fn store_to_a_valid_pte_without_ipte() {
    fires_and_quiet(
        Class::StoreValid,
        mutant("17"),
        "lazymmu-ops v1 cpus=2 facility13=on tlb_lc=off mode=realistic
mm0 user attach=0 tables=1
init mm0 t0[1] = 0x1a03d
cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]
cpu0 ptep_get_and_clear mm0 t0[1]
cpu0 lazy_mmu_mode_disable
cpu0 flush_tlb_range mm0 t0[0..8]
cpu0 unlock_ptl mm0 t0
",
    );
}

#[test]
fn stale_tlb_after_the_callers_flush() {
    let v = fires_and_quiet(
        Class::StaleTlb,
        mutant("04"),
        &format!(
            "{TWO_CPUS}cpu1 access mm0 t0[1] read
cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]
cpu0 ptep_get_and_clear mm0 t0[1]
cpu0 lazy_mmu_mode_disable
cpu0 flush_tlb_range mm0 t0[0..8]
cpu0 unlock_ptl mm0 t0
"
        ),
    );
    assert_eq!(
        v.findings
            .iter()
            .find(|f| f.class == Class::StaleTlb)
            .unwrap()
            .signature(),
        "lazymmu-stale-tlb-flush_tlb_range"
    );
}

#[test]
fn stale_tlb_only_inside_the_flushed_range() {
    // Mutant 04 leaves cpu1's entry of t0[1] stale, as above; a flush that does not
    // cover t0[1] does not judge it.
    let p = program(&format!(
        "{TWO_CPUS}cpu1 access mm0 t0[1] read
cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]
cpu0 ptep_get_and_clear mm0 t0[1]
cpu0 lazy_mmu_mode_disable
cpu0 flush_tlb_range mm0 t0[2..8]
cpu0 unlock_ptl mm0 t0
"
    ));
    let v = verdict(mutant("04"), &p);
    assert!(
        !v.findings.iter().any(|f| f.class == Class::StaleTlb),
        "{:#?}",
        v.findings
    );
}

/// A TLB entry of `trace`'s flush at `step` that differs from memory.
fn stale_at(trace: &lazymmu_model::Trace, step: usize) -> Vec<(usize, String)> {
    let f = trace.flushes.iter().find(|f| f.step == step).unwrap();
    let mut out = vec![];
    for (c, tlb) in f.snapshot.tlbs.iter().enumerate() {
        for &(p, v) in tlb {
            if v != f.snapshot.pte(&trace.layout, p) {
                out.push((c, format!("{p} {v:#x}")));
            }
        }
    }
    out
}

#[test]
fn stale_tlb_is_quiet_on_entries_no_change_owed_and_on_accidental_purges() {
    // Both from real files: the entry was left stale by a full=1 clear (which owes no
    // purge); the eager code lost it by accident (a global IPTE owed by a later value, an
    // IDTE owed by another PTE). The fixture invalidates with a local IPTE-range where
    // eager owes a flush, which is legal, and keeps the entry.
    let legal = Source::Mutant(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures/local-ipte-now.patch"),
    );
    for (stem, flush) in [
        ("stale-tlb-full-clear-accidental-ipte", 8),
        ("stale-tlb-full-clear-accidental-idte", 10),
    ] {
        let p = regression(stem);
        for src in [Source::Reference, legal.clone()] {
            let v = verdict(src.clone(), &p);
            assert!(v.findings.is_empty(), "{stem} {src:?}: {:#?}", v.findings);
        }
        // The accident is real: the implementation keeps a stale entry at the flush that
        // the eager code does not have.
        let mut kernel = lazymmu_target::load(&legal).unwrap();
        let target = lazymmu_model::run(&p, &mut kernel);
        let oracle = lazymmu_oracle::run(&p);
        assert!(stale_at(&oracle, flush).is_empty(), "{stem}");
        assert!(!stale_at(&target, flush).is_empty(), "{stem}");
    }
}

#[test]
fn more_global_iptes_than_eager_is_performance() {
    // The v2 fixture invalidates each entry with a global IPTE-range, where the eager
    // lazy policy of a single-attached mm owes one flush.
    let v = fires_and_quiet(
        Class::PerfGlobalIpte,
        Source::File(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/fixtures/v2/arch/s390/mm/ipte_batch.c"),
        ),
        "lazymmu-ops v1 cpus=2 facility13=on tlb_lc=off mode=realistic
mm0 user attach=0 tables=1
init mm0 t0[1] = 0x1a03d
init mm0 t0[3] = 0x2b03d
cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]
cpu0 ptep_get_and_clear mm0 t0[1]
cpu0 ptep_get_and_clear mm0 t0[3]
cpu0 lazy_mmu_mode_disable
cpu0 flush_tlb_range mm0 t0[0..8]
cpu0 unlock_ptl mm0 t0
",
    );
    assert!(!v.findings[0].class.is_bug());
    assert_eq!(v.findings[0].signature(), "lazymmu-perf-global-ipte-end");
}

const ONE_CPU_SECTION: &str = "lazymmu-ops v1 cpus=1 facility13=on tlb_lc=on mode=realistic
mm0 user attach=0 tables=1
cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]
";

#[test]
fn wild_access() {
    fires_and_quiet(
        Class::Wild,
        fixture("crash/lazy_mmu.c"),
        &format!("{ONE_CPU_SECTION}cpu0 set_pte mm0 t0[1] = 0xbad03d\ncpu0 lazy_mmu_mode_disable\ncpu0 unlock_ptl mm0 t0\n"),
    );
}

#[test]
fn unrouted_access_to_the_own_range() {
    let v = fires_and_quiet(
        Class::Unrouted,
        mutant("10"),
        &format!(
            "{TWO_CPUS}cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]
cpu0 ptep_get_and_clear mm0 t0[1]
cpu0 lazy_mmu_mode_pause
cpu0 ptep_get mm0 t0[1]
cpu0 lazy_mmu_mode_resume
cpu0 lazy_mmu_mode_disable
cpu0 unlock_ptl mm0 t0
"
        ),
    );
    assert!(
        v.findings
            .iter()
            .any(|f| f.signature() == "lazymmu-unrouted-ptep_get"),
        "{:#?}",
        v.findings
    );
}

#[test]
fn ultravisor_call_on_a_valid_pte() {
    fires_and_quiet(
        Class::UvValid,
        mutant("16"),
        "lazymmu-ops v1 cpus=2 facility13=on tlb_lc=on mode=realistic
mm0 user attach=0,1 tables=1 protected
init mm0 t0[1] = 0x1a03d
cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]
cpu0 ptep_get_and_clear mm0 t0[1]
cpu0 lazy_mmu_mode_disable
cpu0 unlock_ptl mm0 t0
",
    );
}

#[test]
fn failed_kernel_assertion() {
    let v = fires_and_quiet(
        Class::Assertion,
        fixture("preempt-imbalance/lazy_mmu.c"),
        &format!("{ONE_CPU_SECTION}cpu0 lazy_mmu_mode_disable\ncpu0 unlock_ptl mm0 t0\n"),
    );
    assert!(
        v.findings[0]
            .target
            .contains("preempt_enable() without preempt_disable()"),
        "{:?}",
        v.findings[0]
    );
}

#[test]
fn findings_on_contract_breaking_programs_are_hardening() {
    // A range that runs past the end of the PMD: the reference refuses to record it,
    // mutant 18 batches past the table.
    let p = program(
        "lazymmu-ops v1 cpus=2 facility13=on tlb_lc=on mode=adversarial
mm0 user attach=0,1 tables=2
init mm0 t0[252] = 0x1a03d
cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[250..260]
cpu0 ptep_clear_flush mm0 t0[252]
cpu0 lazy_mmu_mode_disable
cpu0 unlock_ptl mm0 t0
",
    );
    assert!(!contract::is_realistic(&p));
    let v = verdict(mutant("18"), &p);
    assert!(!v.findings.is_empty() && !v.contract.is_empty());
    assert!(
        v.findings
            .iter()
            .all(|f| f.hardening && f.signature().starts_with("lazymmu-hardening-")),
        "{:#?}",
        v.findings
    );
    assert!(verdict(Source::Reference, &p).findings.is_empty());
}

#[test]
fn the_generic_layers_own_warning_is_the_oracles_too() {
    // An unbalanced disable: the generic layer warns, in the eager kernel as in the C one.
    let p = program(
        "lazymmu-ops v1 cpus=1 facility13=on tlb_lc=on mode=adversarial
mm0 user attach=0 tables=1
cpu0 lazy_mmu_mode_disable
",
    );
    let o = lazymmu_oracle::run(&p);
    assert_eq!(o.events.len(), 1, "{:?}", o.events);
    let v = verdict(Source::Reference, &p);
    assert!(v.findings.is_empty(), "{:#?}", v.findings);
}

/// Under a broken contract only what is dangerous whatever the caller did is reported.
#[test]
fn on_contract_breaking_programs_only_danger_is_reported() {
    // Another CPU clears a PTE that cpu0 holds batched (no lock, no ownership): the
    // reference's batch writes its own value back at the leave, a divergence the callers'
    // race explains. Not reported.
    let race = program(
        "lazymmu-ops v1 cpus=2 facility13=on tlb_lc=on mode=adversarial
mm0 user attach=0,1 tables=1
cpu1 lazy_mmu_mode_enable_with_ptes mm0 t0[0..6]
cpu1 set_ptes mm0 t0[3] n=1 = 0x1a235
cpu0 ptep_get_and_clear mm0 t0[3]
cpu1 ptep_set_wrprotect mm0 t0[3]
cpu1 lazy_mmu_mode_disable
",
    );
    let mut kernel = lazymmu_target::load(&Source::Reference).unwrap();
    let t = lazymmu_model::run(&race, &mut kernel);
    let o = lazymmu_oracle::run(&race);
    assert_ne!(t.end.memory, o.end.memory, "the divergence is there");
    let v = verdict(Source::Reference, &race);
    assert!(v.findings.is_empty(), "{:#?}", v.findings);

    // A value handed to the implementation in its own section, dropped: a valid PTE
    // stays mapped that the caller replaced (mutant 14 takes 0x800 for "not pending").
    let dropped = program(
        "lazymmu-ops v1 cpus=1 facility13=on tlb_lc=on mode=adversarial
mm0 user attach=0 tables=1
init mm0 t0[3] = 0x1a235
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..9]
cpu0 ptep_modify_prot_commit mm0 t0[3] = 0x800
cpu0 lazy_mmu_mode_disable
",
    );
    let v = verdict(mutant("14"), &dropped);
    assert_eq!(
        v.signatures()[0],
        "lazymmu-hardening-memory-lazy_mmu_mode_disable"
    );
    assert!(verdict(Source::Reference, &dropped).findings.is_empty());

    // The marker in memory is a leak only when the caller did not put it there itself.
    let given = program(
        "lazymmu-ops v1 cpus=1 facility13=on tlb_lc=on mode=adversarial
mm0 user attach=none tables=1
init mm0 t0[7] = 0x800
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..15]
cpu0 ptep_get_and_clear_full mm0 t0[7] full=0
",
    );
    assert!(verdict(Source::Reference, &given).findings.is_empty());
}

#[test]
fn another_cpus_lockless_read_during_a_section_is_a_hazard_not_a_bug() {
    let p = program(&format!(
        "{TWO_CPUS}cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]
cpu0 ptep_get_and_clear mm0 t0[1]
cpu1 ptep_get_lockless mm0 t0[1]
cpu0 lazy_mmu_mode_disable
cpu0 unlock_ptl mm0 t0
"
    ));
    let v = verdict(Source::Reference, &p);
    assert!(v.findings.is_empty(), "{:#?}", v.findings);
    // The differing return, and the read of a slot poisoned by cpu0's batch.
    assert_eq!(v.hazards.len(), 2, "{:#?}", v.hazards);
    assert_eq!(
        v.hazards[1].target,
        "lazy-MMU PTE access: read of mm0 t0[1] in ptep_get_lockless, poisoned by cpu0's section"
    );
    let h = &v.hazards[0];
    assert_eq!((h.step, h.cpu, h.harmful), (3, 1, false));
    assert!(
        h.context.contains("cpu0 has a section over mm0 t0[0..8)"),
        "{}",
        h.context
    );
    assert!(h.context.contains("lockless walker"), "{}", h.context);
}
