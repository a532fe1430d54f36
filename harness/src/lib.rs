//! The lazymmu rig's harness: the op language (`program`, `text`, `gen`), the API
//! contract (`contract`), the simulated s390 machine (`machine`) and the run loop that
//! drives a kernel implementation over it (`exec`).

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
