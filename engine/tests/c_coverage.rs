//! The implementation's own coverage as the built-in engine's guide (the c-coverage
//! flavour): its edges are reported, the same in every executor, and the values it
//! compares against are learnt, including one no generator makes, and reach the
//! mutations without making realistic programs unrealistic; `--no-c-coverage` reports
//! nothing of the C code.

use std::time::Duration;

use lazymmu_engine::campaign::executor_with;
use lazymmu_engine::dict::Dict;
use lazymmu_engine::executor::{CFeedback, Executor, Outcome};
use lazymmu_engine::fuzz::{Config, Fuzzer, ModeSel, Stats};
use lazymmu_engine::mutate::{mutate, mutate_with};
use lazymmu_engine::rng::Rng;
use lazymmu_harness::contract;
use lazymmu_lang::program::Op;
use lazymmu_lang::pte::PAGE_SIZE;
use lazymmu_lang::text::to_text;
use lazymmu_lang::{Mode, Program};
use lazymmu_target::Source;
use lazymmu_testkit::{programs, root};

/// The value the fixture's implementation compares PTEs against: pfn 0x9e, which no
/// generator uses.
const COMPARED: u64 = 0x9e03d;

fn compared_constant() -> Source {
    Source::Mutant(root().join("target/fixtures/compared-constant.patch"))
}

fn exec(source: &Source, c_coverage: bool) -> Executor {
    executor_with(source, Duration::from_secs(2), c_coverage).expect("executor")
}

fn config(seed: u64, runs: u64) -> Config {
    Config {
        seed,
        mode: ModeSel::Realistic,
        runs: Some(runs),
        time: None,
        seeds: vec![],
        out: None,
        worker: 0,
        kill_against: None,
        minimizer: None,
    }
}

fn fuzz(e: Executor, cfg: Config) -> (Stats, Fuzzer) {
    let mut f = Fuzzer::new(e, cfg);
    let s = f.run(Duration::from_secs(3600), |_| {});
    (s, f)
}

/// Every PTE value a program stores or starts with (`set_ptes` entry by entry).
fn values(p: &Program) -> Vec<u64> {
    let mut v: Vec<u64> = p.config.init.iter().map(|i| i.value).collect();
    for s in &p.steps {
        match s.op {
            Op::SetPte { value, .. } | Op::ModifyProtCommit { value, .. } => v.push(value),
            Op::SetPtes { value, n, .. } => {
                v.extend((0..n as u64).map(|i| value.wrapping_add(i * PAGE_SIZE)))
            }
            _ => {}
        }
    }
    v
}

#[test]
fn the_dictionary_learns_a_value_only_the_implementation_compares_against() {
    let (s, f) = fuzz(exec(&compared_constant(), true), config(1, 2_000));
    assert!(s.c_feedback && s.c_edges > 50, "{s:?}");
    assert!(
        f.dict().contains(COMPARED),
        "{COMPARED:#x} not learnt: {:x?}",
        f.dict().values()
    );
    assert!(s.dict_values as usize == f.dict().len() && f.dict().len() <= 256);
}

#[test]
fn without_the_dictionary_no_program_holds_that_value() {
    for mode in [Mode::Realistic, Mode::Adversarial] {
        let mut rng = Rng::new(7);
        let mut corpus: Vec<Program> = programs(11, 2_000, mode).collect();
        for i in 0..20_000 {
            let parent = &corpus[rng.below(corpus.len())];
            if let Some(child) = mutate(parent, None, &mut rng) {
                if i % 4 == 0 {
                    corpus.push(child);
                } else {
                    let n = corpus.len();
                    corpus[i % n] = child;
                }
            }
            let p = corpus.last().unwrap();
            assert!(
                !values(p).iter().any(|v| v >> 12 == COMPARED >> 12),
                "the generator or mutator made pfn 0x9e"
            );
        }
        for p in &corpus {
            assert!(!values(p).iter().any(|v| v >> 12 == COMPARED >> 12));
        }
    }
}

#[test]
fn c_edges_are_reported_and_the_same_in_every_executor() {
    let ps: Vec<Program> = programs(3, 40, Mode::Realistic)
        .chain(programs(4, 40, Mode::Adversarial))
        .collect();
    let feedback = |e: &mut Executor, ps: &[Program]| -> Vec<CFeedback> {
        e.run_batch(ps, false, None)
            .into_iter()
            .map(|o| match o {
                Outcome::Ran(r) => r.c.expect("C feedback"),
                Outcome::Died(r, _) => panic!("{}", r.render()),
            })
            .collect()
    };
    // Two instances of the object, mapped at different addresses, and the programs in
    // opposite orders: nothing of the layout or of earlier programs may show.
    let (mut a, mut b) = (
        exec(&Source::Reference, true),
        exec(&Source::Reference, true),
    );
    let fa = feedback(&mut a, &ps);
    let rev: Vec<Program> = ps.iter().rev().cloned().collect();
    let mut fb = feedback(&mut b, &rev);
    fb.reverse();
    assert!(fa.iter().all(|f| !f.edges.is_empty()));
    assert_eq!(fa, fb);
    // The features the engine learns from: the same seed, the same run.
    let run = || fuzz(exec(&Source::Reference, true), config(5, 600)).0;
    let (x, y) = (run(), run());
    assert_eq!(
        (x.features, x.c_edges, x.corpus),
        (y.features, y.c_edges, y.corpus)
    );
}

#[test]
fn no_c_coverage_reports_nothing_of_the_c_code() {
    let mut e = exec(&compared_constant(), false);
    assert!(!e.c_coverage());
    let ps: Vec<Program> = programs(3, 20, Mode::Realistic).collect();
    for o in e.run_batch(&ps, false, None) {
        assert!(matches!(o, Outcome::Ran(r) if r.c.is_none()));
    }
    let (s, f) = fuzz(e, config(1, 2_000));
    assert!(!s.c_feedback && s.c_edges == 0 && s.dict_values == 0 && f.dict().is_empty());
}

#[test]
fn c_feedback_kills_a_bug_only_a_compared_value_reaches() {
    let cfg = Config {
        kill_against: Some(exec(&Source::Reference, false)),
        ..config(2, 20_000)
    };
    let (s, _) = fuzz(exec(&compared_constant(), true), cfg);
    let k = s
        .killed
        .expect("the dropped 0x9e03d was not found in 20000 programs");
    let p = lazymmu_lang::text::parse(&k.program).unwrap();
    assert!(values(&p).contains(&COMPARED), "{}", k.program);
}

#[test]
fn learnt_values_reach_realistic_programs_which_stay_realistic() {
    let mut dict = Dict::new();
    // A realistic PTE value, and the v3 marker, which no realistic program may store.
    dict.learn(&CFeedback {
        constants: vec![0x800, COMPARED],
        ..CFeedback::default()
    });
    let mut rng = Rng::new(3);
    let (mut whole, mut as_pfn) = (false, false);
    for p in programs(5, 300, Mode::Realistic) {
        for _ in 0..20 {
            let Some(child) = mutate_with(&p, None, None, &mut rng, &dict) else {
                continue;
            };
            assert!(contract::is_realistic(&child), "{}", to_text(&child));
            let v = values(&child);
            whole |= v.contains(&COMPARED);
            as_pfn |= v.iter().any(|v| v >> 12 == 0x800);
            assert!(!v.contains(&0x800), "{}", to_text(&child));
        }
    }
    assert!(whole && as_pfn, "whole {whole}, as a pfn {as_pfn}");
}
