#![allow(dead_code)]

use std::path::PathBuf;

use lazymmu_harness::gen::from_bytes;
use lazymmu_lang::{Mode, Program};
use lazymmu_target::{CKernel, Source};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

pub fn seed(name: &str) -> Program {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus/seeds")
        .join(name);
    lazymmu_lang::text::parse(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

pub fn load(source: Source) -> CKernel {
    lazymmu_target::load(&source).unwrap_or_else(|e| panic!("{e}"))
}

pub fn programs(seed: u64, count: usize, mode: Mode) -> impl Iterator<Item = Program> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count).map(move |_| {
        let mut v = vec![0u8; rng.gen_range(0..=1024)];
        rng.fill_bytes(&mut v);
        from_bytes(&v, mode)
    })
}
