//! Replays every hand-written seed program in `corpus/seeds/*.ops` through the oracle.
//! Each must parse, keep the API contract (realistic), break no machine rule, survive a
//! text round trip, and return what its `# => VALUE` annotations say.
//!
//! Annotations are trailing comments on step lines (a line is a step iff, with its `#`
//! comment stripped, it starts with `cpu`):
//! * `# => 0x1a03d`: the step returns that PTE value;
//! * `# => true` / `# => false`: the step returns that truth value;
//! * `# => walked 0x..`, `tlb_hit 0x..`, `translation_fault 0x..`,
//!   `protection_fault 0x..`, `not_attached`: what an `access` step's translation did.
//!
//! Anything after the value is free text.

use std::path::{Path, PathBuf};

use lazymmu_harness::contract;
use lazymmu_lang::text::{parse, to_text};
use lazymmu_model::machine::AccessResult;
use lazymmu_model::{report, Ret};

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus/seeds")
}

fn seed_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(seeds_dir())
        .unwrap_or_else(|e| panic!("{}: {e}", seeds_dir().display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ops"))
        .collect();
    v.sort();
    v
}

fn hex(t: &str) -> Result<u64, String> {
    t.strip_prefix("0x")
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or_else(|| format!("expected a hex value like 0x1a03d, found '{t}'"))
}

/// Parses the text after `=>` into the return value it names.
fn annotation(text: &str) -> Result<Ret, String> {
    let mut toks = text.split_whitespace();
    let first = toks.next().ok_or("empty annotation")?;
    let mut value = || hex(toks.next().unwrap_or(""));
    Ok(match first {
        "true" => Ret::Bool(true),
        "false" => Ret::Bool(false),
        "not_attached" => Ret::Access(AccessResult::NotAttached),
        "walked" => Ret::Access(AccessResult::Walked { value: value()? }),
        "tlb_hit" => Ret::Access(AccessResult::TlbHit { value: value()? }),
        "translation_fault" => Ret::Access(AccessResult::TranslationFault { value: value()? }),
        "protection_fault" => Ret::Access(AccessResult::ProtectionFault { value: value()? }),
        v => Ret::Pte(hex(v)?),
    })
}

/// The annotations of a source: (1-based line, step index, expected return).
fn annotations(src: &str) -> Result<Vec<(usize, usize, Ret)>, String> {
    let mut out = vec![];
    let mut step = 0;
    for (i, line) in src.lines().enumerate() {
        let (code, comment) = match line.find('#') {
            Some(c) => (&line[..c], Some(&line[c + 1..])),
            None => (line, None),
        };
        let is_step = code.trim_start().starts_with("cpu");
        if let Some(text) = comment.and_then(|c| c.trim_start().strip_prefix("=>")) {
            if !is_step {
                return Err(format!(
                    "line {}: annotation on a line that is no step",
                    i + 1
                ));
            }
            let ret = annotation(text).map_err(|e| format!("line {}: {e}", i + 1))?;
            out.push((i + 1, step, ret));
        }
        if is_step {
            step += 1;
        }
    }
    Ok(out)
}

#[test]
fn every_seed_is_realistic_clean_round_trips_and_matches_its_annotations() {
    let files = seed_files();
    assert!(files.len() >= 20, "only {} seeds found", files.len());
    let mut annotated = 0;
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy();
        let src = std::fs::read_to_string(path).unwrap();
        assert!(
            src.trim_start().starts_with('#'),
            "{name}: needs a leading comment block saying what it shows"
        );
        let p = parse(&src).unwrap_or_else(|e| panic!("{name}:{e}"));
        let v = contract::violations(&p);
        assert!(
            v.is_empty(),
            "{name}: not realistic: {}",
            v.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        );
        assert_eq!(parse(&to_text(&p)).as_ref(), Ok(&p), "{name}: round trip");
        let t = lazymmu_oracle::run(&p);
        assert!(
            t.events.is_empty(),
            "{name}: machine rule events {:?}\n{}",
            t.events,
            report::trace_text(&p, &t)
        );
        assert_eq!(t.steps.len(), p.steps.len(), "{name}");
        let notes = annotations(&src).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (line, step, want) in notes {
            assert!(step < t.steps.len(), "{name}:{line}: no step {step}");
            assert_eq!(
                t.steps[step].ret, want,
                "{name}:{line}: step {step} returned {:#x?}, annotated {want:#x?}",
                t.steps[step].ret
            );
            annotated += 1;
        }
    }
    assert!(annotated >= 100, "only {annotated} annotations checked");
}

#[test]
fn there_is_a_seed_for_every_section_3_row() {
    let names: Vec<String> = seed_files()
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for row in [
        "set_pte",
        "set_ptes",
        "ptep_get",
        "pte_clear",
        "ptep_test_and_clear_young",
        "ptep_get_and_clear",
        "ptep_get_and_clear_full",
        "ptep_modify_prot_start",
        "ptep_modify_prot_commit",
        "ptep_set_wrprotect",
        "ptep_clear_flush",
        "ptep_get_lockless",
    ] {
        let want = format!("row-{row}");
        assert!(names.contains(&want), "no seed {want}.ops");
    }
}

#[test]
fn annotations_map_lines_to_steps() {
    let src = "# header comment => not an annotation\n\
               lazymmu-ops v1 cpus=1\n\
               mm0 user attach=0 tables=1   # => ignored? no: not a step\n";
    assert!(annotations(src).is_err());
    let src = "lazymmu-ops v1 cpus=1\n\
               mm0 user attach=0 tables=1\n\
               cpu0 lock_ptl mm0 t0\n\
               \n\
               # a comment line between steps\n\
               cpu0 ptep_get mm0 t0[1]   # => 0x400 (none)\n\
               cpu0 access mm0 t0[1] read # => translation_fault 0x400\n\
               cpu0 is_lazy_mmu_mode_active # => false\n\
               cpu0 unlock_ptl mm0 t0\n";
    assert_eq!(
        annotations(src).unwrap(),
        vec![
            (6, 1, Ret::Pte(0x400)),
            (
                7,
                2,
                Ret::Access(AccessResult::TranslationFault { value: 0x400 })
            ),
            (8, 3, Ret::Bool(false)),
        ]
    );
    assert!(annotation("0x1a03d trailing words").is_ok());
    assert!(annotation("walked").is_err());
    assert!(annotation("maybe").is_err());
}
