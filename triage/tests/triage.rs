//! Minimization and grouping of findings.

use lazymmu_engine::rng::Rng;
use lazymmu_harness::gen::from_bytes;
use lazymmu_harness::Differ;
use lazymmu_lang::text::to_text;
use lazymmu_lang::{Mode, Program};
use lazymmu_target::Source;
use lazymmu_testkit::differ;
use lazymmu_triage::dedup::{triage, write_summary};
use lazymmu_triage::minimize::{first_signature, minimize};

fn mutant(prefix: &str) -> (String, Source) {
    let p = lazymmu_target::sources::mutant(prefix).unwrap();
    (lazymmu_target::sources::mutant_name(&p), Source::Mutant(p))
}

/// Random realistic programs (fixed seed) on which `d` has a finding and the reference
/// none: raw findings as a fuzzer would produce them, with their input bytes.
fn raw_findings(d: &mut Differ, seed: u64, want: usize) -> Vec<(Vec<u8>, Program)> {
    let mut reference = differ(&Source::Reference);
    let mut rng = Rng::new(seed);
    let mut out = vec![];
    for _ in 0..200_000 {
        let n = 64 + rng.below(1024);
        let bytes = rng.bytes(n);
        let p = from_bytes(&bytes, Mode::Realistic);
        if !d.verdict(&p).findings.is_empty() && reference.verdict(&p).findings.is_empty() {
            out.push((bytes, p));
            if out.len() == want {
                break;
            }
        }
    }
    assert_eq!(
        out.len(),
        want,
        "{} found only {} raw findings",
        d.name(),
        out.len()
    );
    out
}

#[test]
fn findings_of_many_mutants_minimize_to_1_minimal_programs() {
    let mut rows = vec![];
    for m in [
        "01", "02", "03", "04", "05", "06", "09", "10", "12", "13", "16", "17",
    ] {
        let (name, source) = mutant(m);
        let mut d = differ(&source);
        let (_, p) = raw_findings(&mut d, 0x7a1 + m.parse::<u64>().unwrap(), 1)
            .pop()
            .unwrap();
        let sig = first_signature(&mut d, &p).unwrap();
        let min = minimize(&mut d, &p, &sig).unwrap();
        // Same finding, fewer steps, and 1-minimal: no single step can go.
        assert!(d
            .verdict(&min.program)
            .findings
            .iter()
            .any(|f| f.signature() == sig));
        assert!(
            min.program.steps.len() < p.steps.len(),
            "{name}: {}",
            to_text(&min.program)
        );
        for i in 0..min.program.steps.len() {
            let mut q = min.program.clone();
            q.steps.remove(i);
            assert!(
                !d.verdict(&q).findings.iter().any(|f| f.signature() == sig),
                "{name}: step {i} removable"
            );
        }
        // Deterministic.
        assert_eq!(minimize(&mut d, &p, &sig).unwrap().program, min.program);
        // The reference is clean on the reproducer.
        assert!(differ(&Source::Reference)
            .verdict(&min.program)
            .findings
            .is_empty());
        rows.push(format!(
            "{name:<30} {sig:<46} {:>4} -> {:>2} steps, {:>5} runs",
            p.steps.len(),
            min.program.steps.len(),
            min.runs
        ));
    }
    eprintln!("{}", rows.join("\n"));
}

#[test]
fn triage_groups_raw_findings_of_two_mutants_into_two_bugs() {
    let dir = std::env::temp_dir().join(format!("lazymmu-triage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("fuzz/findings")).unwrap();
    std::fs::create_dir_all(dir.join("libfuzzer")).unwrap();
    // Mutant 02: `.ops` files with an implementation header, as `lazymmu fuzz` writes them.
    let (name02, s02) = mutant("02");
    for (k, (_, p)) in raw_findings(&mut differ(&s02), 1, 12)
        .into_iter()
        .enumerate()
    {
        let text = format!("# implementation: mutant:{name02}\n{}", to_text(&p));
        std::fs::write(dir.join(format!("fuzz/findings/f{k:02}.ops")), text).unwrap();
    }
    // Mutant 09: raw input bytes, as libFuzzer leaves crash-<hash> files.
    let (_, s09) = mutant("09");
    for (k, (bytes, _)) in raw_findings(&mut differ(&s09), 2, 12)
        .into_iter()
        .enumerate()
    {
        std::fs::write(dir.join(format!("libfuzzer/crash-{k:04x}")), bytes).unwrap();
    }
    // Reports next to findings are not inputs.
    std::fs::write(dir.join("fuzz/findings/report.txt"), "not a program").unwrap();

    let s = triage(&dir, &s09).unwrap();
    let keys: Vec<String> = s.bugs.iter().map(|b| b.key()).collect();
    assert_eq!(s.bugs.len(), 2, "{keys:#?}");
    assert_eq!(s.bugs.iter().map(|b| b.count()).sum::<usize>(), 24);
    assert!(s.not_reproduced.is_empty() && s.unreadable.is_empty());
    let b02 = s
        .bugs
        .iter()
        .find(|b| b.implementation.contains("02-"))
        .unwrap();
    assert_eq!(b02.class, "return");
    let b09 = s
        .bugs
        .iter()
        .find(|b| b.implementation.contains("09-"))
        .unwrap();
    assert_eq!(b09.class, "memory");
    for b in &s.bugs {
        assert!(b.representative().minimized.steps.len() < b.representative().original_steps);
    }
    let text = write_summary(&dir, &s).unwrap();
    assert!(text.starts_with("2 distinct bug(s)"), "{text}");
    assert!(dir.join("triage/summary.txt").is_file());
    let written: Vec<_> = std::fs::read_dir(dir.join("triage"))
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert!(
        written.len() >= 3,
        "summary plus a reproducer per manifestation"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A crash site is one bug whether realistic or contract-breaking programs reach it;
/// triage lists both reproducers under it, and a crash never stops triage.
#[test]
fn a_crash_site_reached_both_ways_is_one_bug_with_both_reproducers() {
    let dir = std::env::temp_dir().join(format!("lazymmu-triage-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let head = "# implementation: mutant:19-null-range-apply\n\
                lazymmu-ops v1 cpus=1 facility13=on tlb_lc=on mode=realistic\n\
                mm0 user attach=0 tables=1\n";
    // Realistic: balanced nested sections without a range.
    std::fs::write(
        dir.join("realistic.ops"),
        format!(
            "{head}cpu0 lazy_mmu_mode_enable\ncpu0 lazy_mmu_mode_enable\n\
             cpu0 lazy_mmu_mode_disable\ncpu0 lazy_mmu_mode_disable\n"
        ),
    )
    .unwrap();
    // Adversarial: the outer section is never closed.
    std::fs::write(
        dir.join("adversarial.ops"),
        format!(
            "{head}cpu0 lazy_mmu_mode_enable\ncpu0 ptep_get mm0 t0[1]\n\
             cpu0 lazy_mmu_mode_enable\ncpu0 lazy_mmu_mode_disable\n"
        ),
    )
    .unwrap();
    let s = triage(&dir, &Source::Reference).unwrap();
    assert_eq!(
        s.bugs.len(),
        1,
        "{:?}",
        s.bugs.iter().map(|b| b.key()).collect::<Vec<_>>()
    );
    let b = &s.bugs[0];
    assert_eq!(b.class, "crash-range_apply");
    let mut sigs: Vec<&str> = b
        .manifestations
        .iter()
        .map(|m| m.signature.as_str())
        .collect();
    sigs.sort();
    assert_eq!(
        sigs,
        [
            "lazymmu-crash-range_apply",
            "lazymmu-hardening-crash-range_apply"
        ]
    );
    let summary = write_summary(&dir, &s).unwrap();
    assert!(summary.contains("1 distinct bug(s)"), "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each crash mutant's first crash among random realistic programs minimizes to a
/// realistic program that crashes alone, in a fresh executor, at the same site.
#[test]
fn crash_reproducers_minimize_and_replay_alone_at_the_same_site() {
    use lazymmu_engine::executor::{ExecOptions, Executor, Outcome};
    for m in ["19", "20", "21", "22"] {
        let (name, source) = mutant(m);
        let opts = ExecOptions {
            timeout: std::time::Duration::from_millis(100),
            ..ExecOptions::default()
        };
        let mut e = Executor::new(differ(&source), opts).unwrap();
        let mut rng = Rng::new(0xc7 + m.parse::<u64>().unwrap());
        let batch: Vec<Program> = (0..400)
            .map(|_| {
                let n = 64 + rng.below(1024);
                from_bytes(&rng.bytes(n), Mode::Realistic)
            })
            .collect();
        let out = e.run_batch(&batch, false, None);
        let (p, site) = batch
            .iter()
            .zip(&out)
            .find_map(|(p, o)| match o {
                Outcome::Died(r, _) => Some((p.clone(), r.site_name())),
                Outcome::Ran(_) => None,
            })
            .unwrap_or_else(|| panic!("{name}: no crash in 400 programs"));
        let sig = first_signature(&mut e, &p).unwrap();
        assert!(!sig.contains("hardening"), "{name}: {sig}");
        let min = minimize(&mut e, &p, &sig).unwrap().program;
        assert!(lazymmu_harness::contract::is_realistic(&min), "{name}");
        assert!(min.steps.len() <= p.steps.len());
        let Outcome::Died(r, _) = e.run_alone(&min, false) else {
            panic!("{name}: the minimized program does not crash alone");
        };
        assert_eq!(r.site_name(), site, "{name}:\n{}", to_text(&min));
    }
}
