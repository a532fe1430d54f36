//! Mutations replayed from checkpoints (issue 12) give what a replay from step 0 gives:
//! the same repaired program and the same realistic/adversarial decision for every
//! mutant, and the same children for the same random stream. Thousands of mutants of
//! generated and grown corpus programs, fixed seeds.

use lazymmu_engine::dict::Dict;
use lazymmu_engine::mutate::{
    apply, choose_mutation, finish, mutate, mutate_with, Mutation, MAX_STEPS,
};
use lazymmu_engine::rng::Rng;
use lazymmu_harness::contract;
use lazymmu_harness::gen::{close_open, Checkpoints, CHECKPOINT_EVERY};
use lazymmu_lang::text::to_text;
use lazymmu_lang::{Mode, Program};
use lazymmu_testkit::programs;

/// `finish` as it was before checkpoints: the specification.
fn finish_from_scratch(mut p: Program) -> Option<Program> {
    let steps = std::mem::take(&mut p.steps);
    p.steps = steps
        .into_iter()
        .filter(|s| p.validate_step(s).is_ok())
        .collect();
    let config = p.config.clone();
    p.config.init.retain(|i| config.has_pte(i.pte));
    close_open(&mut p);
    p.steps.truncate(MAX_STEPS);
    if p.config.validate().is_err() {
        return None;
    }
    if p.config.mode == Mode::Realistic && !contract::violations(&p).is_empty() {
        return None;
    }
    Some(p)
}

const ALL: [Mutation; 11] = [
    Mutation::Insert,
    Mutation::Delete,
    Mutation::DeleteRange,
    Mutation::Duplicate,
    Mutation::Swap,
    Mutation::ChangeCpu,
    Mutation::ChangeArg,
    Mutation::Splice,
    Mutation::Grow,
    Mutation::Shrink,
    Mutation::Adversarial,
];

/// `mutate` as it was before checkpoints (every replay from step 0), on the same stream.
fn mutate_from_scratch(
    parent: &Program,
    other: Option<&Program>,
    rng: &mut Rng,
) -> Option<Program> {
    for _ in 0..8 {
        let mut p = parent.clone();
        let n = 1 + rng.below(4);
        for _ in 0..n {
            let m = choose_mutation(rng);
            apply(&mut p, m, other, rng, None, &Dict::new());
        }
        if let Some(p) = finish_from_scratch(p) {
            if p != *parent {
                return Some(p);
            }
        }
    }
    None
}

/// Generated programs of both modes, and realistic ones grown to 150..=400 steps (up to
/// the mutations' limit, where the cut at `MAX_STEPS` comes in).
fn corpus() -> Vec<Program> {
    let mut c: Vec<Program> = programs(0x12, 120, Mode::Realistic).collect();
    c.extend(programs(0x13, 60, Mode::Adversarial));
    let mut rng = Rng::new(0x1203);
    for len in [150, 250, 364] {
        c.extend(lazymmu_engine::bench::programs_of_length(len, 6, &mut rng));
    }
    c
}

#[test]
fn resumed_finish_agrees_with_a_replay_from_step_0() {
    let corpus = corpus();
    let mut rng = Rng::new(0x5eed);
    let (mut compared, mut realistic, mut refused) = (0, 0, 0);
    for (n, parent) in corpus.iter().enumerate() {
        // Any interval must give the same answers; the default most of the time.
        let every = [CHECKPOINT_EVERY, 1, 3, 64][n % 4];
        let cp = Checkpoints::with_interval(parent.clone(), every);
        for k in 0..60 {
            let mut p = parent.clone();
            // The engine's mixed mode mutates realistic parents as adversarial ones.
            if k % 8 == 7 {
                p.config.mode = Mode::Adversarial;
            }
            let other = &corpus[(n * 7 + k) % corpus.len()];
            for _ in 0..1 + rng.below(4) {
                let m = ALL[rng.below(ALL.len())];
                apply(&mut p, m, Some(other), &mut rng, Some(&cp), &Dict::new());
            }
            let want = finish_from_scratch(p.clone());
            let got = finish(p.clone(), Some(&cp));
            assert_eq!(
                got.as_ref().map(to_text),
                want.as_ref().map(to_text),
                "every {every}: parent\n{}\nmutant\n{}",
                to_text(parent),
                to_text(&p)
            );
            // Without checkpoints too (one replay instead of two).
            assert_eq!(finish(p, None), want);
            compared += 1;
            match want {
                Some(c) if c.config.mode == Mode::Realistic => realistic += 1,
                None => refused += 1,
                _ => {}
            }
        }
    }
    // Both answers are well represented.
    eprintln!("{compared} mutants: {realistic} realistic children, {refused} refused");
    assert!(compared >= 10_000, "{compared}");
    assert!(realistic > compared / 6, "{realistic} of {compared}");
    assert!(refused > compared / 20, "{refused} of {compared}");
}

#[test]
fn mutants_from_checkpoints_are_the_mutants_from_step_0() {
    let corpus = corpus();
    let mut a = Rng::new(0xc0ffee);
    let mut b = a.clone();
    let mut c = a.clone();
    let mut made = 0;
    for (n, parent) in corpus.iter().enumerate() {
        let cp = Checkpoints::new(parent.clone());
        for k in 0..25 {
            let other = &corpus[(n * 13 + k) % corpus.len()];
            let want = mutate_from_scratch(parent, Some(other), &mut a);
            let got = mutate_with(parent, Some(&cp), Some(other), &mut b, &Dict::new());
            assert_eq!(got, want, "parent\n{}", to_text(parent));
            // Without checkpoints (one replay per try instead of two).
            assert_eq!(mutate(parent, Some(other), &mut c), want);
            made += got.is_some() as usize;
        }
        // A checkpointed program that is not the parent: only slower, never different.
        let stranger = &corpus[(n + 1) % corpus.len()];
        let want = mutate_from_scratch(parent, None, &mut a);
        let got = mutate_with(
            parent,
            Some(&Checkpoints::new(stranger.clone())),
            None,
            &mut b,
            &Dict::new(),
        );
        assert_eq!(got, want);
        assert_eq!(mutate(parent, None, &mut c), want);
    }
    assert!(made > 4_000, "{made}");
}
