//! Findings of every event-based class read as the kernel reports them in every text a
//! person gets (the mail export, the KUnit comments, the trace, the hazards): PTEs in the
//! `.ops` notation, values in hex, and no Rust Debug formatting anywhere.

use std::path::{Path, PathBuf};

use lazymmu_engine::executor::Executor;
use lazymmu_harness::check::Class;
use lazymmu_harness::Differ;
use lazymmu_lang::text::parse;
use lazymmu_model::report::trace_text;
use lazymmu_target::Source;
use lazymmu_triage::export;
use lazymmu_triage::Repro;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn mutant(name: &str) -> Source {
    Source::Mutant(lazymmu_target::sources::mutant(name).unwrap())
}

fn fixture(rel: &str) -> PathBuf {
    root().join("target/fixtures").join(rel)
}

fn regression(name: &str) -> String {
    std::fs::read_to_string(root().join("corpus/regressions").join(name)).unwrap()
}

const ONE_CPU_SECTION: &str = "lazymmu-ops v1 cpus=1 facility13=on tlb_lc=on mode=realistic
mm0 user attach=0 tables=1
cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..8]
";

/// A finding of `class` on `source`, and words its target text must hold.
struct Case {
    name: &'static str,
    source: Source,
    src: String,
    class: Class,
    says: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "store_to_valid_pte",
            source: mutant("03"),
            src: regression("03-missed-ipte-run-skip.ops"),
            class: Class::StoreValid,
            says: &["store to valid PTE mm0 t0[", "without IPTE"],
        },
        Case {
            name: "lazy_invalidate_without_owed_flush",
            source: mutant("17"),
            src: regression("17-owed-flush-forgotten.ops"),
            class: Class::StoreValid,
            says: &["mm0 t0[5]"],
        },
        Case {
            name: "unrouted",
            source: mutant("07"),
            src: regression("07-off-by-one-range-end.ops"),
            class: Class::Unrouted,
            says: &[
                "lazy-MMU PTE access:",
                "of mm0 t0[21] in pte_clear",
                "poisoned by cpu0's section",
            ],
        },
        Case {
            name: "unrouted",
            source: mutant("10"),
            src: regression("10-pause-no-flush.ops"),
            class: Class::Unrouted,
            says: &["lazy-MMU PTE access:", "in ptep_get"],
        },
        Case {
            name: "uv_call_on_valid_pte",
            source: mutant("16"),
            src: regression("16-protected-mm-batched.ops"),
            class: Class::UvValid,
            says: &[
                "UV convert-from-secure while mm0 t0[1] = 0x1a03d",
                "(pfn 0x1a valid rw young dirty) is valid",
            ],
        },
        Case {
            name: "wild_access",
            source: Source::File(fixture("crash/lazy_mmu.c")),
            src: format!(
                "{ONE_CPU_SECTION}cpu0 set_pte mm0 t0[1] = 0xbad03d\n\
                 cpu0 lazy_mmu_mode_disable\ncpu0 unlock_ptl mm0 t0\n"
            ),
            class: Class::Wild,
            says: &["wild access:"],
        },
        Case {
            name: "poison_overwritten",
            source: Source::Mutant(fixture("poison-store.patch")),
            src: "lazymmu-ops v1 cpus=2 facility13=on tlb_lc=on mode=realistic
mm0 user attach=0,1 tables=2
init mm0 t1[1] = 0x1a03d
cpu0 lock_ptl mm0 t1
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t1[0..8]
cpu0 set_pte mm0 t1[0] = 0x2b03d
cpu0 ptep_get_and_clear mm0 t1[1]
cpu0 lazy_mmu_mode_disable
cpu0 unlock_ptl mm0 t1
cpu0 flush_tlb_range mm0 t1[0..8]
"
            .into(),
            class: Class::Wild,
            says: &[
                "poisoned half of mm0 t1's page overwritten at - 0x8 (1 entry before the start)",
            ],
        },
        Case {
            name: "assertion",
            source: Source::File(fixture("preempt-imbalance/lazy_mmu.c")),
            src: format!("{ONE_CPU_SECTION}cpu0 lazy_mmu_mode_disable\ncpu0 unlock_ptl mm0 t0\n"),
            class: Class::Assertion,
            says: &["preempt_enable() without preempt_disable()"],
        },
    ]
}

/// What Debug formatting of the rig's types leaves in a text.
const ARTEFACTS: &[&str] = &[
    "{ ",
    " }",
    "PteRef",
    "PteRange",
    "Some(",
    "None",
    "ShadowAccess",
    "StoreToValidPte",
    "LazyInvalidate",
    "WildAccess",
    "PoisonOverwritten",
    "IpteRangeCrossesTable",
    "UvCallOnValidPte",
    "ConvertFromSecure",
    "Assertion {",
    "TlbHit",
    "Walked {",
    "Fault {",
    "Pte(",
    "Bool(",
    "value: ",
    "owner: ",
];

fn assert_plain(what: &str, text: &str) {
    for a in ARTEFACTS {
        assert!(!text.contains(a), "{what}: Debug artefact '{a}' in\n{text}");
    }
}

/// The text with its line wrapping undone, for phrases a wrap may have split.
fn unwrapped(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn executor(source: &Source) -> Executor {
    let d = Differ::new(lazymmu_target::load(source).unwrap_or_else(|e| panic!("{e}")));
    Executor::new(d, Default::default()).unwrap()
}

#[test]
fn event_findings_read_as_kernel_reports_in_every_export() {
    for c in cases() {
        let program = parse(&c.src).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let mut d = executor(&c.source);
        let r = Repro::new(&mut d, program).expect("no crash");
        let f = r
            .verdict
            .findings
            .iter()
            .find(|f| f.class == c.class)
            .unwrap_or_else(|| {
                panic!(
                    "{}: no {} finding; signatures {:?}",
                    c.name,
                    c.class.name(),
                    r.verdict.signatures()
                )
            });
        for s in c.says {
            assert!(
                f.target.contains(s),
                "{}: '{s}' not in '{}'",
                c.name,
                f.target
            );
        }
        for (field, t) in [
            ("target", &f.target),
            ("oracle", &f.oracle),
            ("detail", &f.detail),
        ] {
            assert_plain(&format!("{} finding {field}", c.name), t);
        }
        for h in &r.verdict.hazards {
            assert_plain(&format!("{} hazard", c.name), &h.target);
            assert_plain(&format!("{} hazard", c.name), &h.context);
        }

        // The mail: the first finding's texts, and the event if it is the first.
        let text = export::text(&r);
        assert_plain(&format!("{} text export", c.name), &text);
        if r.first().map(|x| x.class) == Some(c.class) {
            let flat = unwrapped(&text);
            for s in c.says {
                assert!(flat.contains(s), "{}: '{s}' not in\n{text}", c.name);
            }
        }
        // The KUnit comments (C has braces of its own), the traces (every event, on its
        // step).
        let code = export::kunit(&r, c.name);
        let comments: Vec<&str> = code
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                l.starts_with("/*") || l.starts_with('*')
            })
            .collect();
        assert_plain(&format!("{} KUnit comments", c.name), &comments.join("\n"));
        let trace = trace_text(&r.program, &r.target);
        assert_plain(&format!("{} trace", c.name), &trace);
        assert_eq!(
            trace.matches("      !! ").count(),
            r.target.events.len(),
            "{}: one line per event\n{trace}",
            c.name
        );
        assert_plain(
            &format!("{} oracle trace", c.name),
            &trace_text(&r.program, &r.oracle),
        );
    }
}

#[test]
fn every_event_in_a_trace_names_the_call_it_happened_in() {
    let c = cases().into_iter().find(|c| c.name == "unrouted").unwrap();
    let program = parse(&c.src).unwrap();
    let mut d = executor(&c.source);
    let r = Repro::new(&mut d, program).expect("no crash");
    let trace = trace_text(&r.program, &r.target);
    let line = trace
        .lines()
        .find(|l| l.contains("!! lazy-MMU PTE access:"))
        .unwrap_or_else(|| panic!("no poisoned-slot access in\n{trace}"));
    assert!(
        line.contains("in pte_clear, poisoned by cpu0's section"),
        "{line}"
    );
}
