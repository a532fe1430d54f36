//! Replays resumed from checkpoints (issue 12) answer as replays from step 0: the step
//! `propose_step` proposes, and what `close_open` appends and `contract::violations`
//! says of the result. Edited copies of generated programs, fixed seeds.

use lazymmu_harness::contract;
use lazymmu_harness::gen::{
    close_checked, close_open, propose_step, propose_step_resumed, Checkpoints,
};
use lazymmu_lang::text::to_text;
use lazymmu_lang::{Mode, Program};
use lazymmu_testkit::programs;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `program` with a few steps deleted, copied, moved or given to another CPU, or with
/// its end cut or another program's end after it: valid steps, not always realistic.
fn edited(program: &Program, other: &Program, rng: &mut ChaCha8Rng) -> Program {
    let mut p = program.clone();
    for _ in 0..rng.gen_range(0..=3) {
        let len = p.steps.len();
        if len == 0 {
            break;
        }
        let i = rng.gen_range(0..len);
        match rng.gen_range(0..7) {
            0 => {
                p.steps.remove(i);
            }
            1 => {
                let s = p.steps[rng.gen_range(0..len)].clone();
                p.steps.insert(i, s);
            }
            2 => p.steps.swap(i, rng.gen_range(0..len)),
            3 => p.steps[i].cpu = rng.gen_range(0..p.config.cpus),
            4 => p.steps.truncate(i),
            5 => {
                let from = rng.gen_range(0..=other.steps.len());
                p.steps.truncate(i);
                p.steps.extend(other.steps[from..].iter().cloned());
            }
            _ => p.config.mode = Mode::Adversarial,
        }
    }
    let machine = Program::new(p.config.clone(), vec![]);
    p.steps.retain(|s| machine.validate_step(s).is_ok());
    p
}

fn corpus() -> Vec<Program> {
    let mut c: Vec<Program> = programs(0x21, 150, Mode::Realistic).collect();
    c.extend(programs(0x22, 50, Mode::Adversarial));
    c
}

#[test]
fn a_step_proposed_from_a_checkpoint_is_the_step_proposed_from_step_0() {
    let corpus = corpus();
    let mut rng = ChaCha8Rng::seed_from_u64(0x12);
    let (mut compared, mut proposed) = (0, 0);
    for (n, parent) in corpus.iter().enumerate() {
        let cp = Checkpoints::with_interval(parent.clone(), [16, 1, 5, 64][n % 4]);
        for k in 0..30 {
            let other = &corpus[(n + k * 11) % corpus.len()];
            let p = edited(parent, other, &mut rng);
            let at = rng.gen_range(0..=p.steps.len() + 1);
            let bytes: Vec<u8> = (0..48).map(|_| rng.gen()).collect();
            let want = propose_step(&p, at, &bytes);
            assert_eq!(
                propose_step_resumed(&cp, &p, at, &bytes),
                want,
                "at {at} of\n{}",
                to_text(&p)
            );
            compared += 1;
            proposed += want.is_some() as usize;
        }
    }
    assert!(
        compared == 6_000 && proposed > 3_000,
        "{proposed} of {compared}"
    );
}

#[test]
fn closing_from_a_checkpoint_is_closing_from_step_0() {
    let corpus = corpus();
    let mut rng = ChaCha8Rng::seed_from_u64(0x13);
    let (mut realistic, mut broken) = (0, 0);
    for (n, parent) in corpus.iter().enumerate() {
        let cp = Checkpoints::with_interval(parent.clone(), [16, 1, 5, 64][n % 4]);
        for k in 0..30 {
            let other = &corpus[(n * 3 + k) % corpus.len()];
            let p = edited(parent, other, &mut rng);
            // Now and then a cut inside the closing steps or the program's own.
            let max = if k % 5 == 4 {
                (p.steps.len() + rng.gen_range(0..3)).saturating_sub(1)
            } else {
                400
            };
            let mut want = p.clone();
            close_open(&mut want);
            want.steps.truncate(max);
            let keeps = contract::violations(&want).is_empty();
            for cp in [Some(&cp), None] {
                let mut got = p.clone();
                let answer = close_checked(cp, &mut got, max);
                if p.config.mode == Mode::Realistic {
                    assert_eq!(answer, keeps, "max {max}:\n{}", to_text(&p));
                }
                // A program found to break the contract may be left unclosed.
                if answer {
                    assert_eq!(got, want, "max {max}:\n{}", to_text(&p));
                }
            }
            if p.config.mode == Mode::Realistic {
                realistic += keeps as usize;
                broken += !keeps as usize;
            }
        }
    }
    assert!(realistic > 1_000 && broken > 1_000, "{realistic} {broken}");
}
