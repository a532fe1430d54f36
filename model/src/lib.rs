//! The machine model, the second step of the pipeline (docs/architecture.md#crates):
//!
//! * `machine`: the simulated s390 machine every kernel runs on (page tables, TLBs,
//!   IPTE / IPTE-range / IDTE, attach masks and owed flushes, the rules every store is
//!   checked against); `guarded`: its page-table memory (guard pages, poison) and the
//!   explanation of host addresses;
//! * `exec`: the `Kernel` trait (the oracle and the C target are both kernels) and the run
//!   loop that records a `Trace`;
//! * `render`, `report`: events, instructions, returns and traces in the kernel's
//!   language;
//! * `isolate`: one closure in a child process (tests; the engine's executors are the
//!   crash-proof path).

pub mod exec;
pub mod guarded;
pub mod isolate;
pub mod machine;
pub mod render;
pub mod report;

pub use exec::{run, Kernel, Ret, StepRecord, SyncKind, SyncPoint, Trace};
pub use machine::{AccessResult, Event, HwEvent, Machine};
