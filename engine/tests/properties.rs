//! Properties of the differential check and the engine over many programs, with fixed
//! seeds: A/A agreement, the reference clean where the mutants are caught, mutations that
//! keep programs valid and realistic, and deterministic fuzzing.

use lazymmu_engine::fuzz::{Config, Fuzzer, ModeSel};
use lazymmu_engine::mutate::mutate;
use lazymmu_engine::rng::Rng;
use lazymmu_engine::Differ;
use lazymmu_harness::gen::from_bytes;
use lazymmu_harness::text::to_text;
use lazymmu_harness::{contract, Mode, Op, Program};
use lazymmu_target::Source;
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, RngAlgorithm, TestRng, TestRunner};

fn mutant(name: &str) -> Source {
    Source::Mutant(lazymmu_target::sources::mutant(name).unwrap())
}

fn differ(s: &Source) -> Differ {
    Differ::new(lazymmu_target::load(s).unwrap_or_else(|e| panic!("{e}")))
}

fn executor(s: &Source) -> lazymmu_engine::executor::Executor {
    lazymmu_engine::executor::Executor::new(differ(s), Default::default()).unwrap()
}

fn programs(seed: u64, n: usize, mode: Mode) -> impl Iterator<Item = Program> {
    let mut rng = Rng::new(seed);
    (0..n).map(move |_| {
        let len = 64 + rng.below(1024);
        from_bytes(&rng.bytes(len), mode)
    })
}

fn without_sections(mut p: Program) -> Program {
    p.steps.retain(|s| {
        !matches!(
            s.op,
            Op::Enable | Op::EnableWithPtes { .. } | Op::Disable | Op::Pause | Op::Resume
        )
    });
    p
}

#[test]
fn a_a_no_lazy_section_no_finding_from_any_checker() {
    // Without a section every implementation is the eager code: no checker may fire,
    // for the reference and for mutants alike (their bugs live in the batch).
    for (i, source) in [Source::Reference, mutant("05"), mutant("11"), mutant("17")]
        .iter()
        .enumerate()
    {
        let mut d = differ(source);
        for mode in [Mode::Realistic, Mode::Adversarial] {
            for p in programs(0xa0 + i as u64, 5_000, mode).map(without_sections) {
                let v = d.verdict(&p);
                assert!(
                    v.findings.is_empty() && v.hazards.is_empty(),
                    "{source:?}: {:#?} {:#?}\n{}",
                    v.findings,
                    v.hazards,
                    to_text(&p)
                );
            }
        }
    }
}

/// A proptest runner with a fixed seed, so every run checks the same cases.
fn runner(cases: u32) -> TestRunner {
    TestRunner::new_with_rng(
        PtConfig {
            cases,
            failure_persistence: None,
            ..PtConfig::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    )
}

fn realistic_program() -> impl Strategy<Value = Program> {
    proptest::collection::vec(any::<u8>(), 0..1500).prop_map(|b| from_bytes(&b, Mode::Realistic))
}

/// Runs the property "no finding" for an implementation; Err is the failing program.
fn no_findings(source: &Source, cases: u32) -> Result<(), String> {
    // proptest takes a Fn; the C instance is mutable state.
    let d = std::cell::RefCell::new(differ(source));
    runner(cases)
        .run(&realistic_program(), |p| {
            let v = d.borrow_mut().verdict(&p);
            prop_assert!(
                v.findings.is_empty(),
                "{}: {}",
                v.findings[0].signature(),
                to_text(&p)
            );
            Ok(())
        })
        .map_err(|e| e.to_string())
}

#[test]
fn proptest_reference_has_no_findings_on_realistic_programs() {
    no_findings(&Source::Reference, 3_000).unwrap();
}

#[test]
fn proptest_the_same_property_catches_named_mutants() {
    for name in [
        "02-stale-ptep-get",
        "09-nested-disable-no-flush",
        "13-store-before-invalidate",
        "17-owed-flush-forgotten",
    ] {
        let e = no_findings(&mutant(name), 3_000).expect_err(name);
        assert!(e.contains("lazymmu-"), "{name}: {e}");
    }
}

#[test]
fn mutations_keep_programs_valid_and_realistic() {
    let mut rng = Rng::new(7);
    let corpus: Vec<Program> = programs(8, 300, Mode::Realistic).collect();
    let mut made = 0;
    for i in 0..3_000 {
        let parent = &corpus[i % corpus.len()];
        let other = &corpus[(i * 7 + 3) % corpus.len()];
        if let Some(child) = mutate(parent, Some(other), &mut rng) {
            made += 1;
            assert!(child.validate().is_ok(), "{}", to_text(&child));
            let v = contract::violations(&child);
            assert!(v.is_empty(), "{}\n{}", v[0], to_text(&child));
            assert_ne!(&child, parent);
        }
    }
    assert!(
        made > 2_000,
        "only {made} of 3000 mutations produced a program"
    );
}

#[test]
fn mutations_are_deterministic() {
    let p = programs(9, 1, Mode::Realistic).next().unwrap();
    let run = || {
        let mut rng = Rng::new(42);
        (0..50)
            .filter_map(|_| mutate(&p, None, &mut rng))
            .map(|c| to_text(&c))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn fuzzing_is_deterministic_from_the_seed() {
    let run = |seed| {
        let cfg = Config {
            seed,
            mode: ModeSel::Mixed,
            runs: Some(1_500),
            time: None,
            seeds: vec![],
            out: None,
            worker: 0,
            kill_against: None,
            minimizer: None,
        };
        let mut f = Fuzzer::new(executor(&Source::Reference), cfg);
        f.run(std::time::Duration::from_secs(3600), |_| {})
    };
    let (a, b, c) = (run(5), run(5), run(6));
    assert_eq!(
        (a.runs, a.features, a.corpus, &a.findings, &a.hazards),
        (b.runs, b.features, b.corpus, &b.findings, &b.hazards)
    );
    assert_ne!(
        (a.features, a.corpus),
        (c.features, c.corpus),
        "another seed explores differently"
    );
    assert!(
        a.corpus > 20 && a.features > 500,
        "the loop made no progress: {a:?}"
    );
}

#[test]
fn fuzzing_finds_a_mutant_without_seeds() {
    let cfg = Config {
        seed: 1,
        mode: ModeSel::Realistic,
        runs: Some(20_000),
        time: None,
        seeds: vec![],
        out: None,
        worker: 0,
        kill_against: Some(executor(&Source::Reference)),
        minimizer: None,
    };
    let mut f = Fuzzer::new(executor(&mutant("03")), cfg);
    let s = f.run(std::time::Duration::from_secs(3600), |_| {});
    let k = s.killed.expect("mutant 03 survived 20000 programs");
    assert!(k.signature.starts_with("lazymmu-"), "{k:?}");
}
