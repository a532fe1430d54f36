//! Several implementations side by side, each against the oracle: the static build plus
//! every file or tree listed in LAZYMMU_MULTI (colon-separated; compiled at start-up by
//! the run-time loader, which needs a C compiler where the target runs). Default: the
//! rig's reference tree, loaded at run time next to its static twin. (The RFC and v2
//! fixtures under target/fixtures have known findings: list them to fuzz them.)
#![no_main]

use std::sync::{LazyLock, Mutex};

use lazymmu_harness::Differ;
use lazymmu_target::Source;
use libfuzzer_sys::{fuzz_mutator, fuzz_target};

static DIFFERS: LazyLock<Mutex<Vec<Differ>>> = LazyLock::new(|| {
    let reference = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/reference");
    let list = std::env::var("LAZYMMU_MULTI").unwrap_or_else(|_| reference.to_string());
    let mut v = vec![lazymmu_fuzz_glue::builtin_differ()];
    for p in list.split(':').filter(|p| !p.is_empty()) {
        let path = std::path::PathBuf::from(p);
        if !path.exists() {
            // On a fuzzing cluster the source tree is not there: fuzz what is.
            eprintln!("lazymmu: {p} does not exist here; skipped");
            continue;
        }
        let source = if path.is_dir() {
            Source::KernelTree(path)
        } else {
            Source::File(path)
        };
        v.push(Differ::new(
            lazymmu_target::load(&source).unwrap_or_else(|e| panic!("{e}")),
        ));
    }
    Mutex::new(v)
});

fuzz_target!(|data: &[u8]| {
    let program = lazymmu_fuzz_glue::decode(data);
    for d in DIFFERS.lock().unwrap().iter_mut() {
        let verdict = lazymmu_fuzz_glue::verdict(d, &program);
        lazymmu_fuzz_glue::record_features(&verdict);
        lazymmu_fuzz_glue::report(&verdict, &program);
    }
});

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    lazymmu_fuzz_glue::mutate_input(data, size, max_size, seed, libfuzzer_sys::fuzzer_mutate)
});
