//! The rig's engines over one differential entry point: a program runs through the C
//! implementation and the eager oracle, and the checkers compare the two traces.
//!
//! * `Differ`: the entry point (also what the fuzz targets call).
//! * `mutate`: structure-aware mutations, shared with the libFuzzer custom mutator.
//! * `fuzz`: the built-in coverage-guided loop (`lazymmu fuzz`), deterministic from a seed.

pub mod corpus;
pub mod fuzz;
pub mod mutate;
pub mod out;
pub mod rng;

use lazymmu_harness::check::{self, Verdict};
use lazymmu_harness::exec::Trace;
use lazymmu_harness::Program;
use lazymmu_target::CKernel;

/// One implementation under test, checked against the oracle.
pub struct Differ {
    pub kernel: CKernel,
    /// The generation's "nothing pending" value.
    pub marker: u64,
}

impl Differ {
    pub fn new(kernel: CKernel) -> Self {
        let marker = kernel.library().generation.marker();
        Differ { kernel, marker }
    }

    pub fn name(&self) -> String {
        self.kernel.library().name.clone()
    }

    /// Both traces and the verdict.
    pub fn run(&mut self, p: &Program) -> (Trace, Trace, Verdict) {
        let target = lazymmu_harness::run(p, &mut self.kernel);
        let oracle = lazymmu_oracle::run(p);
        let verdict = check::check(p, &target, &oracle, self.marker);
        (target, oracle, verdict)
    }

    pub fn verdict(&mut self, p: &Program) -> Verdict {
        self.run(p).2
    }
}
