//! Running programs through compiled C: the same traces from the static build and the
//! loader, A/A agreement with the oracle when no lazy section runs, separate state for
//! side-by-side instances, each generation's wrapper profile, and caught crashes.

mod common;

use common::*;
use lazymmu_lang::text::{parse, to_text};
use lazymmu_lang::{Mode, Op, Program, PteRange, PteRef, Step};
use lazymmu_model::exec::{Kernel, Trace};
use lazymmu_model::isolate::run_in_child;
use lazymmu_model::machine::{Event, HwEvent, Machine};
use lazymmu_model::Ret;
use lazymmu_target::{CKernel, Library, Source};

/// Everything but the implementation's name.
fn assert_same(target: &Trace, oracle: &Trace, p: &Program, what: &str) {
    let first = target
        .steps
        .iter()
        .zip(&oracle.steps)
        .position(|(a, b)| a != b);
    if let Some(i) = first {
        panic!(
            "{what}: step {i} differs: target {:?} oracle {:?}\n{}",
            target.steps[i],
            oracle.steps[i],
            to_text(p)
        );
    }
    assert_eq!(
        target.events,
        oracle.events,
        "{what}: events\n{}",
        to_text(p)
    );
    assert_eq!(
        target.syncs,
        oracle.syncs,
        "{what}: sync points\n{}",
        to_text(p)
    );
    assert_eq!(target.end, oracle.end, "{what}: end state\n{}", to_text(p));
}

fn without_lazy_sections(mut p: Program) -> Program {
    p.steps.retain(|s| {
        !matches!(
            s.op,
            Op::Enable | Op::EnableWithPtes { .. } | Op::Disable | Op::Pause | Op::Resume
        )
    });
    p
}

fn a_a(kernel: &mut CKernel, count: usize, seed: u64) {
    let name = kernel.name();
    let mut steps = 0;
    for (mode, n) in [(Mode::Realistic, count), (Mode::Adversarial, count / 10)] {
        for p in programs(seed, n, mode).map(without_lazy_sections) {
            let t = lazymmu_model::run(&p, kernel);
            let o = lazymmu_oracle::run(&p);
            assert_same(&t, &o, &p, &name);
            steps += p.steps.len();
        }
    }
    assert!(steps > count * 30, "{steps} steps");
}

#[test]
fn a_a_reference_agrees_with_the_oracle_on_100k_programs() {
    a_a(&mut load(Source::Reference), 100_000, 0xaa01);
}

#[test]
fn a_a_v2_profile_agrees_with_the_oracle_on_100k_programs() {
    a_a(
        &mut load(Source::KernelTree(fixture("v2"))),
        100_000,
        0xaa02,
    );
}

#[test]
fn a_a_rfc_profile_agrees_with_the_oracle_on_100k_programs() {
    a_a(
        &mut load(Source::KernelTree(fixture("rfc"))),
        100_000,
        0xaa03,
    );
}

#[test]
fn static_build_and_loader_give_identical_traces() {
    let mut builtin = CKernel::new(Library::builtin().expect("the static build is linked in"));
    let mut loaded = load(Source::Reference);
    assert_eq!(builtin.name(), "reference");
    for mode in [Mode::Realistic, Mode::Adversarial] {
        for p in programs(0xb1, 3_000, mode) {
            let a = lazymmu_model::run(&p, &mut builtin);
            let b = lazymmu_model::run(&p, &mut loaded);
            assert_same(&a, &b, &p, "static vs loaded");
        }
    }
}

#[test]
fn the_reference_batches_a_zap_into_ipte_ranges() {
    let p = seed("zap_pte_range.ops");
    let t = lazymmu_model::run(&p, &mut load(Source::Reference));
    let o = lazymmu_oracle::run(&p);
    assert!(t.events.is_empty(), "{:?}", t.events);
    assert_eq!(t.end.memory, o.end.memory);
    assert_eq!(o.end.counters.ipte_global, 4);
    assert_eq!(t.end.counters.ipte_global, 0);
    assert_eq!(t.end.counters.ipte_range_global, 2);
    // The same values come back, and the section's updates are pending until the leave.
    for i in 4..10 {
        assert_eq!(t.steps[i].ret, o.steps[i].ret, "step {i}");
        assert!(
            t.steps[i].hw.is_empty(),
            "step {i} issued {:?}",
            t.steps[i].hw
        );
    }
}

#[test]
fn older_generation_profiles_run_lazy_programs() {
    for (dir, seeds) in [
        ("v2", ["zap_pte_range.ops", "change_pte_range-mprotect.ops"]),
        ("rfc", ["zap_pte_range.ops", "madvise-free.ops"]),
    ] {
        let mut k = load(Source::KernelTree(fixture(dir)));
        for s in seeds {
            let p = seed(s);
            let t = lazymmu_model::run(&p, &mut k);
            let o = lazymmu_oracle::run(&p);
            assert!(t.events.is_empty(), "{dir} {s}: {:?}", t.events);
            assert_eq!(t.end.memory, o.end.memory, "{dir} {s}");
            let ranges = t
                .steps
                .iter()
                .flat_map(|r| &r.hw)
                .filter(|h| matches!(h, HwEvent::IpteRange { .. }))
                .count();
            assert!(
                ranges > 0,
                "{dir} {s}: no IPTE-range: the profile did not route into the batch"
            );
        }
    }
}

#[test]
fn v2_early_param_off_disables_batching() {
    let p = seed("zap_pte_range.ops");
    let mut k = load(Source::KernelTree(fixture("v2")));
    k.early_param = Some("off".into());
    let t = lazymmu_model::run(&p, &mut k);
    assert_same(&t, &lazymmu_oracle::run(&p), &p, "v2 lazy_mmu=off");
    // And on again for the next program: the statics are restored between programs.
    k.early_param = None;
    let t = lazymmu_model::run(&p, &mut k);
    assert_eq!(t.end.counters.ipte_global, 0);
}

fn step(cpu: u8, op: Op) -> Step {
    Step { cpu, op }
}

#[test]
fn side_by_side_instances_keep_separate_per_cpu_state() {
    let p = parse(
        "lazymmu-ops v1 cpus=2 facility13=on tlb_lc=on mode=realistic\n\
         mm0 user attach=0,1 tables=1\n\
         init mm0 t0[3] = 0x1a03d\n",
    )
    .unwrap();
    let pte = PteRef::new(0, 0, 3);
    let range = PteRange {
        mm: 0,
        table: 0,
        start: 0,
        end: 8,
    };
    let enter = step(
        0,
        Op::EnableWithPtes {
            range,
            ptep: range.first(),
        },
    );
    let (mut a, mut b) = (
        load(Source::Reference),
        lazymmu_target::load(&Source::Reference).unwrap(),
    );
    let (mut ma, mut mb) = (Machine::new(&p.config), Machine::new(&p.config));
    a.start(&mut ma);
    b.start(&mut mb);
    let run = |k: &mut CKernel, m: &mut Machine, s: &Step| {
        m.begin_step(0, s.cpu);
        let r = k.op(m, s.cpu, &s.op);
        m.end_step();
        r
    };
    // Instance a: cpu0 has a pending clear of t0[3].
    run(&mut a, &mut ma, &enter);
    assert_eq!(
        run(&mut a, &mut ma, &step(0, Op::PtepGetAndClear { pte })),
        Ret::Pte(0x1a03d)
    );
    // Instance b, same CPU number: its own section, its own pending value, then leave.
    run(&mut b, &mut mb, &enter);
    run(
        &mut b,
        &mut mb,
        &step(
            0,
            Op::SetPte {
                pte: PteRef::new(0, 0, 5),
                value: 0x2b03d,
            },
        ),
    );
    assert_eq!(
        run(&mut b, &mut mb, &step(0, Op::PtepGet { pte })),
        Ret::Pte(0x1a03d)
    );
    run(&mut b, &mut mb, &step(0, Op::Disable));
    assert_eq!(mb.pte(PteRef::new(0, 0, 5)), 0x2b03d);
    assert_eq!(mb.pte(pte), 0x1a03d);
    // Instance a still has its own pending state.
    assert_eq!(ma.pte(pte), 0x1a03d);
    assert_eq!(
        run(&mut a, &mut ma, &step(0, Op::PtepGet { pte })),
        Ret::Pte(0x400)
    );
    run(&mut a, &mut ma, &step(0, Op::Disable));
    assert_eq!(ma.pte(pte), 0x400);
    assert_eq!(ma.pte(PteRef::new(0, 0, 5)), 0x400);
    assert!(ma.take_events().is_empty() && mb.take_events().is_empty());
}

const CRASHY: &str = "lazymmu-ops v1 cpus=1 facility13=on tlb_lc=on mode=adversarial\n\
    mm0 user attach=0 tables=1\n\
    cpu0 lock_ptl mm0 t0\n\
    cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]\n";

#[test]
fn a_crash_in_c_is_caught_with_the_program() {
    let mut k = load(Source::File(fixture("crash/lazy_mmu.c")));
    let p = parse(&format!(
        "{CRASHY}cpu0 set_pte mm0 t0[1] = 0xdead03d\ncpu0 lazy_mmu_mode_disable\n"
    ))
    .unwrap();
    let crash = run_in_child(|| lazymmu_model::run(&p, &mut k)).unwrap_err();
    assert_eq!(crash.signal, Some(11), "{crash}");
    // The parent is unharmed and the same kernel runs the next program.
    let ok = parse(&format!(
        "{CRASHY}cpu0 set_pte mm0 t0[1] = 0x1a03d\ncpu0 lazy_mmu_mode_disable\n"
    ))
    .unwrap();
    let t = run_in_child(|| lazymmu_model::run(&ok, &mut k)).unwrap();
    assert!(t.events.is_empty());
}

#[test]
fn a_wild_store_is_reported_with_its_address() {
    let mut k = load(Source::File(fixture("crash/lazy_mmu.c")));
    let p = parse(&format!(
        "{CRASHY}cpu0 set_pte mm0 t0[1] = 0xbad03d\ncpu0 lazy_mmu_mode_disable\n"
    ))
    .unwrap();
    let t = lazymmu_model::run(&p, &mut k);
    assert_eq!(t.events.len(), 1, "{:?}", t.events);
    assert_eq!(t.events[0].step, 2);
    assert!(
        matches!(t.events[0].event, Event::WildAccess { write: true, .. }),
        "{:?}",
        t.events
    );
}
