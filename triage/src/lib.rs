//! Triage of findings, the end of the pipeline (docs/architecture.md#crates):
//!
//! * `minimize`: 1-minimal reproducers that keep a finding's signature;
//! * `dedup`: reading findings of any engine, grouping them into bugs, the summary;
//! * `export`: reproducers people use (plain text for a mail, KUnit C, JSON, an SVG
//!   timeline); `kunit_run`: an exported KUnit case run in userspace.

pub mod dedup;
pub mod export;
pub mod kunit_run;
pub mod minimize;

use lazymmu_engine::executor::{CrashReport, Executor, Outcome};
use lazymmu_harness::check::{Finding, Verdict};
use lazymmu_lang::Program;
use lazymmu_model::exec::Trace;

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
    /// Runs `program` through the implementation (in an executor) and the oracle; a
    /// crash or hang gives its report instead.
    pub fn new(exec: &mut Executor, program: Program) -> Result<Repro, Box<CrashReport>> {
        let r = match exec.run_one(&program, true) {
            Outcome::Ran(r) => r,
            Outcome::Died(c, _) => return Err(c),
        };
        let d = exec.differ();
        Ok(Repro {
            implementation: d.name(),
            generation: d.kernel.library().generation.name().to_string(),
            marker: d.marker,
            target: r.target.expect("asked for the trace"),
            oracle: lazymmu_oracle::run(&program),
            program,
            verdict: r.verdict,
        })
    }

    /// The first finding (the first divergence), if any.
    pub fn first(&self) -> Option<&Finding> {
        self.verdict.findings.first()
    }
}
