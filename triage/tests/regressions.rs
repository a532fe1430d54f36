//! Replays the regression corpus: every `# expect: IMPL clean|SIGNATURE` line of every
//! corpus/regressions/*.ops must hold.

use std::collections::BTreeMap;

use lazymmu_engine::executor::Executor;
use lazymmu_harness::Differ;
use lazymmu_lang::reprofile::{Expected, ReproFile};
use lazymmu_target::Source;

#[test]
fn regression_corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus/regressions");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "ops"))
        .collect();
    files.sort();
    assert!(files.len() >= 18, "{} regression files", files.len());
    // In executors: the corpus holds crash and hang reproducers too.
    let mut differs: BTreeMap<String, Executor> = BTreeMap::new();
    let mut checked = 0;
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap();
        let r = ReproFile::parse(&src).unwrap_or_else(|e| panic!("{}:{e}", f.display()));
        assert!(
            !r.expects.is_empty(),
            "{}: no '# expect:' line",
            f.display()
        );
        for e in &r.expects {
            let name = &e.implementation;
            let d = differs.entry(name.clone()).or_insert_with(|| {
                let source = Source::from_name(name).unwrap_or_else(|e| panic!("{e}"));
                let d =
                    Differ::new(lazymmu_target::load(&source).unwrap_or_else(|e| panic!("{e}")));
                Executor::new(d, Default::default()).unwrap()
            });
            let v = d.verdict(&r.program);
            let sigs = v.signatures();
            match &e.expected {
                Expected::Clean => assert!(
                    v.findings.is_empty(),
                    "{}: {name} should be clean, has {sigs:?}",
                    f.display()
                ),
                Expected::Signature(want) => assert!(
                    sigs.contains(want),
                    "{}: {name} should show {want}, has {sigs:?}",
                    f.display()
                ),
            }
            checked += 1;
        }
    }
    assert!(checked >= 38, "{checked} expectations");
}
