//! What the rig's test suites share (a dev-dependency only): implementations by name,
//! generated programs, hand-written programs checked for realism, the regression corpus,
//! executors.

use std::path::PathBuf;

use lazymmu_engine::executor::{ExecOptions, Executor};
use lazymmu_engine::rng::Rng;
use lazymmu_harness::gen::from_bytes;
use lazymmu_harness::Differ;
use lazymmu_lang::{Mode, Program};
use lazymmu_target::Source;

/// The header of the test suites' two-CPU programs: one user mm run by both CPUs, three
/// valid PTEs. Steps follow.
pub const TWO_CPUS: &str = "lazymmu-ops v1 cpus=2 facility13=on tlb_lc=on mode=realistic
mm0 user attach=0,1 tables=1
init mm0 t0[1] = 0x1a03d
init mm0 t0[2] = 0x2b03d
init mm0 t0[4] = 0x3c03d
";

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A planted mutant by number or name (`07`, `off-by-one-range-end`).
pub fn mutant(name: &str) -> Source {
    Source::Mutant(lazymmu_target::sources::mutant(name).unwrap_or_else(|e| panic!("{e}")))
}

/// A fixture file under target/fixtures.
pub fn fixture(rel: &str) -> Source {
    Source::File(root().join("target/fixtures").join(rel))
}

/// A fixture tree under target/fixtures (`rfc`, `v2`).
pub fn tree(rel: &str) -> Source {
    Source::KernelTree(root().join("target/fixtures").join(rel))
}

/// `n` generated programs, deterministic from `seed`.
pub fn programs(seed: u64, n: usize, mode: Mode) -> impl Iterator<Item = Program> {
    let mut rng = Rng::new(seed);
    (0..n).map(move |_| {
        let len = 64 + rng.below(1024);
        from_bytes(&rng.bytes(len), mode)
    })
}

/// A hand-written program; one whose header says realistic must keep the contract.
pub fn program(src: &str) -> Program {
    let p = lazymmu_lang::text::parse(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    if p.config.mode == Mode::Realistic {
        let v = lazymmu_harness::contract::violations(&p);
        assert!(v.is_empty(), "test program is not realistic: {}", v[0]);
    }
    p
}

/// corpus/regressions/<stem>.ops
pub fn regression_path(stem: &str) -> PathBuf {
    root()
        .join("corpus/regressions")
        .join(format!("{stem}.ops"))
}

/// The program of a regression reproducer.
pub fn regression(stem: &str) -> Program {
    let path = regression_path(stem);
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    lazymmu_lang::text::parse(&src).unwrap_or_else(|e| panic!("{}:{e}", path.display()))
}

pub fn differ(s: &Source) -> Differ {
    Differ::new(lazymmu_target::load(s).unwrap_or_else(|e| panic!("{e}")))
}

pub fn executor(s: &Source, opts: ExecOptions) -> Executor {
    Executor::new(differ(s), opts).expect("executor setup")
}
