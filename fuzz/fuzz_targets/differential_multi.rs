//! Several implementations side by side, each against the oracle: the static build plus
//! every file or tree listed in LAZYMMU_MULTI (colon-separated; compiled at start-up by
//! the run-time loader). Default: the RFC and v2 fixtures of the rig.
#![no_main]

use std::sync::{LazyLock, Mutex};

use lazymmu_engine::Differ;
use lazymmu_target::Source;
use libfuzzer_sys::{fuzz_mutator, fuzz_target};

static DIFFERS: LazyLock<Mutex<Vec<Differ>>> = LazyLock::new(|| {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/fixtures");
    let list =
        std::env::var("LAZYMMU_MULTI").unwrap_or_else(|_| format!("{fixtures}/rfc:{fixtures}/v2"));
    let mut v = vec![lazymmu_fuzz::builtin_differ()];
    for p in list.split(':').filter(|p| !p.is_empty()) {
        let path = std::path::PathBuf::from(p);
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
    let program = lazymmu_fuzz::decode(data);
    for d in DIFFERS.lock().unwrap().iter_mut() {
        let verdict = d.verdict(&program);
        lazymmu_fuzz::record_features(&verdict);
        lazymmu_fuzz::report(&verdict, &program);
    }
});

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    lazymmu_fuzz::mutate_input(data, size, max_size, seed, libfuzzer_sys::fuzzer_mutate)
});
