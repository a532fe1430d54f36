//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use lazymmu_engine::executor::{ExecOptions, Executor};
use lazymmu_engine::rng::Rng;
use lazymmu_engine::Differ;
use lazymmu_harness::gen::from_bytes;
use lazymmu_lang::{Mode, Program};
use lazymmu_target::Source;

pub fn mutant(name: &str) -> Source {
    Source::Mutant(lazymmu_target::sources::mutant(name).unwrap())
}

pub fn fixture(rel: &str) -> Source {
    Source::File(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/fixtures")
            .join(rel),
    )
}

pub fn differ(s: &Source) -> Differ {
    Differ::new(lazymmu_target::load(s).unwrap_or_else(|e| panic!("{e}")))
}

pub fn executor(s: &Source, opts: ExecOptions) -> Executor {
    Executor::new(differ(s), opts).expect("executor setup")
}

/// `n` generated programs, deterministic from `seed`.
pub fn programs(seed: u64, n: usize, mode: Mode) -> impl Iterator<Item = Program> {
    let mut rng = Rng::new(seed);
    (0..n).map(move |_| {
        let len = 64 + rng.below(1024);
        from_bytes(&rng.bytes(len), mode)
    })
}

/// The regression reproducer of a mutant (corpus/regressions/<stem>.ops).
pub fn crash_program(stem: &str) -> Program {
    let path = regression_path(stem);
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    lazymmu_lang::text::parse(&src).unwrap_or_else(|e| panic!("{}:{e}", path.display()))
}

pub fn regression_path(stem: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus/regressions")
        .join(format!("{stem}.ops"))
}
