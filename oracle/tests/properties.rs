//! The oracle is the correct eager code: on realistic programs it never breaks a machine
//! rule. (The API contract follows eager values with the oracle itself, so there is no
//! second value model to compare with.)

use lazymmu_harness::gen::from_bytes;
use lazymmu_lang::text::to_text;
use lazymmu_lang::{Mode, Program};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn programs(seed: u64, count: usize, mode: Mode) -> impl Iterator<Item = Program> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count).map(move |_| {
        let mut v = vec![0u8; rng.gen_range(0..=1024)];
        rng.fill_bytes(&mut v);
        from_bytes(&v, mode)
    })
}

#[test]
fn oracle_never_breaks_a_machine_rule_on_100k_realistic_programs() {
    let mut steps = 0usize;
    let mut iptes = 0u64;
    for (i, p) in programs(0x5390, 100_000, Mode::Realistic).enumerate() {
        let t = lazymmu_oracle::run(&p);
        if let Some(e) = t.events.first() {
            panic!(
                "case {i}: step {} cpu{}: {:?}\n{}",
                e.step,
                e.cpu,
                e.event,
                to_text(&p)
            );
        }
        steps += p.steps.len();
        iptes += t.end.counters.ipte_global + t.end.counters.ipte_local;
    }
    // The programs exercised the machine, not just passed through it.
    assert!(steps > 100_000 * 40, "{steps} steps");
    assert!(iptes > 100_000, "{iptes} IPTEs");
}

#[test]
fn oracle_is_deterministic() {
    for p in programs(0x5392, 300, Mode::Adversarial) {
        assert_eq!(lazymmu_oracle::run(&p), lazymmu_oracle::run(&p));
    }
}

#[test]
fn oracle_survives_adversarial_programs() {
    // Breaking the contract may break machine rules, but never the oracle itself.
    let mut with_events = 0;
    for p in programs(0x5393, 20_000, Mode::Adversarial) {
        let t = lazymmu_oracle::run(&p);
        assert_eq!(t.steps.len(), p.steps.len());
        with_events += (!t.events.is_empty()) as usize;
    }
    assert!(
        with_events > 0,
        "adversarial programs never broke a machine rule"
    );
}
