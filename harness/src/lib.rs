//! The lazymmu rig's harness: the first steps of the pipeline (see
//! docs/architecture.md#crates), from a program to the verdict on two traces.
//!
//! The op language:
//! * `program`: programs, steps, ops, machine configurations.
//! * `text`: the `.ops` text format, printed and parsed back exactly.
//! * `reprofile`: reproducer files (`# implementation:` / `# expect:` headers).
//! * `gen`: programs from bytes (realistic or adversarial), and repairing mutants.
//! * `contract`: the lazy-MMU API contract realistic programs keep.
//!
//! The machine model:
//! * `pte`: the s390 PTE format and value classes.
//! * `machine`: the simulated machine every kernel runs on; `guarded`: its page-table
//!   memory (guard pages, poison) and address explanations.
//! * `exec`: the `Kernel` trait and the run loop that records a `Trace`.
//!
//! The checks and their output:
//! * `check`: the differential checkers (a target trace against the oracle's).
//! * `report`, `render`: traces and events in the kernel's language.
//! * `isolate`: one closure in a child process (tests; the engine's executors are the
//!   crash-proof path).

pub mod check;
pub mod contract;
pub mod exec;
pub mod gen;
pub mod guarded;
pub mod isolate;
pub mod machine;
pub mod program;
pub mod pte;
pub mod render;
pub mod report;
pub mod reprofile;
pub mod text;

pub use exec::{run, Kernel, Ret, StepRecord, SyncKind, SyncPoint, Trace};
pub use machine::{AccessResult, Event, HwEvent, Machine};
pub use program::{MachineConfig, Mode, Op, Program, PteRange, PteRef, Step};
