//! Properties of the op language over many random inputs (fixed seeds, so every run and
//! every machine checks the same cases).

use lazymmu_harness::contract;
use lazymmu_harness::gen::from_bytes;
use lazymmu_lang::text::{parse, to_text};
use lazymmu_lang::{Mode, Program};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random_bytes(rng: &mut ChaCha8Rng, max: usize) -> Vec<u8> {
    let n = rng.gen_range(0..=max);
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

fn programs(seed: u64, count: usize, mode: Mode) -> impl Iterator<Item = Program> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count).map(move |_| from_bytes(&random_bytes(&mut rng, 1024), mode))
}

#[test]
fn decoding_any_bytes_gives_a_valid_program() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for i in 0..20_000 {
        let bytes = random_bytes(&mut rng, 2048);
        for mode in [Mode::Realistic, Mode::Adversarial] {
            let p = from_bytes(&bytes, mode);
            assert_eq!(p.config.mode, mode);
            if let Err(e) = p.validate() {
                panic!("case {i}: invalid program from bytes: {e}\n{}", to_text(&p));
            }
        }
    }
    // Degenerate inputs too.
    for bytes in [&[][..], &[0; 4096][..], &[0xff; 4096][..]] {
        from_bytes(bytes, Mode::Realistic).validate().unwrap();
        from_bytes(bytes, Mode::Adversarial).validate().unwrap();
    }
}

#[test]
fn decoding_is_deterministic() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for _ in 0..500 {
        let bytes = random_bytes(&mut rng, 1024);
        assert_eq!(
            from_bytes(&bytes, Mode::Realistic),
            from_bytes(&bytes, Mode::Realistic)
        );
    }
}

#[test]
fn realistic_programs_keep_the_contract() {
    for (i, p) in programs(3, 20_000, Mode::Realistic).enumerate() {
        let v = contract::violations(&p);
        assert!(v.is_empty(), "case {i}: {}\n{}", v[0], to_text(&p));
    }
}

#[test]
fn realistic_programs_are_not_trivial() {
    // The generator must produce the structures the rig is about, not just valid noise.
    let mut sections = 0;
    let mut in_range_updates = 0;
    let mut cross_cpu = 0;
    let mut steps = 0;
    for p in programs(4, 2_000, Mode::Realistic) {
        steps += p.steps.len();
        let s = to_text(&p);
        sections += s.matches("lazy_mmu_mode_enable_with_ptes").count();
        in_range_updates += s.matches("ptep_get_and_clear").count() + s.matches("set_pte ").count();
        cross_cpu += s.matches("ptep_get_lockless").count() + s.matches(" access ").count();
    }
    assert!(steps > 2_000 * 40, "programs too short: {steps} steps");
    assert!(sections > 2_000, "{sections} ranged sections");
    assert!(in_range_updates > 10_000, "{in_range_updates} updates");
    assert!(cross_cpu > 5_000, "{cross_cpu} lockless reads and accesses");
}

#[test]
fn adversarial_programs_break_the_contract_often() {
    let broken = programs(5, 2_000, Mode::Adversarial)
        .filter(|p| !contract::is_realistic(p))
        .count();
    assert!(
        broken > 1_000,
        "only {broken} of 2000 adversarial programs break the contract"
    );
}

#[test]
fn text_round_trips_exactly() {
    for mode in [Mode::Realistic, Mode::Adversarial] {
        for (i, p) in programs(6, 5_000, mode).enumerate() {
            let text = to_text(&p);
            match parse(&text) {
                Ok(q) => assert_eq!(q, p, "case {i}: round trip changed the program\n{text}"),
                Err(e) => panic!("case {i}: {e}\n{text}"),
            }
        }
    }
}

#[test]
fn json_round_trips_exactly() {
    for p in programs(7, 500, Mode::Adversarial) {
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Program>(&json).unwrap(), p);
    }
}

#[test]
fn parsing_mangled_text_never_panics_and_errors_point_inside_the_file() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for p in programs(9, 2_000, Mode::Adversarial) {
        let mut bytes = to_text(&p).into_bytes();
        for _ in 0..rng.gen_range(1..4) {
            let at = rng.gen_range(0..bytes.len());
            match rng.gen_range(0..3) {
                0 => bytes[at] = rng.gen(),
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, b" =[]x0#\n.,t"[rng.gen_range(0..11)]),
            }
        }
        let src = String::from_utf8_lossy(&bytes);
        if let Err(e) = parse(&src) {
            let lines = src.lines().count().max(1);
            assert!(
                e.line >= 1 && e.line <= lines,
                "line {} of {lines}: {e}",
                e.line
            );
            assert!(e.col >= 1, "{e}");
            assert!(!e.msg.is_empty());
        }
    }
}
