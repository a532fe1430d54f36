//! The main target: one implementation (the static build: the reference, or the tree in
//! LAZYMMU_KERNEL_TREE at build time) against the eager oracle.
#![no_main]

use std::sync::{LazyLock, Mutex};

use lazymmu_harness::Differ;
use libfuzzer_sys::{fuzz_mutator, fuzz_target};

static DIFFER: LazyLock<Mutex<Differ>> =
    LazyLock::new(|| Mutex::new(lazymmu_fuzz_glue::builtin_differ()));

fuzz_target!(|data: &[u8]| {
    let program = lazymmu_fuzz_glue::decode(data);
    let verdict = lazymmu_fuzz_glue::verdict(&mut DIFFER.lock().unwrap(), &program);
    lazymmu_fuzz_glue::record_features(&verdict);
    lazymmu_fuzz_glue::report(&verdict, &program);
});

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    lazymmu_fuzz_glue::mutate_input(data, size, max_size, seed, libfuzzer_sys::fuzzer_mutate)
});
