//! Exported KUnit cases run in userspace (`lazymmu_triage::kunit_run`): the case of a
//! mutant's finding, exported as `lazymmu export --kunit` does, must fail on that mutant
//! (with the failing expectation reported) and pass on the reference.

use std::path::{Path, PathBuf};

use lazymmu_engine::executor::Executor;
use lazymmu_harness::Differ;
use lazymmu_target::Source;
use lazymmu_triage::dedup::load_input;
use lazymmu_triage::{export, kunit_run, Repro};

fn regression(prefix: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus/regressions");
    std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{prefix}-")))
        })
        .unwrap_or_else(|| panic!("no corpus/regressions/{prefix}-*.ops"))
}

/// The `# expect: mutant:NAME SIGNATURE` line of a regression file.
fn expected(src: &str) -> (String, String) {
    src.lines()
        .filter_map(|l| l.strip_prefix("# expect:"))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let name = w.next()?.strip_prefix("mutant:")?.to_string();
            Some((name, w.next()?.to_string()))
        })
        .next()
        .expect("an '# expect: mutant:...' line")
}

struct Outcome {
    file: String,
    code: String,
    mutant: kunit_run::KunitRun,
    reference: kunit_run::KunitRun,
}

/// Exports the finding of regression `prefix` on its mutant as `lazymmu export --kunit`
/// does, and runs the case on the mutant and on the reference.
fn export_and_run(prefix: &str) -> Outcome {
    let path = regression(prefix);
    let src = std::fs::read_to_string(&path).unwrap();
    let (mutant, signature) = expected(&src);
    let source = Source::Mutant(lazymmu_target::sources::mutant(&mutant).unwrap());
    let mut exec = Executor::new(
        Differ::new(lazymmu_target::load(&source).unwrap_or_else(|e| panic!("{e}"))),
        Default::default(),
    )
    .unwrap();
    let program = load_input(&path).unwrap_or_else(|e| panic!("{e}")).program;
    let r = Repro::new(&mut exec, program).expect("no crash");
    assert!(
        r.verdict.signatures().contains(&signature),
        "{}: {signature} not found",
        path.display()
    );
    let name = format!("repro_{}", mutant.replace('-', "_"));
    let code = export::kunit_repro(&mut exec, &r, &name);
    let run = |s: &Source| {
        kunit_run::run_case(s, &code, "case.c").unwrap_or_else(|e| panic!("{e}\n{code}"))
    };
    Outcome {
        file: path.file_name().unwrap().to_string_lossy().into_owned(),
        mutant: run(&source),
        reference: run(&Source::Reference),
        code,
    }
}

/// Mutant kills whose exported case must fail on the mutant and pass on the reference:
/// return values, memory, marker leaks, a protected mm, and on two-CPU machines a
/// store without IPTE (03, 12, 13) and a local IPTE that leaves another CPU's TLB
/// stale (04, a cpu1 step interleaved with cpu0's).
/// (17, the lazy policy's `old | I` store without its owed flush, is not modelled.)
const KILLS: &[&str] = &[
    "01", "02", "03", "04", "05", "06", "08", "09", "12", "13", "16",
];

#[test]
fn exported_cases_fail_on_their_mutant_and_pass_on_the_reference() {
    let mut problems = vec![];
    let mut multi_cpu = 0;
    for prefix in KILLS {
        let o = export_and_run(prefix);
        let ctx = format!(
            "{}:\n--- mutant ---\n{}\n--- reference ---\n{}\n--- case ---\n{}",
            o.file, o.mutant.output, o.reference.output, o.code
        );
        if o.mutant.passed || o.mutant.status != Some(1) {
            problems.push(format!("passes on its mutant: {ctx}"));
            continue;
        }
        if !o.reference.passed || o.reference.status != Some(0) {
            problems.push(format!("fails on the reference: {ctx}"));
            continue;
        }
        let out = &o.mutant.output;
        // KTAP, the failing case named, the failed expectation with file:line.
        let ok = out.starts_with("KTAP version 1\n1..1\n")
            && out.contains("    # Subtest: lazy-mmu-repro-suite\n    1..1\n")
            && o.mutant.failed_cases().len() == 1
            && out.contains("FAILED at ")
            && out.contains("case.c:")
            && out.contains("Expected ")
            && out
                .lines()
                .any(|l| l.starts_with("not ok 1 lazy-mmu-repro-suite"));
        if !ok {
            problems.push(format!("no failed expectation reported: {ctx}"));
        }
        if !o.reference.output.contains("\n    ok 1 repro_")
            || !o.reference.output.contains("\nok 1 lazy-mmu-repro-suite")
        {
            problems.push(format!("reference run not reported ok: {ctx}"));
        }
        if o.code.contains("lazy_mmu_test_cpu(test, 1);") {
            multi_cpu += 1;
            // The header says how the CPUs' steps are sequenced (wrapped at any word).
            let words: Vec<&str> = o.code.split_whitespace().filter(|w| *w != "*").collect();
            assert!(
                words
                    .join(" ")
                    .contains("before each step the case calls lazy_mmu_test_cpu(test, N)"),
                "{}",
                o.code
            );
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n=====\n\n"));
    assert!(multi_cpu >= 1, "no case switches CPUs");
}

#[test]
fn multi_cpu_case_switches_cpus_in_program_order() {
    let o = export_and_run("04");
    let body = &o.code[o.code.find("static void").unwrap()..];
    // cpu1's translation, then cpu0's steps, each preceded by its CPU switch.
    let access = body.find("lazy_mmu_test_access(test, mm0").unwrap();
    let cpu1 = body.find("\tlazy_mmu_test_cpu(test, 1);").unwrap();
    let cpu0 = body[access..]
        .find("\tlazy_mmu_test_cpu(test, 0);")
        .unwrap()
        + access;
    assert!(cpu1 < access && access < cpu0, "{body}");
    assert_eq!(
        body.matches("\tlazy_mmu_test_cpu(test, ").count(),
        // the start, then one per step
        1 + 8,
        "{body}"
    );
    assert!(
        o.mutant
            .output
            .contains("stale TLB entry after flush_tlb_range()"),
        "{}",
        o.mutant.output
    );
    assert!(
        o.mutant.output.contains("cpu1's TLB"),
        "{}",
        o.mutant.output
    );
    assert!(o.reference.passed, "{}", o.reference.output);
}

#[test]
fn a_failing_expectation_shows_file_line_and_both_values() {
    let o = export_and_run("02");
    let out = &o.mutant.output;
    let at = out.find("EXPECTATION FAILED at ").expect(out);
    let line = &out[at..out[at..].find('\n').unwrap() + at];
    let lineno: usize = line.rsplit(':').next().unwrap().trim().parse().expect(line);
    assert!(line.contains(" at case.c:"), "{line}");
    // The line of the case as exported (the suite footer is appended after it).
    let src_line = o.code.lines().nth(lineno - 1).unwrap();
    // The expression as written in the case, not macro-expanded.
    assert!(out.contains("    Expected pte_val(ptep_get(&pt0_"), "{out}");
    assert!(
        src_line.contains("KUNIT_EXPECT_EQ(test, pte_val(ptep_get("),
        "{src_line}\n{out}"
    );
    assert!(
        out.contains("        left == 0x") && out.contains("        right == 0x"),
        "{out}"
    );
}
