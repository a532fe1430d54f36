//! The search: the rig's engines over one differential entry point (a program runs
//! through the C implementation and the eager oracle, and the checkers compare the two
//! traces); the middle of the pipeline (docs/architecture.md#crates).
//!
//! * `Checker`: what the minimizer and the corpus tools need, given in-process
//!   (lazymmu-harness's `Differ`) or crash-proof (`Executor`).
//! * `executor`: crash-proof execution: the implementation runs in disposable executor
//!   processes forked from the supervisor; crashes and hangs become symbolized reports
//!   (`symbolize`: PCs to function and file:line from the object's debug info).
//! * `fuzz`: the built-in coverage-guided loop, deterministic from a seed; `mutate`:
//!   structure-aware mutations, shared with the libFuzzer custom mutator; `dict`: the
//!   values learnt from the implementation's comparisons; `rng`.
//! * `campaign`: `lazymmu fuzz` over worker processes; `progress`: its status line.
//! * `mutants`: the mutants runner; `bench`: the benchmarks; `corpus`: corpus merge and
//!   prune, seed corpora; `out`: the output directory (findings, corpus, hazards).

pub mod bench;
pub mod campaign;
pub mod corpus;
pub mod dict;
pub mod executor;
pub mod fuzz;
pub mod mutants;
pub mod mutate;
pub mod out;
pub mod progress;
pub mod rng;
pub mod symbolize;

use lazymmu_harness::check::Verdict;
use lazymmu_harness::Differ;
use lazymmu_lang::Program;

/// Gives the verdict of a program against the oracle. `Differ` runs the implementation in
/// this process (only for code that cannot crash it); `Executor` runs it in a disposable
/// executor, so a crash or a hang is a finding instead of the end of the process.
pub trait Checker {
    /// The implementation's name in reports.
    fn name(&self) -> String;
    fn verdict(&mut self, p: &Program) -> Verdict;
}

impl Checker for Differ {
    fn name(&self) -> String {
        Differ::name(self)
    }
    fn verdict(&mut self, p: &Program) -> Verdict {
        Differ::verdict(self, p)
    }
}

impl Checker for executor::Executor {
    fn name(&self) -> String {
        executor::Executor::name(self)
    }
    fn verdict(&mut self, p: &Program) -> Verdict {
        executor::Executor::verdict(self, p)
    }
}
