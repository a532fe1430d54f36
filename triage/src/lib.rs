//! Triage of findings: minimization (`minimize`), signatures and grouping (`dedup`), and
//! reproducers people use (`export`: plain text for a mail, KUnit C, JSON, an SVG
//! timeline).

pub mod dedup;
pub mod export;
pub mod minimize;

use lazymmu_engine::Differ;
use lazymmu_harness::check::{Finding, Verdict};
use lazymmu_harness::exec::Trace;
use lazymmu_harness::Program;

/// A finding with everything an export needs: the program, both traces, the verdict.
pub struct Repro {
    pub program: Program,
    /// The implementation's name (`reference`, `mutant:05-...`, a tree path).
    pub implementation: String,
    /// Its generation's name (`RFC`, `v2`, `v3+`) and "nothing pending" marker.
    pub generation: String,
    pub marker: u64,
    pub target: Trace,
    pub oracle: Trace,
    pub verdict: Verdict,
}

impl Repro {
    /// Runs `program` through `differ` and the oracle.
    pub fn new(differ: &mut Differ, program: Program) -> Repro {
        let (target, oracle, verdict) = differ.run(&program);
        Repro {
            implementation: differ.name(),
            generation: differ.kernel.library().generation.name().to_string(),
            marker: differ.marker,
            program,
            target,
            oracle,
            verdict,
        }
    }

    /// The first finding (the first divergence), if any.
    pub fn first(&self) -> Option<&Finding> {
        self.verdict.findings.first()
    }
}
