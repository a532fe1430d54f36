//! The exports of a finding: the mail text round-trips and fits 72 columns, the KUnit C
//! compiles against the rig's shim and expects the eager values, the JSON carries the
//! finding, the SVG has its lanes and the red marker.

use std::process::Command;

use lazymmu_engine::executor::Executor;
use lazymmu_lang::text::parse;
use lazymmu_model::exec::Ret;
use lazymmu_target::Source;
use lazymmu_testkit::{mutant, program, root, TWO_CPUS};
use lazymmu_triage::export::{self, PROGRAM_BEGIN, PROGRAM_END, WIDTH};
use lazymmu_triage::Repro;

fn differ(source: &Source) -> Executor {
    lazymmu_testkit::executor(source, Default::default())
}

fn repro_on(d: &mut Executor, src: &str) -> Repro {
    let r = Repro::new(d, program(src)).expect("no crash");
    assert!(
        r.first().is_some(),
        "{} has no finding on\n{src}",
        r.implementation
    );
    r
}

/// A finding, the mutant that has it, its expected first signature and step.
struct Case {
    name: &'static str,
    mutant: &'static str,
    src: String,
    signature: &'static str,
    step: usize,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "stale_ptep_get",
            mutant: "02",
            src: format!(
                "{TWO_CPUS}cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]
cpu0 ptep_get_and_clear mm0 t0[1]
cpu0 ptep_get mm0 t0[1]
cpu0 lazy_mmu_mode_disable
cpu0 unlock_ptl mm0 t0
"
            ),
            signature: "lazymmu-return-ptep_get",
            step: 3,
        },
        Case {
            name: "marker_leak_dense_window",
            mutant: "05",
            src: format!(
                "{TWO_CPUS}cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]
cpu0 set_pte mm0 t0[0] = 0x4d03d
cpu0 set_pte mm0 t0[3] = 0x4d215
cpu0 lazy_mmu_mode_disable
cpu0 unlock_ptl mm0 t0
"
            ),
            // The marker reaches entries outside the updated ones: stores to valid
            // PTEs at the disable, and the marker in memory at the end.
            signature: "lazymmu-store-valid-lazy_mmu_mode_disable",
            step: 4,
        },
        Case {
            name: "nested_disable_no_flush",
            mutant: "09",
            src: format!(
                "{TWO_CPUS}cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]
cpu0 lazy_mmu_mode_enable
cpu0 ptep_get_and_clear mm0 t0[1]
cpu0 lazy_mmu_mode_disable
cpu0 lazy_mmu_mode_disable
cpu0 unlock_ptl mm0 t0
"
            ),
            signature: "lazymmu-memory-lazy_mmu_mode_disable",
            step: 4,
        },
        Case {
            name: "local_ipte_two_cpus",
            mutant: "04",
            src: format!(
                "{TWO_CPUS}cpu1 access mm0 t0[1] read
cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]
cpu0 ptep_get_and_clear mm0 t0[1]
cpu0 lazy_mmu_mode_disable
cpu0 flush_tlb_range mm0 t0[0..8]
cpu0 unlock_ptl mm0 t0
"
            ),
            signature: "lazymmu-stale-tlb-flush_tlb_range",
            step: 5,
        },
        Case {
            name: "protected_mm_batched",
            mutant: "16",
            src: "lazymmu-ops v1 cpus=2 facility13=on tlb_lc=on mode=realistic
mm0 user attach=0,1 tables=1 protected
init mm0 t0[1] = 0x1a03d
cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]
cpu0 ptep_get_and_clear mm0 t0[1]
cpu0 lazy_mmu_mode_disable
cpu0 unlock_ptl mm0 t0
"
            .to_string(),
            signature: "lazymmu-uv-valid-ptep_get_and_clear",
            step: 2,
        },
        Case {
            // Two CPUs, but cpu0's steps alone still show the stale read.
            name: "stale_ptep_get_two_cpus",
            mutant: "02",
            src: format!(
                "{TWO_CPUS}cpu1 irq_enter
cpu1 ptep_get_lockless mm0 t0[4]
cpu1 irq_exit
cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]
cpu0 ptep_modify_prot_start mm0 t0[2]
cpu0 ptep_modify_prot_commit mm0 t0[2] = 0x2b215
cpu1 access mm0 t0[4] write
cpu0 ptep_test_and_clear_young mm0 t0[4]
cpu0 is_lazy_mmu_mode_active
cpu0 set_ptes mm0 t0[5] n=2 = 0x1a03d
cpu0 ptep_get_and_clear mm0 t0[1]
cpu0 ptep_get mm0 t0[1]
cpu0 lazy_mmu_mode_disable
cpu0 flush_tlb_range mm0 t0[0..8]
cpu0 unlock_ptl mm0 t0
cpu1 flush_tlb_mm mm0
"
            ),
            signature: "lazymmu-return-ptep_get",
            step: 12,
        },
    ]
}

/// Every case's Repro on its mutant (with the Differ, for re-runs).
fn repros() -> Vec<(Case, Executor, Repro)> {
    cases()
        .into_iter()
        .map(|c| {
            let mut d = differ(&mutant(c.mutant));
            let r = repro_on(&mut d, &c.src);
            let f = r.first().unwrap();
            assert_eq!(
                (f.signature().as_str(), f.step),
                (c.signature, c.step),
                "{}: {:#?}",
                c.name,
                r.verdict.findings
            );
            (c, d, r)
        })
        .collect()
}

fn assert_fits(text: &str) {
    for (i, l) in text.lines().enumerate() {
        assert!(
            l.chars().count() <= WIDTH,
            "line {} has {} columns:\n{l}\n---\n{text}",
            i + 1,
            l.chars().count()
        );
    }
}

#[test]
fn text_fits_round_trips_and_marks_the_divergence() {
    for (c, mut d, r) in repros() {
        let t = export::text(&r);
        assert_fits(&t);
        let first = t.lines().next().unwrap();
        assert!(first.contains(c.signature), "{first}");
        assert!(first.contains(&r.generation), "{first}");

        // The program block parses back to the same program...
        let p = export::program_from_text(&t).unwrap_or_else(|e| panic!("{e}\n{t}"));
        assert_eq!(p, r.program, "{}", c.name);
        // ...which still gives the same first finding.
        let again = Repro::new(&mut d, p).expect("no crash");
        assert_eq!(
            again.first().map(|f| f.signature()),
            r.first().map(|f| f.signature())
        );

        // Exactly the diverging step is marked, with its own text.
        let marked: Vec<&str> = t.lines().filter(|l| l.starts_with(">>")).collect();
        assert_eq!(marked.len(), 1, "{t}");
        assert!(
            marked[0].starts_with(&format!(">> #{} ", c.step)),
            "{}",
            marked[0]
        );
        assert!(marked[0].contains(&r.first().unwrap().op), "{}", marked[0]);
        // The trace stops at the diverging step.
        assert!(!t.contains(&format!("   #{} ", c.step + 1)), "{t}");

        // Both sides of the diverging step, and what diverged.
        let f = r.first().unwrap();
        let after: Vec<&str> = t.lines().skip_while(|l| !l.starts_with(">>")).collect();
        assert!(after[1].contains(" | "), "{}", after[1]);
        let what = &t[t.find("--- what diverged ---").expect("paragraph")..];
        assert!(what.contains(f.class.name()), "{what}");
        let oracle_head = f.oracle.split_whitespace().next().unwrap();
        let target_head = f.target.split_whitespace().next().unwrap();
        assert!(
            what.contains(oracle_head) && what.contains(target_head),
            "{what}"
        );
    }
}

#[test]
fn the_program_comes_back_out_of_a_quoted_reply() {
    let mut d = differ(&mutant("02"));
    let r = repro_on(&mut d, &cases()[0].src);
    let t = export::text(&r);
    assert_eq!(t.matches(PROGRAM_BEGIN).count(), 1);
    let quoted: String = t
        .lines()
        .map(|l| {
            if l.is_empty() {
                ">\n".to_string()
            } else {
                format!("> {l}\n")
            }
        })
        .collect();
    let mail = format!("On Monday someone wrote:\n{quoted}\nThanks, looking.\n");
    assert_eq!(export::program_from_text(&mail).unwrap(), r.program);
    assert!(export::program_from_text("no program here").is_err());
    let cut = &t[..t.find(PROGRAM_END).unwrap()];
    assert!(export::program_from_text(cut)
        .unwrap_err()
        .contains(PROGRAM_END));
}

#[test]
fn wide_programs_still_fit_and_parse_back() {
    // The widest lines the format has: 8 CPUs, the longest names, 64-bit values.
    let src = "lazymmu-ops v1 cpus=8 facility13=off tlb_lc=off mode=adversarial
mm0 user attach=0,1,2,3,4,5,6,7 tables=4 protected
mm1 user attach=0,1,2,3,4,5,6,7 tables=4 protected
mm2 init_mm attach=0,1,2,3,4,5,6,7 tables=4
mm3 user attach=0,1,2,3,4,5,6,7 tables=4 protected
init mm3 t3[255] = 0xfedcba9876543a3d
cpu7 lazy_mmu_mode_enable_with_ptes mm3 t3[200..255] ptep=t3[254]@mm2
cpu7 ptep_modify_prot_start mm3 t3[255]
cpu7 ptep_modify_prot_commit mm3 t3[255] = 0xfedcba9876543a3d
cpu7 ptep_get_and_clear_full mm3 t3[255] full=1
cpu7 set_ptes mm3 t3[250] n=5 = 0xfedcba9876543a3d
cpu7 lazy_mmu_mode_disable
cpu7 flush_tlb_range mm3 t3[200..255]
cpu6 flush_tlb_range mm2 t1[0..16]
cpu6 ptep_clear_flush mm2 t1[3]
";
    let mut d = differ(&Source::Reference);
    let r = Repro::new(&mut d, parse(src).unwrap()).expect("no crash");
    let t = export::text(&r);
    assert_fits(&t);
    assert_eq!(export::program_from_text(&t).unwrap(), r.program);
    // No finding: the whole trace, and the report says so.
    assert!(r.first().is_none(), "{:#?}", r.verdict.findings);
    assert!(t.contains("#8 "), "{t}");
    assert!(!t.lines().any(|l| l.starts_with(">>")), "{t}");

    // Its KUnit case: init_mm, protected mms, a ptep in another mm's table.
    let code = export::kunit(&r, "wide");
    compile("wide", &code);
    assert!(code.contains("No finding on reference"), "{code}");
    assert!(code.contains("struct mm_struct *mm2 = lazy_mmu_test_init_mm(test);"));
    assert!(code.contains("struct mm_struct *mm3 = lazy_mmu_test_protected_mm(test);"));
    assert!(code.contains("without facility 13"), "{code}");
    assert!(code.contains(
        "lazy_mmu_mode_enable_with_ptes(mm3, 0x4003c8000UL, 0x4003ff000UL, &pt2_3[254]);"
    ));
    assert!(code.contains("old7 = ptep_modify_prot_start(vma3, 0x4003ff000UL, &pt3_3[255]);"));
    assert!(code.contains("ptep_get_and_clear_full(mm3, 0x4003ff000UL, &pt3_3[255], 1)"));
    assert!(code.contains("flush_tlb_kernel_range(0x300100000UL, 0x300110000UL);"));
    assert!(code.contains("ptep_clear_flush(vma2, 0x300103000UL, &pt2_1[3])"));
    assert!(
        !code.contains("struct mm_struct *mm0"),
        "unused mms are not declared"
    );
}

#[test]
fn an_end_of_program_finding_shows_every_step() {
    let mut d = differ(&Source::File(
        root().join("target/fixtures/v2/arch/s390/mm/ipte_batch.c"),
    ));
    let r = repro_on(
        &mut d,
        "lazymmu-ops v1 cpus=2 facility13=on tlb_lc=off mode=realistic
mm0 user attach=0 tables=1
init mm0 t0[1] = 0x1a03d
init mm0 t0[3] = 0x2b03d
cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]
cpu0 ptep_get_and_clear mm0 t0[1]
cpu0 ptep_get_and_clear mm0 t0[3]
cpu0 lazy_mmu_mode_disable
cpu0 flush_tlb_range mm0 t0[0..8]
cpu0 unlock_ptl mm0 t0
",
    );
    assert_eq!(
        r.first().unwrap().signature(),
        "lazymmu-perf-global-ipte-end"
    );
    let t = export::text(&r);
    assert_fits(&t);
    for i in 0..r.program.steps.len() {
        assert!(t.contains(&format!("   #{i} cpu0 ")), "step {i}:\n{t}");
    }
    let marked: Vec<&str> = t.lines().filter(|l| l.starts_with(">>")).collect();
    assert_eq!(marked.len(), 1);
    assert!(marked[0].contains("end of program"), "{}", marked[0]);
    assert!(t.contains("global IPTE"), "{t}");
    let s = export::svg(&r);
    assert!(s.contains("class=\"diverge-end\""), "{s}");
    assert!(s.contains("end: lazymmu-perf-global-ipte-end"));
}

/// Writes `c` to a fresh file and checks it with gcc against the shim and our stub.
fn compile(name: &str, c: &str) {
    let dir = std::env::temp_dir().join(format!("lazymmu-triage-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.c"));
    std::fs::write(&file, c).unwrap();
    let out = Command::new("gcc")
        .args([
            "-std=gnu11",
            "-fsyntax-only",
            "-Wall",
            "-Werror=implicit-function-declaration",
            "-Werror=incompatible-pointer-types",
            "-Werror=int-conversion",
            "-Werror=unused-variable",
        ])
        .arg("-I")
        .arg(root().join("triage/kunit/include"))
        .arg("-I")
        .arg(root().join("target/shim/include"))
        .arg(&file)
        .output()
        .expect("gcc runs");
    assert!(
        out.status.success(),
        "{name}.c does not compile:\n{}\n---\n{c}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The step number a line of a test function introduces (`/* #N ...` or ` * #N ...`).
fn step_of(line: &str) -> Option<usize> {
    let rest = line
        .strip_prefix("\t/* #")
        .or_else(|| line.strip_prefix("\t * #"))?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The lines of the test function for step `i`, up to the next step.
fn step_code(c: &str, i: usize) -> String {
    let body = &c[c.find("static void").expect("a function")..];
    let mut cur = None;
    let mut out = String::new();
    for l in body.lines() {
        if let Some(n) = step_of(l) {
            cur = Some(n);
        } else if l.contains("at the end, as the eager code") {
            cur = None;
        }
        if cur == Some(i) {
            out.push_str(l);
            out.push('\n');
        }
    }
    assert!(!out.is_empty(), "no step {i}:\n{c}");
    out
}

#[test]
fn kunit_cases_compile_and_expect_the_eager_values() {
    let mut all = vec![];
    for (c, mut d, r) in repros() {
        let code = export::kunit_repro(&mut d, &r, c.name);
        compile(c.name, &code);
        assert!(
            code.contains(&format!("static void {}(struct kunit *test)", c.name)),
            "{code}"
        );
        assert!(code.contains(c.signature), "{code}");
        assert!(code.contains("kunit_kzalloc(test, PTRS_PER_PTE * sizeof(pte_t)"));
        assert!(code.contains("__pte(_PAGE_INVALID)"));
        assert!(!code.contains("current->mm =") && !code.contains("= current->mm"));
        let f = r.first().unwrap();
        // The divergence is called out at its step.
        assert!(step_code(&code, f.step).contains(">> "), "{code}");
        all.push((c, r, code));
    }

    for (c, r, code) in &all {
        let f = r.first().unwrap();
        let multi = r
            .program
            .steps
            .iter()
            .any(|s| s.cpu != r.program.steps[0].cpu);
        match c.name {
            "stale_ptep_get" => {
                let s = step_code(code, 3);
                assert!(
                    s.contains("KUNIT_EXPECT_EQ(test, pte_val(ptep_get(&pt0_0[1])), 0x400UL);"),
                    "{s}"
                );
                let s = step_code(code, 2);
                assert!(s.contains(
                    "KUNIT_EXPECT_EQ(test, pte_val(ptep_get_and_clear(mm0, 0x100001000UL, &pt0_0[1])), 0x1a03dUL);"
                ), "{s}");
                assert!(step_code(code, 1).contains(
                    "lazy_mmu_mode_enable_with_ptes(mm0, 0x100000000UL, 0x100008000UL, &pt0_0[0]);"
                ));
                assert!(step_code(code, 0).contains("spin_lock(&ptl0_0);"));
                assert!(code.contains("\tpt0_0[1] = __pte(0x1a03dUL);"), "{code}");
            }
            "marker_leak_dense_window" => {
                // The end checks the entries the target changed, with the eager values.
                let end = &code[code.find("at the end, as the eager code").unwrap()..];
                for line in [
                    "KUNIT_EXPECT_EQ(test, pte_val(READ_ONCE(pt0_0[1])), 0x1a03dUL);",
                    "KUNIT_EXPECT_EQ(test, pte_val(READ_ONCE(pt0_0[2])), 0x2b03dUL);",
                    "KUNIT_EXPECT_EQ(test, pte_val(READ_ONCE(pt0_0[3])), 0x4d215UL);",
                ] {
                    assert!(end.contains(line), "{line}\n{end}");
                }
                assert!(r
                    .verdict
                    .signatures()
                    .iter()
                    .any(|s| s.contains("marker-leak")));
            }
            "protected_mm_batched" => {
                assert!(code.contains("struct mm_struct *mm0 = lazy_mmu_test_protected_mm(test);"));
                assert!(
                    code.contains("kunit_skip(test, \"mm0 must be a protected"),
                    "{code}"
                );
                assert!(
                    code.contains("mm0 (user, protected) attached to cpu0,cpu1"),
                    "{code}"
                );
            }
            "nested_disable_no_flush" => {
                // The sync point checks memory as the eager code leaves it there.
                let s = step_code(code, f.step);
                let p = f.pte.expect("a memory finding names its PTE");
                // The oracle's value reads `0x400 (none)`: hex, then its decoded bits.
                let hex = f.oracle.split_whitespace().next().unwrap();
                let want: u64 = u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap();
                let line = format!(
                    "KUNIT_EXPECT_EQ(test, pte_val(READ_ONCE(pt{}_{}[{}])), {want:#x}UL);",
                    p.mm, p.table, p.index
                );
                assert!(s.contains(&line), "{line}\n{s}");
            }
            "local_ipte_two_cpus" => {
                // cpu0's steps alone cannot fill cpu1's TLB: no projection.
                assert!(code.contains("No single-CPU projection"), "{code}");
                assert!(code.contains("interleaved in this order"), "{code}");
                assert!(code.contains("#0   cpu1  access mm0 t0[1] read"), "{code}");
                assert!(step_code(code, 0).contains("a hardware translation"));
                assert!(step_code(code, 5)
                    .contains("flush_tlb_range(vma0, 0x100000000UL, 0x100008000UL);"));
            }
            "stale_ptep_get_two_cpus" => {
                // The projection reproduces it, so the test runs cpu0's steps alone.
                assert!(code.contains("single-CPU projection"), "{code}");
                assert!(!code.contains("No single-CPU projection"), "{code}");
                assert!(code.contains("#7   cpu1  access mm0 t0[4] write"), "{code}");
                let body = &code[code.find("static void").unwrap()..];
                assert!(!body.contains("ptep_get_lockless"), "{body}");
                assert!(!body.contains("flush_tlb_mm"), "{body}");
                assert!(
                    body.contains("old0 = ptep_modify_prot_start(vma0, 0x100002000UL, &pt0_0[2]);")
                );
                assert!(
                    body.contains("KUNIT_EXPECT_EQ(test, pte_val(old0), 0x2b03dUL);"),
                    "{body}"
                );
                assert!(body.contains(
                    "ptep_modify_prot_commit(vma0, 0x100002000UL, &pt0_0[2], old0, __pte(0x2b215UL));"
                ));
                assert!(body.contains("KUNIT_EXPECT_TRUE(test, ptep_test_and_clear_young(vma0, 0x100004000UL, &pt0_0[4]));"), "{body}");
                assert!(body.contains("KUNIT_EXPECT_TRUE(test, is_lazy_mmu_mode_active());"));
                assert!(
                    body.contains("set_ptes(mm0, 0x100005000UL, &pt0_0[5], __pte(0x1a03dUL), 2);")
                );
                assert!(
                    body.contains("KUNIT_EXPECT_EQ(test, pte_val(ptep_get(&pt0_0[1])), 0x400UL);")
                );
                assert!(
                    body.contains(
                        "KUNIT_EXPECT_EQ(test, pte_val(READ_ONCE(pt0_0[6])), 0x1b03dUL);"
                    ),
                    "{body}"
                );
            }
            other => panic!("unchecked case {other}"),
        }

        // Single-CPU code (and multi-CPU code without projection): every value the
        // eager code returns to a call that the test makes is expected.
        if !multi || code.contains("No single-CPU projection") {
            for (i, (s, rec)) in r.program.steps.iter().zip(&r.oracle.steps).enumerate() {
                let sc = step_code(code, i);
                if let Ret::Pte(v) = rec.ret {
                    if !sc.contains("not expressible") {
                        assert!(
                            sc.contains("KUNIT_EXPECT_EQ(test, pte_val(")
                                && sc.contains(&format!("), {v:#x}UL);")),
                            "step {i} {s:?}:\n{sc}"
                        );
                    }
                }
            }
        }
    }

    // The plain export of a multi-CPU program runs it in one task and compiles too.
    let (_, r, _) = all
        .iter()
        .find(|(c, _, _)| c.name == "stale_ptep_get_two_cpus")
        .unwrap();
    let plain = export::kunit(r, "plain_two_cpus");
    compile("plain_two_cpus", &plain);
    assert!(plain.contains("A KUnit test is one task"), "{plain}");
    assert!(
        step_code(&plain, 1).contains("ptep_get_lockless"),
        "{plain}"
    );
    assert!(step_code(&plain, 0).contains("interrupt entry"), "{plain}");
    assert!(
        step_code(&plain, 16).contains("flush_tlb_mm(mm0);"),
        "{plain}"
    );

    // A suite of all of them compiles, with one KUNIT_CASE each.
    let cases: Vec<String> = all.iter().map(|(_, _, code)| code.clone()).collect();
    let suite = export::kunit_suite(&cases, "lazy-mmu-repro");
    compile("suite", &suite);
    for (c, _, _) in &all {
        assert!(
            suite.contains(&format!("\tKUNIT_CASE({}),", c.name)),
            "{suite}"
        );
    }
    assert_eq!(suite.matches("#include <kunit/test.h>").count(), 1);
    assert!(suite.contains("static struct kunit_suite lazy_mmu_repro = {"));
    assert!(suite.contains(".name = \"lazy-mmu-repro\""));
    assert!(suite.contains("kunit_test_suite(lazy_mmu_repro);"));
}

#[test]
fn json_carries_the_finding_and_the_program() {
    let (_, _, r) = repros().into_iter().next().unwrap();
    let v: serde_json::Value = serde_json::from_str(&export::json(&r)).unwrap();
    let f = r.first().unwrap();
    assert_eq!(v["signature"], "lazymmu-return-ptep_get");
    assert_eq!(v["class"], "return");
    assert_eq!(v["step"], 3);
    assert_eq!(v["cpu"], 0);
    assert_eq!(v["op"], "ptep_get");
    assert_eq!(v["pte"], "mm0 t0[1]");
    assert_eq!(v["target"], f.target.as_str());
    assert_eq!(v["oracle"], f.oracle.as_str());
    assert_eq!(v["detail"], f.detail.as_str());
    assert_eq!(v["implementation"], r.implementation.as_str());
    assert_eq!(v["generation"], r.generation.as_str());
    let p = parse(v["program"].as_str().unwrap()).unwrap();
    assert_eq!(p, r.program);
    let verdict: lazymmu_harness::check::Verdict =
        serde_json::from_value(v["verdict"].clone()).unwrap();
    assert_eq!(verdict, r.verdict);
}

/// Checks that every tag is closed in order (enough XML for our own output).
fn well_formed(s: &str) {
    let mut stack: Vec<String> = vec![];
    let mut rest = s;
    while let Some(i) = rest.find('<') {
        let j = rest[i..].find('>').expect("unclosed tag") + i;
        let tag = &rest[i + 1..j];
        assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().unwrap().to_string());
        }
        let text = &rest[j + 1..rest[j + 1..].find('<').map_or(rest.len(), |k| k + j + 1)];
        assert!(!text.contains('>'), "unescaped '>' in text: {text}");
        for (k, _) in text.match_indices('&') {
            let ent = &text[k..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;"]
                    .iter()
                    .any(|e| ent.starts_with(e)),
                "unescaped '&': {text}"
            );
        }
        rest = &rest[j + 1..];
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

#[test]
fn svg_has_a_lane_per_cpu_sections_and_the_red_marker() {
    for (c, _, r) in repros() {
        let s = export::svg(&r);
        assert!(
            s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{s}"
        );
        assert!(s.trim_end().ends_with("</svg>"));
        well_formed(&s);
        assert_eq!(s.matches("<text").count(), s.matches("</text>").count());
        assert_eq!(
            s.matches("<rect").count(),
            s.lines()
                .filter(|l| l.starts_with("<rect") && l.ends_with("/>"))
                .count()
        );
        assert_eq!(
            s.matches("class=\"lane\"").count(),
            r.program.config.cpus as usize,
            "{}",
            c.name
        );
        for cpu in 0..r.program.config.cpus {
            assert!(s.contains(&format!(">cpu{cpu}</text>")));
        }
        // One box per step, the diverging one in red, labelled.
        assert_eq!(s.matches("data-step=").count(), r.program.steps.len());
        let f = r.first().unwrap();
        let red = format!("<g class=\"step diverge\" data-step=\"{}\">", f.step);
        assert!(s.contains(&red), "{}: {s}", c.name);
        let after = &s[s.find(&red).unwrap()..];
        assert!(after.lines().nth(2).unwrap().contains("stroke=\"red\""));
        assert!(s.contains("class=\"diverge-label\"") && s.contains("fill=\"red\" text-anchor="));
        assert!(s.contains(&format!("step {}: {}", f.step, f.signature())));
        // The section of the CPU that opened one is shaded.
        assert!(s.contains("class=\"lazy\" data-cpu=\"0\""), "{s}");
        // Deterministic.
        assert_eq!(s, export::svg(&r));
        if c.name == "stale_ptep_get_two_cpus" {
            assert!(s.contains("class=\"irq\" data-cpu=\"1\""), "{s}");
            assert!(s.contains("class=\"step irq-mark\""));
            assert!(!s.contains("class=\"lazy\" data-cpu=\"1\""));
        }
    }
}
