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

#[test]
fn realistic_programs_tear_mms_down() {
    // full=1 clears only in a teardown phase, which the generator still reaches.
    let with_full = programs(7, 2_000, Mode::Realistic)
        .filter(|p| to_text(p).contains("full=1"))
        .count();
    assert!(
        with_full > 50,
        "{with_full} of 2000 programs tear an mm down"
    );
}

#[test]
fn the_teardown_phase_rules() {
    let head = "lazymmu-ops v1 cpus=2 facility13=on tlb_lc=on mode=realistic
mm0 user attach=none tables=1
init mm0 t0[1] = 0x1a215
cpu0 lock_ptl mm0 t0
";
    let rules = |body: &str| -> Vec<String> {
        let p = parse(&format!("{head}{body}")).unwrap();
        contract::violations(&p)
            .into_iter()
            .map(|v| v.rule)
            .collect()
    };
    let clear = "cpu0 ptep_get_and_clear_full mm0 t0[1] full=1\n";
    let end = "cpu0 unlock_ptl mm0 t0\ncpu0 flush_tlb_mm mm0\n";
    assert_eq!(rules(&format!("{clear}{end}")), Vec::<String>::new());
    // Not ended by flush_tlb_mm.
    let v = rules(&format!("{clear}cpu0 unlock_ptl mm0 t0\n"));
    assert!(v[0].contains("not ended by flush_tlb_mm"), "{v:?}");
    // No new PTE, no CPU running it, no hardware access during the phase.
    for (during, what) in [
        (
            "cpu0 set_pte mm0 t0[2] = 0x1a215\n",
            "set_pte into mm0 during its teardown",
        ),
        ("cpu1 access mm0 t0[2] read\n", "hardware access into mm0"),
    ] {
        let v = rules(&format!("{clear}{during}{end}"));
        assert!(v.iter().any(|r| r.contains(what)), "{during}: {v:?}");
    }
    // A CPU's TLB still holds an entry of the mm when the phase would begin.
    let cached = head.replace("attach=none", "attach=1");
    let p = parse(&format!(
        "{cached}cpu1 access mm0 t0[1] read\ncpu1 switch_mm none\n{clear}{end}"
    ))
    .unwrap();
    let v = contract::violations(&p);
    assert!(v[0].rule.contains("TLB still holds its entries"), "{v:?}");
    // A running mm has no teardown.
    let running = head.replace("attach=none", "attach=1");
    let p = parse(&format!("{running}{clear}{end}")).unwrap();
    assert!(contract::violations(&p)[0].rule.contains("still running"));
}
