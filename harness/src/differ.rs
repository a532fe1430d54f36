//! The differential entry point: one implementation under test (the C target) and the
//! eager oracle run the same program, and the checkers compare the two traces. The fuzz
//! targets call it directly; the engine's executors call it in disposable processes.

use lazymmu_lang::Program;
use lazymmu_model::Trace;
use lazymmu_target::CKernel;

use crate::check::{self, Verdict};

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
        let target = lazymmu_model::run(p, &mut self.kernel);
        let oracle = lazymmu_oracle::run(p);
        let verdict = check::check(p, &target, &oracle, self.marker);
        (target, oracle, verdict)
    }

    pub fn verdict(&mut self, p: &Program) -> Verdict {
        self.run(p).2
    }
}
