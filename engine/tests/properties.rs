//! Properties of the differential check and the engine over many programs, with fixed
//! seeds: A/A agreement, the reference clean where the mutants are caught, mutations that
//! keep programs valid and realistic, and deterministic fuzzing.

use lazymmu_engine::fuzz::{Config, Fuzzer, ModeSel};
use lazymmu_engine::mutate::mutate;
use lazymmu_engine::rng::Rng;
use lazymmu_harness::contract;
use lazymmu_harness::gen::from_bytes;
use lazymmu_lang::text::to_text;
use lazymmu_lang::{Mode, Op, Program};
use lazymmu_target::Source;
use lazymmu_testkit::{differ, mutant, programs};
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, RngAlgorithm, TestRng, TestRunner};

fn executor(s: &Source) -> lazymmu_engine::executor::Executor {
    lazymmu_testkit::executor(s, Default::default())
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

/// The custom mutator of the libFuzzer and AFL++ targets (with debug assertions on)
/// never panics and never returns an input the rig then rejects: chains of 100 mutations
/// from starting inputs of every kind (generator bytes, `.ops` texts of realistic and
/// adversarial programs, texts with a line mangled). `cargo test` runs 1,000 chains;
/// CI runs 10,000 (a million mutations) in the `checked` profile (optimized, debug
/// assertions on): `LAZYMMU_MUTATOR_CHAINS=10000`.
#[test]
fn the_custom_mutator_never_panics_and_never_returns_a_rejected_input() {
    let chains: u32 = std::env::var("LAZYMMU_MUTATOR_CHAINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    // Two halves on two threads (the machines this runs on have two cores).
    let halves: Vec<_> = [0u32, 1]
        .into_iter()
        .map(|h| std::thread::spawn(move || mutator_chains(h, chains / 2)))
        .collect();
    let (mut mutations, mut structural) = (0, 0);
    for h in halves {
        let (m, s) = h.join().unwrap();
        mutations += m;
        structural += s;
    }
    assert_eq!(mutations, (chains / 2) as u64 * 200);
    assert!(
        structural > mutations * 3 / 10,
        "{structural} structural mutations of {mutations}"
    );
}

/// `chains` chains of 100 mutations from inputs of seed `half`; (mutations, structural).
fn mutator_chains(half: u32, chains: u32) -> (u64, u64) {
    use lazymmu_engine::mutate::{mutate_input, target_mode};
    use lazymmu_harness::gen::{as_ops_text, decode_input};
    let mut rng = Rng::new(0x6d75 + half as u64);
    let max = 16_384;
    let mut mutations = 0u64;
    let mut structural = 0u64;
    for i in 0..chains {
        let len = 64 + rng.below(1024);
        let start: Vec<u8> = match i % 4 {
            0 => rng.bytes(len),
            1 | 2 => {
                let mode = if i % 4 == 1 {
                    Mode::Realistic
                } else {
                    Mode::Adversarial
                };
                to_text(&from_bytes(&rng.bytes(len), mode)).into_bytes()
            }
            _ => {
                let mut t = to_text(&from_bytes(&rng.bytes(512), Mode::Realistic));
                let lines: Vec<&str> = t.lines().collect();
                let k = 1 + rng.below(lines.len().max(2) - 1);
                let bad = format!("{} 0x{:x}", lines[k.min(lines.len() - 1)], rng.next_u64());
                t = t.replacen(lines[k.min(lines.len() - 1)], &bad, 1);
                t.into_bytes()
            }
        };
        let mut data = vec![0u8; max];
        let mut size = start.len().min(max);
        data[..size].copy_from_slice(&start[..size]);
        for _ in 0..100 {
            let seed = rng.next_u64() as u32;
            // Byte-level mutation stand-in: flip one byte (and say it was used).
            let bytes_used = std::cell::Cell::new(false);
            let flip = |d: &mut [u8], n: usize, _max: usize| {
                bytes_used.set(true);
                if n > 0 {
                    d[(seed as usize / 4) % n] ^= 1 << (seed % 8);
                }
                n
            };
            size = mutate_input(&mut data, size, max, seed, flip);
            mutations += 1;
            assert!(size <= max);
            // Whatever came out, the targets can run it.
            let p = decode_input(&data[..size], target_mode());
            assert!(p.validate().is_ok());
            if !bytes_used.get() {
                structural += 1;
                // A structural mutant is exactly the program the targets will run, and
                // realistic whenever its header says so.
                let text = as_ops_text(&data[..size]).expect("structural mutants are .ops text");
                assert_eq!(lazymmu_lang::text::parse(text).as_ref(), Ok(&p));
                if p.config.mode == Mode::Realistic {
                    assert!(contract::is_realistic(&p), "{text}");
                }
            }
        }
    }
    (mutations, structural)
}
