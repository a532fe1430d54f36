//! The loader: every way in (reference, mutant, tree, file), the generations, the cache,
//! and the errors a user sees for bad input.

mod common;

use common::*;
use lazymmu_target::loader::{self, LoadError};
use lazymmu_target::{Generation, Source};

#[test]
fn reference_compiles_as_v3() {
    let k = load(Source::Reference);
    assert_eq!(k.library().generation, Generation::V3);
    assert_eq!(k.library().generation.marker(), 0x800);
}

#[test]
fn older_generation_fixtures_are_recognised() {
    let rfc = load(Source::KernelTree(fixture("rfc")));
    assert_eq!(rfc.library().generation, Generation::Rfc);
    let v2 = load(Source::File(fixture("v2/arch/s390/mm/ipte_batch.c")));
    assert_eq!(v2.library().generation, Generation::V2);
}

#[test]
fn every_mutant_applies_and_compiles() {
    let paths = lazymmu_target::sources::mutant_paths();
    assert!(paths.len() >= 12, "only {} mutants", paths.len());
    for p in paths {
        let k = lazymmu_target::load(&Source::Mutant(p.clone()))
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(k.library().generation, Generation::V3);
        assert!(
            k.library().bug_class.is_some(),
            "{}: no Bug-class header",
            p.display()
        );
    }
}

#[test]
fn the_cache_is_keyed_by_content() {
    let dir = std::env::temp_dir().join(format!("lazymmu-cache-test-{}", std::process::id()));
    let spec = Source::Reference.resolve().unwrap();
    let a = loader::build_in(&spec, &dir).unwrap();
    let b = loader::build_in(&spec, &dir).unwrap();
    assert_eq!(a.dir, b.dir);
    let mut other = spec.clone();
    other.c_source.push_str("\n/* a different file */\n");
    let c = loader::build_in(&other, &dir).unwrap();
    assert_ne!(a.hash, c.hash);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_tree_without_an_implementation_is_named() {
    let root = fixture("errors/empty-tree");
    let e = lazymmu_target::load(&Source::KernelTree(root.clone()))
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(matches!(e, LoadError::NoImplementation { .. }));
    assert!(
        msg.starts_with(&format!(
            "no lazy-MMU implementation under {}",
            root.display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains("arch/s390/mm/lazy_mmu.c") && msg.contains("arch/s390/mm/ipte_batch.c"),
        "{msg}"
    );
}

#[test]
fn a_missing_header_is_named() {
    let f = fixture("errors/missing-names/lazy_mmu.c");
    let msg = lazymmu_target::load(&Source::File(f.clone()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.starts_with(&format!(
            "{} does not compile against the shim",
            f.display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains("linux/mm_types.h: No such file or directory"),
        "{msg}"
    );
    assert!(
        msg.contains("the shim does not provide: <linux/mm_types.h>"),
        "{msg}"
    );
}

#[test]
fn missing_kernel_names_are_listed() {
    let f = fixture("errors/missing-names/uses-undeclared.c");
    let e = lazymmu_target::load(&Source::File(f.clone()))
        .err()
        .unwrap();
    let LoadError::Compile {
        file,
        errors,
        missing,
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!(file, &f.display().to_string());
    assert!(errors.contains("uses-undeclared.c:"), "{errors}");
    assert_eq!(
        missing,
        &["PTE_WANTS_FLUSH", "flush_cache_page", "pte_page"]
    );
}

#[test]
fn an_unknown_generation_lists_what_was_found_and_expected() {
    let f = fixture("errors/unknown-generation/lazy_mmu.c");
    let msg = lazymmu_target::load(&Source::File(f))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("unknown generation"), "{msg}");
    assert!(
        msg.contains("lazy_batch_begin, lazy_batch_set_pte"),
        "{msg}"
    );
    assert!(
        msg.contains("arch_enter_lazy_mmu_mode_with_ptes (v3+)"),
        "{msg}"
    );
    assert!(
        msg.contains("arch_enter_lazy_mmu_mode_for_pte_range (v2)"),
        "{msg}"
    );
    assert!(msg.contains("arch_enter_lazy_mmu_mode_pte (RFC)"), "{msg}");
}

#[test]
fn a_generation_missing_functions_is_reported() {
    let mut spec = Source::File(fixture("v2/arch/s390/mm/ipte_batch.c"))
        .resolve()
        .unwrap();
    spec.c_path = None;
    spec.c_source = spec.c_source.replace(
        "bool ipte_batch_ptep_set_wrprotect(",
        "static bool unused_wrprotect(",
    );
    let msg = loader::build(&spec).err().unwrap().to_string();
    assert!(msg.contains("looks like generation v2"), "{msg}");
    assert!(
        msg.contains("does not define: ipte_batch_ptep_set_wrprotect"),
        "{msg}"
    );
}

#[test]
fn a_patch_that_does_not_apply_is_named() {
    let dir = std::env::temp_dir().join(format!("lazymmu-bad-patch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("99-bad.patch");
    std::fs::write(
        &p,
        "Bug-class: none\n\n--- a/x.c\n+++ b/x.c\n@@ -1,1 +1,1 @@\n-no such line\n+other\n",
    )
    .unwrap();
    let msg = lazymmu_target::load(&Source::Mutant(p.clone()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.starts_with(&format!("{}: does not apply to the reference", p.display())),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
