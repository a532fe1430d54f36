//! The op language, the first step of the pipeline (docs/architecture.md#crates):
//!
//! * `program`: programs, steps, ops, machine configurations;
//! * `pte`: the s390 PTE format and the value classes programs draw from;
//! * `text`: the `.ops` text format, printed and parsed back exactly;
//! * `reprofile`: reproducer files (`# implementation:` / `# expect:` headers).
//!
//! Generating programs and the API contract they keep are in lazymmu-harness; running
//! them is lazymmu-model's.

pub mod program;
pub mod pte;
pub mod reprofile;
pub mod text;

pub use program::{MachineConfig, Mode, Op, Program, PteRange, PteRef, Step};
